"""Synthetic OpenMementos-like traces: deterministic, streaming, valid, and shaped like the published figures."""

from __future__ import annotations

import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mementokit.analysis import synth
from mementokit.analysis.synth import (
    SAMPLE_N_SYNTHETIC,
    SAMPLE_REAL_SOURCE,
    SAMPLE_SEED,
    build_sample,
    real_sample_row,
    sample_license_text,
    synthetic_rows,
    write_synthetic_jsonl,
)
from mementokit.errors import ConfigError
from mementokit.format import parse_response, response_from_segments

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "memento_trace_aime2025_p5.json"
PACKAGE_DATA = Path(synth.__file__).parent.parent / "data"
N_ROWS = 2000  # enough for medians within a few percent; ~3 s to generate


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(synthetic_rows(N_ROWS, seed=11))


@pytest.fixture(scope="module")
def measured(rows) -> dict[str, dict[str, list[float]]]:
    """Per domain: blocks per trace, and per block its chars, memento chars, ratios (from parse_response)."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        trace = parse_response(row["response"])
        m = out.setdefault(
            row["domain"],
            {
                k: []
                for k in (
                    "blocks",
                    "block_chars",
                    "memento_chars",
                    "char_ratio",
                    "word_ratio",
                    "trace_block",
                    "trace_memento",
                )
            },
        )
        m["blocks"].append(len(trace.blocks))
        total_block = total_memento = 0
        for block, memento in trace.pairs():
            b, s = block.content(row["response"]), memento.content(row["response"])
            m["block_chars"].append(len(b))
            m["memento_chars"].append(len(s))
            m["char_ratio"].append(len(s) / len(b))
            m["word_ratio"].append(len(s.split()) / len(b.split()))
            total_block += len(b)
            total_memento += len(s)
        m["trace_block"].append(total_block)
        m["trace_memento"].append(total_memento)
    return out


# -- determinism and streaming ---------------------------------------------------------------------------


def test_same_seed_gives_identical_rows():
    assert list(synthetic_rows(15, seed=5)) == list(synthetic_rows(15, seed=5))


def test_different_seeds_give_different_traces():
    a, b = list(synthetic_rows(5, seed=1)), list(synthetic_rows(5, seed=2))
    assert all(x["response"] != y["response"] for x, y in zip(a, b))


def test_a_shorter_stream_is_a_prefix_of_a_longer_one():
    assert list(synthetic_rows(8, seed=3)) == list(synthetic_rows(25, seed=3))[:8]


def test_rows_are_generated_lazily():
    stream = synthetic_rows(10**12, seed=0)  # would never finish if it were built up front
    assert isinstance(stream, Iterator)
    assert next(stream)["synthetic"] is True


@pytest.mark.parametrize("n", [-1, 2.5, "10"])
def test_a_bad_count_is_a_config_error(n):
    with pytest.raises(ConfigError):
        synthetic_rows(n)


def test_rows_have_the_openmementos_columns_and_are_labelled_synthetic(rows):
    for row in rows[:50]:
        assert set(row) == {"problem", "response", "domain", "source", "difficulty", "synthetic"}
        assert row["domain"] in ("math", "code", "science")
        assert row["source"] == "synthetic" and row["synthetic"] is True
        assert isinstance(row["difficulty"], int) and 1 <= row["difficulty"] <= 10
        assert isinstance(row["problem"], str) and len(row["problem"]) > 50


# -- validity --------------------------------------------------------------------------------------------------


def test_every_synthetic_trace_parses_with_no_issues(rows):
    for row in rows:
        trace = parse_response(row["response"])
        assert trace.issues == [], trace.issues[:3]
        assert trace.render() == row["response"]
        assert len(trace.pairs()) == len(trace.blocks) >= 1
        assert trace.answer.strip(), "the final answer follows </think>"
        assert row["response"].startswith("<think><|block_start|>Okay, so I need to ")


# -- shape against reference-figures.md ---------------------------------------------------------------


def test_domain_shares_are_54_19_27_percent_on_every_prefix(rows):
    counts: Counter[str] = Counter()
    shares = {"math": 0.54, "code": 0.19, "science": 0.27}
    for i, row in enumerate(rows, start=1):
        counts[row["domain"]] += 1
        for domain, share in shares.items():
            assert abs(counts[domain] - share * i) <= 1, (i, counts)


def test_median_blocks_per_trace_are_9_9_7(measured):
    for domain, expected in {"math": 9, "code": 9, "science": 7}.items():
        assert abs(statistics.median(measured[domain]["blocks"]) - expected) <= 0.5
        assert min(measured[domain]["blocks"]) >= 1
        # A realistic spread, not a constant.
        assert statistics.pstdev(measured[domain]["blocks"]) > 2


def test_median_block_sizes_follow_the_paper(measured):
    medians = {d: statistics.median(m["block_chars"]) for d, m in measured.items()}
    assert medians["math"] == pytest.approx(3800, rel=0.05)
    assert medians["science"] == pytest.approx(2300, rel=0.05)
    assert medians["science"] < medians["code"] < medians["math"]


def test_median_memento_sizes_are_509_to_603_chars(measured):
    for domain, m in measured.items():
        assert 509 * 0.95 <= statistics.median(m["memento_chars"]) <= 603 * 1.05, domain


def test_median_compression_ratios_are_016_018_023(measured):
    for domain, expected in {"math": 0.16, "code": 0.18, "science": 0.23}.items():
        assert statistics.median(measured[domain]["char_ratio"]) == pytest.approx(expected, abs=0.01)


def test_mementos_use_longer_words_so_word_ratio_is_below_char_ratio(measured):
    # As in the tutorial's real sample (char ratio 0.158, word ratio 0.126).
    for m in measured.values():
        assert statistics.median(m["word_ratio"]) < 0.85 * statistics.median(m["char_ratio"])


def test_traces_compress_about_5_to_6x(measured):
    block = sum(sum(m["trace_block"]) for m in measured.values())
    memento = sum(sum(m["trace_memento"]) for m in measured.values())
    assert 4.8 <= block / memento <= 6.5


def test_text_looks_like_text(rows):
    by_domain: dict[str, list[str]] = {}
    for row in rows[:300]:
        by_domain.setdefault(row["domain"], []).append(row["response"])
    math, code, science = ("".join(by_domain[d]) for d in ("math", "code", "science"))
    assert "\\(" in math and "\\)" in math  # inline LaTeX
    assert "```python\n" in code and "def " in code  # code lines
    assert any(unit in science for unit in (" mol", " K", " nm", " kPa"))
    assert "\n" in math and ". " in math and ", " in math  # paragraphs, sentences, commas
    words = math.split()
    mean_length = sum(map(len, words)) / len(words)
    assert 3.0 <= mean_length <= 8.0
    assert len(set(words)) > 1000  # a vocabulary, not a few repeated tokens
    non_ascii = sum(not r["response"].isascii() for r in rows[:300])
    assert 0 < non_ascii
    assert sum(ch.isascii() for ch in math) / len(math) > 0.999  # only a few non-ASCII characters


def test_answers_follow_think_end_by_domain(rows):
    for row in rows[:100]:
        answer = row["response"].split("</think>", 1)[1]
        if row["domain"] == "math":
            assert re.search(r"\\boxed\{\d+\}", answer)
        elif row["domain"] == "code":
            assert "```python" in answer
        else:
            assert re.search(r"The answer is \([ABCD]\)\.", answer)


# -- files ------------------------------------------------------------------------------------------------------


def test_write_synthetic_jsonl_writes_the_same_rows_as_the_generator(tmp_path):
    path = tmp_path / "sub" / "synthetic.jsonl"
    assert write_synthetic_jsonl(path, 12, seed=4) == 12
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == list(synthetic_rows(12, seed=4))
    assert os.listdir(path.parent) == ["synthetic.jsonl"]  # no temporary file left behind
    assert path.stat().st_mode & 0o044, "readable by others, like any file open() creates (not mkstemp's 0600)"


def test_write_synthetic_jsonl_reports_progress_in_total_n(tmp_path):
    seen: list[int] = []
    write_synthetic_jsonl(tmp_path / "p.jsonl", 150, seed=0, progress=seen.append)
    assert sum(seen) == 150 and all(k > 0 for k in seen)


def test_a_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "keep.jsonl"
    path.write_text("old content\n")

    def fail(_: int) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_synthetic_jsonl(path, 200, seed=0, progress=fail)
    assert path.read_text() == "old content\n"
    assert os.listdir(tmp_path) == ["keep.jsonl"]


def test_build_sample_puts_the_real_trace_first_then_synthetic_rows(tmp_path):
    path = tmp_path / "sample.jsonl"
    assert build_sample(path, FIXTURE, n_synthetic=4, seed=9) == 5
    first, *rest = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert first["response"] == response_from_segments(fixture["segments"])
    assert first["problem"] == fixture["problem"]
    assert (first["domain"], first["source"], first["synthetic"]) == ("math", SAMPLE_REAL_SOURCE, False)
    assert rest == list(synthetic_rows(4, seed=9))


def test_the_shipped_sample_is_what_build_sample_makes(tmp_path):
    shipped = PACKAGE_DATA / "sample.jsonl"
    rebuilt = tmp_path / "sample.jsonl"
    build_sample(rebuilt, FIXTURE, n_synthetic=SAMPLE_N_SYNTHETIC, seed=SAMPLE_SEED)
    assert shipped.read_bytes() == rebuilt.read_bytes()
    assert shipped.stat().st_size < 3_000_000
    assert json.loads(shipped.open(encoding="utf-8").readline()) == real_sample_row(FIXTURE)


def test_the_shipped_sample_reads_through_the_package_reader():
    from mementokit.io import iter_traces

    records = list(iter_traces(PACKAGE_DATA / "sample.jsonl"))
    assert len(records) == SAMPLE_N_SYNTHETIC + 1
    assert records[0].source == SAMPLE_REAL_SOURCE
    assert {r.domain for r in records} == {"math", "code", "science"}
    assert sum(r.source == "synthetic" for r in records) == SAMPLE_N_SYNTHETIC


def test_the_sample_license_names_both_origins_and_carries_the_mit_text():
    upstream = (DATA / "LICENSE-microsoft-memento.txt").read_text(encoding="utf-8")
    shipped = (PACKAGE_DATA / "LICENSE-sample.txt").read_text(encoding="utf-8")
    assert shipped == sample_license_text(upstream)
    assert upstream.strip() in shipped
    assert "microsoft/memento" in shipped and "synthetic" in shipped
