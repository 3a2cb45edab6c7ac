"""Real small disks for the full-disk and failed-fsync tests: nothing here is a mock.

- :func:`tmpfs` mounts a tiny tmpfs, so ENOSPC is the kernel's; :func:`fill` writes a file until the
  file system refuses, and deleting that file gives the space back.
- :class:`FailingDisk` is an ext4 on a loop device whose backing file lives on a small tmpfs of its
  own. Once that tmpfs is full, the device's writes fail at writeback, and fsync reports it (EIO, or
  ENOSPC): the error the ATC'20 fsync paper is about, on a real kernel path. :meth:`FailingDisk.repair`
  is what an operator does afterwards: unmount, free the space, ``e2fsck``, mount again.

The tests run as root (as the other tmpfs tests of this suite do).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FailingDisk", "fill", "tmpfs"]

_CHUNK = b"\0" * 65536


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k", *, mode: str = "0700") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created if missing), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write ``directory/name`` until the file system is full (ENOSPC); delete it to free the space."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, _CHUNK)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        for size in (4096, 512, 1):  # the last partial pages too: nothing may fit afterwards
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, _CHUNK[:size])
    finally:
        os.close(fd)
    return path


class FailingDisk:
    """ext4 (with its journal) on a loop device backed by a sparse file on an 8 MiB tmpfs."""

    def __init__(self, workdir: Path, *, image_size: str = "64M", backing_size: str = "8m") -> None:
        self.backing = workdir / "backing"
        self.mountpoint = workdir / "ext4"
        self.image = self.backing / "disk.img"
        self.device = ""
        self._backing: contextlib.ExitStack | None = contextlib.ExitStack()
        self._backing.enter_context(tmpfs(self.backing, backing_size))
        try:
            subprocess.run(["truncate", "-s", image_size, str(self.image)], check=True)
            subprocess.run(
                ["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.image)], check=True
            )
            out = subprocess.run(["losetup", "-f", "--show", str(self.image)], check=True, capture_output=True)
            self.device = out.stdout.decode().strip()
            self.mountpoint.mkdir()
            self._mount()
        except BaseException:
            self.close()
            raise

    def _mount(self) -> None:
        subprocess.run(["mount", "-o", "errors=continue", self.device, str(self.mountpoint)], check=True)

    def break_writes(self) -> None:
        """Fill the backing tmpfs: from now on every write of a new block of the ext4 fails at writeback."""
        fill(self.backing)

    def repair(self) -> None:
        """Unmount (dropping the page cache), free the backing space, e2fsck, mount again."""
        subprocess.run(["umount", str(self.mountpoint)], check=True)
        (self.backing / "filler").unlink()
        fsck = subprocess.run(["e2fsck", "-fy", self.device], capture_output=True, check=False)
        assert fsck.returncode in (0, 1), fsck.stdout.decode() + fsck.stderr.decode()  # 1: errors corrected
        self._mount()

    def close(self) -> None:
        if self.device:
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", self.device], check=False)
            self.device = ""
        backing, self._backing = self._backing, None
        if backing is not None:
            backing.close()

    def __enter__(self) -> FailingDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
