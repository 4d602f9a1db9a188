"""A content-addressed on-disk cache of LLM answers: same request in, same answer out, at no cost.

The key is the SHA-256 of the canonical JSON of everything that determines an answer (model, messages,
sampling parameters). Entries are written with `mementokit.jsonl.write_json_atomic` (a temporary file, then one
rename; mode 0644), so a kill leaves either a whole entry or none; concurrent writers of one key write identical
content. A temporary file orphaned by a SIGKILL is removed by `sweep()` (the runner calls it at start).
Generic: any caller of `LLMClient` (the pipeline, memory distillation) shares it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from mementokit.jsonl import write_json_atomic


def request_key(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class ResponseCache:
    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a damaged entry is a miss; the next put replaces it
        return entry if isinstance(entry, dict) and "content" in entry else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        write_json_atomic(self._path(key), entry, indent=None)

    def sweep(self, min_age_s: float = 600.0) -> int:
        """Remove temporary files older than `min_age_s` (left by a killed writer); returns how many."""
        removed = 0
        now = time.time()
        for tmp in self.directory.glob("*/.*.tmp"):
            try:
                if now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))
