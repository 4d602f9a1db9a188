"""Scale-out on datatrove's executors, and the OpenMementos-layout export read back by `datasets` and `analyze`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

from helpers_llm_server import Script, ledger_lines, pipeline_run_command, running_server, trace_variants, write_input
from mementokit.cli.main import app
from mementokit.errors import ConfigError
from mementokit.format import parse_response
from mementokit.jsonl import read_ledger
from mementokit.pipeline.client import LLMConfig
from mementokit.pipeline.config import PipelineConfig
from mementokit.pipeline.runner import run_pipeline, shard_of

pytest.importorskip("datatrove")


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_datatrove_local_executor_2_tasks_2_workers_a_killed_task_resumes_without_duplicates(tmp_path):
    rows = trace_variants(8)
    source = write_input(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    shard0, shard1 = out / "results.00000-of-00002.jsonl", out / "results.00001-of-00002.jsonl"
    with running_server(Script(latency_s=0.1)) as url:
        cmd = pipeline_run_command(
            source,
            out,
            url,
            "--executor",
            "local",
            "--tasks",
            "2",
            "--workers",
            "2",
            "--traces-in-flight",
            "1",
            "--json",
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_for(lambda: ledger_lines(shard0) >= 1)  # task 0 is under way: kill the process running it
            worker = int((out / ".shard.00000-of-00002.lock").read_text().split()[0])
            os.kill(worker, signal.SIGKILL)
            killed_at = ledger_lines(shard0)
            wait_for(lambda: (out / "datatrove" / "completions" / "00001").exists())
        finally:  # a pool whose worker died never returns: end the whole run
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        assert not (out / "datatrove" / "completions" / "00000").exists()
        assert killed_at < sum(shard_of(r["task_id"], 2) == 0 for r in rows)
        finished_before = shard1.read_bytes()
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(rerun.stdout)
    ids = [r["task_id"] for p in (shard0, shard1) for r in read_ledger(p)]
    assert sorted(ids) == sorted(r["task_id"] for r in rows)  # none lost, none twice
    assert all(shard_of(r["task_id"], 2) == i for i, p in enumerate((shard0, shard1)) for r in read_ledger(p))
    assert shard1.read_bytes() == finished_before  # the finished task was skipped
    in_shard0 = sum(shard_of(r["task_id"], 2) == 0 for r in rows)
    assert report["traces"] == 8 and report["this_run"]["done"] == in_shard0 - killed_at
    assert report["tasks"]["completed"] == 2


def test_a_task_left_with_transient_failures_is_reopened_and_slurm_is_built_from_the_same_step(tmp_path):
    from mementokit.pipeline.scale import ExecutorOptions, StepSpec, make_executor, reopen_unfinished_tasks

    out = tmp_path / "out"
    (out / "datatrove" / "completions").mkdir(parents=True)
    for rank in (0, 1):
        (out / "datatrove" / "completions" / f"{rank:05d}").touch()
    (out / "failures.00001-of-00002.jsonl").write_text(
        json.dumps({"task_id": "a", "stage": "score", "permanent": False}) + "\n"
    )
    (out / "failures.00000-of-00002.jsonl").write_text(
        json.dumps({"task_id": "b", "stage": "split", "permanent": True}) + "\n"
    )
    assert reopen_unfinished_tasks(out, 2) == [1]
    spec = StepSpec("in.jsonl", str(out), PipelineConfig(llm=LLMConfig(model="m")))
    executor = make_executor(spec, ExecutorOptions("slurm", tasks=4, workers=2, partition="cpu", time="01:00:00"))
    assert executor.world_size == 4 and executor.pipeline[0].spec == spec
    with pytest.raises(ConfigError, match="partition"):
        ExecutorOptions("slurm", tasks=2)
    with pytest.raises(ConfigError, match="local, slurm, ray"):
        ExecutorOptions("dask")


def test_export_writes_the_openmementos_layout_that_datasets_and_analyze_read_back(tmp_path):
    import datasets

    rows = trace_variants(3)
    rows[1]["difficulty"], rows[2]["difficulty"] = 7, "hard"
    out = tmp_path / "out"
    with running_server(Script()) as url:
        cfg = PipelineConfig(llm=LLMConfig(model="scripted", base_url=url, api_key="x"))
        run_pipeline(rows, out, cfg)
    runner = CliRunner()
    assembled = runner.invoke(
        app, ["pipeline", "assemble", str(out / "results.jsonl"), "--out", str(tmp_path / "a.jsonl")]
    )
    assert assembled.exit_code == 0, assembled.output  # `assemble` takes `run` output (no cot in it)
    again = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["response"] for r in again] == [r["response"] for r in read_ledger(out / "results.jsonl")]
    exported = runner.invoke(app, ["pipeline", "export", str(out), "--to", str(tmp_path / "ds"), "--json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["difficulty_not_an_integer"] == 1  # counted, not silently dropped
    default = datasets.load_dataset(str(tmp_path / "ds"), split="train")
    full = datasets.load_dataset(str(tmp_path / "ds"), "full", split="train")
    assert default.column_names == ["problem", "response", "domain", "source", "difficulty"]
    assert set(full.column_names) >= {"sentences", "blocks", "block_summaries"} and len(full) == 3
    assert sorted(default["difficulty"], key=str) == sorted([None, 7, None], key=str)
    for row in full:
        trace = parse_response(row["response"])
        assert trace.summary_texts() == row["block_summaries"]
        assert row["blocks"][0][0] == 0 and row["blocks"][-1][1] == len(row["sentences"]) - 1  # inclusive ends
        assert all(b[0] == a[1] + 1 for a, b in zip(row["blocks"], row["blocks"][1:]))
    analyzed = runner.invoke(app, ["analyze", str(tmp_path / "ds"), "--json"])
    assert analyzed.exit_code == 0, analyzed.output
    summary = json.loads(analyzed.stdout)
    domains = summary["by_domain"].values()
    assert sum(d["traces"] for d in domains) == 3 and sum(d["valid"] for d in domains) == 3
