"""What the commands print: tables whole at 80 columns (and piped), errors that say what is wrong, once."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from mementokit.cli.analysis import summary_table, token_table
from mementokit.cli.console import PIPED_WIDTH
from mementokit.cli.generation import _generation_table, _replay_table
from mementokit.cli.kv import aggregates_table, traces_table
from mementokit.errors import ConfigError
from mementokit.hf import check_model_folder, load_hf_model, load_hf_tokenizer

# ----- tables ----------------------------------------------------------------------------------------------------


def _lines(renderable, width: int = 80) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue().splitlines()


def _fits(renderable) -> None:
    lines = _lines(renderable)
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert "…" not in "\n".join(lines), "\n".join(lines)  # a cut cell


# Realistic ranges, to their ends: up to 10M traces, a million tokens or blocks in one trace, sizes up to 10M.
big = st.floats(min_value=0, max_value=9_999_999, allow_nan=False)
ratio = st.floats(min_value=0, max_value=1.5, allow_nan=False)
count = st.integers(min_value=0, max_value=9_999_999)
per_trace = st.integers(min_value=0, max_value=999_999)
domain = st.sampled_from(["math", "science", "code", "unknown"])


def _stats(value):
    return {"median": value, "p10": value, "p90": value, "count": 1, "mean": value}


@given(count, big, big, ratio, big, ratio)
def test_the_analysis_tables_fit_80_columns(traces, chars, tokens, r, blocks, compression):
    group = {"traces": traces, "valid": traces, "invalid": traces, "invalid_by_problem": {},
             "per_trace": {"blocks": _stats(blocks % 1000), "token_compression": _stats(1 / max(compression, 0.01))},
             "per_block": {k: _stats(chars) for k in ("block_chars", "summary_chars", "block_tokens", "summary_tokens")}
             | {k: _stats(r) for k in ("char_ratio", "word_ratio", "token_ratio")}}
    summary = {"tokenizer": "demo-model", "by_domain": {"science": group, "math": group}, "overall": group}
    _fits(summary_table(summary))
    _fits(token_table(summary))


@given(st.lists(st.tuples(per_trace, domain, per_trace, ratio, ratio, big), min_size=1, max_size=5), st.booleans())
def test_the_kv_tables_fit_80_columns(rows, in_bytes):
    results = []
    for i, (tokens, dom, blocks, peak, auc, peak_bytes) in enumerate(rows):
        kv = SimpleNamespace(peak_tokens=tokens, peak_bytes=int(peak_bytes * 2**20) if in_bytes else None)
        results.append(SimpleNamespace(index=i * 1000, domain=dom, tokens=tokens, blocks_completed=blocks, vanilla=kv,
                                       memento=kv, peak_ratio=peak, auc_ratio=auc))
    _fits(traces_table(results))
    group = {"traces": len(rows), "tokens": {"median": float(rows[0][0])},
             "peak_ratio": {"median": rows[0][3], "p90": rows[0][3]}, "auc_ratio": {"median": rows[0][4], "p90": 1.0}}
    _fits(aggregates_table({"all": group, "by_domain": {r[1]: group for r in rows}}))


@given(per_trace, per_trace, big, ratio)
def test_the_replay_and_generate_tables_fit_80_columns(tokens, evictions, mib, r):
    memory = {"peak_bytes": int(mib * 2**20)}
    _fits(_replay_table([{"index": 99, "tokens": tokens, "evictions": evictions, "peak_tokens": tokens,
                          "simulated_peak_tokens": tokens, "peak_bytes": memory["peak_bytes"], "vanilla": memory,
                          "peak_ratio": r, "auc_ratio": r}]))
    _fits(_generation_table([{"index": 7, "generated_tokens": tokens, "finish_reason": "length",
                              "evictions": evictions, "peak_tokens": tokens, "peak_bytes": memory["peak_bytes"],
                              "vanilla_peak_bytes": memory["peak_bytes"], "auc_ratio": r}]))


def test_render_shows_the_whole_problem_at_80_columns_and_piped():
    from mementokit.analysis.render import render_trace

    problem = "An isosceles trapezoid has an inscribed circle. " * 4 + "Find r^2 + s^2, THE END."
    record = SimpleNamespace(response="<think><|block_start|>a b<|block_end|><|summary_start|>a<|summary_end|>"
                                      "</think> 7", problem=problem, origin="x.jsonl:1", domain="math")
    for width in (80, PIPED_WIDTH):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        render_trace(console, record, max_chars=0)
        text = " ".join(console.file.getvalue().replace("│", " ").split())
        assert "THE END." in text and max(len(line) for line in console.file.getvalue().splitlines()) <= width


# ----- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["./no-such-tokenizer", "/no/such/tokenizer", "no-such-dir/"])
def test_a_missing_local_tokenizer_says_no_such_folder(path):
    with pytest.raises(ConfigError, match=r"no such folder"):
        load_hf_tokenizer(path)


def test_a_tokenizer_folder_without_tokenizer_files_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"holds none of tokenizer\.json"):
        load_hf_tokenizer(tmp_path)


def test_a_missing_model_is_named_as_the_model(tmp_path):
    with pytest.raises(ConfigError) as error:
        check_model_folder(tmp_path / "no-model")
    assert str(error.value) == f"model '{tmp_path / 'no-model'}': no such folder"


def test_an_empty_or_weightless_model_folder_gives_a_whole_message(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_hf_model(tmp_path)
    assert str(error.value) == f"model '{tmp_path}': the folder holds none of config.json"
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"has a config.json but no weights \(\*\.safetensors"):
        check_model_folder(tmp_path)


def _memento(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mementokit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={"COLUMNS": "80", "PYTHONPATH": ":".join(sys.path), "HF_HUB_OFFLINE": "1"},
                          timeout=300)


def test_generate_with_a_missing_model_blames_the_model_in_one_line(tmp_path):
    out = _memento("generate", "--model", tmp_path / "nope", "--prompt", "hi")
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: model '{tmp_path / 'nope'}': no such folder"
    assert "tokenizer" not in out.stderr


def test_json_errors_give_the_column_once(tmp_path):
    bad = tmp_path / "bad.jsonl"
    line = '{"response": "<think>a</think>", "domain": 5, bad}'
    bad.write_text('{"response": "x"}\n' + line + "\n")
    out = _memento("analyze", bad, "--json")
    column = line.index("bad}") + 1
    assert out.returncode == 2 and "at at" not in out.stderr
    assert "bad.jsonl:2" in out.stderr and f"column {column}" in out.stderr
    json_config = '{"enable": tru}'
    out = _memento("kv", bad, "--tokenizer", tmp_path, "--preset", "qwen3-8b", "--block-masking", json_config)
    assert out.returncode == 2 and "at at" not in out.stderr
    assert f"column {json_config.index('tru') + 1}" in out.stderr


def test_a_negative_limit_names_the_option(tmp_path):
    out = _memento("kv", tmp_path / "x.jsonl", "--tokenizer", tmp_path, "--preset", "qwen3-8b", "--limit", "-1")
    assert out.returncode == 2 and "--limit" in out.stderr
