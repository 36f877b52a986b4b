"""Typesense's `filter_by` syntax, parsed into a small tree (no SQL here).

Supported, as Typesense writes it:

- `field:value` (a text field contains the value; other fields equal it), `field:=value`,
  `field:!=value`, `field:>n`, `field:>=n`, `field:<n`, `field:<=n`;
- lists `field:[a, b]` / `field:=[a, b]` (any of), `field:!=[a, b]` (none of), and ranges
  `field:[10..100]` (several ranges in one list are any of them);
- values in backticks when they hold commas, brackets or `&&`: ``name:=`Acme, Inc.` ``;
- `&&`, `||` and parentheses (`&&` binds tighter).

Everything is bounded: the text, the number of clauses, the values in a list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ledger.surface_errors import SearchQueryInvalidError

FILTER_LENGTH_MAX: Final = 4096
CLAUSES_MAX: Final = 64
LIST_VALUES_MAX: Final = 100
NESTING_MAX: Final = 8
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]{1,64})?")
_OPERATORS: Final = (
    ("!=", "ne"),
    (">=", "gte"),
    ("<=", "lte"),
    ("=", "eq"),
    (">", "gt"),
    ("<", "lt"),
)


@dataclass(frozen=True, slots=True)
class Clause:
    """One condition. `op` is match, eq, ne, gt, gte, lt, lte, in, not_in or range; `values`
    holds one value, the list, or the flattened (low, high) pairs of the ranges."""

    field: str
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Both:
    """Every part holds (`&&`)."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Either:
    """Some part holds (`||`)."""

    parts: tuple[Node, ...]


Node = Clause | Both | Either


def _invalid(message: str) -> SearchQueryInvalidError:
    return SearchQueryInvalidError(f"filter_by: {message}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.clauses = 0

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse_either(self, depth: int) -> Node:
        parts = [self.parse_both(depth)]
        while self.peek("||"):
            self.pos += 2
            parts.append(self.parse_both(depth))
        return parts[0] if len(parts) == 1 else Either(tuple(parts))

    def parse_both(self, depth: int) -> Node:
        parts = [self.parse_primary(depth)]
        while self.peek("&&"):
            self.pos += 2
            parts.append(self.parse_primary(depth))
        return parts[0] if len(parts) == 1 else Both(tuple(parts))

    def parse_primary(self, depth: int) -> Node:
        if self.peek("("):
            if depth >= NESTING_MAX:
                raise _invalid(f"parentheses nest at most {NESTING_MAX} deep")
            self.pos += 1
            node = self.parse_either(depth + 1)
            if not self.peek(")"):
                raise _invalid(f"missing ')' at {self.pos}")
            self.pos += 1
            return node
        return self.parse_clause()

    def parse_clause(self) -> Clause:
        self.clauses += 1
        if self.clauses > CLAUSES_MAX:
            raise _invalid(f"at most {CLAUSES_MAX} conditions")
        self.skip_space()
        match = _FIELD.match(self.text, self.pos)
        if match is None:
            raise _invalid(f"expected a field name at {self.pos}")
        field = match.group(0)
        self.pos = match.end()
        if not self.peek(":"):
            raise _invalid(f"expected ':' after {field}")
        self.pos += 1
        op = "match"
        self.skip_space()
        for symbol, name in _OPERATORS:
            if self.text.startswith(symbol, self.pos):
                op, self.pos = name, self.pos + len(symbol)
                break
        if self.peek("["):
            return self.parse_list(field, op)
        return Clause(field, op, (self.parse_value(stop=("&&", "||", ")")),))

    def parse_list(self, field: str, op: str) -> Clause:
        if op not in {"match", "eq", "ne"}:
            raise _invalid(f"a list cannot follow {op} on {field}")
        self.pos += 1
        items: list[str] = []
        quoted: list[bool] = []  # a backticked value is literal, even when it holds `..`
        while True:
            quoted.append(self.peek("`"))
            items.append(self.parse_value(stop=(",", "]")))
            if len(items) > LIST_VALUES_MAX:
                raise _invalid(f"a list holds at most {LIST_VALUES_MAX} values")
            self.skip_space()
            if self.text.startswith(",", self.pos):
                self.pos += 1
                continue
            if self.text.startswith("]", self.pos):
                self.pos += 1
                break
            raise _invalid(f"missing ']' after {field}")
        ranges = [
            item.split("..", 1)
            for item, is_quoted in zip(items, quoted, strict=True)
            if ".." in item and not is_quoted
        ]
        if ranges:
            if len(ranges) != len(items) or op == "ne":
                raise _invalid(f"mix of ranges and values on {field}")
            return Clause(field, "range", tuple(bound.strip() for pair in ranges for bound in pair))
        return Clause(field, "not_in" if op == "ne" else "in", tuple(items))

    def parse_value(self, *, stop: tuple[str, ...]) -> str:
        self.skip_space()
        if self.text.startswith("`", self.pos):
            end = self.text.find("`", self.pos + 1)
            if end < 0:
                raise _invalid("unclosed backtick")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        start = self.pos
        while self.pos < len(self.text) and not any(
            self.text.startswith(s, self.pos) for s in stop
        ):
            self.pos += 1
        value = self.text[start : self.pos].strip()
        if not value:
            raise _invalid(f"expected a value at {start}")
        return value


def parse_filter(text: str) -> Node | None:
    """The tree of a `filter_by` string (None when it is empty)."""
    if not text.strip():
        return None
    if len(text) > FILTER_LENGTH_MAX:
        raise _invalid(f"longer than {FILTER_LENGTH_MAX} characters")
    parser = _Parser(text)
    node = parser.parse_either(0)
    parser.skip_space()
    if parser.pos != len(text):
        raise _invalid(f"unexpected text at {parser.pos}: {text[parser.pos : parser.pos + 20]!r}")
    return node
