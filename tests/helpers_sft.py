"""Short Memento traces and tiny saved models for the SFT tests (the synthetic OpenMementos rows are ~45K chars)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from helpers_models import build_tiny_model
from mementokit.format import build_response

WORDS = (
    "we",
    "add",
    "the",
    "two",
    "numbers",
    "check",
    "sum",
    "so",
    "x",
    "equals",
    "four",
    "then",
    "because",
    "prime",
    "factor",
    "square",
    "root",
    "count",
    "cases",
    "each",
    "value",
    "gives",
    "answer",
    "is",
    "not",
)


def sentence(rng: random.Random, low: int = 2, high: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def short_trace(rng: random.Random, *, blocks: int = 2, nested: bool = False) -> dict:
    """A problem and a small Memento response (build_response), optionally with a block nested in the first."""
    block_texts = [sentence(rng) for _ in range(blocks)]
    if nested and blocks:
        block_texts[0] += (
            "<|block_start|>"
            + sentence(rng, 1, 3)
            + "<|block_end|><|summary_start|>"
            + sentence(rng, 1, 2)
            + "<|summary_end|>"
            + sentence(rng, 0, 2)
        )
    summaries = [sentence(rng, 1, 3) for _ in range(blocks)]
    response = build_response(block_texts, summaries, "The answer is " + rng.choice(("4", "6", "x")) + ".")
    return {
        "problem": "What is " + sentence(rng, 1, 4) + "?",
        "response": response,
        "domain": rng.choice(("math", "code", "science")),
    }


def short_traces(n: int, seed: int = 0, **kwargs) -> list[dict]:
    rng = random.Random(seed)
    return [short_trace(rng, **kwargs) for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def save_tiny_model(folder: Path, vocab_size: int, *, arch: str = "llama", **overrides) -> Path:
    """A random tiny causal LM saved with save_pretrained (random init kept small so training is well behaved)."""
    model = build_tiny_model(arch, vocab_size, **overrides)
    model.save_pretrained(folder)
    return folder
