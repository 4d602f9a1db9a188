"""`memento kv` end to end on a small JSONL, through the real app (typer CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from helpers_tokenizer import DATA_DIR, build_tiny_tokenizer
from mementokit.cli.main import app
from mementokit.errors import ConfigError

runner = CliRunner()


def kv_args(*args: str) -> list[str]:
    # A typer app with a single command takes no command name; with several (the normal case) it does.
    single = len(app.registered_commands) + len(app.registered_groups) == 1
    return list(args) if single else ["kv", *args]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("kvcli")
    tokenizer = build_tiny_tokenizer(root)
    trace = json.loads((DATA_DIR / "memento_trace_aime2025_p5.json").read_text())
    blocks = [s["text"] for s in trace["segments"] if s["type"] == "block"]
    summaries = [s["text"] for s in trace["segments"] if s["type"] == "summary"]

    def response(n: int) -> str:
        body = "".join(f"<|block_start|>{b}<|block_end|>\n<|summary_start|>{s}<|summary_end|>\n"
                       for b, s in zip(blocks[:n], summaries[:n]))
        return f"<think>{body}</think>\nThe answer is 504."

    rows = [{"problem": trace["problem"], "response": response(n), "domain": d}
            for n, d in [(5, "math"), (3, "math"), (2, "code")]]
    data = root / "traces.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = root / "model" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                                  "head_dim": 128, "hidden_size": 4096, "torch_dtype": "bfloat16"}))
    return {"root": root, "tokenizer": str(root / "tiny-tokenizer"), "data": str(data), "config": str(config),
            "vocab": len(tokenizer)}


def run_json(*args: str) -> dict:
    result = runner.invoke(app, kv_args(*args, "--json"))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_output_has_the_documented_keys(workdir):
    report = run_json(workdir["data"], "--tokenizer", workdir["tokenizer"], "--preset", "qwen3-8b")
    assert report["bytes_per_token"] == 147_456
    assert len(report["traces"]) == 3
    for trace in report["traces"]:
        for side in ("vanilla", "memento"):
            assert {"peak_tokens", "mean_tokens", "auc_token_ktokens", "peak_bytes"} <= set(trace[side])
        assert trace["memento"]["peak_tokens"] < trace["vanilla"]["peak_tokens"]
        assert trace["vanilla"]["peak_bytes"] == trace["vanilla"]["peak_tokens"] * 147_456
    assert report["aggregates"]["all"]["traces"] == 3
    assert set(report["aggregates"]["by_domain"]) == {"math", "code"}
    assert {"median", "p90"} <= set(report["aggregates"]["by_domain"]["math"]["peak_ratio"])
    assert report["block_masking"]["keep_last_n_blocks"] == 0 and report["block_masking"]["mask_delimiters"] is False


def test_model_config_gives_the_same_bytes_as_the_preset(workdir):
    report = run_json(workdir["data"], "--tokenizer", workdir["tokenizer"], "--model-config", workdir["config"],
                      "--limit", "1")
    assert report["bytes_per_token"] == 147_456 and len(report["traces"]) == 1


def test_block_masking_option_and_with_prompt(workdir):
    keep_all = run_json(workdir["data"], "--tokenizer", workdir["tokenizer"], "--preset", "phi-4",
                        "--block-masking", '{"enable": true, "keep_last_n_blocks": -1, "mask_delimiters": true}')
    assert all(t["memento"] == t["vanilla"] for t in keep_all["traces"])
    prompted = run_json(workdir["data"], "--tokenizer", workdir["tokenizer"], "--preset", "phi-4", "--with-prompt")
    assert prompted["assistant_gating"] and all(t["prompt_tokens"] > 0 for t in prompted["traces"])


def test_plot_is_written(workdir):
    out = workdir["root"] / "kv.png"
    report = run_json(workdir["data"], "--tokenizer", workdir["tokenizer"], "--preset", "qwen3-8b",
                      "--plot", str(out), "--plot-trace", "1")
    assert report["plot"] == str(out) and out.read_bytes()[:4] == b"\x89PNG"


def test_table_output_without_json(workdir):
    result = runner.invoke(app, kv_args(workdir["data"], "--tokenizer", workdir["tokenizer"], "--preset", "qwen3-8b"))
    assert result.exit_code == 0, result.output
    assert "147,456 bytes per token" in result.stdout and "math" in result.stdout


def test_unknown_block_masking_key_is_a_config_error(workdir):
    result = runner.invoke(app, kv_args(workdir["data"], "--tokenizer", workdir["tokenizer"], "--preset", "qwen3-8b",
                                        "--block-masking", '{"enable": true, "mask_delimiters": false, "keep": 1}'))
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "'keep'" in str(result.exception)


def test_model_description_is_required_once(workdir):
    result = runner.invoke(app, kv_args(workdir["data"], "--tokenizer", workdir["tokenizer"]))
    assert isinstance(result.exception, ConfigError) and "--preset" in str(result.exception)
