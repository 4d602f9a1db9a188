"""Per-trace and per-block compression statistics, and their aggregates by domain.

One trace gives one row of the per-trace table (`TRACE_COLUMNS`) and one row per block-memento pair
(`PAIR_COLUMNS`). Ratios are memento / block (smaller is more compression); `token_compression` is the
trace-level block tokens / memento tokens (the paper's ~6x).
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mementokit.analysis import cscan
from mementokit.analysis.cscan import Scan
from mementokit.analysis.textstats import WordCounter
from mementokit.format.compress import compress_trace
from mementokit.format.markers import DEFAULT_MARKERS, Markers
from mementokit.format.trace import Kind, Trace, parse_response
from mementokit.records import TraceRecord

# Per-block (block-memento pair) measurements.
PAIR_COLUMNS = ("block_chars", "summary_chars", "block_words", "summary_words", "char_ratio", "word_ratio")
PAIR_TOKEN_COLUMNS = ("block_tokens", "summary_tokens", "token_ratio")

# Per-trace numeric measurements (the table also holds index, origin, domain, source, valid, problems).
TRACE_COLUMNS = (
    "chars",
    "blocks",
    "mementos",
    "block_chars",
    "summary_chars",
    "answer_chars",
    "block_words",
    "summary_words",
    "answer_words",
    "char_ratio",
    "word_ratio",
    "median_block_chars",
    "median_summary_chars",
    "compressed_chars",
    "compressed_fraction",
    "problems",
)
TRACE_TOKEN_COLUMNS = (
    "tokens",
    "block_tokens",
    "summary_tokens",
    "wrapper_tokens",
    "answer_tokens",
    "token_ratio",
    "token_compression",
)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def compressed_length(trace: Trace, keep_last: int, spans: Sequence[tuple[int, int, int, int]] | None = None) -> int:
    """len(compress_trace(trace, keep_last)), without building the string for a valid trace.

    On a valid trace every block is closed and has its memento, and compress_trace drops all but the last
    `keep_last` whole (content and both block markers); a malformed trace goes through compress_trace itself
    (the block state machine decides what its text view keeps).
    """
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    if trace.issues:
        return len(compress_trace(trace, keep_last))
    spans = trace.pair_spans() if spans is None else spans
    dropped = spans[: max(0, len(spans) - keep_last)]
    markers = len(trace.markers.block_start) + len(trace.markers.block_end)
    return len(trace.response) - sum(e - b + markers for b, e, _, _ in dropped)


def trace_measurements(
    trace: Trace,
    token_offsets: Sequence[tuple[int, int]] | None = None,
    *,
    keep_last: int | None = 1,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The per-trace row and the per-pair columns of one parsed trace.

    `keep_last`: the compressed-size columns keep this many blocks (None: not computed, NaN).

    `token_offsets` (from one tokenization of the whole response) adds token counts: a token belongs to
    the segment its first character falls in; block and memento token counts exclude their markers.
    """
    response = trace.response
    spans = trace.pair_spans()  # (block start, end, memento start, end) of each pair's contents
    answers = trace.answer_spans()
    counts = WordCounter(response).words_many(
        [b for b, _, _, _ in spans] + [m for _, _, m, _ in spans] + [a for a, _ in answers],
        [e for _, e, _, _ in spans] + [f for _, _, _, f in spans] + [e for _, e in answers],
    )
    n = len(spans)
    return _measurements(
        len(response),
        spans,
        counts[:n],
        counts[n : 2 * n],
        answers,
        sum(counts[2 * n :]),
        blocks=n if trace.is_valid else sum(1 for s in trace.segments if s.kind is Kind.BLOCK),
        problems=len(trace.issues),
        compressed=compressed_length(trace, keep_last, spans) if keep_last is not None else math.nan,
        token_offsets=token_offsets,
    )


def scan_measurements(
    scanned: Scan,
    markers: Markers,
    token_offsets: Sequence[tuple[int, int]] | None = None,
    *,
    keep_last: int | None = 1,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """`trace_measurements` of a canonical (hence valid) response, from the compiled scanner's output."""
    chars, (answer_start, answer_end), answer_words, spans, block_words, summary_words = scanned
    answers = [(answer_start, answer_end)] if answer_end > answer_start else []
    if keep_last is None:
        compressed: float = math.nan
    elif keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    else:
        marker_chars = len(markers.block_start) + len(markers.block_end)
        compressed = chars - sum(e - b + marker_chars for b, e, _, _ in spans[: max(0, len(spans) - keep_last)])
    return _measurements(
        chars, spans, block_words, summary_words, answers, answer_words if answers else 0,
        blocks=len(spans), problems=0, compressed=compressed, token_offsets=token_offsets,
    )  # fmt: skip


def _measurements(
    n_chars: int,
    spans: Sequence[tuple[int, int, int, int]],
    block_words_list: list[int],
    summary_words_list: list[int],
    answers: list[tuple[int, int]],
    answer_words: int,
    *,
    blocks: int,
    problems: int,
    compressed: float,
    token_offsets: Sequence[tuple[int, int]] | None,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    def tokens_in(a: int, b: int) -> int:
        return bisect_left(token_offsets, (b,)) - bisect_left(token_offsets, (a,))

    block_chars_list = [e - b for b, e, _, _ in spans]
    summary_chars_list = [f - m for _, _, m, f in spans]
    pairs: dict[str, list[float]] = {
        "block_chars": block_chars_list,
        "summary_chars": summary_chars_list,
        "block_words": block_words_list,
        "summary_words": summary_words_list,
        "char_ratio": [_ratio(sc, bc) for sc, bc in zip(summary_chars_list, block_chars_list)],
        "word_ratio": [_ratio(sw, bw) for sw, bw in zip(summary_words_list, block_words_list)],
    }
    if token_offsets is not None:
        block_tokens_list = [tokens_in(b, e) for b, e, _, _ in spans]
        summary_tokens_list = [tokens_in(m, f) for _, _, m, f in spans]
        pairs["block_tokens"] = block_tokens_list
        pairs["summary_tokens"] = summary_tokens_list
        pairs["token_ratio"] = [_ratio(st, bt) for st, bt in zip(summary_tokens_list, block_tokens_list)]

    answer_chars = sum(e - a for a, e in answers)
    block_chars, summary_chars = sum(pairs["block_chars"]), sum(pairs["summary_chars"])
    block_words, summary_words = sum(pairs["block_words"]), sum(pairs["summary_words"])
    row: dict[str, float] = {
        "chars": n_chars,
        "blocks": blocks,
        "mementos": len(pairs["block_chars"]),
        "block_chars": block_chars,
        "summary_chars": summary_chars,
        "answer_chars": answer_chars,
        "block_words": block_words,
        "summary_words": summary_words,
        "answer_words": answer_words,
        "char_ratio": _ratio(summary_chars, block_chars),
        "word_ratio": _ratio(summary_words, block_words),
        "median_block_chars": _median(pairs["block_chars"]),
        "median_summary_chars": _median(pairs["summary_chars"]),
        "compressed_chars": compressed,
        "compressed_fraction": _ratio(compressed, n_chars),
        "problems": problems,
    }
    if token_offsets is not None:
        block_tokens, summary_tokens = sum(pairs["block_tokens"]), sum(pairs["summary_tokens"])
        answer_tokens = sum(tokens_in(a, e) for a, e in answers)
        total = len(token_offsets)
        row.update(
            tokens=total,
            block_tokens=block_tokens,
            summary_tokens=summary_tokens,
            answer_tokens=answer_tokens,
            # Everything that is neither block/memento content nor answer: the think markers, the four block
            # markers, separators, text before <think>, and blocks that have no memento.
            wrapper_tokens=total - block_tokens - summary_tokens - answer_tokens,
            token_ratio=_ratio(summary_tokens, block_tokens),
            token_compression=_ratio(block_tokens, summary_tokens),
        )
    return row, pairs


def TraceInput(  # noqa: N802 - the name of the class it replaces
    response: str, domain: str = "unknown", origin: str = "", index: int = 0, source: str | None = None
) -> TraceRecord:
    """Deprecated: the analysis-only record of old, now a `TraceRecord` (mementokit.records) with these fields."""
    return TraceRecord(None, response, domain, source, origin=origin, index=index)


@dataclass
class ChunkResult:
    """Columnar measurements of a chunk of traces (what a worker sends back)."""

    meta: dict[str, list] = field(
        default_factory=lambda: {"index": [], "origin": [], "domain": [], "source": [], "valid": [], "problem_list": []}
    )
    rows: dict[str, list[float]] = field(default_factory=dict)
    pairs: dict[str, list[float]] = field(default_factory=dict)
    pair_domain: list[str] = field(default_factory=list)


def measure_chunk(
    traces: Sequence[TraceRecord],
    tokenizer=None,
    *,
    markers: Markers = DEFAULT_MARKERS,
    keep_last: int = 1,
    strict: bool = False,
    scanner: bool | None = None,
) -> ChunkResult:
    """Parse and measure a chunk of traces (one batched tokenizer call when a tokenizer is given).

    `scanner`: measure well-formed traces with the compiled scanner (default: when it is available); every
    other trace, and every trace without it, goes through the parser. The numbers are the same either way.
    """
    use_scanner = cscan.available() if scanner is None else scanner and cscan.available()
    scan = cscan.scan
    offsets: list | None = None
    if tokenizer is not None:
        from mementokit.analysis.tokens import token_offsets_batch

        offsets = token_offsets_batch(tokenizer, [t.response for t in traces])
    result = ChunkResult()
    for i, item in enumerate(traces):
        token_offsets = offsets[i] if offsets is not None else None
        scanned = scan(item.response, markers) if use_scanner else None
        if scanned is not None:  # canonical, hence valid: the parser would give the same spans
            row, pairs = scan_measurements(scanned, markers, token_offsets, keep_last=keep_last)
            problem_list: list[str] = []
        else:
            trace = parse_response(item.response, markers)
            if strict and trace.issues:
                from mementokit.errors import InputError

                raise InputError(f"invalid trace: {trace.issues[0]}", path=item.origin or None, field="response")
            row, pairs = trace_measurements(trace, token_offsets, keep_last=keep_last)
            problem_list = sorted({issue.problem.value for issue in trace.issues})
        meta = result.meta
        meta["index"].append(item.index)
        meta["origin"].append(item.origin)
        meta["domain"].append(item.domain)
        meta["source"].append(item.source)
        meta["valid"].append(row["problems"] == 0)
        meta["problem_list"].append(problem_list)
        for name, value in row.items():
            result.rows.setdefault(name, []).append(value)
        n_pairs = 0
        for name, values in pairs.items():
            result.pairs.setdefault(name, []).extend(values)
            n_pairs = len(values)
        result.pair_domain.extend([item.domain] * n_pairs)
    return result


def summarize_values(values: Iterable[float]) -> dict[str, float | int]:
    """count, mean, median, p10, p90 of the finite values (NaN ratios of empty blocks are left out)."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"count": 0, "mean": None, "median": None, "p10": None, "p90": None}
    p10, median, p90 = np.percentile(arr, [10, 50, 90])
    return {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "median": float(median),
        "p10": float(p10),
        "p90": float(p90),
    }
