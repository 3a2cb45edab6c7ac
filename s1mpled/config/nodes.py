"""Reading YAML as a tree of line-marked nodes: every value comes with its file, line and key path.

A daemon started by systemd cannot ask what its operator meant, so every refusal names ``file:line:
key.path`` and why (``ConfigError``). To have a line for every key we do not let PyYAML construct Python
objects: ``yaml.compose()`` gives the node tree with marks, and the readers here build each value from its
node. That also lets us refuse what PyYAML silently accepts (a duplicated key keeps the last value) and
build money from the scalar's text: ``capital: 1000.10`` is ``Decimal("1000.10")``, never a float.

Hostile or broken input gets a refusal, never a hang or a traceback: a file is at most 1 MiB, YAML aliases
may expand to at most ``MAX_NODES`` nodes (a "billion laughs" document is refused at its first alias past
that) and nest at most ``MAX_DEPTH`` levels; integers have a stated range and their text is bounded before
it is converted. This module knows no section of the configuration: that is ``load``'s business.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from s1mpled.config.model import MAX_PARAM_INT, abbreviate, parse_decimal, parse_duration
from s1mpled.errors import ConfigError
from s1mpled.model import split_symbol

__all__ = [
    "ASSET_RE",
    "MAP_TAG",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "SEQ_TAG",
    "Doc",
    "YamlMap",
    "compose",
    "duration_at",
    "int_value",
    "is_null",
    "kind_of",
    "line_of",
    "read_boolean",
    "read_choice",
    "read_decimal",
    "read_duration",
    "read_file",
    "read_integer",
    "read_name",
    "read_param",
    "read_path",
    "read_str_list",
    "read_string",
    "read_symbol",
]

MAX_NODES = 10_000  # YAML nodes once aliases are expanded (the example config has about 150)
MAX_DEPTH = 64  # nesting of YAML collections
MAX_FILE_BYTES = 1 << 20
_MAX_INT_TEXT = 100  # an integer scalar longer than this is refused before it is converted at all
ASSET_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
_EXPONENT_RE = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][+-]?[0-9]+$")

_T = "tag:yaml.org,2002:"
MAP_TAG, SEQ_TAG, STR_TAG, INT_TAG = _T + "map", _T + "seq", _T + "str", _T + "int"
FLOAT_TAG, BOOL_TAG, NULL_TAG, TIMESTAMP_TAG = _T + "float", _T + "bool", _T + "null", _T + "timestamp"
_KIND = {STR_TAG: "a string", INT_TAG: "an integer", FLOAT_TAG: "a number", BOOL_TAG: "a boolean"}
_KIND |= {NULL_TAG: "null", TIMESTAMP_TAG: "a timestamp", MAP_TAG: "a mapping", SEQ_TAG: "a list"}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


# ------------------------------------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class Doc:
    """The file being read: every error names it; relative paths start from its directory."""

    file: str
    directory: Path

    def error(self, key: str, why: str, node: yaml.Node | None) -> ConfigError:
        return ConfigError(self.file, key or "(top level)", why, line_of(node))

    def path(self, text: str) -> Path:
        return self.directory / Path(text).expanduser()


def line_of(node: yaml.Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


def join_key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode) and node.tag != NULL_TAG:
        return f"{_KIND.get(node.tag, node.tag)} {abbreviate(node.value)}"
    return _KIND.get(node.tag, f"a node tagged {node.tag}")


def read_file(file: str) -> str:
    try:
        with Path(file).open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(file, "(file)", f"larger than {MAX_FILE_BYTES} bytes; not a configuration file")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "(file)", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror or exc}") from None


class _TooLarge(yaml.composer.ComposerError):
    """The document expands (through aliases) or nests beyond the limits."""


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts nodes as if every alias were expanded, and limits nesting.

    PyYAML shares an aliased node instead of copying it, so composing is cheap; it is every walk over the
    tree afterwards that a "billion laughs" document (each alias doubling or decupling the size) turns
    into an hour of work. Counting the expanded size while composing refuses such a document at the
    first alias that crosses MAX_NODES, in microseconds. An alias to a node still being composed (a
    recursive structure) is refused too.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its expanded size, once composed

    def _count(self, size: int, mark: yaml.Mark | None) -> None:
        self._expanded += size
        if self._expanded > MAX_NODES:
            why = f"the document expands to more than {MAX_NODES} YAML nodes (through aliases); refused"
            raise _TooLarge(None, None, why, mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            alias = super().compose_node(parent, index)
            size = None if alias is None else self._sizes.get(id(alias))
            if size is None:
                raise _TooLarge(None, None, "recursive YAML alias (a node that contains itself); refused", mark)
            self._count(size, mark)
            assert alias is not None
            return alias
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooLarge(None, None, f"nested deeper than {MAX_DEPTH} levels; refused", mark)
        start = self._expanded
        node = super().compose_node(parent, index)
        assert node is not None  # None only for an empty document, which never reaches here
        self._depth -= 1
        self._count(1, mark)
        self._sizes[id(node)] = self._expanded - start
        return node


def _syntax_line(text: str, mark: yaml.Mark | None) -> tuple[int | None, bool]:
    """The 1-based line of ``mark``, clamped to the file's last line; and whether only blanks follow it."""
    if mark is None:
        return None, False
    last = max(1, len(text.splitlines()))
    return min(mark.line + 1, last), not text[mark.index :].strip()


def compose(doc: Doc, text: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=_BoundedLoader)
    except _TooLarge as exc:
        line, _ = _syntax_line(text, exc.problem_mark)
        raise ConfigError(doc.file, "(document)", str(exc.problem), line) from None
    except yaml.MarkedYAMLError as exc:
        line, at_end = _syntax_line(text, exc.problem_mark or exc.context_mark)
        context_line, _ = _syntax_line(text, exc.context_mark)
        parts = [str(exc.context)] if exc.context else []
        if exc.context and exc.problem_mark is not None and context_line not in (None, line):
            parts.append(f"(from line {context_line})")
        parts += [str(exc.problem)] if exc.problem else []
        parts += ["at the end of the file"] if at_end else []
        raise ConfigError(doc.file, "(syntax)", f"invalid YAML: {' '.join(parts)}", line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(doc.file, "(syntax)", f"invalid YAML: {exc}") from None
    except RecursionError:  # not reached with MAX_DEPTH, kept as the last line of defence
        raise ConfigError(doc.file, "(document)", "nested too deeply; refused") from None
    if node is None:
        raise ConfigError(doc.file, "(document)", "the file is empty, expected a mapping of settings")
    return node


class YamlMap:
    """A YAML mapping with string keys, no duplicates and (if ``allowed`` is given) no unknown keys."""

    def __init__(
        self,
        doc: Doc,
        node: yaml.Node,
        path: str,
        allowed: tuple[str, ...] | None = None,
        key_node: yaml.Node | None = None,
    ) -> None:
        if not isinstance(node, yaml.MappingNode) or node.tag != MAP_TAG:
            raise doc.error(path, f"expected a mapping, got {kind_of(node)}", node)
        self.doc, self.node, self.path = doc, node, path
        self.anchor = node if key_node is None else key_node  # where "missing key" errors point
        self.keys: dict[str, yaml.Node] = {}
        self.values: dict[str, yaml.Node] = {}
        for name_node, value_node in node.value:
            self._add(name_node, value_node, allowed)

    def _add(self, key_node: yaml.Node, value_node: yaml.Node, allowed: tuple[str, ...] | None) -> None:
        if key_node.tag == _T + "merge":
            raise self.doc.error(join_key(self.path, "<<"), "YAML merge keys are not supported", key_node)
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != STR_TAG:
            raise self.doc.error(self.path, f"keys must be strings, got {kind_of(key_node)}", key_node)
        key = str(key_node.value)
        if key in self.keys:
            first = line_of(self.keys[key])
            raise self.doc.error(self.at(key), f"duplicate key (first defined on line {first})", key_node)
        if allowed is not None and key not in allowed:
            raise self.doc.error(self.at(key), f"unknown key, expected one of: {', '.join(allowed)}", key_node)
        self.keys[key], self.values[key] = key_node, value_node

    @classmethod
    def section(
        cls, doc: Doc, parent: YamlMap, key: str, allowed: tuple[str, ...] | None, optional: bool = False
    ) -> YamlMap:
        """The mapping under ``parent[key]``; an absent optional section reads as an empty mapping."""
        node = parent.get(key)
        if optional and (node is None or is_null(node)):  # `alerts:` with all of it commented out
            node = yaml.MappingNode(MAP_TAG, [], parent.node.start_mark, parent.node.end_mark)
        node = parent.require(key) if node is None else node
        return cls(doc, node, parent.at(key), allowed, parent.keys.get(key, parent.anchor))

    @classmethod
    def picking(cls, doc: Doc, node: yaml.Node, keys: tuple[str, ...]) -> YamlMap:
        """Only the entries ``keys`` of the top-level mapping ``node``, checked like any mapping's (one of
        them twice is refused); every other entry is left unread, whatever it holds.

        For a reader that needs a few settings of a file whose other parts may be broken: the control
        socket of a daemon whose strategy section an edit has just made invalid.
        """
        if not isinstance(node, yaml.MappingNode) or node.tag != MAP_TAG:
            raise doc.error("", f"expected a mapping, got {kind_of(node)}", node)
        picked = [(k, v) for k, v in node.value if _is_plain_key(k) and k.value in keys]
        return cls(doc, yaml.MappingNode(MAP_TAG, picked, node.start_mark, node.end_mark), "", keys)

    def at(self, key: str) -> str:
        return join_key(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str) -> yaml.Node | None:
        return self.values.get(key)

    def require(self, key: str) -> yaml.Node:
        if key not in self.values:
            raise self.doc.error(self.at(key), "required key is missing", self.anchor)
        return self.values[key]

    def items(self) -> Iterator[tuple[str, yaml.Node]]:
        return iter(self.values.items())


def _is_plain_key(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG


# ---------------------------------------------------------------------------------------- scalars


def scalar_node(doc: Doc, node: yaml.Node, key: str, tags: tuple[str, ...], expected: str) -> yaml.ScalarNode:
    """``node`` if it is a scalar whose resolved tag is one of ``tags``; else 'expected ..., got ...'."""
    if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
        raise doc.error(key, f"expected {expected}, got {kind_of(node)}", node)
    return node


def scalar_text(doc: Doc, node: yaml.Node, key: str, tags: tuple[str, ...], expected: str) -> str:
    return str(scalar_node(doc, node, key, tags, expected).value)


def is_null(node: yaml.Node | None) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG


def read_string(doc: Doc, node: yaml.Node, key: str) -> str:
    text = scalar_text(doc, node, key, (STR_TAG,), "a string")
    if not text.strip():
        raise doc.error(key, "expected a non-empty string", node)
    return text


def read_name(doc: Doc, node: yaml.Node, key: str, pattern: re.Pattern[str]) -> str:
    text = scalar_text(doc, node, key, (STR_TAG, INT_TAG), "a string")
    if not pattern.match(text):
        raise doc.error(key, f"expected a name matching {pattern.pattern}, got {text!r}", node)
    return text


def int_value(doc: Doc, node: yaml.ScalarNode, key: str, low: int, high: int) -> int:
    """The integer of an int-tagged scalar, in ``low..high`` (the text is checked before it is converted)."""
    expected = f"expected an integer from {low} to {high}"
    text = str(node.value)
    if len(text) > _MAX_INT_TEXT:
        raise doc.error(key, f"{expected}, got {len(text)} characters", node)
    value: int = _CONSTRUCTOR.construct_yaml_int(node)
    if not low <= value <= high:
        raise doc.error(key, f"{expected}, got {value}", node)
    return value


def read_integer(doc: Doc, node: yaml.Node, key: str, low: int, high: int) -> int:
    return int_value(doc, scalar_node(doc, node, key, (INT_TAG,), "an integer"), key, low, high)


def read_boolean(doc: Doc, node: yaml.Node, key: str) -> bool:
    text = scalar_text(doc, node, key, (BOOL_TAG,), "true or false")
    return bool(_CONSTRUCTOR.bool_values[text.lower()])


def read_decimal(
    doc: Doc, node: yaml.Node, key: str, low: Decimal, high: Decimal | None = None, *, strict: bool
) -> Decimal:
    """An amount from the scalar's text (quoted or not) in [low, high) -- or (low, high) when ``strict``."""
    bound = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and < {high}")
    expected = f"a decimal number {bound}"
    text = scalar_text(doc, node, key, (STR_TAG, INT_TAG, FLOAT_TAG), expected)
    try:
        value = parse_decimal(text, plain_number=node.tag != STR_TAG)
    except ValueError as exc:
        raise doc.error(key, f"expected {expected}, {exc}", node) from None
    if value < low or (strict and value == low) or (high is not None and value >= high):
        raise doc.error(key, f"expected {expected}, got {abbreviate(text, quote=False)}", node)
    return value


def read_duration(doc: Doc, node: yaml.Node, key: str) -> float:
    text = scalar_text(doc, node, key, (STR_TAG, INT_TAG, FLOAT_TAG), "a duration like 500ms, 1.5s, 5m or 1h")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise doc.error(key, str(exc), node) from None


def duration_at(doc: Doc, parent: YamlMap, key: str, default: str) -> float:
    node = parent.get(key)
    return parse_duration(default) if node is None else read_duration(doc, node, parent.at(key))


def read_choice(
    doc: Doc, parent: YamlMap, key: str, choices: tuple[str, ...], default: str, *, fold: bool = False
) -> str:
    node = parent.get(key)
    if node is None:
        return default
    text = scalar_text(doc, node, parent.at(key), (STR_TAG,), f"one of {', '.join(choices)}")
    if (text.lower() if fold else text) not in choices:
        raise doc.error(parent.at(key), f"expected one of {', '.join(choices)}, got {text!r}", node)
    return text.lower() if fold else text


def read_symbol(doc: Doc, node: yaml.Node, key: str) -> str:
    text = read_string(doc, node, key)
    try:
        base, quote = split_symbol(text)
    except ValueError:
        raise doc.error(key, f"expected a symbol like BTC/USDT, got {text!r}", node) from None
    if not (ASSET_RE.match(base) and ASSET_RE.match(quote)):
        raise doc.error(key, f"expected a symbol like BTC/USDT, got {text!r}", node)
    return text


def read_str_list(doc: Doc, parent: YamlMap, key: str) -> tuple[str, ...]:
    node = parent.get(key)
    if node is None or is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode) or node.tag != SEQ_TAG:
        raise doc.error(parent.at(key), f"expected a list of strings, got {kind_of(node)}", node)
    return tuple(read_string(doc, item, f"{parent.at(key)}[{i}]") for i, item in enumerate(node.value))


def read_path(doc: Doc, node: yaml.Node, key: str, must_exist: bool = False) -> Path:
    """A path (relative to the file's directory, ``~`` expanded). One the system cannot take -- a NUL, an
    unpaired surrogate (``"\\ud800"``), an unknown ``~user`` -- is refused here, not by a traceback later."""
    text = read_string(doc, node, key)
    if "\0" in text:
        raise doc.error(key, f"expected a path, got {abbreviate(text)} (a NUL character)", node)
    try:
        os.fsencode(text)
        path = doc.path(text)
    except UnicodeEncodeError:
        raise doc.error(key, f"expected a path, got {abbreviate(text)} (not encodable)", node) from None
    except RuntimeError:  # Path.expanduser: no such user, or no home directory
        raise doc.error(key, f"cannot expand {text.partition('/')[0]!r}: no home directory", node) from None
    if must_exist and not path.is_file():
        raise doc.error(key, f"no such file: {path}", node)
    return path


# ------------------------------------------------------------------------------------ strategy params


def read_param(doc: Doc, node: yaml.Node, key: str, active: set[int]) -> Any:
    """A strategy param: Decimal for numbers with '.' or an exponent, else what YAML means (dup-checked)."""
    if id(node) in active:
        raise doc.error(key, "recursive YAML alias", node)
    if isinstance(node, yaml.ScalarNode):
        return _param_scalar(doc, node, key)
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode) and node.tag == SEQ_TAG:
        return [read_param(doc, item, f"{key}[{i}]", active) for i, item in enumerate(node.value)]
    mapping = YamlMap(doc, node, key)
    return {name: read_param(doc, value, mapping.at(name), active) for name, value in mapping.items()}


def _param_scalar(doc: Doc, node: yaml.ScalarNode, key: str) -> Any:
    text = str(node.value)
    if node.tag == FLOAT_TAG or (node.tag == STR_TAG and node.style is None and _EXPONENT_RE.match(text)):
        try:
            return parse_decimal(text, plain_number=True)
        except ValueError as exc:
            raise doc.error(key, f"expected a finite decimal number, {exc}", node) from None
    if node.tag == INT_TAG:
        return int_value(doc, node, key, -MAX_PARAM_INT + 1, MAX_PARAM_INT - 1)
    if node.tag == BOOL_TAG:
        return read_boolean(doc, node, key)
    if node.tag == NULL_TAG:
        return None
    if node.tag in (STR_TAG, TIMESTAMP_TAG):
        return text
    raise doc.error(key, f"unsupported YAML tag {node.tag}", node)
