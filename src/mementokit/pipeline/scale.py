"""Scale-out on datatrove: the runner as a `PipelineStep`, run by its local, Slurm or Ray executor.

Each datatrove task is one shard (rank / world_size) of the input, processed by the ordinary resumable runner
with its own ledgers in the shared output folder (`results.00001-of-00004.jsonl`, ...). datatrove marks a task
complete under OUT/datatrove/completions/ and skips it on a rerun; the runner skips finished traces inside a task
that was interrupted. A task that ended with traces still failing for a transient reason is NOT left marked
complete (its mark is removed before the next launch), so a rerun retries them. datatrove is the optional extra
`scale` (plain install; never its `[inference]` extra). Without datatrove, the same sharding runs from a shell or
a Slurm job array with `--shard i/N` or `--shard env`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mementokit.errors import ConfigError
from mementokit.jsonl import read_ledger
from mementokit.pipeline.config import PipelineConfig
from mementokit.pipeline.ledger import FolderLock, OutputFolder
from mementokit.pipeline.report import build_report

__all__ = [
    "EXECUTORS",
    "ExecutorOptions",
    "MementoPipelineStep",
    "StepSpec",
    "make_executor",
    "run_shard",
    "run_with_executor",
]

EXECUTORS = ("local", "slurm", "ray")
LOGGING_DIR = "datatrove"


try:  # the optional extra "scale"; this module is only imported when an executor is asked for
    from datatrove.pipeline.base import PipelineStep as _StepBase
except ImportError:  # pragma: no cover - exercised where datatrove is absent
    _StepBase = None


def _require_datatrove() -> None:
    if _StepBase is None:
        raise ConfigError("--executor needs datatrove: pip install 'mementokit[scale]'")


@dataclass(frozen=True)
class StepSpec:
    """Everything a task needs, picklable: it travels to worker processes and Slurm / Ray nodes."""

    source: str
    out_dir: str
    cfg: PipelineConfig
    tokenizer: str = "estimate"
    read_options: dict[str, Any] = field(default_factory=dict)  # config, split, fields for read_traces
    log_every_s: float = 30.0


def run_shard(spec: StepSpec, rank: int, world_size: int) -> dict[str, Any]:
    """One task: the runner over shard rank/world_size of the input (what the datatrove step calls)."""
    from mementokit.pipeline.runner import LogLines, run_pipeline
    from mementokit.pipeline.select import read_traces
    from mementokit.pipeline.tokens import load_token_counter

    cfg = replace(spec.cfg, shard=(rank, world_size))
    count_tokens, _ = load_token_counter(spec.tokenizer)
    from mementokit.io.stats import ReadStats

    stats = ReadStats()
    rows = read_traces(spec.source, skip_bad=cfg.skip_bad, stats=stats, **spec.read_options)
    progress = LogLines(cfg, spec.log_every_s, prefix=f"task {rank}/{world_size}")
    return run_pipeline(rows, spec.out_dir, cfg, count_tokens=count_tokens, on_progress=progress, input_stats=stats)


class MementoPipelineStep(_StepBase or object):  # type: ignore[misc]
    """A datatrove PipelineStep whose run(data, rank, world_size) processes one shard (and yields no documents)."""

    name = "CoT to Memento"
    type = "MEMENTO"

    def __init__(self, spec: StepSpec):
        _require_datatrove()
        super().__init__()
        self.spec = spec

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        report = run_shard(self.spec, rank, world_size)
        run = report["this_run"]
        self.stat_update("traces_done", value=run["done"])
        self.stat_update("traces_failed", value=run["failed"])
        self.stat_update("llm_requests", value=run["llm"]["requests"])
        self.stat_update("prompt_tokens", value=run["llm"]["prompt_tokens"])
        if data:
            yield from data


@dataclass(frozen=True)
class ExecutorOptions:
    executor: str = "local"
    tasks: int = 1
    workers: int = 1  # tasks at once (datatrove's meaning)
    partition: str | None = None  # Slurm
    time: str = "24:00:00"  # Slurm
    job_name: str = "memento-pipeline"
    cpus_per_task: int = 1
    env_command: str | None = None  # Slurm: e.g. "source .venv/bin/activate"

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.tasks < 1 or self.workers < 1:
            raise ConfigError(f"--tasks and --workers must be >= 1, got {self.tasks} and {self.workers}")
        if self.executor == "slurm" and not self.partition:
            raise ConfigError("--executor slurm needs --partition")


def make_executor(spec: StepSpec, options: ExecutorOptions):
    """The datatrove executor that runs `options.tasks` shards of the pipeline (not started)."""
    step = MementoPipelineStep(spec)
    logging_dir = str(Path(spec.out_dir) / LOGGING_DIR)
    common = dict(pipeline=[step], tasks=options.tasks, workers=options.workers, logging_dir=logging_dir)
    if options.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(**common, start_method="spawn")
    if options.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            **common,
            time=options.time,
            partition=options.partition,
            job_name=options.job_name,
            cpus_per_task=options.cpus_per_task,
            env_command=options.env_command or _activate_this_venv(),
        )
    try:
        import ray  # noqa: F401
        from datatrove.executor.ray import RayPipelineExecutor
    except ImportError:
        raise ConfigError("--executor ray needs ray: pip install ray") from None
    return RayPipelineExecutor(**common, cpus_per_task=options.cpus_per_task)


def _activate_this_venv() -> str | None:
    """`source .../bin/activate` of the virtualenv this command runs in, so Slurm tasks run the same code."""
    import sys

    activate = Path(sys.prefix) / "bin" / "activate"
    return f"source {activate}" if sys.prefix != sys.base_prefix and activate.exists() else None


def reopen_unfinished_tasks(out_dir: str | Path, tasks: int) -> list[int]:
    """Remove the completion mark of tasks whose shard still has traces failing for a transient reason."""
    root = Path(out_dir)
    reopened = []
    for rank in range(tasks):
        mark = root / LOGGING_DIR / "completions" / f"{rank:05d}"
        if not mark.exists():
            continue
        folder = OutputFolder(root, (rank, tasks))
        finished = folder.finished_ids()
        latest: dict[str, bool] = {}
        for record in read_ledger(folder.failures_path):
            if record.get("task_id") not in finished:
                latest[str(record["task_id"])] = bool(record.get("permanent"))
        if any(not permanent for permanent in latest.values()):
            mark.unlink()
            reopened.append(rank)
    return reopened


def run_with_executor(spec: StepSpec, options: ExecutorOptions) -> dict[str, Any]:
    """Run every shard with datatrove; returns the report over the whole output folder.

    Local runs hold OUT/.run.lock for their whole duration (a second one refuses); each task also locks its shard.
    A Slurm or Ray launch returns once the jobs are submitted / done, as datatrove does.
    """
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    launched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lock = FolderLock(Path(spec.out_dir) / ".run.lock", str(spec.out_dir))
    with lock:
        reopen_unfinished_tasks(spec.out_dir, options.tasks)
        executor = make_executor(spec, options)
        executor.run()
        report = build_report(spec.out_dir, spec.cfg.summarize.pass_score)
    runs = [r for r in OutputFolder(spec.out_dir).runs() if r.get("started_at", "") >= launched]
    report["tasks"] = {
        "executor": options.executor,
        "tasks": options.tasks,
        "workers": options.workers,
        "completed": len(list((Path(spec.out_dir) / LOGGING_DIR / "completions").glob("*"))),
    }
    report["this_run"] = _sum_runs(runs)
    return report


def _sum_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from mementokit.pipeline.usage import Usage

    usage = Usage()
    counts = ("done", "failed", "skipped_finished", "skipped_failed", "bad_rows")
    out: dict[str, Any] = {**dict.fromkeys(counts, 0), "cost": 0.0, "seconds": 0.0}
    for run in runs:
        usage.add(Usage.from_dict(run.get("llm", {})))
        for key in counts:
            out[key] += int(run.get(key, 0))
        out["cost"] += float(run.get("cost", 0.0))
        out["seconds"] = max(out["seconds"], float(run.get("seconds", 0.0)))
    out["llm"] = usage.to_dict()
    out["traces_per_min"] = round(60 * out["done"] / out["seconds"], 2) if out["seconds"] else 0.0
    return out
