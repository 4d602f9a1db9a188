"""Data shipped with mementokit: `sample.jsonl`, one real Qwen3-32B Memento trace (microsoft/memento, MIT) and 40
synthetic traces shaped like the paper's figures (see LICENSE-sample.txt)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_path() -> Path:
    """The path of the shipped sample (what `memento analyze` reads when given no input)."""
    return Path(str(resources.files("mementokit") / "data" / "sample.jsonl"))
