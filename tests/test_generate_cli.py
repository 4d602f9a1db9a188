"""`memento generate` and `memento replay` on a tiny model saved to disk (no hub)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers_cli import invoke
from helpers_models import build_tiny_model
from helpers_tokenizer import build_tiny_tokenizer

MASKING = '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}'
RESPONSE = (
    "<think><|block_start|>First I compute the sum of the two numbers carefully.<|block_end|>"
    "<|summary_start|>Sum computed.<|summary_end|><|block_start|>Then I check the result again, twice over."
    "<|block_end|>\n<|summary_start|>Checked.<|summary_end|></think>The answer is 4."
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tiny_tokenizer(folder)
    model = build_tiny_model("qwen3", len(tokenizer))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    path = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    rows = [
        {"problem": "What is 2 + 2?", "response": RESPONSE, "domain": "math"},
        {"problem": "And 3 + 3?", "response": RESPONSE.replace("4", "6"), "domain": "math"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_generate_prints_json_with_cache_summary_and_writes_curve_and_plot(model_dir, tmp_path):
    curve, plot = tmp_path / "curve.json", tmp_path / "kv.png"
    result = invoke(
        "generate",
        "--model",
        model_dir,
        "--prompt",
        "What is 2 + 2?",
        "--block-masking",
        MASKING,
        "--max-new-tokens",
        12,
        "--ignore-eos",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--curve",
        curve,
        "--plot",
        plot,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    row = report["rows"][0]
    assert row["generated_tokens"] == 12 and row["finish_reason"] == "length"
    assert row["peak_tokens"] >= row["prompt_tokens"] and row["peak_bytes"] > 0
    saved = json.loads(curve.read_text())
    assert len(saved["rows"][0]["cache_tokens"]) == 12  # prefill + 11 fed tokens
    assert plot.stat().st_size > 1000


def test_generate_batch_from_a_prompts_file_with_sampling_flags(model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"problem": "one"}\n{"prompt": "two"}\n{"question": "three"}\n', encoding="utf-8")
    result = invoke(
        "generate",
        "--model",
        model_dir,
        "--prompts",
        prompts,
        "--block-masking",
        MASKING,
        "--max-new-tokens",
        6,
        "--temperature",
        0.7,
        "--top-p",
        0.9,
        "--top-k",
        30,
        "--min-p",
        0.05,
        "--seed",
        1,
        "--ignore-eos",
        "--batch-size",
        2,
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["prompt"] for r in rows] == ["one", "two", "three"]
    assert all(r["generated_tokens"] == 6 for r in rows)


def test_generate_streams_text(model_dir):
    result = invoke(
        "generate",
        "--model",
        model_dir,
        "--prompt",
        "hi",
        "--block-masking",
        MASKING,
        "--max-new-tokens",
        5,
        "--ignore-eos",
        "--stream",
        "--dtype",
        "float32",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "KV cache (measured)" in result.stdout


@pytest.mark.parametrize("with_prompt", [False, True])
def test_replay_measures_what_memento_kv_simulates(model_dir, traces, with_prompt):
    flags = ["--with-prompt"] if with_prompt else []
    replayed = invoke(
        "replay",
        traces,
        "--model",
        model_dir,
        "--tokenizer",
        model_dir,
        "--block-masking",
        MASKING,
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--json",
        *flags,
    )
    assert replayed.exit_code == 0, replayed.output
    simulated = invoke(
        "kv",
        traces,
        "--tokenizer",
        model_dir,
        "--model-config",
        model_dir / "config.json",
        "--block-masking",
        MASKING,
        "--json",
        *flags,
    )
    assert simulated.exit_code == 0, simulated.output
    measured = json.loads(replayed.stdout)["traces"]
    expected = json.loads(simulated.stdout)["traces"]
    assert len(measured) == len(expected) == 2
    for m, e in zip(measured, expected):
        assert m["evictions"] > 0 and m["matches_simulator"]
        assert m["tokens"] == e["tokens"]
        assert m["peak_tokens"] == e["memento"]["peak_tokens"]
        assert m["peak_bytes"] == e["memento"]["peak_bytes"]
        assert m["vanilla"]["peak_bytes"] == e["vanilla"]["peak_bytes"]


def test_replay_saves_the_logits_of_one_trace(model_dir, traces, tmp_path):
    out = tmp_path / "logits.npy"
    result = invoke(
        "replay",
        traces,
        "--model",
        model_dir,
        "--tokenizer",
        model_dir,
        "--block-masking",
        MASKING,
        "--limit",
        1,
        "--save-logits",
        out,
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--json",
    )
    assert result.exit_code == 0, result.output
    logits = np.load(out)
    report = json.loads(result.stdout)["traces"][0]
    assert logits.dtype == np.float32 and logits.shape[0] == report["tokens"] and logits.shape[1] >= 605


def test_replay_refuses_to_save_logits_of_several_traces(model_dir, traces, tmp_path):
    from mementokit.errors import ConfigError

    with pytest.raises(ConfigError, match="--limit 1"):
        invoke("replay", traces, "--model", model_dir, "--tokenizer", model_dir, "--save-logits", tmp_path / "x.npy")


def test_bad_block_masking_is_one_line_and_exit_code_2(model_dir):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mementokit.cli",
            "generate",
            "--model",
            str(model_dir),
            "--prompt",
            "hi",
            "--block-masking",
            '{"enable": true, "keep_last_n_blocks": 0}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "mask_delimiters" in lines[0] and "Traceback" not in completed.stderr
