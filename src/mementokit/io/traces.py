"""Rows as traces: a problem, a Memento response string, and the labels analysis groups by.

`iter_traces` reads with `iter_rows` and maps columns through a FieldMap. Rows that carry no response
string but its parts (microsoft/memento's `segments`, or the OpenMementos `full` columns `sentences` +
`blocks` + `block_summaries`) get one from mementokit.format.builders.response_from_row.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

from mementokit.errors import InputError, MementoError
from mementokit.format.builders import response_from_row
from mementokit.io.fields import MISSING, FieldMap, lookup_field
from mementokit.io.readers import _check_limit, open_items
from mementokit.io.stats import BAD_STRUCTURE, MISSING_FIELD, WRONG_TYPE, ReadStats, RowError
from mementokit.records import UNKNOWN_DOMAIN, TraceRecord

# Columns from which a response can be built when there is no response column.
RESPONSE_PARTS = ("segments", "sentences", "blocks", "block_summaries")


def iter_traces(
    source: str | Path,
    *,
    field_map: FieldMap | None = None,
    config: str = "default",
    split: str = "train",
    limit: int | None = None,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 10_000,
    stratify_by: str | None = None,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    reader: str | None = None,
) -> Iterator[TraceRecord]:
    """Traces of `source` (any source `iter_rows` reads), lazily; the options are those of `iter_rows`.

    `limit` counts traces yielded (skipped rows do not count). `stratify_by` names a TraceRecord field
    ("domain", "source", ...), looked up through the field map (so a domain column called something else
    still works), or any other column name. A row without a response, or with a response that is not a
    string, raises InputError naming the file, line and field, or with `skip_bad` is counted in `stats`.
    """
    field_map = field_map or FieldMap()
    _check_limit(limit)
    warn_skips = stats is None
    stats = stats if stats is not None else ReadStats()
    items = open_items(
        source,
        config=config,
        split=split,
        shuffle_seed=shuffle_seed,
        shuffle_buffer=shuffle_buffer,
        stratify_key=_trace_key(stratify_by, field_map),
        skip_bad=skip_bad,
        stats=stats,
        reader=reader,
    )
    return _traces(items, field_map, limit, skip_bad, stats, warn_skips)


def record_from_row(
    data: dict[str, Any],
    field_map: FieldMap | None = None,
    *,
    path: str | None = None,
    line: int | None = None,
    origin: str = "",
    index: int = 0,
) -> TraceRecord:
    """One row as a TraceRecord, or RowError (an InputError) naming `path`, `line` and the field at fault."""
    field_map = field_map or FieldMap()
    response = _response(data, field_map, path, line)
    problem = _optional_str(data, field_map, "problem", path, line)
    domain = _optional_str(data, field_map, "domain", path, line)
    source = _optional_str(data, field_map, "source", path, line)
    column, difficulty = field_map.find(data, "difficulty")
    if isinstance(difficulty, (dict, list)):
        raise RowError(
            WRONG_TYPE,
            f"expected a number or a string, got {type(difficulty).__name__}",
            path=path,
            line=line,
            field=column,
        )
    return TraceRecord(
        problem=problem,
        response=response,
        domain=domain if domain is not None else UNKNOWN_DOMAIN,
        source=source,
        difficulty=None if difficulty is MISSING else difficulty,
        origin=origin,
        index=index,
        raw=data,
    )


# --------------------------------------------------------------------------------------------- internals


def _traces(
    items, field_map: FieldMap, limit: int | None, skip_bad: bool, stats: ReadStats, warn_skips: bool
) -> Iterator[TraceRecord]:
    index = 0
    try:
        if limit == 0:
            return
        for data, path, line, sep in items:
            try:
                trace = record_from_row(data, field_map, path=path, line=line, origin=f"{path}{sep}{line}", index=index)
            except RowError as error:
                if not skip_bad:
                    raise
                stats.record_skip(error)
                continue
            stats.rows_yielded += 1
            yield trace
            index += 1
            if limit is not None and index >= limit:
                return
    finally:
        items.close()
        if warn_skips and stats.rows_skipped:
            warnings.warn(f"skipped bad input: {stats.summary()}; first: {stats.examples[0]}", stacklevel=2)


def _trace_key(stratify_by: str | None, field_map: FieldMap) -> Callable[[dict[str, Any]], Hashable] | None:
    """The stratum of a row: a TraceRecord field through the field map, or else a column by name."""
    if stratify_by is None:
        return None
    missing = UNKNOWN_DOMAIN if stratify_by == "domain" else None

    def key(data: dict[str, Any]) -> Hashable:
        if stratify_by in FieldMap.names():
            value = field_map.find(data, stratify_by)[1]
        else:
            value = lookup_field(data, stratify_by)
        if value is MISSING or value is None:
            return missing
        return value if isinstance(value, Hashable) else repr(value)

    return key


def _optional_str(
    data: dict[str, Any], field_map: FieldMap, name: str, path: str | None, line: int | None
) -> str | None:
    column, value = field_map.find(data, name)
    if value is MISSING:
        return None
    if not isinstance(value, str):
        raise RowError(WRONG_TYPE, f"expected a string, got {type(value).__name__}", path=path, line=line, field=column)
    return value


def _response(data: dict[str, Any], field_map: FieldMap, path: str | None, line: int | None) -> str:
    column, value = field_map.find(data, "response")
    if value is not MISSING:
        if not isinstance(value, str):
            raise RowError(
                WRONG_TYPE, f"expected a string, got {type(value).__name__}", path=path, line=line, field=column
            )
        return value
    tried = ", ".join(field_map.response)
    if "segments" in data or ("sentences" in data and "blocks" in data):
        return _built_response(data, path, line)
    present = ", ".join(list(data)[:12]) + (", ..." if len(data) > 12 else "")
    raise RowError(
        MISSING_FIELD,
        f"missing field (tried {tried}; the row has {present or 'no fields'}; map one with --field response=COLUMN)",
        path=path,
        line=line,
        field=field_map.response[0],
    )


def _built_response(data: dict[str, Any], path: str | None, line: int | None) -> str:
    """The response built from segments / full-config columns by mementokit.format.builders."""
    parts = "segments" if "segments" in data else "sentences + blocks"
    try:
        response = response_from_row(data)
    except InputError as error:
        raise RowError(
            BAD_STRUCTURE,
            f"cannot build a response from {parts}: {error.reason}",
            path=path,
            line=line,
            field=error.field,
        ) from error
    except (MementoError, ValueError, TypeError) as error:
        raise RowError(
            BAD_STRUCTURE,
            f"cannot build a response from {parts}: {error}",
            path=path,
            line=line,
            field=parts.split()[0],
        ) from error
    if not isinstance(response, str):
        raise RowError(
            WRONG_TYPE,
            f"the response built from {parts} is {type(response).__name__}, not a string",
            path=path,
            line=line,
            field="response",
        )
    return response
