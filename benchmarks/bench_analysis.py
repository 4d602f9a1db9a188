"""Benchmarks for the analysis job (issues: foundation, 16). Prints ratios against baselines measured in the same run.

1. End to end: `memento analyze --json` against the tutorial's script (json + three regexes + str.split +
   pandas) on the same corpus (>= 200 MB), as JSONL and as Parquet, with 1 and 2 workers; the runs alternate
   (tutorial, 1 worker, 2 workers, again) so that load from elsewhere hits every contender alike.
2. Parse + per-trace character and word statistics vs the tutorial's approach (three `re.findall` with
   `(.*?)` and `str.split()` word counts), on the same synthetic corpus (>= 200 MB), one process, in memory.
3. `memento analyze` on 10,000 and 40,000 synthetic traces: wall time, CPU use (both cores), peak memory
   (it must stay flat as the input grows).
4. Token statistics: overhead over the raw `tokenizers` batch encode of the same text.

    python benchmarks/bench_analysis.py            # full run (a few minutes)
    python benchmarks/bench_analysis.py --quick    # smaller sizes, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from mementokit.analysis import cscan
from mementokit.analysis.stats import measure_chunk, scan_measurements, trace_measurements
from mementokit.analysis.synth import synthetic_rows, write_synthetic_jsonl
from mementokit.format import DEFAULT_MARKERS, parse_response
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


def compiled_stats(response: str) -> dict:
    scanned = cscan.scan(response, DEFAULT_MARKERS)
    if scanned is None:
        return our_stats(response)
    row, pairs = scan_measurements(scanned, DEFAULT_MARKERS, keep_last=None)
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
        assert json.dumps(compiled_stats(text)) == json.dumps(ours)  # NaN-safe comparison
        assert (ref["block_chars"], ref["block_words"], ref["summary_words"]) == (
            ours["block_chars"],
            ours["block_words"],
            ours["summary_words"],
        )
    non_ascii = sum(not t.isascii() for t in texts) / len(texts)
    # The synthetic traces carry a few non-ASCII characters (≠, ², é) in almost every trace, which makes
    # Python strings two bytes a character; an ASCII-only copy shows the other case.
    for label, data in (
        (f"synthetic ({non_ascii:.0%} non-ASCII)", texts),
        ("same, ASCII-only copy", [t.encode("ascii", "replace").decode() for t in texts]),
    ):
        size_mb = sum(len(t.encode()) for t in data) / 1e6
        base = best_of(2, lambda data=data: [tutorial_stats(t) for t in data])
        fast = best_of(2, lambda data=data: [our_stats(t) for t in data])
        print(f"[parse+stats] {label}: {len(data):,} traces, {size_mb:,.0f} MB")
        print(f"[parse+stats]   tutorial re.findall + str.split: {size_mb / base:8.1f} MB/s")
        print(f"[parse+stats]   mementokit parser + counts:      {size_mb / fast:8.1f} MB/s, {base / fast:5.2f}x")
        if cscan.available():
            compiled = best_of(2, lambda data=data: [compiled_stats(t) for t in data])
            print(
                f"[parse+stats]   compiled scanner + counts:       {size_mb / compiled:8.1f} MB/s, "
                f"{base / compiled:5.2f}x (goal >= 10x)"
            )
        else:
            print("[parse+stats]   compiled scanner: not available here (no C compiler)")


def run_measured(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (all processes), peak RSS in MB (largest process) of a command."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        f"subprocess.run({argv!r}, check=True, stdout=subprocess.DEVNULL)\n"
        "wall = time.perf_counter() - t\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(wall, r.ru_utime + r.ru_stime, r.ru_maxrss / 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wall, cpu, rss = map(float, result.stdout.split())
    return wall, cpu, rss


def run_analyze(path: Path, out: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds, peak RSS in MB of `memento analyze` writing its report (no plots)."""
    return run_measured([sys.executable, "-m", "mementokit.cli", "analyze", str(path), "--out", str(out), "--no-plots"])


# The tutorial's analysis, as its readers would run it on a local file: json.loads per line (or a parquet
# reader), parse_memento with three regexes, chars and str.split() words per trace, pandas for the medians.
TUTORIAL_SCRIPT = r"""
import json, re, sys
import pandas as pd

BLOCK_RE = re.compile(r"<\|block_start\|>(.*?)<\|block_end\|>", re.DOTALL)
SUMMARY_RE = re.compile(r"<\|summary_start\|>(.*?)<\|summary_end\|>", re.DOTALL)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def parse_memento(response):
    blocks = [m.strip() for m in BLOCK_RE.findall(response)]
    summaries = [m.strip() for m in SUMMARY_RE.findall(response)]
    think_m = THINK_RE.search(response)
    final_ans = response.split("</think>")[-1].strip() if "</think>" in response else ""
    return {"blocks": blocks, "summaries": summaries, "reasoning": think_m.group(1) if think_m else "",
            "final_answer": final_ans}


def rows(path):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=256, columns=["domain", "response"]):
            yield from batch.to_pylist()
    else:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)


records = []
for ex in rows(sys.argv[1]):
    p = parse_memento(ex["response"])
    blocks, summaries = p["blocks"], p["summaries"]
    if not blocks or len(blocks) != len(summaries):
        continue  # skip malformed
    block_chars, summ_chars = sum(map(len, blocks)), sum(map(len, summaries))
    block_words, summ_words = sum(len(b.split()) for b in blocks), sum(len(s.split()) for s in summaries)
    records.append({"domain": ex["domain"], "n_blocks": len(blocks), "block_chars": block_chars,
                    "summ_chars": summ_chars, "block_words": block_words, "summ_words": summ_words,
                    "compress_char": summ_chars / block_chars, "compress_word": summ_words / block_words})
df = pd.DataFrame(records)
per_dom = df.groupby("domain").agg({"n_blocks": "median", "compress_char": "median", "compress_word": "median"})
print(per_dom.round(3).to_json())
"""


def write_parquet_copy(jsonl: Path, out: Path, row_group_rows: int = 256) -> None:
    """The same rows as Parquet in row groups of `row_group_rows` (as hub shards are), in bounded memory."""

    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    with open(jsonl, encoding="utf-8") as handle:
        while batch := [json.loads(line) for line in islice(handle, row_group_rows)]:
            table = pa.Table.from_pylist(batch)
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
    writer.close()


def bench_end_to_end(megabytes: float, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tutorial = Path(tmp) / "tutorial.py"
        tutorial.write_text(TUTORIAL_SCRIPT)
        jsonl = Path(tmp) / "corpus.jsonl"
        write_synthetic_jsonl(jsonl, max(1, int(megabytes * 1e6 / 45_000)), seed=1)
        parquet = Path(tmp) / "corpus.parquet"
        write_parquet_copy(jsonl, parquet)
        n = sum(1 for _ in open(jsonl, "rb"))
        print(
            f"[end-to-end] corpus: {n:,} traces, JSONL {jsonl.stat().st_size / 1e6:,.0f} MB, "
            f"Parquet {parquet.stat().st_size / 1e6:,.0f} MB (row groups of 256 rows)"
        )
        analyze = [sys.executable, "-m", "mementokit.cli", "analyze"]
        contenders = {
            "tutorial script": lambda path: [sys.executable, str(tutorial), str(path)],
            "memento analyze, 1 worker": lambda path: [*analyze, str(path), "--json", "--workers", "1"],
            "memento analyze, 2 workers": lambda path: [*analyze, str(path), "--json", "--workers", "2"],
        }
        runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for _ in range(repeats):  # alternate, so that load from elsewhere hits every contender alike
            for kind, path in (("JSONL", jsonl), ("Parquet", parquet)):
                for name, argv in contenders.items():
                    runs.setdefault((kind, name), []).append(run_measured(argv(path)))

        def median(kind: str, name: str, what: int) -> float:
            return sorted(run[what] for run in runs[(kind, name)])[repeats // 2]

        for kind in ("JSONL", "Parquet"):
            base_wall, base_cpu = median(kind, "tutorial script", 0), median(kind, "tutorial script", 1)
            for name in contenders:
                wall, cpu = median(kind, name, 0), median(kind, name, 1)
                peak = max(run[2] for run in runs[(kind, name)])
                print(
                    f"[end-to-end] {kind:7s} {name:26s}: wall {wall:5.2f} s (median of {repeats}), "
                    f"speed-up {base_wall / wall:4.1f}x; CPU {cpu:5.2f} s, {base_cpu / cpu:4.1f}x less; "
                    f"peak RSS {peak:4.0f} MB"
                )
        print("[end-to-end] goals: >= 4x on JSONL, >= 3x on Parquet (no compiled scanner)")


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

    from mementokit.analysis.tokens import load_counting_tokenizer

    texts = [row["response"] for row in islice(synthetic_rows(n_traces, seed=2), n_traces)]
    trainer = trainers.BpeTrainer(vocab_size=8000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(texts[:200], trainer)
    with tempfile.TemporaryDirectory() as tmp:
        raw.save(f"{tmp}/tokenizer.json")
        tokenizer = load_counting_tokenizer(f"{tmp}/tokenizer.json")  # same model, the markers registered
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
    bench_end_to_end(25 if args.quick else 210, 1 if args.quick else 3)
    bench_parse(20 if args.quick else 210)
    bench_analyze([1000, 4000] if args.quick else [10_000, 40_000])
    bench_tokens(300 if args.quick else 2000)


if __name__ == "__main__":
    main()
