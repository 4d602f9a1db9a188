"""The resumable, streaming runner that chains the stages (`stages.STAGES`) for every trace of an input.

Resumability is a property of the runner, not of the stages: a trace counts as finished when its line is in a
results file of the output folder (see `ledger.OutputFolder`). Lines are appended with a single write() on an
O_APPEND descriptor, so a kill leaves at most one torn last line, which the next run cuts off before reading (that
trace is then redone: nothing is lost, nothing is written twice). A rerun skips finished traces, skips traces
recorded as failing for good (unless `retry_failed`), retries the others, and drops failure records of traces that
have since succeeded.

The input is streamed: at most `workers` traces are in flight, whatever the input size. `shard=(i, N)` keeps the
traces whose task_id hashes to i mod N, each shard with its own ledgers in the shared folder, so N tasks (a
datatrove executor, a Slurm array, N machines) can share one data set and one folder.

Generic: `run_resumable` drives any per-item coroutine (memory distillation uses it); `run_pipeline_async` is it
with the pipeline's stages, plus the usage ledger (usage/run-*.json) and report.json.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from mementokit.errors import InputError, LLMAbort
from mementokit.jsonl import write_json_atomic
from mementokit.pipeline.client import LLMClient
from mementokit.pipeline.config import PipelineConfig
from mementokit.pipeline.ledger import OutputFolder
from mementokit.pipeline.report import RunState, build_report, cost_of, progress_line
from mementokit.pipeline.select import normalize_row, rejection_reason
from mementokit.pipeline.split import estimate_tokens
from mementokit.pipeline.stages import process_trace
from mementokit.pipeline.usage import Usage

__all__ = ["LogLines", "Run", "planned_rows", "run_resumable", "run_pipeline", "run_pipeline_async", "shard_of"]

RUN_RECORD_EVERY_S = 2.0  # how often a run's usage ledger is rewritten while it runs (a kill loses at most this)


def shard_of(task_id: str, num_shards: int) -> int:
    return int(hashlib.sha1(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:12], 16) % num_shards


def planned_rows(rows: Iterable[dict[str, Any]], cfg: PipelineConfig, state: RunState) -> Iterator[dict[str, Any]]:
    """Normalise, filter, shard and limit the input stream (lazily). Bad rows raise, or are counted with skip_bad."""
    index, count = cfg.shard
    taken = 0
    for raw in rows:
        try:
            row = raw if "task_id" in raw and "cot" in raw and "problem" in raw else normalize_row(raw)
        except InputError:
            if not cfg.skip_bad:
                raise
            state.bad_rows += 1
            continue
        reason = rejection_reason(row, cfg.select)
        if reason:
            state.rejected[reason] = state.rejected.get(reason, 0) + 1
            continue
        if count > 1 and shard_of(row["task_id"], count) != index:
            continue
        if cfg.limit is not None and taken >= cfg.limit:
            return
        taken += 1
        yield row


class LogLines:
    """Progress as one log line every `every_s` seconds (for a stderr that is not a terminal: logs, Slurm)."""

    def __init__(
        self, cfg: PipelineConfig, every_s: float = 30.0, stream: TextIO | None = None, prefix: str = "pipeline"
    ):
        self.cfg = cfg
        self.every_s = every_s
        self.stream = stream
        self.prefix = prefix
        self._last = time.monotonic()
        self._seen: tuple[RunState, LLMClient] | None = None

    def final(self) -> None:
        """One last line (the state at the last update), whatever the interval."""
        if self._seen is not None:
            self(*self._seen, force=True)

    def __call__(self, state: RunState, client: LLMClient, force: bool = False) -> None:
        self._seen = (state, client)
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        cost = cost_of(client.usage, self.cfg.price_prompt_per_mtok, self.cfg.price_completion_per_mtok)
        stream = self.stream or sys.stderr
        print(
            f"{time.strftime('%H:%M:%S')} {self.prefix}: {progress_line(state, client.usage, client.in_flight, cost)}",
            file=stream,
            flush=True,
        )


def _subtract(total: Usage, base: dict[str, Any]) -> Usage:
    before = Usage.from_dict(base)
    out = Usage()
    for name, stage in total.stages.items():
        prior = before.stages.get(name)
        s = out.stage(name)
        for f in stage.__dataclass_fields__:
            setattr(s, f, getattr(stage, f) - (getattr(prior, f) if prior else 0))
    return out


class Run:
    """One run over one shard: the ledgers, the usage record, the state."""

    def __init__(self, folder: OutputFolder, cfg: PipelineConfig, client: LLMClient, input_stats: Any = None):
        self.folder, self.cfg, self.client, self.input_stats = folder, cfg, client, input_stats
        self.state = RunState()
        self.base = client.usage.to_dict()
        self.run_file = folder.new_run_file()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._written = 0.0

    def usage(self) -> Usage:
        return _subtract(self.client.usage, self.base)

    def record(self, final: bool = False) -> dict[str, Any]:
        usage = self.usage()
        s = self.state
        record = {
            "started_at": self.started_at,
            "pid": os.getpid(),
            "model": self.cfg.llm.model,
            "shard": list(self.cfg.shard),
            "finished": final,
            "done": s.done,
            "failed": s.failed,
            "skipped_finished": s.skipped_finished,
            "skipped_failed": s.skipped_failed,
            "duplicates_in_input": s.duplicates,
            "bad_rows": s.bad_rows + (self.input_stats.rows_skipped if self.input_stats is not None else 0),
            "rejected": s.rejected,
            "seconds": round(time.monotonic() - s.started, 3),
            "traces_per_min": round(s.rate_per_min(), 2),
            "llm": usage.to_dict(),
            "cost": round(cost_of(usage, self.cfg.price_prompt_per_mtok, self.cfg.price_completion_per_mtok), 6),
            "prices_per_mtok": [self.cfg.price_prompt_per_mtok, self.cfg.price_completion_per_mtok],
        }
        return record

    def flush(self, final: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        record = self.record(final)
        if final or now - self._written >= RUN_RECORD_EVERY_S:
            self.folder.write_run(self.run_file, record)
            self._written = now
        return record


async def run_resumable(
    items: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    process: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    *,
    workers: int,
    key: str = "task_id",
    state: RunState | None = None,
    on_progress: Callable[[RunState], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    folder: OutputFolder | None = None,
) -> RunState:
    """The resumable core (module docstring): `process(item)` for every item whose `key` is not finished yet.

    A result (which must carry the item's `key`) is appended to the shard's results file; an exception to its
    failures file with its stage (an exception's `stage` attribute, else "internal") and `permanent` flag. Items
    recorded as failing for good are skipped unless `retry_failed`. Scheduling stops on LLMAbort (raised once the
    items in flight end, which an abort makes immediate) and on an error from `items` itself, e.g. a bad input row
    (raised after the items in flight FINISH: they are not cancelled). `folder`: an already opened (locked)
    OutputFolder; by default one is opened (and locked) for `out_dir` / `shard` here.
    """
    own = folder is None
    if folder is None:
        folder = OutputFolder(out_dir, shard, key)
        folder.open()
    state = state if state is not None else RunState()
    try:
        await _run_items(items, folder, process, workers, state, on_progress, retry_failed)
    finally:
        if own:
            folder.compact_failures()
            folder.close()
    return state


async def _run_items(
    items, folder: OutputFolder, process, workers: int, state: RunState, on_progress, retry_failed: bool
) -> None:
    key = folder.key
    finished = folder.finished_ids()
    given_up = {} if retry_failed else folder.permanent_failures()
    seen: set[str] = set()
    in_flight: set[asyncio.Task] = set()
    stop: list[BaseException] = []
    results_log, failures_log = folder.results_log(), folder.failures_log()

    async def one(item: dict[str, Any]) -> None:
        try:
            result = await process(item)
        except LLMAbort as exc:
            stop.append(exc)
            return
        except Exception as exc:  # a trace's failure (or a bug) must not stop the other items
            state.failed += 1
            stage = getattr(exc, "stage", None)
            failures_log.append(
                {
                    key: item[key],
                    "stage": stage or "internal",
                    "error": str(exc) if stage else f"{type(exc).__name__}: {exc}",
                    "permanent": bool(getattr(exc, "permanent", False)),
                    "time": time.time(),
                }
            )
        else:
            results_log.append(result)
            state.done += 1
            if isinstance(result.get("usage"), dict):
                state.usage.add(Usage.from_dict(result["usage"]))
        if on_progress:
            on_progress(state)

    try:
        try:
            for item in items:
                item_id = str(item[key])
                if item_id in finished:
                    state.skipped_finished += 1
                    continue
                if item_id in given_up:
                    state.skipped_failed += 1
                    continue
                if item_id in seen:
                    state.duplicates += 1
                    continue
                seen.add(item_id)
                while len(in_flight) >= max(1, workers) and not stop:
                    _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                if stop:
                    break
                in_flight.add(asyncio.create_task(one(item)))
                if on_progress:
                    on_progress(state)
        finally:  # a bad input row or an abort: let the items in flight end
            if in_flight:
                await asyncio.wait(in_flight)
    finally:
        for task in in_flight:
            task.cancel()
        results_log.close()
        failures_log.close()
    if stop:
        raise stop[0]


async def run_pipeline_async(
    rows: Iterable[dict[str, Any]],
    out_dir: str | os.PathLike[str],
    cfg: PipelineConfig,
    *,
    count_tokens: Callable[[str], int] = estimate_tokens,
    on_progress: Callable[[RunState, LLMClient], None] | None = None,
    client: LLMClient | None = None,
    input_stats: Any = None,
) -> dict[str, Any]:
    """Process every row of this shard into out_dir; returns the report (also written to out_dir/report.json).

    Raises LLMAbort when the endpoint refuses every call alike, InputError on a bad input row (without skip_bad),
    ConfigError when another run holds this shard of the folder; the report and usage ledger are written first.
    `input_stats`: the io.ReadStats the rows were read with (its skipped rows are reported as bad rows).
    """
    folder = OutputFolder(out_dir, cfg.shard)
    folder.open()
    own_client = client is None
    try:
        client = client or LLMClient(cfg.llm)
        if client.cache is not None:  # temp files of a killed writer; inside our locked folder nobody else writes
            inside = Path(client.cache.directory).resolve().is_relative_to(folder.root.resolve())
            client.cache.sweep(min_age_s=0.0 if inside and cfg.shard[1] == 1 else 600.0)
        run = Run(folder, cfg, client, input_stats)

        def progress(state: RunState) -> None:
            run.flush()
            if on_progress:
                on_progress(state, client)

        since = time.time()
        try:
            await run_resumable(
                planned_rows(rows, cfg, run.state),
                folder.root,
                lambda row: process_trace(row, client, cfg, count_tokens),
                workers=cfg.workers,
                state=run.state,
                on_progress=progress,
                retry_failed=cfg.retry_failed,
                folder=folder,
            )
        except LLMAbort as abort:
            folder.forget_failures(since, getattr(abort, "signature", str(abort)))
            raise
        finally:
            record = run.flush(final=True)
            folder.compact_failures()
            report = build_report(folder.root, cfg.summarize.pass_score)
            report["this_run"] = {k: v for k, v in record.items() if k not in ("pid", "finished")}
            write_json_atomic(folder.report_path, report)
            if own_client:
                await client.aclose()
    finally:
        folder.close()
    return report


def run_pipeline(
    rows: Iterable[dict[str, Any]], out_dir: str | os.PathLike[str], cfg: PipelineConfig, **kwargs: Any
) -> dict[str, Any]:
    """Synchronous wrapper of run_pipeline_async (see the module docstring)."""
    return asyncio.run(run_pipeline_async(rows, out_dir, cfg, **kwargs))
