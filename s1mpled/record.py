"""The one record codec: a dataclass to JSON-shaped data and back, read strictly by field annotation.

Every persisted or wired record (a ledger, its orders and fills, the paper account, the breaker, the
simulator's account view, the control socket's status documents) is a dataclass, and this module is the
only code that turns one into dicts and lists and back. It is pure: no I/O, no clock, no event loop.

Two dialects say how a Decimal is written:

* :data:`STATE` keeps it a ``Decimal``: the state store (:mod:`s1mpled.state.codec`) writes it exactly
  (``{"$decimal": "1.50"}``) and gives a ``Decimal`` back, so a record reads only ``Decimal`` instances;
* :data:`JSON` writes its exact text (``"1.50"``) and reads only such text -- never a JSON number, which
  a reader on the other side may have turned into a float.

A ``float`` (a measurement for an operator, such as seconds of stream health; never money) is admitted in
the JSON dialect only, written as it is and read back finite (an int too, not a bool): the state store
reads every number with a fraction back as a Decimal, so a float field could not round-trip in STATE.

Reading is strict, by the field's annotation: ``int`` is not ``bool``; ``Decimal`` is finite and within
the exponents arithmetic can use (NaN, sNaN and the infinities are refused however they are spelled);
an enum is read by value; nested dataclasses, ``tuple[X, ...]``, ``list[X]``, ``dict[str, X]`` and
``X | None`` of those are read recursively. A key the record does not have, or a key it needs and the
data lacks, is refused too. Every refusal is one :class:`~s1mpled.errors.RecordError` whose message names
the path to the value (``orders[3].price: expected a decimal, got 'x'``), and nothing else escapes, so
garbage never crashes a reader.

Fields can say more in their metadata: :data:`OPTIONAL` (may be absent when read: its default, for
layouts written before the field existed) and :data:`OMIT_DEFAULT` (also left out when written while it
holds its default, so a record written before the field existed is reproduced byte for byte), and
:func:`check` (a value read must also pass a test, ``at_ms: expected a time in ms >= 0, got -1``: a bound
the annotation cannot say, refused with the path like any other). A record
class may list keys that older layouts wrote and that are now ignored in ``RECORD_LEGACY_KEYS``, and may
carry a layout version in ``RECORD_FORMAT``: it is written first, as ``"format"``, and checked before
anything else is read, so a layout from the future is refused as such and not by its first unknown key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal, DefaultContext
from functools import cache
from typing import Any, TypeVar

from s1mpled.errors import RecordError

__all__ = ["JSON", "OMIT_DEFAULT", "OPTIONAL", "STATE", "Check", "Dialect", "check", "decode", "encode"]

T = TypeVar("T")


class Dialect(enum.Enum):
    """How a Decimal is written: kept a Decimal (the state store tags it) or as its exact text."""

    STATE = "state"
    JSON = "json"


STATE, JSON = Dialect.STATE, Dialect.JSON

_PRESENCE, _CHECK = "record", "record_check"
OPTIONAL: Mapping[str, str] = types.MappingProxyType({_PRESENCE: "optional"})
OMIT_DEFAULT: Mapping[str, str] = types.MappingProxyType({_PRESENCE: "omit_default"})


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """A test a field's value must pass once read, and what it expects (for the refusal's message)."""

    test: Callable[[Any], bool]
    expected: str


def check(test: Callable[[Any], bool], expected: str) -> Mapping[str, Check]:
    """Field metadata: a value read must also pass ``test``, or it is refused as "<path>: expected <expected>,
    got <value>". ``test`` is given only values its annotation admitted (an int, never a bool or text), so it
    is a plain predicate (``n >= 0``). Writing is unchecked, as for every value.

    Combine it with a presence: ``field(default=0, metadata={**OPTIONAL, **check(...)})``.
    """
    return types.MappingProxyType({_CHECK: Check(test, expected)})


_EMIN, _EMAX = DefaultContext.Emin, DefaultContext.Emax
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

Reader = Callable[[object], Any]
Writer = Callable[[Any], Any]


class _Refused(Exception):
    """A value the annotation does not admit; ``path`` is filled in while the readers unwind."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why, self.path = why, ""

    def inside(self, step: str) -> _Refused:
        """The same refusal, one step further out (``.key`` or ``[3]``)."""
        self.path = step + self.path
        return self


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    """One field of a record class, as the codec uses it."""

    name: str
    hint: Any
    presence: str  # "required", "optional" or "omit_default"
    default: Any
    check: Check | None


# ---------------------------------------------------------------------------------------------- API


def encode(record: object, dialect: Dialect = STATE) -> dict[str, Any]:
    """The record as JSON-shaped data: dicts in field order, lists, str/int/bool/None, Decimals per dialect.

    Values are trusted (they are typed already); reading them back is where strictness lives.
    """
    kind: Any = type(record)  # a class is hashable, whatever typeshed says
    result: dict[str, Any] = _writer(kind, dialect)(record)
    return result


def decode(cls: type[T], data: object, dialect: Dialect = STATE, where: str = "") -> T:
    """The record of class ``cls`` that ``data`` holds; RecordError naming the path of the first refusal.

    ``where`` prefixes every path (``state`` gives ``state.opened_ms: ...``).
    """
    try:
        hint: Any = cls
        result: T = _reader(hint, dialect)(data)
    except _Refused as refused:
        path = where + refused.path if where else refused.path.lstrip(".")
        raise RecordError(f"{path or '(top level)'}: {refused.why}") from None
    return result


# ------------------------------------------------------------------------------------------- fields


@cache
def _fields(cls: type[Any]) -> tuple[_Field, ...]:
    """The record's fields with their resolved annotations (resolved once per class)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        presence = f.metadata.get(_PRESENCE, "required")
        out.append(_Field(f.name, hints[f.name], presence, _default_of(f), f.metadata.get(_CHECK)))
    return tuple(out)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _legacy_keys(cls: type[Any]) -> frozenset[str]:
    return frozenset(getattr(cls, "RECORD_LEGACY_KEYS", ()))


def _format_of(cls: type[Any]) -> int | None:
    """The layout version the record class writes and reads (``RECORD_FORMAT``), if it has one."""
    version = getattr(cls, "RECORD_FORMAT", None)
    return version if isinstance(version, int) else None


def _shape(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(origin, args)`` of an annotation, with ``X | None`` and ``Optional[X]`` both a union."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType:
        origin = typing.Union
    return origin, typing.get_args(hint)


# ------------------------------------------------------------------------------------------ writing


@cache
def _writer(hint: Any, dialect: Dialect) -> Writer:
    """A function writing values of ``hint`` (built once per annotation and dialect)."""
    origin, args = _shape(hint)
    if origin is typing.Union:
        write = _writer(_optional_of(hint, args), dialect)
        return _identity if write is _identity else lambda v: None if v is None else write(v)
    if origin in (tuple, list):
        item = _writer(args[0], dialect)
        return list if item is _identity else lambda v: list(map(item, v))
    if origin is dict:
        value = _writer(args[1], dialect)
        return dict if value is _identity else lambda v: {k: value(x) for k, x in v.items()}
    return _leaf_writer(hint, dialect)


def _leaf_writer(hint: Any, dialect: Dialect) -> Writer:
    """A record, an enum or a scalar."""
    if _is_record(hint):
        return _record_writer(hint, dialect)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return operator.attrgetter("value")
    if hint is Decimal and dialect is JSON:
        return str
    if hint is float:
        _float_allowed(dialect)
        return _identity
    if hint in (str, int, bool, Decimal):
        return _identity
    raise TypeError(f"record codec: unsupported annotation {hint!r}")


def _float_allowed(dialect: Dialect) -> None:
    """TypeError unless the dialect is JSON (the state store reads a float back as a Decimal)."""
    if dialect is not JSON:
        raise TypeError("record codec: a float is for the JSON dialect only (STATE reads it back as a Decimal)")


def _optional_of(hint: Any, args: tuple[Any, ...]) -> Any:
    """X of ``X | None`` (the only unions a record may have)."""
    inner = [a for a in args if a is not type(None)]
    if len(inner) != 1 or len(args) != 2:
        raise TypeError(f"record codec: only X | None unions are supported, not {hint}")
    return inner[0]


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _identity(value: Any) -> Any:
    return value


def _record_writer(cls: Any, dialect: Dialect) -> Writer:
    """A function building the record's dict in one literal, generated once per class (as ``dataclasses``
    generates ``__init__``): the paper account is written after every fill, thousands of records each time,
    and a loop over the fields costs three times what the hand-written literal it replaced did."""
    scope: dict[str, Any] = {}
    version = _format_of(cls)
    items, omitted = ([] if version is None else [f"'format': {version!r}"]), []
    for i, f in enumerate(_fields(cls)):
        write = _writer(f.hint, dialect)
        value = f"r.{f.name}"
        if isinstance(f.hint, type) and issubclass(f.hint, enum.Enum):
            value += ".value"
        elif write is not _identity:
            scope[f"w{i}"], value = write, f"w{i}({value})"
        items.append(f"{f.name!r}: {value}")
        if f.presence == "omit_default":
            scope[f"d{i}"] = f.default
            omitted.append(f"    if r.{f.name} == d{i}:\n        del out[{f.name!r}]\n")
    source = f"def write(r):\n    out = {{{', '.join(items)}}}\n{''.join(omitted)}    return out\n"
    exec(source, scope)  # the names are a dataclass's field identifiers; no value reaches the source
    writer: Writer = scope["write"]
    return writer


# ------------------------------------------------------------------------------------------ reading


@cache
def _reader(hint: Any, dialect: Dialect) -> Reader:
    """A function reading values of ``hint``, raising _Refused (built once per annotation and dialect)."""
    origin, args = _shape(hint)
    if origin is typing.Union:
        return _optional_reader(_reader(_optional_of(hint, args), dialect))
    if origin in (tuple, list):
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise TypeError(f"record codec: only tuple[X, ...] is supported, not {hint}")
        return _sequence_reader(_reader(args[0], dialect), origin)
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"record codec: mapping keys must be str, not {hint}")
        return _mapping_reader(_reader(args[1], dialect))
    return _leaf_reader(hint, dialect)


def _leaf_reader(hint: Any, dialect: Dialect) -> Reader:
    """A record, an enum or a scalar."""
    if _is_record(hint):
        return _record_reader(hint, dialect)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_reader(hint)
    if hint is Decimal:
        return _read_decimal if dialect is STATE else _read_decimal_text
    if hint is float:
        _float_allowed(dialect)
        return _read_float
    if hint in _SCALARS:
        return _SCALARS[hint]
    raise TypeError(f"record codec: unsupported annotation {hint!r}")


def _optional_reader(read: Reader) -> Reader:
    def read_optional(value: object) -> Any:
        return None if value is None else read(value)

    return read_optional


def _sequence_reader(read_item: Reader, kind: type[Any]) -> Reader:
    def read_sequence(value: object) -> Any:
        if not isinstance(value, list | tuple):
            raise _Refused(f"expected a list, got {_show(value)}")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(read_item(item))
            except _Refused as refused:
                raise refused.inside(f"[{index}]") from None
        return tuple(out) if kind is tuple else out

    return read_sequence


def _mapping_reader(read_value: Reader) -> Reader:
    def read_mapping(value: object) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Refused(f"expected a mapping, got {_show(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused(f"expected str keys, got {_show(key)}")
            try:
                out[key] = read_value(item)
            except _Refused as refused:
                raise refused.inside(f".{key}") from None
        return out

    return read_mapping


def _record_reader(cls: Any, dialect: Dialect) -> Reader:
    plan = [(f, _checked(_reader(f.hint, dialect), f.check)) for f in _fields(cls)]
    version = _format_of(cls)
    known = frozenset(f.name for f in _fields(cls)) | _legacy_keys(cls) | ({"format"} if version else set())

    def read_record(value: object) -> Any:
        if not isinstance(value, Mapping):
            raise _Refused(f"expected a mapping, got {_show(value)}")
        if version is not None and not _is_int(value.get("format"), version):
            why = f"unsupported format {_show(value.get('format'))} (this program reads format {version})"
            raise _Refused(why).inside(".format")
        unknown = [k for k in value if k not in known]
        if unknown:
            raise _Refused(f"unknown key {_show(unknown[0])}").inside(f".{unknown[0]}")
        values = {}
        for f, read in plan:
            if f.name not in value:
                if f.presence == "required" or f.default is dataclasses.MISSING:
                    raise _Refused("a required key is missing").inside(f".{f.name}")
                continue
            try:
                values[f.name] = read(value[f.name])
            except _Refused as refused:
                raise refused.inside(f".{f.name}") from None
        try:
            return cls(**values)
        except (ValueError, TypeError, ArithmeticError, RecordError) as exc:
            raise _Refused(f"not a valid {cls.__name__}: {exc}") from None

    return read_record


def _checked(read: Reader, check: Check | None) -> Reader:
    """``read``, then the field's check (if it has one) on what it read."""
    if check is None:
        return read

    def read_checked(value: object) -> Any:
        result = read(value)
        if not check.test(result):
            shown = result if isinstance(result, Decimal) else _show(result)  # 1.5, as the decimal refusals say
            raise _Refused(f"expected {check.expected}, got {shown}")
        return result

    return read_checked


def _is_int(value: object, expected: int) -> bool:
    return type(value) is int and value == expected


def _enum_reader(cls: type[enum.Enum]) -> Reader:
    kind = str if issubclass(cls, str) else int
    words = ", ".join(str(m.value) for m in cls)

    def read_enum(value: object) -> Any:
        if isinstance(value, kind) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        raise _Refused(f"expected one of {words}, got {_show(value)}")

    return read_enum


def _typed(kind: type[Any], what: str) -> Reader:
    """A reader admitting instances of ``kind`` only (an int is never a bool, though Python says it is)."""

    def read_typed(value: object) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _Refused(f"expected {what}, got {_show(value)}")
        return value

    return read_typed


_read_any_decimal = _typed(Decimal, "a decimal")


def _read_decimal(value: object) -> Decimal:
    return _usable(_read_any_decimal(value))


def _read_decimal_text(value: object) -> Decimal:
    if not isinstance(value, str) or not _DECIMAL_TEXT.fullmatch(value):
        raise _Refused(f"expected a decimal number as text, got {_show(value)}")
    return _usable(Decimal(value))


def _usable(value: Decimal) -> Decimal:
    """Finite, and within the exponents arithmetic in the default context can handle."""
    if not value.is_finite():
        raise _Refused(f"expected a finite decimal, got {value}")
    if value and not _EMIN <= value.adjusted() <= _EMAX:
        raise _Refused(f"expected a decimal with an exponent from {_EMIN} to {_EMAX}, got {value}")
    return value


def _read_float(value: object) -> float:
    """A finite float; an int (JSON writes 2.0 as 2 in some languages) is one too, a bool is not."""
    try:
        number = float(value) if isinstance(value, float | int) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int beyond a float's range
        number = math.nan
    if not math.isfinite(number):
        raise _Refused(f"expected a finite number, got {_show(value)}")
    return number


_SCALARS: dict[Any, Reader] = {
    str: _typed(str, "a string"),
    int: _typed(int, "an integer"),
    bool: _typed(bool, "true or false"),
}


def _show(value: object) -> str:
    """A short repr for an error message (garbage can be large)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
