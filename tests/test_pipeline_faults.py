"""A messy provider: every fault kind real providers show, honest accounting, early abort, locks, reruns."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time

import pytest
from typer.testing import CliRunner

from helpers_llm_server import Fault, Script, pipeline_run_command, running_server, trace_variants, write_input
from mementokit.cli.main import app
from mementokit.errors import ConfigError, LLMAbort, LLMError, MementoError, StageFailure
from mementokit.jsonl import read_ledger
from mementokit.pipeline.client import LLMClient, LLMConfig
from mementokit.pipeline.config import PipelineConfig
from mementokit.pipeline.ledger import OutputFolder
from mementokit.pipeline.runner import run_pipeline
from mementokit.pipeline.score import ScoreConfig

SCORE_MESSAGES = [
    {"role": "system", "content": "You rate where a chain of thought may be cut."},
    {"role": "user", "content": "One. [[B0]] Two. [[B1]] Three."},
]
FAST = dict(api_key="x", backoff_base_s=0.01, backoff_max_s=0.02)


def config(url, **kwargs):
    llm = {"model": "scripted", "base_url": url, **FAST, "timeout_s": 10}
    llm.update(kwargs.pop("llm", {}))
    return PipelineConfig(llm=LLMConfig(**llm), **kwargs)


@pytest.mark.parametrize("kind", ["429", "500", "503", "truncated", "empty_choices", "slow", "drop"])
def test_each_transient_fault_is_retried_and_every_attempt_counted(kind):
    script = Script(faults=[Fault(kind, retry_after=0.01, seconds=3.0)])
    with running_server(script) as url:
        client = LLMClient(LLMConfig(model="scripted", base_url=url, **FAST, timeout_s=1.0))
        answer = asyncio.run(client.complete(SCORE_MESSAGES, stage="score"))
    usage = client.usage.stage("score")
    assert '"0"' in answer and usage.retries == 1 and usage.calls == 1
    assert usage.requests == script.requests == 2  # the failed attempt is counted too
    assert (usage.prompt_tokens, usage.completion_tokens) == (script.prompt_tokens, script.completion_tokens)


def test_a_run_with_random_faults_finishes_every_trace_in_one_run_and_bills_what_the_server_counted(tmp_path):
    rows = trace_variants(20)
    script = Script(fault_rate=0.15, slow_s=2.5, seed=7)
    with running_server(script) as url:
        cfg = config(
            url,
            llm={"max_concurrency": 16, "timeout_s": 1.5, "max_retries": 8},
            workers=8,
            price_prompt_per_mtok=2.0,
            price_completion_per_mtok=8.0,
        )
        report = run_pipeline(rows, tmp_path, cfg)
    faults = sum(n for k, n in script.statuses.items() if k != "200")
    assert faults >= 10  # the provider really was messy
    assert report["traces"] == 20 and report["failed_traces"] == 0
    run = report["this_run"]["llm"]
    assert run["requests"] == script.requests and report["usage"]["requests"] == script.requests
    assert run["prompt_tokens"] == script.prompt_tokens and run["completion_tokens"] == script.completion_tokens
    assert run["retries"] >= faults - 1  # every fault but possibly one that hit a re-ask's last try was retried
    expected = (script.prompt_tokens * 2.0 + script.completion_tokens * 8.0) / 1e6
    assert report["this_run"]["cost"] == pytest.approx(expected, abs=1e-6) and report["cost"] == pytest.approx(
        expected, abs=1e-6
    )


def test_accounting_is_cumulative_over_resumed_runs_and_counts_failed_traces(tmp_path):
    rows = trace_variants(3)
    broken = Script(faults=[Fault("500", role="compress") for _ in range(100)])
    with running_server(broken) as url:
        first = run_pipeline(rows, tmp_path, config(url, llm={"max_retries": 1}))
    assert first["traces"] == 0 and first["failed_traces"] == 3 and first["permanent_failures"] == 0
    assert first["usage"]["requests"] == broken.requests  # the failed traces' calls are billed too
    good = Script()
    with running_server(good) as url:
        second = run_pipeline(rows, tmp_path, config(url))
    assert second["traces"] == 3 and second["runs"] == 2
    assert second["this_run"]["llm"]["requests"] == good.requests
    assert second["usage"]["requests"] == broken.requests + good.requests
    assert second["usage"]["prompt_tokens"] == broken.prompt_tokens + good.prompt_tokens


@pytest.mark.parametrize("kind", ["401", "404"])
def test_an_endpoint_that_refuses_everything_stops_the_run_early_naming_the_url(tmp_path, kind):
    script = Script(faults=[Fault(kind) for _ in range(1000)])
    with running_server(script) as url:
        with pytest.raises(LLMAbort, match=f"{url}.*HTTP {kind}"):
            run_pipeline(trace_variants(6), tmp_path, config(url, llm={"abort_after": 4, "timeout_s": 30}, workers=3))
    assert script.requests <= 4 + 8  # the abort is immediate, not one failure per trace and window
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["this_run"]["llm"]["requests"] == script.requests
    assert not list(read_ledger(tmp_path / "failures.jsonl"))  # an abort is not the traces' fault


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_aborts_and_the_command_exits_non_zero_naming_the_url(tmp_path):
    source = write_input(tmp_path / "in.jsonl", trace_variants(2))
    url = f"http://127.0.0.1:{free_port()}/v1"
    cmd = pipeline_run_command(source, tmp_path / "out", url, "--abort-after", "3")
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "connection refused" in done.stderr and url in done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 30


def test_no_trace_succeeding_exits_1_with_the_reason_and_a_rerun_does_not_pay_again(tmp_path):
    source = write_input(tmp_path / "in.jsonl", trace_variants(2))
    script = Script(faults=[Fault("malformed", role="score") for _ in range(1000)])
    with running_server(script) as url:
        args = [
            "pipeline",
            "run",
            str(source),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "m",
            "--base-url",
            url,
            "--api-key",
            "x",
            "--json",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "no trace succeeded" in result.output, result.output
        paid = script.requests
        again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and script.requests == paid  # failing for good: skipped, not paid for again
    assert json.loads(again.stdout)["this_run"]["skipped_failed"] == 2


def test_a_trace_that_can_never_succeed_costs_nothing_and_is_skipped_unless_retry_failed(tmp_path):
    good, bad = trace_variants(2)
    bad["cot"] = bad["cot"].replace("\n\n", "\n\n<|block_start|>", 1)
    empty = {**good, "task_id": "empty", "cot": "<think>  \n</think>\nanswer"}
    script = Script()
    with running_server(script) as url:
        report = run_pipeline([good, bad, empty], tmp_path, config(url))
        paid = script.requests
        again = run_pipeline([good, bad, empty], tmp_path, config(url))
        retried = run_pipeline([good, bad, empty], tmp_path, config(url, retry_failed=True))
    assert report["traces"] == 1 and report["permanent_failures"] == 2 and report["failures_by_stage"] == {"split": 2}
    assert again["this_run"]["skipped_failed"] == 2 and retried["this_run"]["failed"] == 2
    assert script.requests == paid  # marker strings and an empty <think> are refused before any call
    reasons = [f["error"] for f in read_ledger(tmp_path / "failures.jsonl")]
    assert any("marker strings" in r for r in reasons) and any("no text inside <think>" in r for r in reasons)


def test_bad_input_rows_stop_the_run_after_the_traces_in_flight_or_are_skipped_with_skip_bad(tmp_path):
    rows = trace_variants(3)
    lines = [json.dumps(rows[0]), "{not json", json.dumps({"problem": "no trace here"}), json.dumps(rows[1])]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    with running_server(Script()) as url:
        base = ["pipeline", "run", str(source), "--model", "m", "--base-url", url, "--api-key", "x", "--json"]
        stopped = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a")])
        skipped = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--skip-bad"])
    assert isinstance(stopped.exception, MementoError) and "in.jsonl:2" in str(stopped.exception)
    assert [r["task_id"] for r in read_ledger(tmp_path / "a" / "results.jsonl")] == ["t00"]  # finished, not cancelled
    report = json.loads(skipped.stdout)
    assert skipped.exit_code == 0 and report["traces"] == 2 and report["this_run"]["bad_rows"] == 2


def test_a_lone_surrogate_in_a_trace_is_no_internal_error(tmp_path):
    (row,) = trace_variants(1)
    row["cot"] = row["cot"].replace("\n\n", "\n\nbroken \ud800 text. ", 1)
    with running_server(Script()) as url:
        report = run_pipeline([row], tmp_path, config(url))
    assert report["traces"] == 1 and report["failed_traces"] == 0
    (result,) = read_ledger(tmp_path / "results.jsonl")
    assert "\ud800" in result["response"]


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    source = write_input(tmp_path / "in.jsonl", trace_variants(2))
    out = tmp_path / "out"
    script = Script(latency_s=0.1)
    with running_server(script) as url:
        cmd = pipeline_run_command(source, out, url)
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while script.requests == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            with pytest.raises(ConfigError, match=r"in use by another run \(pid \d+\)"):
                run_pipeline([], out, config(url))
        finally:
            first.wait(timeout=120)
    assert first.returncode == 0
    assert len(list(read_ledger(out / "results.jsonl"))) == 2


def test_files_are_0644_no_temporary_file_is_left_and_the_cache_is_on_by_default(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "out" / "cache" / "ab").mkdir(parents=True)
        stale = tmp_path / "out" / "cache" / "ab" / ".x.json.123.tmp"  # left by a killed writer
        stale.write_text("{")
        source = write_input(tmp_path / "in.jsonl", trace_variants(1))
        script = Script()
        with running_server(script) as url:
            base = ["pipeline", "run", str(source), "--model", "m", "--base-url", url, "--api-key", "x"]
            assert CliRunner().invoke(app, [*base, "--out", str(tmp_path / "out")]).exit_code == 0
            paid = script.requests
            CliRunner().invoke(
                app, [*base, "--out", str(tmp_path / "again"), "--cache-dir", str(tmp_path / "out/cache")]
            )
            assert script.requests == paid  # the default cache under OUT answered everything
            CliRunner().invoke(app, [*base, "--out", str(tmp_path / "nocache"), "--no-cache"])
            assert script.requests == 2 * paid and not (tmp_path / "nocache" / "cache").exists()
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")]
    assert len([p for p in files if p.parent.parent.name == "cache"]) > 0
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}


def test_progress_is_logged_as_lines_when_stderr_is_not_a_terminal(tmp_path):
    source = write_input(tmp_path / "in.jsonl", trace_variants(2))
    with running_server(Script(latency_s=0.05)) as url:
        cmd = pipeline_run_command(source, tmp_path / "o", url, "--log-every", "0.2")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if "pipeline:" in line and "traces/min" in line]
    assert done.returncode == 0 and len(lines) >= 2 and "requests" in lines[-1]
    assert "$" in done.stdout.splitlines()[1]  # the closing lines carry the dollars


def test_a_reask_names_what_was_wrong_asks_only_for_what_is_missing_and_bad_answers_are_not_cached(tmp_path):
    script = Script(faults=[Fault("wrong_count", role="score"), Fault("malformed", role="score")])
    sentences = [f"Sentence {i} sets x = {i}." for i in range(6)]
    with running_server(script) as url:
        from mementokit.pipeline.score import score_boundaries

        client = LLMClient(LLMConfig(model="m", base_url=url, **FAST, cache_dir=str(tmp_path)))
        result = asyncio.run(score_boundaries(client, sentences, None, ScoreConfig(max_attempts=3)))
        assert len(result.scores) == 5 and client.usage.stage("score").reasks == 2
        first, second, third = script.users
        assert first.count("[[B") == 5 and second.count("[[B") == 1 and "[[B0]]" in second  # only the missing one
        assert "Attempt 2 of 3" in second and "Attempt 3 of 3" in third and second != third
        again = LLMClient(LLMConfig(model="m", base_url=url, **FAST, cache_dir=str(tmp_path)))
        asyncio.run(score_boundaries(again, sentences, None, ScoreConfig(max_attempts=3)))
    # the partial first answer came from the cache; the malformed second one was never cached, so it was asked again
    assert again.usage.stage("score").cached == 1 and again.usage.stage("score").requests == 1
    assert script.requests == 4


def test_errors_join_the_hierarchy_and_configs_refuse_bad_values():
    assert (
        issubclass(StageFailure, MementoError) and issubclass(LLMAbort, LLMError) and issubclass(LLMError, MementoError)
    )
    import pickle

    failure = pickle.loads(pickle.dumps(StageFailure("score", "why", permanent=True)))
    assert (failure.stage, str(failure), failure.permanent) == ("score", "why", True)
    with pytest.raises(ConfigError, match="window"):
        ScoreConfig(window=0)
    with pytest.raises(ConfigError, match="workers.*min_block_tokens"):
        PipelineConfig(llm=LLMConfig(model="m"), workers=0, min_block_tokens=-5)
    with pytest.raises(ConfigError, match="shard"):
        PipelineConfig(llm=LLMConfig(model="m"), shard=(3, 2))


def test_the_shard_comes_from_the_environment():
    from mementokit.pipeline.config import parse_shard, shard_from_env

    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}) == (
        4,
        8,
    )
    assert shard_from_env({"MEMENTO_SHARD": "2/3"}) == (2, 3)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ConfigError):
        shard_from_env({})


def test_output_folder_lock_names_the_holder(tmp_path):
    holder = OutputFolder(tmp_path, (1, 4))
    holder.open()
    try:
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
            OutputFolder(tmp_path, (1, 4)).open()
        other = OutputFolder(tmp_path, (2, 4))
        other.open()  # another shard of the same folder is free
        other.close()
    finally:
        holder.close()


def test_a_stage_command_against_a_refusing_endpoint_fails_with_one_clear_error(tmp_path):
    split = tmp_path / "split.jsonl"
    split.write_text(json.dumps({"sentences": ["One.", "Two.", "Three."]}) + "\n")
    with running_server(Script(faults=[Fault("401") for _ in range(100)])) as url:
        args = ["pipeline", "score", str(split), "--out", str(tmp_path / "s.jsonl"), "--model", "m", "--base-url", url]
        result = CliRunner().invoke(app, [*args, "--api-key", "x", "--abort-after", "0"])
    assert isinstance(result.exception, MementoError)  # `memento` prints it as one line, no traceback
    assert (
        "split.jsonl:1" in str(result.exception)
        and "HTTP 401" in str(result.exception)
        and url in str(result.exception)
    )
    assert not (tmp_path / "s.jsonl").exists()


def test_select_config_refuses_sampling_without_strata():
    from mementokit.pipeline.select import SelectConfig

    with pytest.raises(ConfigError, match="stratify_by"):
        SelectConfig(per_stratum=3)
    with pytest.raises(ConfigError, match="min_chars"):
        SelectConfig(min_chars=10, max_chars=5)
