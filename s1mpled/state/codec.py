"""The state-file record codec: pure bytes in, bytes out, no I/O.

A record is one ASCII header line followed by the JSON payload::

    S1MPLED-STATE 1 <generation> <payload-length> <sha256-hex>\\n<payload>

The checksum covers the header fields as well as the payload, so a flipped digit in the
generation or the length is caught as surely as a flipped byte in the data. The length makes a
truncated (torn) file detectable even when the truncation happens to end on valid JSON.

Money is never float: ``Decimal`` values are stored as ``{"$decimal": "<exact text>"}`` and come
back as the same ``Decimal`` (same digits, same exponent). A JSON float literal in a payload is
read back as ``Decimal`` too, so nothing loaded from state is ever a float. Mappings must have
``str`` keys (JSON turns int/float/bool/None keys into strings, as ``json.dumps`` does; other key types
are refused), and a mapping whose only key is ``"$decimal"`` is reserved for the encoding above.
Validation is left to the C JSON encoder on purpose: a Python walk over the state would double the cost
of saving a large state.
Because this module is pure, the crash tests feed it torn and bit-flipped bytes directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from s1mpled.errors import StateEncodeError

__all__ = ["FORMAT_VERSION", "MAGIC", "InvalidRecord", "Record", "decode", "encode", "peek_version"]

MAGIC = b"S1MPLED-STATE"
FORMAT_VERSION = 1
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


def _default(value: object) -> dict[str, str]:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise StateEncodeError("<state>", f"{value} is not a finite Decimal and cannot be stored")
        return {_DECIMAL_TAG: str(value)}
    raise StateEncodeError("<state>", f"a value of type {type(value).__name__} cannot be stored")


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and type(obj.get(_DECIMAL_TAG)) is str:
        return Decimal(obj[_DECIMAL_TAG])
    return obj


def _digest(generation: int, length: int, payload: bytes) -> str:
    h = hashlib.sha256(b"%d %d %d " % (FORMAT_VERSION, generation, length))
    h.update(payload)
    return h.hexdigest()


def encode_payload(state: Any) -> bytes:
    """Serialize a state to JSON bytes; raises StateEncodeError for anything not stored exactly."""
    try:
        text = json.dumps(state, default=_default, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")
    except StateEncodeError:
        raise
    except (TypeError, ValueError) as exc:  # NaN/inf floats, non-str keys of odd types, lone surrogates
        raise StateEncodeError("<state>", f"cannot be stored exactly: {exc}") from exc


def frame(payload: bytes, generation: int) -> bytes:
    """Put the header in front of an already serialized payload."""
    if generation < 1:
        raise ValueError("generation starts at 1")
    length = len(payload)
    header = b"%s %d %d %d %s\n" % (
        MAGIC,
        FORMAT_VERSION,
        generation,
        length,
        _digest(generation, length, payload).encode(),
    )
    return header + payload


def encode(state: Any, generation: int) -> bytes:
    """The complete record for ``state`` at ``generation``."""
    return frame(encode_payload(state), generation)


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
    if version != FORMAT_VERSION:
        raise InvalidRecord(
            f"unknown format version {version} (this s1mpled reads version {FORMAT_VERSION})",
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
    if _digest(generation, length, payload) != checksum:
        raise InvalidRecord("checksum mismatch: the file is damaged")
    try:
        state = json.loads(payload, object_hook=_object_hook, parse_float=Decimal)
    except (ValueError, ArithmeticError, RecursionError) as exc:  # only a buggy writer gets here
        raise InvalidRecord(f"payload is not valid JSON: {exc}") from None
    return Record(generation=generation, state=state, length=length, checksum=checksum)
