"""Teacher generation and conversion against a real teacher on 127.0.0.1 (a tiny random LM returning its own
logprobs and the ids it generated): exact ids end to end, resume after a kill, servers that fall short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers_cli import invoke
from helpers_distill import build_teacher, calculator_history, serve_teacher, write_checkpoint
from helpers_llm_server import Script, running_server
from mementokit.distill import GenerateConfig, convert, generate, load_config
from mementokit.distill.convert import FlatTopLogprobs
from mementokit.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
K = 5


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def generated(teacher, tmp_path_factory):
    """12 samples generated at temperature 1.5 (so that rare byte tokens get drawn), then converted keeping every
    top entry: (folder, server stats, parquet path, convert report)."""
    folder = tmp_path_factory.mktemp("gen")
    checkpoint = write_checkpoint(folder / "ep_000200", calculator_history(12))
    with serve_teacher(teacher) as (url, stats):
        report = generate(GenerateConfig(checkpoint_dir=str(checkpoint), model="teacher", base_url=url,
                                         out=str(folder / "out"), top_logprobs=K, max_tokens=24, temperature=1.5,
                                         max_concurrency=4, metadata={"dataset_version": "v1"}))
    assert report["finished"] == 12 and report["failed"] == 0
    parquet = folder / "data.parquet"
    converted = convert(folder / "out" / "results.jsonl", teacher.folder, parquet, min_prob_mass=1.0)
    return folder, stats, parquet, converted


def lossy(tokenizer, token_id: int) -> bool:
    """A token whose decoded string loses information (a lone byte of a multi-byte UTF-8 character)."""
    text = tokenizer.decode([token_id])
    return "\ufffd" in text or tokenizer.encode(text, add_special_tokens=False) != [token_id]


def test_parquet_ids_are_the_ids_the_server_generated(generated, teacher):
    folder, stats, parquet, converted = generated
    conversations = pq.read_table(parquet).column("messages").to_pylist()
    assistant = [c[-1] for c in conversations]
    assert sorted(map(tuple, stats.generated)) == sorted(tuple(a["token_ids"]) for a in assistant)
    by_ids = {tuple(ids): top for ids, top in zip(stats.generated, stats.generated_top)}
    for message in assistant:
        top = message["top_logprobs"]
        flat = FlatTopLogprobs(np.asarray(top["token_idx"]), np.asarray(top["token_id"]),
                               np.asarray(top["logprobs"]), tuple(top["shape"]))
        _, dense_ids = flat.reconstruct()
        assert dense_ids.tolist() == by_ids[tuple(message["token_ids"])]  # every top-k id, in the server's order
    drawn = {t for ids in stats.generated for t in ids} | {t for tops in stats.generated_top for r in tops for t in r}
    byte_tokens = [t for t in drawn if lossy(teacher.tokenizer, t)]
    assert byte_tokens, "the test must cover a byte-fallback token"
    assert converted["conversations_with_ids_from_strings"] == 0


def test_parquet_reads_back_with_the_cartridges_schema(generated):
    import pyarrow as pa

    _, _, parquet, converted = generated
    schema = pq.read_schema(parquet)
    top = pa.struct([("token_idx", pa.list_(pa.int64())), ("token_id", pa.list_(pa.int32())),
                     ("logprobs", pa.list_(pa.float32())), ("shape", pa.list_(pa.int64()))])
    message = pa.struct([("content", pa.string()), ("role", pa.string()), ("token_ids", pa.list_(pa.int64())),
                         ("top_logprobs", top)])
    assert schema.names == ["messages", "system_prompt", "metadata", "type"]
    assert schema.field("messages").type == pa.list_(message)
    assert schema.field("system_prompt").type == pa.string() and schema.field("type").type == pa.string()
    meta = schema.field("metadata").type
    assert {"sample_idx", "metrics", "dataset_version"} <= {f.name for f in meta}
    rows = pq.read_table(parquet).to_pylist()
    assert [r["metadata"]["sample_idx"] for r in sorted(rows, key=lambda r: r["metadata"]["sample_idx"])] == list(
        range(12))
    for row in rows:
        assert row["type"] == "memory_distillation"
        system, user, assistant = row["messages"]
        assert system["top_logprobs"] is None and user["top_logprobs"] is None
        assert system["content"] == row["system_prompt"] and system["token_ids"]
        shape = assistant["top_logprobs"]["shape"]
        assert shape == [len(assistant["token_ids"]), K]
        assert len(assistant["top_logprobs"]["token_idx"]) == shape[0] * K  # min_prob_mass 1.0: all kept
    assert converted["assistant_tokens"] == sum(len(r["messages"][2]["token_ids"]) for r in rows)


def test_pandas_reader_like_cartridges_sees_the_same_arrays(generated):
    import pandas as pd

    _, stats, parquet, _ = generated
    records = pd.read_parquet(parquet).to_dict(orient="records")  # cartridges' _conversations_from_parquet
    for record in records:
        top = record["messages"][-1]["top_logprobs"]
        flat = FlatTopLogprobs(**top)
        assert flat.shape[0] == len(record["messages"][-1]["token_ids"])
        assert list(record["messages"][-1]["token_ids"]) in stats.generated


def test_convert_command_and_inspect(generated, teacher, tmp_path):
    folder, _, _, _ = generated
    out = tmp_path / "small.parquet"
    result = invoke("distill", "convert", folder / "out" / "results.jsonl", "--tokenizer", teacher.folder,
                    "--min-prob-mass", "0.5", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["conversations"] == 12 and report["mean_entries_per_token"] < K
    result = invoke("distill", "inspect", out, "--tokenizer", teacher.folder, "--tokens", "3")
    assert result.exit_code == 0, result.output
    assert "mean_entries_per_token" in result.stdout and "conversation 0" in result.stdout


def test_killed_generation_resumes_without_losing_or_repeating(teacher, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "ep_000007", calculator_history(16))
    out = tmp_path / "out"
    with serve_teacher(teacher, latency_s=0.15) as (url, stats):
        args = [sys.executable, "-m", "mementokit", "distill", "generate", str(checkpoint), "--model", "teacher",
                "--base-url", url, "--out", str(out), "--top-logprobs", "3", "--max-tokens", "6",
                "--concurrency", "2"]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OPENAI_API_KEY="none")
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        results = out / "results.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if results.exists() and results.read_text().count("\n") >= 4:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        first = [json.loads(line) for line in results.read_text().splitlines()]
        assert 4 <= len(first) < 16, "the kill must land mid-run"
        finished = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    ids = [r["task_id"] for r in rows]
    assert sorted(ids) == [f"sample-{i:06d}" for i in range(16)]  # nothing lost, nothing twice
    assert rows[:len(first)] == first  # finished rows untouched
    assert 16 <= stats.requests <= 16 + 2  # at most the calls in flight at the kill were asked again
    assert all(r["messages"][-1]["token_ids"] in stats.generated for r in rows)


def test_a_server_without_logprobs_fails_each_sample_with_the_reason(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "ep_000001", calculator_history(3))
    with running_server(Script()) as url:
        result = invoke("distill", "generate", checkpoint, "--model", "scripted", "--base-url", url,
                        "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "the server returned no logprobs" in result.stderr
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 3 and {f["stage"] for f in failures} == {"logprobs"}


def test_fewer_top_logprobs_than_asked_is_an_error(teacher, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "ep_000001", calculator_history(2))
    with serve_teacher(teacher, top_limit=2) as (url, _):
        report = generate(GenerateConfig(checkpoint_dir=str(checkpoint), model="t", base_url=url,
                                         out=str(tmp_path / "out"), top_logprobs=4, max_tokens=4))
    assert report["failed"] == 2 and report["finished"] == 0
    assert "2 top logprobs for token 0, fewer than the 4 asked" in report["failure_reasons"][0]


def test_string_only_servers_raw_vocabulary_strings_map_decoded_byte_tokens_do_not(teacher, tmp_path):
    """Servers without ids: raw vocabulary strings ("Ġthe", as Tokasaurus sends) map to the generated ids, byte
    tokens included, and the report says the ids came from strings; decoded strings (vLLM without
    return_token_ids) lose the byte-fallback tokens: an error naming file, line and field, or skipped and counted."""
    checkpoint = write_checkpoint(tmp_path / "ep_000001", calculator_history(4))
    for name, raw in (("raw", True), ("decoded", False)):
        with serve_teacher(teacher, raw_strings=raw) as (url, stats):
            generate(GenerateConfig(checkpoint_dir=str(checkpoint), model="t", base_url=url, top_logprobs=3,
                                    out=str(tmp_path / name), max_tokens=8, temperature=1.5, id_source="strings"))
        if raw:
            generated_raw = stats.generated
    raw = tmp_path / "raw" / "results.jsonl"
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    assert all(r["metadata"]["token_ids_from"] == "strings" and r["messages"][-1]["token_ids"] is None for r in rows)
    assert any(lossy(teacher.tokenizer, t) for ids in generated_raw for t in ids)
    report = convert(raw, teacher.folder, tmp_path / "raw.parquet")
    assert report["conversations_with_ids_from_strings"] == 4
    mapped = [c[-1]["token_ids"] for c in pq.read_table(tmp_path / "raw.parquet").column("messages").to_pylist()]
    assert sorted(mapped) == sorted(generated_raw)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(raw.read_text() + (tmp_path / "decoded" / "results.jsonl").read_text())
    with pytest.raises(InputError) as info:
        convert(mixed, teacher.folder, tmp_path / "x.parquet")
    assert str(info.value).startswith(f"{mixed}:5, field 'messages[2].logprobs.content[")
    assert "does not map to one id" in str(info.value)
    report = convert(mixed, teacher.folder, tmp_path / "x.parquet", skip_bad=True)
    assert (report["conversations"], report["skipped"]) == (4, 4)


def test_config_file_replaces_the_flags(tmp_path, teacher):
    checkpoint = write_checkpoint(tmp_path / "ep_000002", calculator_history(3))
    config = tmp_path / "gen.yaml"
    config.write_text(f"checkpoint_dir: {checkpoint}\noutput_dir: {tmp_path / 'out'}\noutput_format: jsonl\n"
                      "strategy: rolling_window\nwindow: 3\nlm_model: teacher\ntop_logprobs: 3\nmax_samples: 2\n"
                      "max_tokens: 4\nmetadata:\n  dataset_version: v2\n  description: test\n")
    with serve_teacher(teacher) as (url, _):
        result = invoke("distill", "generate", "--config", config, "--base-url", url)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["metadata"]["description"] == "test"
    assert rows[1]["metadata"]["strategy"] == "rolling_window"
    config.write_text("checkpoint_dir: x\nlm_model: m\noutput_dir: o\nstrategee: full_memory\n")
    with pytest.raises(InputError, match="field 'strategee': unknown setting"):
        load_config(config)
