"""One trace record, taken by every consumer (analysis, KV simulation, replay, SFT).

`TraceRecord` is what `mementokit.io.iter_traces` yields. Consumers that also accept plain dicts (a
normalised pipeline row, a user's own list) or other objects turn them into one with `TraceRecord.of`,
instead of each carrying its own "dict or object" field lookup. `without_raw()` is the small, picklable
view for worker processes (the row as read can be large: the `full` config's sentence lists).

Dependency-free on purpose: it sits below io/, analysis/, kv/ and sft/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

UNKNOWN_DOMAIN = "unknown"


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One trace. `raw` is the row as read (all columns, e.g. `sentences` of the full config)."""

    problem: str | None
    response: str
    domain: str = UNKNOWN_DOMAIN
    source: str | None = None
    difficulty: Any = None
    origin: str = ""  # where it came from: "file:line" (JSON lines) or "file#row" (parquet, datasets)
    index: int = 0  # 0-based position in what the reader yielded
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, trace: Any, *, index: int = 0) -> TraceRecord:
        """A TraceRecord as is; a mapping by its keys (the mapping, and any `raw` mapping in it, become
        `raw`); any other object by its attributes. Nothing is checked (the readers check rows): missing
        fields are None and origin ""; `index` stands in when the trace has no integer index of its own."""
        if isinstance(trace, cls):
            return trace
        if isinstance(trace, Mapping):
            get = trace.get
            nested = get("raw")
            raw = {**nested, **trace} if isinstance(nested, Mapping) else dict(trace)
        else:

            def get(name: str, default: Any = None) -> Any:
                return getattr(trace, name, default)

            nested = get("raw")
            raw = dict(nested) if isinstance(nested, Mapping) else {}
        own_index = get("index")
        return cls(
            problem=get("problem"),
            response=get("response"),
            domain=get("domain"),
            source=get("source"),
            difficulty=get("difficulty"),
            origin=get("origin") or "",
            index=own_index if isinstance(own_index, int) else index,
            raw=raw,
        )

    def get(self, name: str, default: Any = None) -> Any:
        """A field when it is set, else a column of the row as read (e.g. `id`, `task_id`)."""
        if name in _FIELDS:
            value = getattr(self, name)
            if value is not None:
                return value
        return self.raw.get(name, default)

    def without_raw(self) -> TraceRecord:
        """The record without the row it was read from: small to send to a worker process."""
        return replace(self, raw={}) if self.raw else self


_FIELDS = frozenset(f.name for f in fields(TraceRecord)) - {"raw"}
