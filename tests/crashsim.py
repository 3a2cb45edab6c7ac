"""A simulated disk that knows what is durable, for enumerating crash states of the save protocol.

It replays the very steps ``s1mpled.state.protocol.save_ops`` produces. After any step, a crash
can leave each un-fsynced file with its old contents, its new contents, a torn prefix, or empty;
and of the directory operations since the last directory fsync, any prefix may have reached disk
(journaling file systems such as ext4 and xfs commit metadata in order). ``crash_states()`` yields
every such disk as a plain ``{name: bytes}`` mapping, to be written to a real directory and loaded
by the real store.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from s1mpled.state import protocol


@dataclass
class _Inode:
    durable: bytes = b""
    volatile: bytes = b""


@dataclass
class SimDisk:
    """Namespace and file contents, each split into what is durable and what is only in the page cache."""

    inodes: list[_Inode] = field(default_factory=list)
    durable_ns: dict[str, int] = field(default_factory=dict)
    volatile_ns: dict[str, int] = field(default_factory=dict)
    pending_meta: list[tuple[str, str, str | int]] = field(default_factory=list)

    def apply(self, op: protocol.Op) -> None:
        if isinstance(op, protocol.WriteFile):
            if op.name not in self.volatile_ns:
                self.inodes.append(_Inode())
                self.volatile_ns[op.name] = len(self.inodes) - 1
                self.pending_meta.append(("create", op.name, len(self.inodes) - 1))
            self.inodes[self.volatile_ns[op.name]].volatile = op.data
        elif isinstance(op, protocol.FsyncFile):
            inode = self.inodes[self.volatile_ns[op.name]]
            inode.durable = inode.volatile
        elif isinstance(op, protocol.RenameFile):
            self.volatile_ns[op.dst] = self.volatile_ns.pop(op.src)
            self.pending_meta.append(("rename", op.src, op.dst))
        else:
            self.durable_ns = dict(self.volatile_ns)
            self.pending_meta.clear()

    def _namespace_after(self, applied: int) -> dict[str, int]:
        ns = dict(self.durable_ns)
        for kind, a, b in self.pending_meta[:applied]:
            if kind == "create":
                assert isinstance(b, int)
                ns[a] = b
            else:
                assert isinstance(b, str)
                ns[b] = ns.pop(a)
        return ns

    @staticmethod
    def _versions(inode: _Inode) -> list[bytes]:
        if inode.durable == inode.volatile:
            return [inode.durable]
        new = inode.volatile
        return list(dict.fromkeys([inode.durable, new, new[: len(new) // 2], new[:1], b""]))

    def crash_states(self) -> Iterator[dict[str, bytes]]:
        """Every disk this machine could come back with after a power cut right now."""
        for applied in range(len(self.pending_meta) + 1):
            ns = self._namespace_after(applied)
            names = sorted(ns)
            choices = [self._versions(self.inodes[ns[n]]) for n in names]
            for combo in itertools.product(*choices):
                yield dict(zip(names, combo, strict=True))

    def settled(self) -> dict[str, bytes]:
        """The disk as the running system sees it (what a SIGKILL, not a power cut, leaves)."""
        return {n: self.inodes[i].volatile for n, i in self.volatile_ns.items()}
