"""Run the compression analysis over a stream of traces, on every core, in bounded memory.

The stream is cut into chunks; each chunk is parsed, measured (and tokenized) in a worker process and
comes back as columns. Only numeric columns are kept, so memory grows by a few bytes per trace, not by
the size of the text.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from mementokit.analysis.stats import (
    PAIR_COLUMNS,
    PAIR_TOKEN_COLUMNS,
    TRACE_COLUMNS,
    TRACE_TOKEN_COLUMNS,
    ChunkResult,
    measure_chunk,
    summarize_values,
)
from mementokit.format.markers import DEFAULT_MARKERS, Markers
from mementokit.records import TraceRecord

if TYPE_CHECKING:
    import pandas as pd

# Figures reported per trace and per block in the summary (and drawn in the plots).
SUMMARY_TRACE_METRICS = (
    "blocks",
    "chars",
    "block_chars",
    "summary_chars",
    "block_words",
    "summary_words",
    "char_ratio",
    "word_ratio",
    "median_block_chars",
    "median_summary_chars",
    "compressed_fraction",
)
SUMMARY_TOKEN_TRACE_METRICS = TRACE_TOKEN_COLUMNS


class AnalysisReport:
    """Everything `memento analyze` found: the per-trace table, the per-pair table, and their summary.

    Held as columns (numpy arrays, lists for strings); `traces` and `pairs` are pandas DataFrames built on
    first use, so that a summary alone never imports pandas.
    """

    def __init__(
        self,
        columns: dict[str, Any],
        pair_columns: dict[str, Any],
        tokenizer: str | None = None,
        skipped: int = 0,
        skipped_reasons: dict[str, int] | None = None,
        reader: str = "",
    ):
        self.columns = columns  # index, origin, domain, source, valid, problem_list, TRACE_COLUMNS (+ tokens)
        self.pair_columns = pair_columns  # trace_index, domain, PAIR_COLUMNS (+ tokens)
        self.tokenizer = tokenizer
        self.skipped = skipped
        self.skipped_reasons = skipped_reasons if skipped_reasons is not None else {}
        self.reader = reader  # how the input was read and measured (memento analyze --verbose)

    def __len__(self) -> int:
        return len(self.columns["index"])

    @cached_property
    def traces(self) -> pd.DataFrame:
        """One row per trace: index, origin, domain, source, valid, problem_list, then the measurements."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    @cached_property
    def pairs(self) -> pd.DataFrame:
        """One row per block-memento pair: trace_index, domain, PAIR_COLUMNS (+ tokens)."""
        import pandas as pd

        return pd.DataFrame(self.pair_columns)

    @property
    def domains(self) -> list[str]:
        """Domains, most traces first (ties in order of first appearance, as pandas' value_counts)."""
        return [str(d) for d, _ in Counter(self.columns["domain"]).most_common()]

    def _group_summary(self, rows: np.ndarray | slice, pairs: np.ndarray | slice) -> dict[str, Any]:
        columns, pair_columns = self.columns, self.pair_columns
        valid = columns["valid"][rows]
        problem_lists = columns["problem_list"]
        chosen = range(len(problem_lists)) if isinstance(rows, slice) else np.flatnonzero(rows).tolist()
        invalid = Counter(p for i in chosen for p in problem_lists[i])
        trace_metrics = SUMMARY_TRACE_METRICS + (SUMMARY_TOKEN_TRACE_METRICS if self.tokenizer else ())
        pair_metrics = PAIR_COLUMNS + (PAIR_TOKEN_COLUMNS if self.tokenizer else ())
        return {
            "traces": int(len(valid)),
            "valid": int(valid.sum()) if len(valid) else 0,
            "invalid": int((~valid).sum()) if len(valid) else 0,
            "invalid_by_problem": dict(sorted(invalid.items())),
            "block_memento_pairs": int(len(pair_columns["trace_index"][pairs])),
            "per_trace": {m: summarize_values(columns[m][rows]) for m in trace_metrics},
            "per_block": {m: summarize_values(pair_columns[m][pairs]) for m in pair_metrics},
        }

    def summary(self) -> dict[str, Any]:
        """The JSON summary: `by_domain.<domain>` and `overall`, each with traces, per_trace, per_block."""
        trace_domains = np.asarray(self.columns["domain"], dtype=object)
        pair_domains = np.asarray(self.pair_columns["domain"], dtype=object)
        by_domain = {}
        for domain in self.domains:
            by_domain[domain] = self._group_summary(trace_domains == domain, pair_domains == domain)
        return {
            "tokenizer": self.tokenizer,
            "skipped": self.skipped,
            "skipped_reasons": self.skipped_reasons,
            "by_domain": by_domain,
            "overall": self._group_summary(slice(None), slice(None)),
        }


# -- worker side ------------------------------------------------------------------------------------
_worker_tokenizer = None
_worker_options: dict[str, Any] = {}


def _init_worker(tokenizer_name: str | None, markers: Markers, keep_last: int, strict: bool) -> None:
    global _worker_tokenizer, _worker_options
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if tokenizer_name is not None:
        from mementokit.analysis.tokens import load_counting_tokenizer

        _worker_tokenizer = load_counting_tokenizer(tokenizer_name, markers)
    _worker_options = {"markers": markers, "keep_last": keep_last, "strict": strict}


def _work(chunk: list[TraceRecord]) -> ChunkResult:
    return measure_chunk(chunk, _worker_tokenizer, **_worker_options)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[TraceRecord]]:
    # Workers get records without their rows (the text they measure, nothing more to pickle).
    iterator = (TraceRecord.of(item).without_raw() for item in items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _Columns:
    """Growing typed columns (8 bytes a number, a pointer for shared strings)."""

    def __init__(self) -> None:
        self.meta: dict[str, list] = {}
        self.rows: dict[str, array] = {}
        self.pairs: dict[str, array] = {}
        self.pair_domain: list[str] = []
        self.pair_trace: array = array("q")

    def add(self, part: ChunkResult) -> int:
        for name, values in part.meta.items():
            self.meta.setdefault(name, []).extend(values)
        for name, values in part.rows.items():
            self.rows.setdefault(name, array("d")).extend(values)
        for name, values in part.pairs.items():
            self.pairs.setdefault(name, array("d")).extend(values)
        # Which trace each pair belongs to: repeat each trace index by its number of mementos.
        counts = part.rows.get("mementos", [])
        for index, n in zip(part.meta["index"], counts):
            self.pair_trace.extend([index] * int(n))
        self.pair_domain.extend(part.pair_domain)
        return len(part.meta["index"])


def analyze_traces(
    traces: Iterable[TraceRecord],
    *,
    tokenizer: str | None = None,
    markers: Markers = DEFAULT_MARKERS,
    keep_last: int = 1,
    strict: bool = False,
    workers: int | None = None,
    chunk_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> AnalysisReport:
    """Measure every trace of the stream.

    tokenizer: a Hugging Face tokenizer name or path (adds token counts). workers: processes (default:
    every core; 1 runs in this process). progress: called with the number of traces done after each chunk.
    """
    workers = workers or os.cpu_count() or 1
    columns = _Columns()
    init_args = (tokenizer, markers, keep_last, strict)
    if tokenizer is not None:
        from mementokit.analysis.tokens import load_counting_tokenizer

        load_counting_tokenizer(tokenizer, markers)  # fail here, clearly, before any work or worker starts

    def take(part: ChunkResult) -> None:
        done = columns.add(part)
        if progress is not None:
            progress(done)

    if workers <= 1:
        _init_worker(*init_args)
        for chunk in _chunks(traces, chunk_size):
            take(_work(chunk))
        return _report(columns, tokenizer)
    # Read in this thread (so reading errors surface here, where they happen), parse in the workers, keep
    # a bounded number of chunks in flight so memory stays flat, and take results back in input order.
    in_flight: deque = deque()
    with worker_pool(workers, init_args) as pool:
        for chunk in _chunks(traces, chunk_size):
            in_flight.append(pool.apply_async(_work, (chunk,)))
            while len(in_flight) > 2 * workers or (in_flight and in_flight[0].ready()):
                take(in_flight.popleft().get())
        while in_flight:
            take(in_flight.popleft().get())
    return _report(columns, tokenizer)


@contextmanager
def worker_pool(workers: int, init_args: tuple) -> Iterator[Any]:
    """A fork pool of analysis workers that is closed and joined on the way out, never terminated.

    `Pool.__exit__` terminates: killing workers while tasks are still queued (an early stop at --limit, an error
    in the main process) can leave the pool's task thread blocked on the queue's lock forever. Closing lets the
    few tasks in flight (at most two per worker) finish, then the workers exit.
    """
    pool = mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=init_args)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def _report(columns: _Columns, tokenizer: str | None) -> AnalysisReport:
    meta = columns.meta or {"index": [], "origin": [], "domain": [], "source": [], "valid": [], "problem_list": []}
    table: dict[str, Any] = {
        "index": np.asarray(meta["index"], dtype=np.int64),
        "origin": meta["origin"],
        "domain": meta["domain"],
        "source": meta["source"],
        "valid": np.asarray(meta["valid"], dtype=bool),
        "problem_list": meta["problem_list"],
    }
    names = TRACE_COLUMNS + (TRACE_TOKEN_COLUMNS if tokenizer else ())
    for name in names:
        table[name] = np.frombuffer(columns.rows[name], dtype=np.float64) if name in columns.rows else np.zeros(0)
    for name in ("chars", "blocks", "mementos", "problems") + (("tokens",) if tokenizer else ()):
        table[name] = table[name].astype(np.int64)
    pairs: dict[str, Any] = {
        "trace_index": np.frombuffer(columns.pair_trace, dtype=np.int64),
        "domain": columns.pair_domain,
    }
    for name in PAIR_COLUMNS + (PAIR_TOKEN_COLUMNS if tokenizer else ()):
        pairs[name] = np.frombuffer(columns.pairs[name], dtype=np.float64) if name in columns.pairs else np.zeros(0)
    return AnalysisReport(table, pairs, tokenizer=tokenizer)


def write_trace_table(report: AnalysisReport, path) -> None:
    """The per-trace table as Parquet (.parquet) or CSV (anything else); both load in pandas."""
    table = report.traces.copy()
    table["problems_found"] = [";".join(p) for p in table.pop("problem_list")]
    if str(path).endswith(".parquet"):
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
