"""Benchmarks for the analysis job (issue: foundation). Prints ratios against baselines measured in the same run.

1. Parse + per-trace character and word statistics vs the tutorial's approach (three `re.findall` with
   `(.*?)` and `str.split()` word counts), on the same synthetic corpus (>= 200 MB), one process.
2. `memento analyze` on 10,000 and 40,000 synthetic traces: wall time, CPU use (both cores), peak memory.
3. Token statistics: overhead over the raw `tokenizers` batch encode of the same text.

    python benchmarks/bench_analysis.py            # full run (a few minutes)
    python benchmarks/bench_analysis.py --quick    # smaller sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from mementokit.analysis.stats import measure_chunk, trace_measurements
from mementokit.analysis.synth import synthetic_rows, write_synthetic_jsonl
from mementokit.format import parse_response
from mementokit.records import TraceRecord

BLOCK = re.compile(r"<\|block_start\|>(.*?)<\|block_end\|>", re.DOTALL)
SUMMARY = re.compile(r"<\|summary_start\|>(.*?)<\|summary_end\|>", re.DOTALL)
ANSWER = re.compile(r"</think>(.*)", re.DOTALL)


def tutorial_stats(response: str) -> dict:
    """The tutorial's way: three findall with (.*?), str.split() word counts."""
    blocks = BLOCK.findall(response)
    summaries = SUMMARY.findall(response)
    answer = ANSWER.findall(response)
    block_chars = [len(b) for b in blocks]
    summary_chars = [len(s) for s in summaries]
    block_words = [len(b.split()) for b in blocks]
    summary_words = [len(s.split()) for s in summaries]
    return {
        "blocks": len(blocks),
        "block_chars": sum(block_chars),
        "summary_chars": sum(summary_chars),
        "block_words": sum(block_words),
        "summary_words": sum(summary_words),
        "answer_words": len(answer[0].split()) if answer else 0,
        "ratios": [s / b if b else 0 for s, b in zip(summary_chars, block_chars)],
    }


def our_stats(response: str) -> dict:
    row, pairs = trace_measurements(parse_response(response), keep_last=None)
    return row


def corpus(megabytes: float, seed: int = 0) -> list[str]:
    texts, total = [], 0
    for row in synthetic_rows(10**9, seed=seed):
        texts.append(row["response"])
        total += len(row["response"])
        if total >= megabytes * 1e6:
            return texts
    return texts


def best_of(repeats: int, function, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def bench_parse(megabytes: float) -> None:
    texts = corpus(megabytes)
    # Agreement first: the fast path must give the tutorial's numbers on every trace.
    for text in texts[:200]:
        ref, ours = tutorial_stats(text), our_stats(text)
        assert (ref["block_chars"], ref["block_words"], ref["summary_words"]) == (ours["block_chars"], ours["block_words"], ours["summary_words"])
    non_ascii = sum(not t.isascii() for t in texts) / len(texts)
    # The synthetic traces carry a few non-ASCII characters (≠, ², é) in almost every trace, which makes
    # Python strings two bytes a character; an ASCII-only copy shows the other case.
    for label, data in ((f"synthetic ({non_ascii:.0%} non-ASCII)", texts), ("same, ASCII-only copy", [t.encode("ascii", "replace").decode() for t in texts])):
        size_mb = sum(len(t.encode()) for t in data) / 1e6
        base = best_of(2, lambda: [tutorial_stats(t) for t in data])
        fast = best_of(2, lambda: [our_stats(t) for t in data])
        print(f"[parse+stats] {label}: {len(data):,} traces, {size_mb:,.0f} MB")
        print(f"[parse+stats]   tutorial re.findall + str.split: {size_mb / base:8.1f} MB/s")
        print(f"[parse+stats]   mementokit parse + counts:       {size_mb / fast:8.1f} MB/s")
        print(f"[parse+stats]   speed-up: {base / fast:.2f}x (goal >= 10x)")


def run_analyze(path: Path, out: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (all processes), peak RSS in MB of the `memento analyze` process tree."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        f"subprocess.run([sys.executable, '-m', 'mementokit.cli', 'analyze', {str(path)!r}, '--out', {str(out)!r}, '--no-plots'], check=True, stdout=subprocess.DEVNULL)\n"
        "wall = time.perf_counter() - t\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(wall, r.ru_utime + r.ru_stime, r.ru_maxrss / 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wall, cpu, rss = map(float, result.stdout.split())
    return wall, cpu, rss


def bench_analyze(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"synthetic-{n}.jsonl"
            write_synthetic_jsonl(path, n, seed=1)
            size_mb = path.stat().st_size / 1e6
            wall, cpu, rss = run_analyze(path, Path(tmp) / f"report-{n}")
            print(
                f"[analyze] {n:>6,} traces ({size_mb:,.0f} MB): {wall:6.1f} s wall, {n / wall:7.0f} traces/s, "
                f"CPU {cpu / wall:.2f} cores busy, peak RSS {rss:,.0f} MB (largest process)"
            )


def bench_tokens(n_traces: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from mementokit.analysis.tokens import load_tokenizer

    texts = [row["response"] for row in islice(synthetic_rows(n_traces, seed=2), n_traces)]
    trainer = trainers.BpeTrainer(vocab_size=8000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(texts[:200], trainer)
    with tempfile.TemporaryDirectory() as tmp:
        raw.save(f"{tmp}/tokenizer.json")
        tokenizer = load_tokenizer(f"{tmp}/tokenizer.json")  # same model, the markers registered
    text_chunks = [texts[i : i + 64] for i in range(0, len(texts), 64)]
    encode = best_of(3, lambda: [tokenizer.encode_batch(c, add_special_tokens=False) for c in text_chunks])
    # What token statistics add on top of that encode: reading the offsets, and attributing tokens to segments.
    encodings = [e for c in text_chunks for e in tokenizer.encode_batch(c, add_special_tokens=False)]
    traces = [parse_response(t) for t in texts]
    read_offsets = best_of(3, lambda: [e.offsets for e in encodings])
    offsets = [e.offsets for e in encodings]
    with_tokens = best_of(3, lambda: [trace_measurements(t, o, keep_last=None) for t, o in zip(traces, offsets)])
    without = best_of(3, lambda: [trace_measurements(t, None, keep_last=None) for t in traces])
    added = read_offsets + max(0.0, with_tokens - without)
    print(f"[tokens] {len(texts):,} traces: raw encode_batch {encode:.2f} s; token statistics add {added:.3f} s on top")
    print(f"[tokens] overhead over the raw batch encode: {100 * added / encode:.1f}% (goal <= 15%)")
    chunks = [[TraceRecord(None, t) for t in c] for c in text_chunks]
    end_to_end = best_of(1, lambda: [measure_chunk(c, tokenizer) for c in chunks])
    print(f"[tokens] end to end (parse, words, chars, tokens): {sum(map(len, texts)) / 1e6 / end_to_end:.1f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    bench_parse(20 if args.quick else 210)
    bench_analyze([1000, 4000] if args.quick else [10_000, 40_000])
    bench_tokens(300 if args.quick else 2000)


if __name__ == "__main__":
    main()
