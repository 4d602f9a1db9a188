"""`analyze_source`: the analysis of a file or folder where each worker reads its own part of the input.

A worker reads a byte range of a JSONL file (or some row groups of a parquet file, or one whole JSON or
gzipped file), decodes, parses and measures it there, and sends back only numbers (and the short domain
and source labels). The main process merges the parts in storage order, numbers the traces and lines,
and replays the bad rows where they stood, so the report is the one the streaming path
(`iter_traces` -> `analyze_traces`) gives on every field, `limit`, `skip_bad` and `strict` included.

Shuffled or stratified reads, standard input, `save_to_disk` folders and hub streams keep the streaming
path (their order comes from sampling buffers, not from storage).
"""

from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mementokit.analysis import analyze as _analyze
from mementokit.analysis import cscan
from mementokit.analysis.analyze import AnalysisReport, _Columns, _init_worker, _report, analyze_traces, worker_pool
from mementokit.analysis.stats import ChunkResult, measure_chunk
from mementokit.errors import ConfigError, InputError
from mementokit.format.markers import DEFAULT_MARKERS, Markers
from mementokit.format.trace import parse_response
from mementokit.io.fields import FieldMap
from mementokit.io.parts import Part, PartStats, full_parquet_row, part_items, split_source
from mementokit.io.readers import JSON_DECODER
from mementokit.io.stats import FILE_LEVEL_KINDS, ReadStats, RowError
from mementokit.io.traces import RESPONSE_PARTS, iter_traces, record_from_row
from mementokit.records import TraceRecord

# What a worker sends back for a bad row: (traces before it in the part, kind, reason, path, line, field).
ErrorEvent = tuple[int, str, str, "str | None", "int | None", "str | None"]


@dataclass
class PartResult:
    """The measurements of one part, in its storage order, and the rows it could not use."""

    lines: array = field(default_factory=lambda: array("q"))  # line (JSONL, part-local) or row number of each trace
    label: str = ""
    sep: str = ":"
    chunks: list[ChunkResult] = field(default_factory=list)
    errors: list[ErrorEvent] = field(default_factory=list)
    invalid_issue: dict[int, str] = field(default_factory=dict)  # strict: the first issue of each invalid trace
    part_lines: int = 0  # JSONL: lines that start in the part (numbering of the next part)


def analyze_source(
    source: str | Path,
    *,
    config: str = "default",
    split: str = "train",
    limit: int | None = None,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 1_000,
    stratify: bool = False,
    field_map: FieldMap | None = None,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    reader: str | None = None,
    tokenizer: str | None = None,
    markers: Markers = DEFAULT_MARKERS,
    keep_last: int = 1,
    strict: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    parallel_read: bool = True,
    part_bytes: int | None = None,
) -> AnalysisReport:
    """Measure every trace of `source` (a file, folder or hub id, as `iter_traces` reads).

    The reading options are those of `iter_traces`, the measuring options those of `analyze_traces`.
    `parallel_read=False` forces the streaming path (the main process reads, workers measure); `part_bytes`
    sets the size of a part (default `mementokit.io.parts.PART_BYTES`). Bad rows
    are counted in `stats` and in the report's `skipped` / `skipped_reasons`.
    """
    field_map = field_map or FieldMap()
    stats = stats if stats is not None else ReadStats()
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer, got {limit!r}")
    if keep_last < 0:
        raise ConfigError(f"keep_last must be >= 0, got {keep_last}")
    parts = None
    if parallel_read and shuffle_seed is None and not stratify:
        parts = split_source(
            source, config=config, split=split, reader=reader, columns_of=_columns_for(field_map), part_bytes=part_bytes
        )
    options = dict(
        tokenizer=tokenizer, markers=markers, keep_last=keep_last, strict=strict, workers=workers, progress=progress
    )
    if parts is None:
        records = iter_traces(
            source,
            config=config,
            split=split,
            limit=limit,
            shuffle_seed=shuffle_seed,
            shuffle_buffer=shuffle_buffer,
            stratify_by="domain" if stratify else None,
            field_map=field_map,
            skip_bad=skip_bad,
            stats=stats,
            reader=reader,
        )
        report = analyze_traces(records, **options)
        report.reader = f"streamed: the main process reads and decodes (json), workers parse and measure; {_parser()}"
    else:
        report = _analyze_parts(parts, field_map=field_map, limit=limit, skip_bad=skip_bad, stats=stats, **options)
        kinds = sorted({p.shard.fmt for p in parts})
        report.reader = (
            f"parallel: {len(parts)} part(s) ({', '.join(kinds)}), each worker reads, decodes ({JSON_DECODER}), "
            f"parses and measures its own; {_parser()}"
        )
    report.skipped = stats.rows_skipped
    report.skipped_reasons = dict(stats.skipped_by_kind)
    return report


def _parser() -> str:
    if cscan.available():
        return "parse: compiled scanner (the Python parser for traces it does not take)"
    return "parse: Python parser (no compiled scanner: no C compiler, or MEMENTOKIT_NO_CSCAN set)"


def _columns_for(field_map: FieldMap) -> Callable[[list[str]], tuple[str, ...] | None]:
    """The parquet columns the field map can read (all of them when the response column is not there)."""

    def columns_of(names: list[str]) -> tuple[str, ...] | None:
        present = set(names)

        def roots(candidates: tuple[str, ...]) -> set[str]:
            return {c for c in candidates if c in present} | {c.split(".", 1)[0] for c in candidates} & present

        if not roots(field_map.response):
            return None  # a response built from its parts, or an error listing every column: read them all
        wanted = set().union(*(roots(getattr(field_map, name)) for name in FieldMap.names()))
        wanted |= present & set(RESPONSE_PARTS)
        return tuple(n for n in names if n in wanted)

    return columns_of


# ------------------------------------------------------------------------------------------ worker side


def _measure_part(
    part: Part, field_map: FieldMap, skip_bad: bool, max_traces: int | None, chunk_size: int
) -> PartResult:
    """Read, decode, parse and measure one part (in a worker, or in the main process with one worker)."""
    options = _analyze._worker_options
    result = PartResult(label=part.label, sep="#" if part.shard.fmt == "parquet" else ":")
    stop = False

    def on_bad(error: RowError) -> None:
        nonlocal stop
        result.errors.append((len(result.lines), error.kind, error.reason, error.path, error.line, error.field))
        stop = not skip_bad  # the main process raises at the first error it reaches: nothing after it counts

    part_stats = PartStats()
    pending: list[TraceRecord] = []
    items = part_items(part, on_bad, part_stats)
    try:
        for data, path, line, _sep in items:
            try:
                record = _record(part, data, field_map, path, line)
            except RowError as error:
                on_bad(error)
            else:
                result.lines.append(line)
                pending.append(record.without_raw())
                if len(pending) >= chunk_size:
                    _measure(pending, result, options)
            if stop or (max_traces is not None and len(result.lines) >= max_traces):
                break
    finally:
        items.close()
    _measure(pending, result, options)
    result.part_lines = part_stats.lines
    return result


def _record(part: Part, data: dict[str, Any], field_map: FieldMap, path: str, line: int):
    try:
        return record_from_row(data, field_map, path=path, line=line)
    except RowError:
        if part.columns is None:
            raise
    # Some columns were not decoded (parquet): the row as the plain reader sees it decides.
    return record_from_row(full_parquet_row(part, line), field_map, path=path, line=line)


def _measure(pending: list[TraceRecord], result: PartResult, options: dict[str, Any]) -> None:
    if not pending:
        return
    first = sum(len(c.meta["valid"]) for c in result.chunks)
    chunk = measure_chunk(
        pending, _analyze._worker_tokenizer, markers=options["markers"], keep_last=options["keep_last"]
    )
    if options["strict"]:
        for i, valid in enumerate(chunk.meta["valid"]):
            if not valid:
                result.invalid_issue[first + i] = str(parse_response(pending[i].response, options["markers"]).issues[0])
    chunk.meta = {k: v for k, v in chunk.meta.items() if k not in ("index", "origin")}  # numbered by the main process
    result.chunks.append(chunk)
    pending.clear()


# -------------------------------------------------------------------------------------------- main side


def _analyze_parts(
    parts: list[Part],
    *,
    field_map: FieldMap,
    limit: int | None,
    skip_bad: bool,
    stats: ReadStats,
    tokenizer: str | None,
    markers: Markers,
    keep_last: int,
    strict: bool,
    workers: int | None,
    progress: Callable[[int], None] | None,
    chunk_size: int = 64,
) -> AnalysisReport:
    workers = workers or os.cpu_count() or 1
    init_args = (tokenizer, markers, keep_last, strict)
    if tokenizer is not None:
        from mementokit.analysis.tokens import load_counting_tokenizer

        load_counting_tokenizer(tokenizer, markers)  # fail here, clearly, before any work or worker starts
    merger = _Merger(limit, skip_bad, stats, progress)
    task = (field_map, skip_bad, limit, chunk_size)
    if limit == 0:
        return _report(merger.columns, tokenizer)
    if workers <= 1:
        _init_worker(*init_args)
        for part in parts:
            if not merger.take(part, _measure_part(part, *task)):
                break
        return _report(merger.columns, tokenizer)
    pending: Iterator[Part] = iter(parts)
    in_flight: deque = deque()
    with worker_pool(workers, init_args) as pool:

        def submit() -> None:
            part = next(pending, None)
            if part is not None:
                in_flight.append((part, pool.apply_async(_measure_part, (part, *task))))

        for _ in range(2 * workers):  # bounded: at most two parts per worker in flight
            submit()
        while in_flight:
            part, result = in_flight.popleft()
            if not merger.take(part, result.get()):
                break
            submit()
    return _report(merger.columns, tokenizer)


class _Merger:
    """Takes part results in storage order: numbers traces and lines, replays bad rows, stops at the limit."""

    def __init__(self, limit: int | None, skip_bad: bool, stats: ReadStats, progress: Callable[[int], None] | None):
        self.limit = limit
        self.skip_bad = skip_bad
        self.stats = stats
        self.progress = progress
        self.columns = _Columns()
        self.index = 0  # traces taken so far
        self.shard_label: str | None = None
        self.line_offset = 0  # JSONL: lines of the earlier parts of the same file

    def take(self, part: Part, result: PartResult) -> bool:
        """Add one part's results; False once the limit is reached (nothing more to read)."""
        if part.shard.label != self.shard_label:
            self.shard_label, self.line_offset = part.shard.label, 0
        offset = self.line_offset if part.shard.fmt == "jsonl" else 0
        self.line_offset += result.part_lines
        stats = self.stats
        errors = deque(result.errors)
        n = len(result.lines)
        keep = n if self.limit is None else min(n, self.limit - self.index)
        reached = self.limit is not None and self.index + keep >= self.limit
        for seq in range(keep + 1):
            if seq == keep and reached:
                break  # the read stops at the limit: rows after the last trace taken are never seen
            while errors and errors[0][0] == seq:
                self._bad(errors.popleft(), offset)
            if seq == keep:
                break
            stats.rows_read += 1
            stats.rows_yielded += 1
            if seq in result.invalid_issue:
                origin = f"{result.label}{result.sep}{result.lines[seq] + offset}"
                raise InputError(f"invalid trace: {result.invalid_issue[seq]}", path=origin, field="response")
        self._add(result, keep, offset)
        if self.progress is not None and keep:
            self.progress(keep)
        return not reached

    def _bad(self, event: ErrorEvent, offset: int) -> None:
        _, kind, reason, path, line, column = event
        if kind not in FILE_LEVEL_KINDS:
            self.stats.rows_read += 1
        error = RowError(kind, reason, path=path, line=None if line is None else line + offset, field=column)
        if not self.skip_bad:
            raise error
        self.stats.record_skip(error)

    def _add(self, result: PartResult, keep: int, offset: int) -> None:
        lines = result.lines
        taken = 0
        for chunk in result.chunks:
            n = len(chunk.meta["valid"])
            use = min(n, keep - taken)
            if use <= 0:
                break
            if use < n:
                chunk = _head(chunk, use)
            chunk.meta["index"] = list(range(self.index, self.index + use))
            chunk.meta["origin"] = [f"{result.label}{result.sep}{line + offset}" for line in lines[taken : taken + use]]
            self.columns.add(chunk)
            self.index += use
            taken += use


def _head(chunk: ChunkResult, n: int) -> ChunkResult:
    """The first n traces of a chunk (and their pairs)."""
    n_pairs = int(sum(chunk.rows["mementos"][:n]))
    return ChunkResult(
        meta={k: v[:n] for k, v in chunk.meta.items()},
        rows={k: v[:n] for k, v in chunk.rows.items()},
        pairs={k: v[:n_pairs] for k, v in chunk.pairs.items()},
        pair_domain=chunk.pair_domain[:n_pairs],
    )
