"""Which column of a row holds which part of a trace.

Data sets name the same thing differently: OpenMementos has `problem` / `response`, upstream pipelines use
`prompt` / `cot` / `full_cot`, microsoft/memento's generated traces say `problem_source`. A FieldMap lists,
for each of our names, the column names to try in order; the first one present wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from mementokit.errors import ConfigError

MISSING: Any = object()  # a field that is absent (None means present and null)


def lookup_field(data: Mapping[str, Any], name: str) -> Any:
    """`data[name]`, or for a dotted name like `conversations.1.value` the nested value; MISSING if absent.

    A key that itself contains dots is found first, so flat columns named `a.b` still work.
    """
    if name in data:
        return data[name]
    if "." not in name:
        return MISSING
    value: Any = data
    for part in name.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, Sequence) and not isinstance(value, str) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


@dataclass(frozen=True)
class FieldMap:
    """For each field of a TraceRecord, the column names to try in order (first present and not null wins)."""

    problem: tuple[str, ...] = ("problem", "prompt")
    response: tuple[str, ...] = ("response", "cot", "full_cot")
    domain: tuple[str, ...] = ("domain",)
    source: tuple[str, ...] = ("source", "problem_source")
    difficulty: tuple[str, ...] = ("difficulty",)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            names = (value,) if isinstance(value, str) else tuple(value)
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ConfigError(f"field map: '{f.name}' needs at least one column name, got {value!r}")
            object.__setattr__(self, f.name, names)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def with_overrides(self, overrides: Mapping[str, str | Sequence[str]] | Iterable[str]) -> FieldMap:
        """A copy where the given fields read from the given columns instead of the defaults.

        Accepts a mapping (`{"response": "cot"}`) or CLI-style strings (`["response=cot",
        "problem=prompt,question"]`, comma = several candidates in order).
        """
        if isinstance(overrides, Mapping):
            pairs = list(overrides.items())
        else:
            pairs = []
            for spec in overrides:
                name, sep, columns = str(spec).partition("=")
                if not sep or not name.strip() or not columns.strip():
                    raise ConfigError(f"field mapping '{spec}' should look like NAME=COLUMN, e.g. response=cot")
                pairs.append((name.strip(), [c.strip() for c in columns.split(",") if c.strip()]))
        changes: dict[str, tuple[str, ...]] = {}
        for name, columns in pairs:
            if name not in self.names():
                raise ConfigError(f"unknown field '{name}' in a field mapping; known: {', '.join(self.names())}")
            changes[name] = (columns,) if isinstance(columns, str) else tuple(columns)
        return replace(self, **changes)

    def find(self, data: Mapping[str, Any], name: str) -> tuple[str | None, Any]:
        """(column, value) of the first candidate column for `name` present and not null, else (None, MISSING)."""
        for column in getattr(self, name):
            value = lookup_field(data, column)
            if value is not MISSING and value is not None:
                return column, value
        return None, MISSING
