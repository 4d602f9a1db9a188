"""Analysis numbers against an independent computation (regex + str.split + statistics) on real and random traces."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_tokenizer import build_tiny_tokenizer
from mementokit.analysis.analyze import analyze_traces, write_trace_table
from mementokit.analysis.stats import summarize_values
from mementokit.analysis.textstats import WHITESPACE, WordCounter, count_words
from mementokit.format import DEFAULT_MARKERS, build_response, response_from_segments
from mementokit.records import TraceRecord

DATA = Path(__file__).parent / "data"
BS, BE, SS, SE = (re.escape(m) for m in DEFAULT_MARKERS.block_markers)
BLOCK_RE = re.compile(BS + "(.*?)" + BE, re.S)
SUMMARY_RE = re.compile(SS + "(.*?)" + SE, re.S)


def fixture_response() -> str:
    return response_from_segments(json.loads((DATA / "memento_trace_aime2025_p5.json").read_text())["segments"])


def record(response: str, domain: str, origin: str, index: int, source: str | None = None) -> TraceRecord:
    return TraceRecord(None, response, domain, source, origin=origin, index=index)


def random_traces(n: int, seed: int) -> list[TraceRecord]:
    rng = random.Random(seed)
    vocab = ["x", "y²", "alpha", "β", "\\frac{1}{2}", "≠", "code()", "é", "the", "so", "=", "3.14"]
    spaces = [" ", " ", "\n", "\t", "\xa0", "\u3000", "  "]

    def text(k: int) -> str:
        return "".join(rng.choice(vocab) + rng.choice(spaces) for _ in range(k)).strip()

    out = []
    for i in range(n):
        n_blocks = rng.randint(0, 9)
        blocks = [text(rng.randint(1, 80)) for _ in range(n_blocks)]
        summaries = [text(rng.randint(1, 15)) for _ in range(n_blocks)]
        response = build_response(
            blocks, summaries, "\n\n" + text(rng.randint(0, 20)), separator=rng.choice(["\n", "", "\n\n"])
        )
        out.append(record(response, rng.choice(["math", "code", "science"]), f"rand:{i}", i))
    return out


# -- word counting ---------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(WHITESPACE) + list("ab€😀é\x00\ud800\udfff")), max_size=40), st.data())
def test_word_counts_equal_str_split_on_any_span(text, data):
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    assert WordCounter(text).words(start, end) == len(text[start:end].split())
    assert count_words(text) == len(text.split())


# -- per trace and per block, independent computation -------------------------------------------------------


def independent(response: str) -> dict:
    blocks = BLOCK_RE.findall(response)
    summaries = SUMMARY_RE.findall(response)
    answer = response.split("</think>", 1)[1] if "</think>" in response else ""
    return {
        "blocks": blocks,
        "summaries": summaries,
        "block_chars": sum(map(len, blocks)),
        "summary_chars": sum(map(len, summaries)),
        "block_words": sum(len(b.split()) for b in blocks),
        "summary_words": sum(len(s.split()) for s in summaries),
        "answer_chars": len(answer),
        "answer_words": len(answer.split()),
    }


def test_fixture_trace_measurements_match_the_segment_file_and_regex_counts():
    data = json.loads((DATA / "memento_trace_aime2025_p5.json").read_text())
    response = fixture_response()
    report = analyze_traces([record(response, "math", "fixture", 0)], workers=1)
    row = report.traces.iloc[0]
    ref = independent(response)
    blocks = [s for s in data["segments"] if s["type"] == "block"]
    summaries = [s for s in data["segments"] if s["type"] == "summary"]
    assert row["blocks"] == row["mementos"] == 5
    assert row["block_chars"] == sum(s["char_len"] for s in blocks) == ref["block_chars"]
    assert row["summary_chars"] == sum(s["char_len"] for s in summaries) == ref["summary_chars"]
    assert row["block_words"] == ref["block_words"] and row["summary_words"] == ref["summary_words"]
    assert row["answer_chars"] == ref["answer_chars"] and row["answer_words"] == ref["answer_words"]
    assert row["char_ratio"] == pytest.approx(ref["summary_chars"] / ref["block_chars"])
    assert row["median_block_chars"] == statistics.median(s["char_len"] for s in blocks)
    assert list(report.pairs["char_ratio"]) == pytest.approx(
        [s["char_len"] / b["char_len"] for b, s in zip(blocks, summaries)]
    )


def test_random_traces_agree_with_the_independent_computation_and_aggregates():
    traces = random_traces(300, seed=1)
    report = analyze_traces(traces, workers=1, chunk_size=17)
    assert list(report.traces["index"]) == list(range(300))
    pair_ratios: dict[str, list[float]] = {}
    blocks_per_trace: dict[str, list[int]] = {}
    for item, (_, row) in zip(traces, report.traces.iterrows()):
        ref = independent(item.response)
        for key in ("block_chars", "summary_chars", "block_words", "summary_words", "answer_chars", "answer_words"):
            assert row[key] == ref[key], (item.origin, key)
        assert row["blocks"] == len(ref["blocks"])
        blocks_per_trace.setdefault(item.domain, []).append(len(ref["blocks"]))
        for b, s in zip(ref["blocks"], ref["summaries"]):
            pair_ratios.setdefault(item.domain, []).append(len(s) / len(b))
    summary = report.summary()
    for domain, ratios in pair_ratios.items():
        group = summary["by_domain"][domain]
        assert group["traces"] == len(blocks_per_trace[domain])
        assert group["per_trace"]["blocks"]["median"] == pytest.approx(statistics.median(blocks_per_trace[domain]))
        assert group["per_block"]["char_ratio"]["median"] == pytest.approx(statistics.median(ratios))
        assert group["per_block"]["char_ratio"]["count"] == len(ratios)
        assert group["per_block"]["char_ratio"]["p90"] == pytest.approx(float(np.percentile(ratios, 90)))
    everything = [r for rs in pair_ratios.values() for r in rs]
    assert summary["overall"]["per_block"]["char_ratio"]["median"] == pytest.approx(statistics.median(everything))
    assert summary["overall"]["traces"] == 300


def test_worker_processes_give_the_same_report_as_one_process():
    traces = random_traces(150, seed=2)
    one = analyze_traces(traces, workers=1, chunk_size=10)
    two = analyze_traces(traces, workers=2, chunk_size=10)
    assert one.summary() == two.summary()
    assert one.traces.drop(columns=["problem_list"]).equals(two.traces.drop(columns=["problem_list"]))


def test_token_counts_equal_encoding_each_piece_alone(tmp_path):
    tokenizer = build_tiny_tokenizer(tmp_path)
    path = tmp_path / "tiny-tokenizer"
    traces = random_traces(40, seed=3) + [record(fixture_response(), "math", "fixture", 40)]
    report = analyze_traces(traces, tokenizer=str(path), workers=1)
    backend = tokenizer.backend_tokenizer
    for item, (_, row) in zip(traces, report.traces.iterrows()):
        ref = independent(item.response)
        # Special tokens split the text first, so a block's content is tokenized exactly as on its own.
        block_tokens = sum(len(backend.encode(b, add_special_tokens=False).ids) for b in ref["blocks"])
        summary_tokens = sum(len(backend.encode(s, add_special_tokens=False).ids) for s in ref["summaries"])
        assert row["block_tokens"] == block_tokens
        assert row["summary_tokens"] == summary_tokens
        assert row["tokens"] == len(backend.encode(item.response, add_special_tokens=False).ids)
        assert (
            row["tokens"] == row["block_tokens"] + row["summary_tokens"] + row["wrapper_tokens"] + row["answer_tokens"]
        )
        if summary_tokens:
            assert row["token_compression"] == pytest.approx(block_tokens / summary_tokens)
    # The four markers are one token each: a trace of k pairs has at least 4k + 2 wrapper tokens.
    assert (report.traces["wrapper_tokens"] >= 4 * report.traces["mementos"] + 2).all()


def test_problems_are_counted_per_domain_in_lenient_mode():
    good = build_response(["a b"], ["m"], "ans")
    traces = [
        record(good, "math", "g", 0),
        record("<think><|block_start|>open", "math", "bad1", 1),
        record("<think><|summary_start|>x<|summary_end|></think>", "code", "bad2", 2),
    ]
    summary = analyze_traces(traces, workers=1).summary()
    assert summary["by_domain"]["math"]["invalid_by_problem"] == {"missing_think_end": 1, "unclosed_block": 1}
    assert summary["by_domain"]["code"]["invalid_by_problem"] == {"summary_without_block": 1}
    assert summary["overall"]["invalid"] == 2 and summary["overall"]["valid"] == 1


def test_strict_mode_stops_at_the_first_bad_trace_naming_it():
    from mementokit.errors import InputError

    with pytest.raises(InputError, match="bad.jsonl:4.*unclosed_block"):
        analyze_traces([record("<think><|block_start|>x</think>", "math", "bad.jsonl:4", 0)], workers=1, strict=True)


def test_summary_statistics_skip_nan_and_handle_empty():
    assert summarize_values([1.0, math.nan, 3.0])["median"] == 2.0
    assert summarize_values([])["count"] == 0


def test_trace_table_round_trips_through_pandas(tmp_path):
    import pandas as pd

    report = analyze_traces(random_traces(20, seed=4), workers=1)
    for name in ("traces.parquet", "traces.csv"):
        write_trace_table(report, tmp_path / name)
        loaded = pd.read_parquet(tmp_path / name) if name.endswith("parquet") else pd.read_csv(tmp_path / name)
        assert len(loaded) == 20
        assert list(loaded["block_chars"]) == list(report.traces["block_chars"])
