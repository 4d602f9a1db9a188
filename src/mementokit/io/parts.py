"""A source cut into parts that separate processes read on their own (no text crosses between processes).

`split_source` cuts a local source into `Part`s, in storage order: a JSONL file into byte ranges (a part
owns the lines that start inside its range), a parquet file into runs of row groups, and anything that
cannot be cut (JSON files, gzipped files) into one part per file. `part_items` reads one part and yields
exactly the `(row, path, line, sep)` items, and calls `on_bad` with exactly the errors, that the plain
readers (`mementokit.io.readers`) give for those rows; the one difference is that JSONL line numbers are
counted from the start of the part (`Part.first_line` is unknown until the parts before it are read), so
the caller adds the lines of the earlier parts of the file (`PartStats.lines`).

Sources that are read in a sampled order (shuffle, stratify), standard input, `save_to_disk` folders and
hub streams are not cut: `split_source` returns None and they keep the plain readers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mementokit.io.readers import (
    PARQUET_BATCH_ROWS,
    Item,
    OnBad,
    _file_items,
    _is_saved_dataset,
    _resolve,
    _Shard,
    decode_jsonl_line,
)
from mementokit.io.stats import UNREADABLE_FILE, RowError

PART_BYTES = 16 << 20  # a JSONL part: enough work to hide the scheduling, small enough to balance two cores


@dataclass(frozen=True)
class Part:
    """One piece of a source: a byte range of a JSONL file, some row groups of a parquet file, or a whole file."""

    shard: _Shard
    start: int = 0  # JSONL: the part owns the lines that start in [start, end)
    end: int | None = None
    row_groups: tuple[int, ...] | None = None  # parquet: None = every row group
    first_row: int = 0  # parquet: the file's row number of the first row of `row_groups`
    columns: tuple[str, ...] | None = None  # parquet: the columns to decode (None: all)

    @property
    def label(self) -> str:
        return self.shard.label


@dataclass
class PartStats:
    """What reading a part saw besides its rows: JSONL lines it owns (for numbering the next part)."""

    lines: int = 0


def split_source(
    source: str | Path,
    *,
    config: str = "default",
    split: str = "train",
    reader: str | None = None,
    columns_of: Any = None,
    part_bytes: int | None = None,
) -> list[Part] | None:
    """The parts of `source` in storage order, or None when it is not a local file or folder of data files.

    `columns_of(schema_names)` may return the parquet columns a caller needs (None: all). The source is
    resolved (and its errors raised) exactly as `iter_rows` does.
    """
    if str(source) == "-" or reader in ("disk", "hub"):
        return None
    path = Path(source)
    if not path.exists() or (path.is_dir() and reader is None and _is_saved_dataset(path)):
        return None  # a hub id or a save_to_disk folder: resolved (once) by the streaming readers
    plan = _resolve(source, config=config, split=split, reader=reader)
    if plan.kind in ("jsonl", "json", "parquet"):
        shards = [plan.target]
    elif plan.kind == "shards":
        shards = list(plan.target)
    else:
        return None
    parts: list[Part] = []
    for shard in shards:
        parts.extend(_parts_of(shard, columns_of, part_bytes or PART_BYTES))
    return parts


def _parts_of(shard: _Shard, columns_of: Any, part_bytes: int) -> list[Part]:
    gzipped = shard.path.name.lower().endswith(".gz")
    if shard.fmt == "jsonl" and not gzipped:
        try:
            size = shard.path.stat().st_size
        except OSError:
            return [Part(shard)]  # the reader reports it, as the plain reader would
        cuts = range(0, max(size, 1), part_bytes)
        return [Part(shard, start, start + part_bytes if start + part_bytes < size else None) for start in cuts]
    if shard.fmt == "parquet":
        return _parquet_parts(shard, columns_of, part_bytes)
    return [Part(shard)]


def _parquet_parts(shard: _Shard, columns_of: Any, part_bytes: int) -> list[Part]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(shard.path) as parquet:
            meta = parquet.metadata
            groups = [
                (meta.row_group(g).num_rows, meta.row_group(g).total_byte_size) for g in range(meta.num_row_groups)
            ]
            names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError):
        return [Part(shard)]  # unreadable: the reader says so, as the plain reader would
    columns = columns_of(names) if columns_of is not None else None
    columns = tuple(columns) if columns is not None else None
    parts: list[Part] = []
    run: list[int] = []
    first = run_first = run_bytes = 0
    for group, (rows, size) in enumerate(groups):
        if not run:
            run_first = first
        run.append(group)
        run_bytes += size
        first += rows
        if run_bytes >= part_bytes:
            parts.append(Part(shard, row_groups=tuple(run), first_row=run_first, columns=columns))
            run, run_bytes = [], 0
    if run or not parts:
        parts.append(Part(shard, row_groups=tuple(run), first_row=run_first, columns=columns))
    return parts


# ------------------------------------------------------------------------------------------ reading a part


def part_items(part: Part, on_bad: OnBad, stats: PartStats | None = None) -> Iterator[Item]:
    """The items of one part (JSONL lines numbered from 1 at the part's start; see the module docstring)."""
    shard = part.shard
    if shard.fmt == "jsonl" and not shard.path.name.lower().endswith(".gz"):
        return _jsonl_range_items(part, on_bad, stats if stats is not None else PartStats())
    if shard.fmt == "parquet" and part.row_groups is not None:
        return _parquet_part_items(part, on_bad)
    return _file_items(shard, on_bad)


def _range_bytes(part: Part) -> bytes:
    """The bytes of the lines that start in the part's range (the last one read to its end)."""
    with open(part.shard.path, "rb") as handle:
        if part.start > 0:
            handle.seek(part.start - 1)
            if handle.read(1) != b"\n":
                handle.readline()  # this line started in the part before
        begin = handle.tell()
        if part.end is not None and begin >= part.end:
            return b""
        data = handle.read() if part.end is None else handle.read(part.end - begin)
        if part.end is not None and data and not data.endswith(b"\n"):
            data += handle.readline()
        return data


def _jsonl_range_items(part: Part, on_bad: OnBad, stats: PartStats) -> Iterator[Item]:
    label = part.label
    try:
        data = _range_bytes(part)
    except OSError as exc:
        on_bad(RowError(UNREADABLE_FILE, f"cannot open: {exc.strerror or exc}", path=label))
        return
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # what follows the last newline: not a line
    stats.lines = len(lines)
    starts_file = part.start == 0
    for number, raw in enumerate(lines, 1):
        if not raw or raw.isspace():
            continue  # blank lines hold no data
        row = decode_jsonl_line(raw, label, number, on_bad, first=starts_file and number == 1)
        if row is not None:
            yield row, label, number, ":"


def _parquet_part_items(part: Part, on_bad: OnBad) -> Iterator[Item]:
    """Rows of some row groups, only the needed columns decoded, column by column (no row dicts from arrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = part.shard
    row = part.first_row
    try:
        with pq.ParquetFile(shard.path) as parquet:
            batches = parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS * 8,
                row_groups=list(part.row_groups),
                columns=part.columns,
                use_threads=False,
            )
            for batch in batches:
                names = batch.schema.names
                for values in zip(*(column.to_pylist() for column in batch.columns)):
                    yield dict(zip(names, values)), shard.label, row, "#"
                    row += 1
    except (pa.ArrowException, OSError) as exc:
        where = "unreadable parquet file" if row == 0 else f"parquet data unreadable from row {row} on"
        on_bad(RowError(UNREADABLE_FILE, f"{where}: {exc}", path=shard.label, line=row))


def full_parquet_row(part: Part, row: int) -> dict[str, Any]:
    """Every column of one row of a parquet file (for a row whose pruned columns were not enough)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(part.shard.path) as parquet:
        meta = parquet.metadata
        first = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if row < first + rows:
                return parquet.read_row_group(group).slice(row - first, 1).to_pylist()[0]
            first += rows
    raise IndexError(row)
