"""`memento sft` and `memento train` through the real command-line app."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import datasets
import pytest

from helpers_cli import invoke
from helpers_sft import save_tiny_model, short_traces, write_jsonl
from helpers_tokenizer import build_tiny_tokenizer
from mementokit.errors import ConfigError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    build_tiny_tokenizer(folder, with_markers=False)
    traces = write_jsonl(folder / "traces.jsonl", short_traces(6, seed=11, blocks=2))
    model = save_tiny_model(folder / "model", 601, arch="qwen3")
    return folder / "tiny-tokenizer", traces, model


def test_sft_stage_two_writes_every_format_and_prints_one_json_object(inputs, tmp_path):
    tokenizer, traces, _ = inputs
    result = invoke(
        "sft",
        traces,
        "--tokenizer",
        tokenizer,
        "--out",
        tmp_path / "out",
        "--stage",
        "2",
        "--keep-last-n",
        "1",
        "--mask-delimiters",
        "--max-length",
        "40",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["examples"] == 6 and report["options"]["mask_delimiters"] is True
    assert report["options"]["block_masking"]["keep_last_n_blocks"] == 1
    assert report["statistics"]["tokens_per_example"]["max"] <= 40
    out = tmp_path / "out"
    assert len(datasets.load_from_disk(str(out / "arrow"))) == 6
    assert {"README.md", "memento_sft.json", "messages.jsonl", "data", "tokenizer"} <= {p.name for p in out.iterdir()}


def test_sft_stage_one_prints_a_summary_table(inputs, tmp_path):
    tokenizer, traces, _ = inputs
    result = invoke("sft", traces, "-t", tokenizer, "-o", tmp_path / "out", "--limit", "3", "--format", "parquet")
    assert result.exit_code == 0, result.output
    assert "memento sft: stage 1" in result.stdout and "examples" in result.stdout
    assert not (tmp_path / "out" / "arrow").exists()


def test_stage_two_without_a_delimiter_choice_is_one_line_error(inputs, tmp_path):
    tokenizer, traces, _ = inputs
    with pytest.raises(ConfigError, match="--keep-delimiters"):
        invoke("sft", traces, "-t", tokenizer, "-o", tmp_path / "out", "--stage", "2")
    with pytest.raises(ConfigError, match="stage 2 only"):
        invoke("sft", traces, "-t", tokenizer, "-o", tmp_path / "out", "--mask-delimiters")
    # Through the real entry point: one line on stderr, no traceback, exit status 2.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mementokit",
            "sft",
            str(traces),
            "-t",
            str(tokenizer),
            "-o",
            str(tmp_path / "out"),
            "--stage",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "error:" in run.stderr and "--keep-delimiters" in run.stderr


def test_train_runs_end_to_end_and_resumes(inputs, tmp_path):
    tokenizer, traces, model = inputs
    data = tmp_path / "data"
    assert invoke("sft", traces, "-t", tokenizer, "-o", data, "--stage", "2", "--keep-delimiters").exit_code == 0
    result = invoke(
        "train",
        "--model",
        model,
        "--data",
        data,
        "--stage",
        "2",
        "--out",
        tmp_path / "run",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--save-steps",
        "1",
        "--device",
        "cpu",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["steps"] == 2 and len(report["history"]) == 2 and report["init_tokens"]["markers_added"] == 0
    assert (tmp_path / "run" / "final" / "block_masking.json").is_file()
    more = invoke(
        "train",
        "--model",
        model,
        "--data",
        data,
        "--stage",
        "2",
        "--out",
        tmp_path / "run",
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--resume",
        "auto",
    )
    assert more.exit_code == 0, more.output
    assert "resumed from" in more.stdout and "checkpoint-2" in more.stdout


def test_help_shows_an_example_for_both_commands():
    for command in ("sft", "train"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and re.search(r"Examples?:\n +memento " + command, result.stdout)
