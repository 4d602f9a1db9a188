"""Stream rows from wherever the data is, one row at a time, in constant memory.

One entry point, `iter_rows(source)`, picks the reader from what `source` is:

- an existing file, by suffix: `.jsonl` / `.jsonl.gz` / `.ndjson` (one object per line), `.json` /
  `.json.gz` (a list of rows, or one object = one row), `.parquet` (read in small batches);
  `-` reads JSON lines from standard input;
- an existing directory, by layout: a `datasets` `save_to_disk` folder (`dataset_info.json` +
  `state.json`, or `dataset_dict.json` for a DatasetDict, where `split` picks the split); a folder in the
  Hugging Face hub layout (`README.md` with a `configs:` section, or `data/train-*.parquet` for config
  `default` and `full/train-*.parquet` for config `full`); or a plain folder of data files (shards);
- anything else that looks like a hub id `owner/name` (e.g. `microsoft/OpenMementos`): streamed with
  `datasets.load_dataset(name, name=config, split=split, streaming=True)`.

Sampling. A plain `limit` takes rows in storage order, and OpenMementos stores one domain per shard, so
the first 500 rows of the hub stream are all one domain. `shuffle_seed` gives a seeded shuffle that
mixes shards: on the hub path it is `IterableDataset.shuffle(seed, buffer_size)`, which shuffles the
shard order and fills its buffer from several shards; on local shard folders (and parquet row groups) we
do the same ourselves; a `save_to_disk` folder is random access, so it gets an exact permutation.
`stratify_by` (a column name, e.g. "domain") interleaves rows by that column, in bounded memory, so
that the first rows out cover every domain (see mementokit.io.sampling).

Bad input raises mementokit.errors.InputError (a RowError) naming the file, the line (1-based for JSON
and JSONL) or row (0-based for parquet, datasets and hub streams) and the field; with `skip_bad=True`
the row is skipped and counted in `stats` instead.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
import warnings
import zlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from mementokit.errors import ConfigError, InputError
from mementokit.io.fields import MISSING, lookup_field
from mementokit.io.sampling import MAX_OPEN_SHARDS, buffered_shuffle, interleave_shards, round_robin, stratify
from mementokit.io.stats import (
    BAD_ENCODING,
    FILE_LEVEL_KINDS,
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    UNREADABLE_FILE,
    ReadStats,
    RowError,
)

READERS = ("jsonl", "json", "parquet", "disk", "shards", "hub")

# File name endings and the reader for each, longest first so that ".jsonl.gz" wins over ".gz".
FILE_SUFFIXES = (
    (".jsonl.gz", "jsonl"),
    (".ndjson.gz", "jsonl"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json.gz", "json"),
    (".json", "json"),
    (".parquet", "parquet"),
)
KNOWN_SPLITS = ("train", "test", "validation", "valid", "dev", "eval")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
PARQUET_BATCH_ROWS = 128  # rows decoded at a time per open parquet file (x MAX_OPEN_SHARDS when interleaving)
DISK_BATCH_ROWS = 256
JSON_CHUNK_CHARS = 1 << 18  # read window; grows (doubling) only for a row larger than it

try:  # a faster JSON decoder for JSON lines when installed (see decode_jsonl_line)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - a dependency, but nothing needs it
    _fast_loads = None
JSON_DECODER = "orjson" if _fast_loads is not None else "json"
_LONG_NUMBER = re.compile(rb"\d{19}")

# What every reader yields: (row, path or label, line or row number, ":" for lines / "#" for row numbers).
Item = tuple[dict[str, Any], str, int, str]
OnBad = Callable[[RowError], None]


@dataclass(frozen=True, slots=True)
class Row:
    """One row as read: the decoded object, where it came from, and its position in this read.

    `origin` is `path:line` for JSON / JSONL (1-based line), `path#row` for parquet, `save_to_disk` folders
    and hub streams (0-based row; on a shuffled hub stream, the position in the order the stream delivered).
    `index` is the 0-based position of the row in what `iter_rows` yielded. `path` and `line` are the two
    halves of `origin`, for error messages.
    """

    data: dict[str, Any]
    origin: str
    index: int
    path: str | None = None
    line: int | None = None


# ----------------------------------------------------------------------------------------------- public API


def iter_rows(
    source: str | Path,
    *,
    config: str = "default",
    split: str = "train",
    limit: int | None = None,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 10_000,
    stratify_by: str | Callable[[dict[str, Any]], Hashable] | None = None,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    reader: str | None = None,
) -> Iterator[Row]:
    """Rows of `source` (file, folder or hub id; see the module docstring), lazily.

    - `config` / `split`: which part of a hub data set, hub-layout folder or DatasetDict to read (a single
      file is one split of one config; they are ignored there).
    - `limit`: stop after this many rows (nothing beyond the sampling buffers is read).
    - `shuffle_seed`: a reproducible shuffle in bounded memory (`shuffle_buffer` rows); why it matters: a
      plain limit reads the first shard only, which is one domain.
    - `stratify_by`: a column name (or a function of the row) to interleave by, e.g. "domain".
    - `skip_bad`: skip bad rows and count them in `stats` instead of raising InputError.
    - `reader`: force a reader (one of READERS) instead of guessing from the source.

    The source is checked now (missing file -> InputError "no such file"); rows are read as you iterate.
    """
    warn_skips = stats is None  # skipping with no stats object to look at must still not be silent
    stats = stats if stats is not None else ReadStats()
    key = _stratify_key(stratify_by)
    _check_limit(limit)
    items = open_items(
        source,
        config=config,
        split=split,
        shuffle_seed=shuffle_seed,
        shuffle_buffer=shuffle_buffer,
        stratify_key=key,
        skip_bad=skip_bad,
        stats=stats,
        reader=reader,
    )
    return _numbered_rows(items, limit, stats, warn_skips=warn_skips)


def open_items(
    source: str | Path,
    *,
    config: str = "default",
    split: str = "train",
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 10_000,
    stratify_key: Callable[[dict[str, Any]], Hashable] | None = None,
    skip_bad: bool = False,
    stats: ReadStats,
    reader: str | None = None,
) -> Iterator[Item]:
    """The sampled stream of (row, path, line, sep) items behind `iter_rows` (no limit, no numbering).

    For other readers in this package (iter_traces) that need their own limit and counting.
    """
    if shuffle_buffer < 1:
        raise ConfigError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}")
    on_bad = _BadInputHandler(skip_bad, stats)
    rng = random.Random(shuffle_seed) if shuffle_seed is not None else None
    plan = _resolve(source, config=config, split=split, reader=reader)
    opened = plan.open(
        seed=shuffle_seed, rng=rng, shuffle_buffer=shuffle_buffer, interleave=stratify_key is not None, on_bad=on_bad
    )
    items = _counted(opened, stats)
    if rng is not None and plan.needs_buffer_shuffle:
        items = buffered_shuffle(items, shuffle_buffer, rng)
    if stratify_key is not None:
        items = stratify(items, lambda item: stratify_key(item[0]), shuffle_buffer)
    return items


def open_hub_stream(name: str, *, config: str = "default", split: str = "train"):
    """`datasets.load_dataset(name, name=config, split=split, streaming=True)`, errors as InputError.

    `name` is a hub id, or a local folder in the hub layout (a README.md with a `configs:` section), which
    goes through the same `datasets` code as the real hub repository.
    """
    import datasets

    try:
        return datasets.load_dataset(str(name), name=config, split=split, streaming=True)
    except Exception as exc:  # datasets raises many kinds (not found, offline, bad config): one clear line
        hint = "" if Path(str(name)).exists() else " (it is not a local file or folder either)"
        raise InputError(
            f"cannot open the dataset (config '{config}', split '{split}'){hint}: {type(exc).__name__}: {exc}",
            path=str(name),
        ) from exc


# ------------------------------------------------------------------------------------------- plumbing


class _BadInputHandler:
    """Raise a bad row's error, or (skip_bad) count it: the one place that decides."""

    def __init__(self, skip_bad: bool, stats: ReadStats):
        self.skip_bad = skip_bad
        self.stats = stats

    def __call__(self, error: RowError) -> None:
        if error.kind not in FILE_LEVEL_KINDS:
            self.stats.rows_read += 1
        if not self.skip_bad:
            raise error
        self.stats.record_skip(error)


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer, got {limit!r}")


def _stratify_key(stratify_by: str | Callable[[dict[str, Any]], Hashable] | None):
    if stratify_by is None or callable(stratify_by):
        return stratify_by

    def key(data: dict[str, Any]) -> Hashable:
        value = lookup_field(data, stratify_by)
        if value is MISSING:
            return None
        return value if isinstance(value, Hashable) else json.dumps(value, sort_keys=True, default=str)

    return key


def _counted(items: Iterator[Item], stats: ReadStats) -> Iterator[Item]:
    try:
        for item in items:
            stats.rows_read += 1
            yield item
    finally:
        items.close()


def _numbered_rows(items: Iterator[Item], limit: int | None, stats: ReadStats, *, warn_skips: bool) -> Iterator[Row]:
    try:
        for index, (data, path, line, sep) in enumerate(islice(items, limit)):
            stats.rows_yielded += 1
            yield Row(data, f"{path}{sep}{line}", index, path, line)
    finally:
        items.close()
        if warn_skips and stats.rows_skipped:
            warnings.warn(f"skipped bad input: {stats.summary()}; first: {stats.examples[0]}", stacklevel=2)


# ------------------------------------------------------------------------------------- what the source is


@dataclass(frozen=True)
class _Plan:
    """A resolved source: which reader, on what; `open` starts reading."""

    kind: str  # one of READERS
    target: Any  # Path, list of shard Paths, a datasets object, ...
    label: str
    needs_buffer_shuffle: bool = True

    def open(
        self, *, seed: int | None, rng: random.Random | None, shuffle_buffer: int, interleave: bool, on_bad: OnBad
    ) -> Iterator[Item]:
        if self.kind in ("jsonl", "json", "parquet"):
            return _shard_items([self.target], rng=rng, interleave=False, on_bad=on_bad)
        if self.kind == "shards":
            return _shard_items(self.target, rng=rng, interleave=interleave or rng is not None, on_bad=on_bad)
        if self.kind == "disk":
            return _disk_items(self.target, self.label, rng=rng, interleave=interleave)
        if self.kind == "hub":
            return _hub_items(
                self.target, self.label, seed=seed, shuffle_buffer=shuffle_buffer, interleave=interleave, on_bad=on_bad
            )
        raise AssertionError(self.kind)


@dataclass(frozen=True)
class _Shard:
    """A file to read, or some row groups of a parquet file (the unit that shuffling reorders)."""

    path: Path
    fmt: str  # jsonl | json | parquet
    label: str
    row_groups: tuple[int, ...] | None = None
    first_row: int = 0  # row number of the first row of `row_groups` within the file


def file_format(path: str | Path) -> str | None:
    """The reader for a file name by its ending (jsonl / json / parquet), or None if not a data file."""
    name = Path(path).name.lower()
    for suffix, fmt in FILE_SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


def looks_like_hub_id(source: str) -> bool:
    """`owner/name` with no data-file ending: what `load_dataset` would look up on the hub."""
    return bool(HUB_ID.match(source)) and file_format(source) is None


def _resolve(source: str | Path, *, config: str, split: str, reader: str | None) -> _Plan:
    if reader is not None and reader not in READERS:
        raise ConfigError(f"unknown reader '{reader}'; choose one of {', '.join(READERS)}")
    text = str(source)
    if text == "-":
        if reader not in (None, "jsonl"):
            raise ConfigError("standard input ('-') is read as JSON lines only")
        return _Plan("jsonl", _Shard(Path("-"), "jsonl", "<stdin>"), "<stdin>")
    if reader == "hub":
        return _Plan("hub", open_hub_stream(text, config=config, split=split), _hub_label(text, config, split), False)
    path = Path(text)
    if path.is_file():
        fmt = reader or file_format(path)
        if fmt not in ("jsonl", "json", "parquet"):
            if reader is not None:
                raise ConfigError(f"reader '{reader}' reads folders, but {text} is a file")
            raise InputError(
                "unsupported file type (expected .jsonl, .jsonl.gz, .json, .parquet, or a folder)", path=text
            )
        return _Plan(fmt, _Shard(path, fmt, text), text)
    if path.is_dir():
        if reader in ("jsonl", "json", "parquet"):
            raise ConfigError(f"reader '{reader}' reads files, but {text} is a folder")
        if reader == "disk" or (reader is None and _is_saved_dataset(path)):
            dataset, label = _load_saved_dataset(path, text, split)
            return _Plan("disk", dataset, label, False)
        return _Plan("shards", _shards_of_folder(path, text, config=config, split=split), text)
    if path.exists():
        raise InputError("not a regular file or folder", path=text)
    if reader is None and looks_like_hub_id(text):
        return _Plan("hub", open_hub_stream(text, config=config, split=split), _hub_label(text, config, split), False)
    raise InputError("no such file", path=text)


def _hub_label(name: str, config: str, split: str) -> str:
    return f"{name}[{split}]" if config == "default" else f"{name}[{config}:{split}]"


# ----------------------------------------------------------------------------------- folders of shards


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()
    )


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and file_format(p) is not None)


def _split_of(path: Path) -> str | None:
    """The split a hub-style file name names (`train-00000-of-00020.parquet` -> train), if any."""
    first = re.split(r"[-_.]", path.name, maxsplit=1)[0].lower()
    return first if first in KNOWN_SPLITS else None


def _files_for_split(files: list[Path], split: str, where: str) -> list[Path]:
    named = {f: _split_of(f) for f in files}
    if not any(named.values()):
        # No split in the file names: like the hub, everything is the train split.
        if split == "train":
            return files
        raise InputError(f"no split '{split}': the file names name no split, so all of them are 'train'", path=where)
    chosen = [f for f in files if named[f] == split]
    if not chosen:
        found = sorted({s for s in named.values() if s})
        raise InputError(f"no files for split '{split}'; splits found: {', '.join(found)}", path=where)
    return chosen


def _readme_configs(folder: Path) -> dict[str, dict[str, list[str]]] | None:
    """`configs:` of a hub README's YAML header as {config: {split: [glob, ...]}}, or None if there is none."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", text, re.DOTALL)
    if not match:
        return None
    try:
        import yaml  # a dependency of datasets

        header = yaml.safe_load(match.group(1)) or {}
    except ImportError:
        return None
    except Exception as exc:  # yaml.YAMLError and friends
        raise InputError(f"README.md has a YAML header that does not parse: {exc}", path=str(readme)) from exc
    entries = header.get("configs") if isinstance(header, dict) else None
    if not isinstance(entries, list):
        return None
    configs: dict[str, dict[str, list[str]]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("config_name", "default"))
        data_files = entry.get("data_files", [])
        splits: dict[str, list[str]] = {}
        if isinstance(data_files, str):  # a bare pattern means the train split, as in datasets
            data_files = [{"split": "train", "path": data_files}]
        for spec in data_files if isinstance(data_files, list) else []:
            if isinstance(spec, str):
                spec = {"split": "train", "path": spec}
            patterns = spec.get("path", [])
            splits.setdefault(str(spec.get("split", "train")), []).extend(
                [patterns] if isinstance(patterns, str) else list(patterns)
            )
        configs[name] = splits
        if entry.get("default") and "default" not in configs:
            configs.setdefault("default", splits)
    return configs


def _shards_of_folder(folder: Path, label: str, *, config: str, split: str) -> list[_Shard]:
    """The files of one config and split of a folder, in storage order (sorted names)."""
    configs = _readme_configs(folder)
    if configs:
        where = str(Path(label) / "README.md")
        if config not in configs:
            raise InputError(f"no config '{config}'; configs: {', '.join(configs)}", path=where, field="configs")
        if split not in configs[config]:
            raise InputError(
                f"config '{config}' has no split '{split}'; splits: {', '.join(configs[config])}",
                path=where,
                field="configs",
            )
        files = sorted(
            {p for pattern in configs[config][split] for p in folder.glob(pattern) if p.is_file() and file_format(p)}
        )
        if not files:
            raise InputError(
                f"config '{config}' split '{split}': {', '.join(configs[config][split])} matches no data file",
                path=where,
            )
    else:
        # The hub's conventional layout: config default in data/, any other config in a folder of its name.
        subfolder = folder / ("data" if config == "default" else config)
        if subfolder.is_dir() and _data_files(subfolder):
            files = _files_for_split(_data_files(subfolder), split, str(Path(label) / subfolder.name))
        elif config == "default" and _data_files(folder):
            files = _files_for_split(_data_files(folder), split, label)
        elif config != "default":
            raise InputError(f"no folder '{config}/' with data files for config '{config}'", path=label)
        else:
            raise InputError(
                "no data files here: expected a save_to_disk folder, the hub layout (data/train-*.parquet, "
                "full/train-*.parquet) or .jsonl / .json / .parquet files",
                path=label,
            )
    return [_Shard(f, file_format(f), str(Path(label) / f.relative_to(folder))) for f in files]


def _row_group_shards(shard: _Shard, on_bad: OnBad) -> list[_Shard]:
    """A parquet file as one shard per row group, so that shuffling can reorder them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(shard.path) as parquet:
            sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.metadata.num_row_groups)]
    except (pa.ArrowException, OSError) as exc:
        on_bad(RowError(UNREADABLE_FILE, f"unreadable parquet file: {exc}", path=shard.label))
        return []
    pieces, first = [], 0
    for group, size in enumerate(sizes):
        pieces.append(_Shard(shard.path, "parquet", shard.label, (group,), first))
        first += size
    return pieces


def _shard_items(
    shards: Sequence[_Shard], *, rng: random.Random | None, interleave: bool, on_bad: OnBad
) -> Iterator[Item]:
    """Rows of several files. Shuffled: row groups and files in a seeded random order, read several at once."""
    if rng is not None:
        pieces: list[_Shard] = []
        for shard in shards:
            pieces.extend(_row_group_shards(shard, on_bad) if shard.fmt == "parquet" else [shard])
        rng.shuffle(pieces)
        shards = pieces

    def read(shard: _Shard) -> Iterator[Item]:
        return _file_items(shard, on_bad)

    if interleave and len(shards) > 1:
        yield from interleave_shards(shards, read, max_open=MAX_OPEN_SHARDS)
    else:
        for shard in shards:
            yield from read(shard)


# ----------------------------------------------------------------------------------------- file readers


def _file_items(shard: _Shard, on_bad: OnBad) -> Iterator[Item]:
    if shard.fmt == "jsonl":
        return _jsonl_items(shard, on_bad)
    if shard.fmt == "json":
        return _json_items(shard, on_bad)
    return _parquet_items(shard, on_bad)


def _open_binary(shard: _Shard) -> IO[bytes]:
    """The file's bytes (gunzipped for .gz); a file that vanished or cannot be opened is an unreadable file."""
    if str(shard.path) == "-":
        return nullcontext(sys.stdin.buffer)  # type: ignore[return-value]
    try:
        if shard.path.name.lower().endswith(".gz"):
            return gzip.open(shard.path, "rb")
        return open(shard.path, "rb")
    except OSError as exc:
        raise RowError(UNREADABLE_FILE, f"cannot open: {exc.strerror or exc}", path=shard.label) from exc


def _json_type(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _jsonl_items(shard: _Shard, on_bad: OnBad) -> Iterator[Item]:
    """One JSON object per line; each bad line is its own error, so skipping one loses nothing else."""
    label, line = shard.label, 0
    try:
        opened = _open_binary(shard)
    except RowError as exc:
        on_bad(exc)
        return
    with opened as handle:
        try:
            for raw in handle:
                line += 1
                if not raw or raw.isspace():
                    continue  # blank lines (a trailing newline) hold no data
                data = decode_jsonl_line(raw, label, line, on_bad)
                if data is not None:
                    yield data, label, line, ":"
        except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated .gz
            on_bad(RowError(UNREADABLE_FILE, f"cannot read past line {line}: {exc}", path=label, line=line + 1))


def decode_jsonl_line(
    raw: bytes, label: str, line: int, on_bad: OnBad, *, first: bool | None = None
) -> dict[str, Any] | None:
    """One JSON line as an object, or None after reporting the problem to `on_bad`.

    `first`: whether this is the file's first line (a UTF-8 BOM is allowed there); default `line == 1`.
    The fast decoder (orjson, when installed) takes the lines it accepts; every line it refuses goes
    through the json module, so errors, and what only json accepts (NaN, huge integers), stay the same.
    """
    first = line == 1 if first is None else first
    if _fast_loads is not None and not (first and raw.startswith(b"\xef\xbb\xbf")):
        try:
            data = _fast_loads(raw)
        except ValueError:
            pass
        else:
            # orjson reads an integer beyond 64 bits as a float, json as an int: such lines go to json.
            # The walk over the decoded values is cheap; the regex over a whole line (tens of KB of text) is
            # not, so it only runs when a float is there to explain.
            if isinstance(data, dict) and not (_has_float(data) and _LONG_NUMBER.search(raw)):
                return data
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        on_bad(RowError(BAD_ENCODING, f"not UTF-8: {exc.reason} at byte {exc.start}", path=label, line=line))
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (a JSON list? name the file .json)" if first and text.strip() == "[" else ""
        on_bad(
            RowError(MALFORMED_JSON, f"malformed JSON: {exc.msg} at column {exc.colno}{hint}", path=label, line=line)
        )
        return None
    if not isinstance(data, dict):
        on_bad(RowError(NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(data)}", path=label, line=line))
        return None
    return data


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            return True
        if type(item) is dict:
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


class _TextWindow:
    """A sliding window over a text file for incremental JSON decoding: holds about one row, not the file."""

    _SPACE = re.compile(r"[ \t\n\r]*")

    def __init__(self, handle: IO[str]):
        self.handle = handle
        self.text = ""
        self.pos = 0
        self.line = 1  # line of self.pos
        self.eof = False

    def read_more(self) -> bool:
        if self.eof:
            return False
        # Read as much as is pending (doubling), so a huge row costs linear time, not quadratic re-parsing.
        chunk = self.handle.read(max(JSON_CHUNK_CHARS, len(self.text) - self.pos))
        if not chunk:
            self.eof = True
            return False
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def advance(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        """The next character that is not white space ('' at the end of the file)."""
        while True:
            self.advance(self._SPACE.match(self.text, self.pos).end())
            if self.pos < len(self.text) or not self.read_more():
                return self.text[self.pos : self.pos + 1]

    def decode(self, decoder: json.JSONDecoder) -> tuple[Any, int]:
        """The JSON value at the cursor and the line it starts on; JSONDecodeError (with .lineno fixed)."""
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                # Truncated by the window (not bad JSON) when the error is at the end or in an open string.
                near_end = exc.pos >= len(self.text) - 8 or exc.msg.startswith("Unterminated string")
                if near_end and self.read_more():
                    continue
                exc.lineno = self.line + self.text.count("\n", self.pos, exc.pos)
                raise
            if end == len(self.text) and self.read_more():
                continue  # a number at the edge may go on in the next chunk
            start = self.line
            self.advance(end)
            return value, start


def _json_items(shard: _Shard, on_bad: OnBad) -> Iterator[Item]:
    """A JSON file: a list of row objects, or one object (= one row; several in a row are read in turn).

    Decoded incrementally, one element at a time. A syntax error inside a list leaves no safe place to
    resume, so with skip_bad the rest of that file is skipped (and counted as one bad row).
    """
    import io

    label = shard.label
    decoder = json.JSONDecoder()
    try:
        opened = _open_binary(shard)
    except RowError as exc:
        on_bad(exc)
        return
    with opened as raw, io.TextIOWrapper(raw, encoding="utf-8-sig") as handle:
        window = _TextWindow(handle)
        try:
            first = window.peek()
            if first == "[":
                window.advance(window.pos + 1)
                yield from _json_list_rows(window, decoder, label, on_bad)
            elif first == "{":
                while window.peek():
                    value, line = window.decode(decoder)
                    if isinstance(value, dict):
                        yield value, label, line, ":"
                    else:
                        on_bad(
                            RowError(
                                NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(value)}", path=label, line=line
                            )
                        )
            elif first == "":
                on_bad(
                    RowError(
                        MALFORMED_JSON, "empty file: expected a JSON list of rows or an object", path=label, line=1
                    )
                )
            else:
                on_bad(
                    RowError(
                        MALFORMED_JSON,
                        f"expected a JSON list of rows or an object, found {first!r}",
                        path=label,
                        line=window.line,
                    )
                )
        except json.JSONDecodeError as exc:
            on_bad(
                RowError(
                    MALFORMED_JSON,
                    f"malformed JSON: {exc.msg}; the rest of the file is not read",
                    path=label,
                    line=exc.lineno,
                )
            )
        except UnicodeDecodeError as exc:
            on_bad(
                RowError(
                    BAD_ENCODING,
                    f"not UTF-8 ({exc.reason}) after line {window.line}; the rest of the file is not read",
                    path=label,
                    line=window.line,
                )
            )
        except (OSError, EOFError, zlib.error) as exc:
            on_bad(
                RowError(UNREADABLE_FILE, f"cannot read past line {window.line}: {exc}", path=label, line=window.line)
            )


def _json_list_rows(window: _TextWindow, decoder: json.JSONDecoder, label: str, on_bad: OnBad) -> Iterator[Item]:
    if window.peek() == "]":
        window.advance(window.pos + 1)
    else:
        element = 0
        while True:
            window.peek()
            value, line = window.decode(decoder)
            if isinstance(value, dict):
                yield value, label, line, ":"
            else:
                on_bad(
                    RowError(
                        NOT_AN_OBJECT,
                        f"list element {element}: expected a JSON object, got {_json_type(value)}",
                        path=label,
                        line=line,
                    )
                )
            element += 1
            after = window.peek()
            if after == ",":
                window.advance(window.pos + 1)
                continue
            if after == "]":
                window.advance(window.pos + 1)
                break
            found = f"found {after!r}" if after else "the file ends"
            on_bad(
                RowError(
                    MALFORMED_JSON,
                    f"expected ',' or ']' after list element {element - 1}, {found}; the rest of the file is not read",
                    path=label,
                    line=window.line,
                )
            )
            return
    if window.peek():
        on_bad(RowError(MALFORMED_JSON, f"extra data after the list: {window.peek()!r}", path=label, line=window.line))


def _parquet_items(shard: _Shard, on_bad: OnBad) -> Iterator[Item]:
    """Rows of a parquet file (or some of its row groups), decoded PARQUET_BATCH_ROWS at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = shard.first_row
    try:
        with pq.ParquetFile(shard.path) as parquet:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=shard.row_groups):
                for data in batch.to_pylist():
                    yield data, shard.label, row, "#"
                    row += 1
    except (pa.ArrowException, OSError) as exc:
        where = "unreadable parquet file" if row == shard.first_row else f"parquet data unreadable from row {row} on"
        on_bad(RowError(UNREADABLE_FILE, f"{where}: {exc}", path=shard.label, line=row))


# ------------------------------------------------------------------------------ datasets: disk and hub


def _load_saved_dataset(folder: Path, label: str, split: str):
    import datasets

    try:
        dataset = datasets.load_from_disk(str(folder))
    except Exception as exc:  # corrupt arrow files, a half-written folder, a version mismatch
        raise InputError(f"cannot load this save_to_disk folder: {type(exc).__name__}: {exc}", path=label) from exc
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise InputError(f"no split '{split}'; splits: {', '.join(dataset)}", path=label)
        return dataset[split], f"{label}[{split}]"
    return dataset, label


def _disk_items(dataset, label: str, *, rng: random.Random | None, interleave: bool) -> Iterator[Item]:
    """Rows of a memory-mapped Dataset.

    Shuffled: an exact seeded permutation (random access makes it cheap: 8 bytes per row of memory).
    Interleaved (for stratifying without a seed): contiguous stretches of the table read in turn, as
    shards would be, because a table sorted by domain would otherwise show one domain first.
    """
    table = dataset.with_format("arrow")
    count = len(dataset)

    def stretch(begin: int, end: int) -> Iterator[Item]:
        for start in range(begin, end, DISK_BATCH_ROWS):
            stop = min(start + DISK_BATCH_ROWS, end)
            for offset, data in enumerate(table[start:stop].to_pylist()):
                yield data, label, start + offset, "#"

    if rng is None:
        if not interleave:
            yield from stretch(0, count)
            return
        lanes = max(1, min(count, MAX_OPEN_SHARDS))
        bounds = [count * lane // lanes for lane in range(lanes + 1)]
        yield from round_robin([stretch(bounds[i], bounds[i + 1]) for i in range(lanes)])
        return
    import numpy as np

    order = np.random.default_rng(rng.getrandbits(64)).permutation(count)  # (count,) int64
    for start in range(0, count, DISK_BATCH_ROWS):
        indices = order[start : start + DISK_BATCH_ROWS].tolist()
        for index, data in zip(indices, table[indices].to_pylist()):
            yield data, label, index, "#"


def _hub_items(
    dataset, label: str, *, seed: int | None, shuffle_buffer: int, interleave: bool, on_bad: OnBad
) -> Iterator[Item]:
    """Rows of a streaming IterableDataset.

    Shuffled: `IterableDataset.shuffle(seed, buffer_size)`, which shuffles the shard order and fills its
    buffer from several shards at once (a plain stream reads one shard, one domain, first). For
    stratifying without a seed, several contiguous groups of shards are read in turn instead.
    """
    if seed is not None:
        streams = [dataset.shuffle(seed=seed, buffer_size=shuffle_buffer)]
    elif interleave and dataset.num_shards > 1:
        lanes = min(dataset.num_shards, MAX_OPEN_SHARDS)
        streams = [dataset.shard(num_shards=lanes, index=i) for i in range(lanes)]
    else:
        streams = [dataset]
    rows = round_robin([iter(stream) for stream in streams])
    row = 0
    try:
        while True:
            try:
                data = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # network, a corrupt shard: the stream cannot go on
                on_bad(
                    RowError(
                        UNREADABLE_FILE,
                        f"the stream failed after {row} rows: {type(exc).__name__}: {exc}",
                        path=label,
                        line=row,
                    )
                )
                return
            yield (data if isinstance(data, dict) else dict(data)), label, row, "#"
            row += 1
    finally:
        rows.close()
