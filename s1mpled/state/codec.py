"""The state-file record codec: pure bytes in, bytes out, no I/O.

A record is one ASCII header line followed by the JSON payload::

    S1MPLED-STATE 1 <generation> <payload-length> <sha256-hex>\\n<payload>

The checksum covers the header fields as well as the payload, so a flipped digit in the
generation or the length is caught as surely as a flipped byte in the data. The length makes a
truncated (torn) file detectable even when the truncation happens to end on valid JSON.

Money is never float: ``Decimal`` values are stored as ``{"$decimal": "<exact text>"}`` and come
back as the same ``Decimal`` (same digits, same exponent). A JSON float literal in a payload is
read back as ``Decimal`` too, so nothing loaded from state is ever a float. Only finite numbers whose
exponent the default ``decimal`` context can compute with (``1E-999999`` to ``9E+999999``) are stored:
NaN, sNaN and the infinities -- as ``{"$decimal": "NaN"}`` or as JSON's ``NaN``/``Infinity`` -- are
refused when encoding and when decoding, naming the key that holds them, because a non-finite amount
read back would poison every sum and comparison it meets (an sNaN even raises on ``<``). Mappings must have
``str`` keys (JSON turns int/float/bool/None keys into strings, as ``json.dumps`` does; other key types
are refused), and a mapping whose only key is ``"$decimal"`` is reserved for the encoding above.
Validation is left to the C JSON encoder on purpose: a Python walk over the state would double the cost
of saving a large state.
Because this module is pure, the crash tests feed it torn and bit-flipped bytes directly.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from s1mpled.errors import StateEncodeError

__all__ = [
    "FORMAT_VERSION",
    "LOGGED_VERSION",
    "MAGIC",
    "WAL_VERSION",
    "InvalidRecord",
    "Record",
    "decode",
    "encode",
    "peek_version",
]

MAGIC = b"S1MPLED-STATE"
FORMAT_VERSION = 1
# The same record, written for a state that a record log continues. Why a version of its own: a s1mpled
# that does not know the log would load the snapshot and ignore the newer records after it -- silently
# older books. It refuses an unknown version by name instead (a downgrade stops, loudly).
WAL_VERSION = 2  # continued by a log of its own, NAME.wal: read (an upgrade replays it), no longer written
LOGGED_VERSION = 3  # continued by its entries in the directory's one log, state.wal (s1mpled.state.dirlog)
_READABLE = (FORMAT_VERSION, WAL_VERSION, LOGGED_VERSION)
_DECIMAL_TAG = "$decimal"
_MAX_HEADER = 160  # magic + 4 integers + 64 hex digits fit comfortably


class InvalidRecord(ValueError):
    """The bytes are not a complete, verified record; ``str()`` says exactly why."""

    def __init__(self, why: str, *, unsupported_version: int | None = None) -> None:
        self.unsupported_version = unsupported_version
        super().__init__(why)


@dataclass(frozen=True, slots=True)
class Record:
    """A verified record: the state, its generation and the facts that proved it intact."""

    generation: int
    state: Any
    length: int
    checksum: str
    version: int = FORMAT_VERSION


_EMIN, _EMAX = decimal.DefaultContext.Emin, decimal.DefaultContext.Emax


def _storable(value: Decimal) -> bool:
    """Finite, and within the exponent range arithmetic in the default context can handle."""
    return value.is_finite() and (not value or _EMIN <= value.adjusted() <= _EMAX)


def _refusal(text: str) -> str:
    try:
        finite = Decimal(text).is_finite()
    except ArithmeticError:
        finite = False
    if finite:
        return f"{text} is outside the storable range (exponents {_EMIN} to {_EMAX})"
    return f"{text} is not a finite number (NaN, sNaN and infinities are never stored)"


def _default(value: object) -> dict[str, str]:
    if type(value) is Decimal and value.is_finite() and (not value or _EMIN <= value.adjusted() <= _EMAX):
        return {_DECIMAL_TAG: str(value)}  # the common case first (a call per Decimal of every save)
    if isinstance(value, Decimal):
        if not _storable(value):
            raise StateEncodeError("<state>", _refusal(str(value)))
        return {_DECIMAL_TAG: str(value)}
    raise StateEncodeError("<state>", f"a value of type {type(value).__name__} cannot be stored")


class _Refused(Exception):
    """A non-finite number in a payload (raised inside json.loads, located afterwards)."""


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and type(obj.get(_DECIMAL_TAG)) is str:
        value = Decimal(obj[_DECIMAL_TAG])
        if not _storable(value):
            raise _Refused
        return value
    return obj


def _parse_float(text: str) -> Decimal:
    value = Decimal(text)
    if not _storable(value):  # 1e9999999 is finite, but no arithmetic can use it
        raise _Refused
    return value


def _parse_constant(name: str) -> Any:
    raise _Refused  # JSON's NaN, Infinity, -Infinity (json.loads accepts them by default)


@dataclass(frozen=True, slots=True)
class _Number:
    """A number as it is written in the payload (for locating a refused one)."""

    text: str


def _where(path: str) -> str:
    return path or "(top level)"


def _locate_refused(payload: bytes) -> str:
    """Why the payload was refused, naming the first key that holds a non-finite number."""
    try:
        stack: list[tuple[str, Any]] = [("", json.loads(payload, parse_float=_Number, parse_constant=_Number))]
        while stack:
            path, node = stack.pop()
            if isinstance(node, dict):
                tag = node.get(_DECIMAL_TAG)
                if len(node) == 1 and type(tag) is str:
                    node = _Number(tag)
                else:
                    stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(node.items()))
                    continue
            if isinstance(node, _Number):
                if not _storable(Decimal(node.text)):
                    return f"refused value at {_where(path)}: {_refusal(node.text)}"
            elif isinstance(node, list):
                stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
    except (ValueError, ArithmeticError, RecursionError) as exc:
        return f"payload is not valid JSON: {exc}"
    return "refused value: a non-finite number"  # not reached: the fast pass found one


def _locate_unstorable(state: Any) -> str | None:
    """The key path of the first value encode refuses, and why (the slow path, only after a refusal)."""
    stack: list[tuple[str, Any]] = [("", state)]
    seen: set[int] = set()
    while stack:
        path, node = stack.pop()
        if isinstance(node, Decimal):
            if not _storable(node):
                return f"{_where(path)}: {_refusal(str(node))}"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return f"{_where(path)}: {_refusal(repr(node))}"
        elif isinstance(node, dict | list | tuple):
            if id(node) in seen:  # shared, or a cycle (json.dumps said which)
                continue
            seen.add(id(node))
            if isinstance(node, dict):
                for key in node:
                    if not (key is None or isinstance(key, str | int | float)):
                        return f"{_where(path)}: a key of type {type(key).__name__} cannot be stored"
                stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(node.items()))
            else:
                stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
        elif not (node is None or isinstance(node, str | int)):
            return f"{_where(path)}: a value of type {type(node).__name__} cannot be stored"
    return None


def _digest(generation: int, length: int, payload: bytes, version: int = FORMAT_VERSION) -> str:
    h = hashlib.sha256(b"%d %d %d " % (version, generation, length))
    h.update(payload)
    return h.hexdigest()


def encode_payload(state: Any) -> bytes:
    """Serialize a state to JSON bytes; raises StateEncodeError for anything not stored exactly.

    The error's ``why`` names the key path of the refused value (``ledger.capital: NaN is not ...``).
    """
    try:
        text = json.dumps(state, default=_default, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")
    except (StateEncodeError, TypeError, ValueError, RecursionError) as exc:
        # NaN/inf Decimals or floats, unknown types, odd keys, lone surrogates, cycles; where, on the slow path
        why = None if isinstance(exc, RecursionError) else _locate_unstorable(state)
        if why is None:
            why = exc.why if isinstance(exc, StateEncodeError) else f"cannot be stored exactly: {exc}"
        raise StateEncodeError("<state>", why) from None


def frame(payload: bytes, generation: int, *, logged: bool = False) -> bytes:
    """Put the header in front of an already serialized payload (``logged``: a record log continues it)."""
    if generation < 1:
        raise ValueError("generation starts at 1")
    length = len(payload)
    version = LOGGED_VERSION if logged else FORMAT_VERSION
    header = b"%s %d %d %d %s\n" % (
        MAGIC,
        version,
        generation,
        length,
        _digest(generation, length, payload, version).encode(),
    )
    return header + payload


def encode(state: Any, generation: int, *, logged: bool = False) -> bytes:
    """The complete record for ``state`` at ``generation`` (``logged``: of a state saved through a record log)."""
    return frame(encode_payload(state), generation, logged=logged)


def _split_header(data: bytes) -> tuple[list[bytes], int]:
    end = data.find(b"\n", 0, _MAX_HEADER)
    if end < 0:
        raise InvalidRecord("no record header (empty, truncated or not a s1mpled state file)")
    fields = data[:end].split(b" ")
    if fields[0] != MAGIC:
        raise InvalidRecord("not a s1mpled state file (bad magic)")
    return fields, end + 1


def peek_version(data: bytes) -> int:
    """The format version a record claims, without verifying anything else."""
    fields, _ = _split_header(data)
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        raise InvalidRecord("malformed record header (version)") from None


def decode(data: bytes) -> Record:
    """Verify and decode a record; raises InvalidRecord saying what is wrong."""
    version = peek_version(data)
    if version not in _READABLE:
        raise InvalidRecord(
            f"unknown format version {version} (this s1mpled reads versions "
            f"{', '.join(map(str, _READABLE[:-1]))} and {_READABLE[-1]})",
            unsupported_version=version,
        )
    fields, start = _split_header(data)
    if len(fields) != 5:
        raise InvalidRecord("malformed record header (expected 5 fields)")
    try:
        generation, length = int(fields[2]), int(fields[3])
        checksum = fields[4].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRecord("malformed record header (generation/length/checksum)") from None
    payload = data[start:]
    if len(payload) < length:
        raise InvalidRecord(f"truncated: header announces {length} payload bytes, file holds {len(payload)}")
    if len(payload) > length:
        raise InvalidRecord(f"{len(payload) - length} unexpected bytes after the payload")
    if _digest(generation, length, payload, version) != checksum:
        raise InvalidRecord("checksum mismatch: the file is damaged")
    try:
        state = json.loads(payload, object_hook=_object_hook, parse_float=_parse_float, parse_constant=_parse_constant)
    except _Refused:  # a writer that is not s1mpled (ours refuses these): say which key
        raise InvalidRecord(_locate_refused(payload)) from None
    except (ValueError, ArithmeticError, RecursionError) as exc:  # only a buggy writer gets here
        raise InvalidRecord(f"payload is not valid JSON: {exc}") from None
    return Record(generation=generation, state=state, length=length, checksum=checksum, version=version)
