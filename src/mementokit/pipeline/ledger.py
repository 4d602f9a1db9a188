"""The files of an output folder, and who may write them.

    out/results[.SHARD].jsonl   one line per finished trace (appended whole, in one write)
    out/failures[.SHARD].jsonl  one line per failed attempt at a trace: stage, reason, `permanent`
    out/usage/run-*.json        what each run sent and was billed (every attempt), rewritten as it goes
    out/report.json             the report over everything in out/ (per run and cumulative)
    out/cache/                  the response cache (default on)

SHARD is `00003-of-00008` when a run is one of several tasks sharing the folder: each task appends only to its
own files, so tasks on different machines never write the same file; readers take the union. A trace counts as
finished when its line is in any results file. A lock file per shard (`flock`, released by the kernel when the
process dies) keeps two runs from writing the same shard; a local run over several tasks also holds `.run.lock`.
Generic: memory distillation uses the same ledger with its own record fields (anything with a `task_id`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mementokit.errors import ConfigError
from mementokit.jsonl import AppendLog, read_ledger, repair_tail, write_json_atomic, write_jsonl_atomic

__all__ = ["FolderLock", "OutputFolder", "shard_suffix"]

REPORT = "report.json"


def shard_suffix(shard: tuple[int, int]) -> str:
    index, count = shard
    return "" if count == 1 else f".{index:05d}-of-{count:05d}"


class FolderLock:
    """An exclusive, non-blocking `flock` on a file; a second holder gets a ConfigError naming the first's pid."""

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"{self.what} is in use by another run (pid {holder}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (removing it would race a new holder)
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class OutputFolder:
    """The ledgers of one shard of an output folder, plus read access to every shard's."""

    def __init__(self, root: str | os.PathLike[str], shard: tuple[int, int] = (0, 1), key: str = "task_id"):
        self.root = Path(root)
        self.shard = shard
        self.key = key  # the field that names an item in results and failures
        suffix = shard_suffix(shard)
        self.results_path = self.root / f"results{suffix}.jsonl"
        self.failures_path = self.root / f"failures{suffix}.jsonl"
        self.usage_dir = self.root / "usage"
        self.report_path = self.root / REPORT
        self.cache_dir = self.root / "cache"
        self._lock = FolderLock(
            self.root / f".shard{suffix or '.all'}.lock", f"{self.root} (shard {shard[0]}/{shard[1]})"
        )

    # ---------------------------------------------------------------------------------------- writing

    def open(self) -> None:
        """Lock this shard, cut torn last lines, drop failure records of traces that have since finished."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        for path in (self.results_path, self.failures_path):
            repair_tail(path)
        self.compact_failures()

    def close(self) -> None:
        self._lock.release()

    def results_log(self) -> AppendLog:
        return AppendLog(self.results_path)

    def failures_log(self) -> AppendLog:
        return AppendLog(self.failures_path)

    def compact_failures(self) -> None:
        if not self.failures_path.exists():
            return
        finished = self.finished_ids()
        records = list(read_ledger(self.failures_path))
        kept = [f for f in records if str(f.get(self.key)) not in finished]
        if len(kept) != len(records):
            write_jsonl_atomic(self.failures_path, kept)

    def forget_failures(self, since: float, containing: str) -> None:
        """Drop this shard's failure records written at or after `since` whose error contains `containing` (the
        traces an aborted run failed on the way to its abort: the endpoint's fault, not theirs)."""
        if not self.failures_path.exists():
            return
        records = list(read_ledger(self.failures_path))
        kept = [f for f in records if not (f.get("time", 0) >= since and containing in str(f.get("error", "")))]
        if len(kept) != len(records):
            write_jsonl_atomic(self.failures_path, kept)

    def new_run_file(self) -> Path:
        self.usage_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return self.usage_dir / f"run-{stamp}{shard_suffix(self.shard)}-{uuid.uuid4().hex[:8]}.json"

    @staticmethod
    def write_run(path: Path, record: dict[str, Any]) -> None:
        write_json_atomic(path, record)

    # ---------------------------------------------------------------------------------------- reading

    def _all(self, stem: str) -> list[Path]:
        return sorted(
            p for p in self.root.glob(f"{stem}*.jsonl") if p.name == f"{stem}.jsonl" or p.name.startswith(f"{stem}.")
        )

    def results_files(self) -> list[Path]:
        return self._all("results")

    def failures_files(self) -> list[Path]:
        return self._all("failures")

    def results(self) -> Iterator[dict[str, Any]]:
        for path in self.results_files():
            yield from read_ledger(path)

    def failures(self) -> Iterator[dict[str, Any]]:
        for path in self.failures_files():
            yield from read_ledger(path)

    def finished_ids(self) -> set[str]:
        return {str(r[self.key]) for r in self.results() if self.key in r}

    def permanent_failures(self) -> dict[str, dict[str, Any]]:
        """Unfinished traces whose LAST recorded failure is permanent: task_id -> that record."""
        finished = self.finished_ids()
        latest: dict[str, dict[str, Any]] = {}
        for record in self.failures():
            if self.key in record and str(record[self.key]) not in finished:
                latest[str(record[self.key])] = record
        return {t: r for t, r in latest.items() if r.get("permanent")}

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.usage_dir.glob("run-*.json")) if self.usage_dir.exists() else []:
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # only a file being replaced right now; the next report reads it
        return out
