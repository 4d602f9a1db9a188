"""The whole pipeline end to end, and the runner's promises: resume, retry, shards, kills at any moment."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers_llm_server import (
    Fault,
    Script,
    ledger_lines,
    pipeline_run_command,
    running_server,
    trace_variants,
    write_input,
)
from mementokit.format import parse_response
from mementokit.jsonl import read_ledger as read_jsonl
from mementokit.jsonl import repair_tail as _repair_tail
from mementokit.pipeline.client import LLMConfig
from mementokit.pipeline.config import PipelineConfig
from mementokit.pipeline.runner import run_pipeline, shard_of
from mementokit.pipeline.select import read_traces

FIXTURE = Path(__file__).parent / "data" / "raw_cot_openthoughts3.jsonl"


def fixture_row():
    return next(read_traces(str(FIXTURE)))


def variants(count):
    """Distinct traces cut from the fixture at different paragraph ends (each a complete <think>...</think>)."""
    row = fixture_row()
    body = row["cot"][len("<think>") : row["cot"].index("</think>")]
    cuts = [i for i in range(len(body)) if body.startswith("\n\n", i)]
    out = []
    for k in range(count):
        end = cuts[len(cuts) * (k + 3) // (count + 3)]
        out.append({**row, "task_id": f"t{k:02d}", "cot": "<think>" + body[:end] + "\n</think>\nDone."})
    return out


def config(url, **kwargs):
    llm = LLMConfig(
        model="scripted",
        base_url=url,
        api_key="x",
        backoff_base_s=0.01,
        backoff_max_s=0.02,
        cache_dir=kwargs.pop("cache_dir", None),
    )
    return PipelineConfig(llm=llm, **kwargs)


@pytest.mark.parametrize("style", ["plain", "messy"])
def test_fixture_trace_end_to_end(tmp_path, style):
    script = Script(style=style)
    with running_server(script) as url:
        report = run_pipeline([fixture_row()], tmp_path, config(url))
    (result,) = list(read_jsonl(tmp_path / "results.jsonl"))
    trace = parse_response(result["response"])
    assert trace.is_valid and trace.summary_texts() == result["block_summaries"]
    assert len(result["boundary_scores"]) == result["num_sentences"] - 1
    cot = fixture_row()["cot"]
    starts = [b[0] for b in result["blocks"]]
    assert starts[0] == 0 and result["blocks"][-1][1] == result["num_sentences"] - 1
    assert "".join(trace.block_texts()).replace(" ", "").replace("\n", "") == "".join(result["sentences"]).replace(
        " ", ""
    ).replace("\n", "")
    assert all(t in cot for t in trace.block_texts())  # blocks are spans of the original text
    assert min(result["block_tokens"]) >= 200
    assert report["traces"] == 1 and report["failed_traces"] == 0
    assert report["judge_pass_rate_final"] == 1.0 and 0 < report["median_compression_tokens"] < 1
    assert report["usage"]["prompt_tokens"] == script.prompt_tokens


def test_rerun_skips_finished_traces_and_costs_nothing(tmp_path):
    script = Script()
    rows = variants(3)
    with running_server(script) as url:
        run_pipeline(rows, tmp_path, config(url))
        calls = sum(script.roles.values())
        report = run_pipeline(rows, tmp_path, config(url))
    assert sum(script.roles.values()) == calls
    assert report["this_run"]["skipped_finished"] == 3 and report["traces"] == 3


def test_failed_traces_are_recorded_then_retried_on_rerun(tmp_path):
    rows = variants(2)
    bad = Script(faults=[Fault("malformed", role="score") for _ in range(1000)])
    with running_server(bad) as url:
        report = run_pipeline(rows, tmp_path, config(url))
    assert report["traces"] == 0 and report["failures_by_stage"] == {"score": 2}
    assert report["permanent_failures"] == 2  # unusable after every re-ask: skipped by a plain rerun
    with running_server(Script()) as url:
        skipped = run_pipeline(rows, tmp_path, config(url))
        assert skipped["this_run"]["skipped_failed"] == 2 and skipped["this_run"]["llm"]["requests"] == 0
        report = run_pipeline(rows, tmp_path, config(url, retry_failed=True))
    assert report["traces"] == 2 and report["failed_traces"] == 0
    assert list(read_jsonl(tmp_path / "failures.jsonl")) == []  # compacted: nothing stale left


def test_response_cache_makes_a_fresh_output_folder_free(tmp_path):
    script = Script()
    rows = variants(1)
    with running_server(script) as url:
        run_pipeline(rows, tmp_path / "a", config(url, cache_dir=str(tmp_path / "cache")))
        calls = sum(script.roles.values())
        report = run_pipeline(rows, tmp_path / "b", config(url, cache_dir=str(tmp_path / "cache")))
    assert sum(script.roles.values()) == calls and report["this_run"]["llm"]["cached"] == calls
    first = list(read_jsonl(tmp_path / "a" / "results.jsonl"))[0]
    second = list(read_jsonl(tmp_path / "b" / "results.jsonl"))[0]
    assert first["response"] == second["response"]


def test_shards_partition_the_input_and_limit_counts_within_a_shard(tmp_path):
    rows = variants(6)
    ids = {r["task_id"] for r in rows}
    with running_server(Script()) as url:
        done = []
        for i in range(3):  # three tasks sharing one folder, each with its own ledgers
            run_pipeline(rows, tmp_path / "shared", config(url, shard=(i, 3)))
            done.append({r["task_id"] for r in read_jsonl(tmp_path / "shared" / f"results.{i:05d}-of-00003.jsonl")})
        report = run_pipeline(rows, tmp_path / "shared", config(url, shard=(1, 3)))
        limited = run_pipeline(rows, tmp_path / "limited", config(url, limit=2))
    assert set().union(*done) == ids and sum(len(d) for d in done) == len(ids)
    assert all(shard_of(t, 3) == i for i, d in enumerate(done) for t in d)
    assert report["traces"] == 6 and report["this_run"]["skipped_finished"] == len(done[1])
    assert report["traces"] == 6 and report["this_run"]["skipped_finished"] == len(done[1])
    assert limited["traces"] == 2


def test_a_torn_last_line_is_cut_before_resuming(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"task_id": "a"}\n{"task_id": "b", "resp')
    _repair_tail(path)
    assert path.read_text() == '{"task_id": "a"}\n'


def test_killed_at_random_moments_the_runner_loses_and_duplicates_nothing(tmp_path):
    rows = trace_variants(8)
    source = write_input(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    rng = random.Random(1234)
    script = Script(latency_s=0.03)
    with running_server(script) as url:
        cmd = pipeline_run_command(source, out, url, "--traces-in-flight", "3", "--concurrency", "6", "--json")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        kills = 0
        for _ in range(4):
            before = ledger_lines(out / "results.jsonl")
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            deadline = time.monotonic() + 60
            # wait for the run to make progress, then kill it at a random moment (often mid-trace, mid-write)
            while proc.poll() is None and ledger_lines(out / "results.jsonl") == before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        final = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    lines = (out / "results.jsonl").read_text().splitlines()
    ids = [json.loads(line)["task_id"] for line in lines]
    assert sorted(ids) == sorted(r["task_id"] for r in rows)  # none lost, none twice
    assert report["traces"] == 8 and report["failed_traces"] == 0
    assert kills >= 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary file left by the kills
