"""Stage 6: the Memento `response` string, and rows for the OpenMementos `default` and `full` configs.

Each block is the ORIGINAL text from its first sentence to its last (inner whitespace kept), so training
text is what the teacher wrote. The response is parsed back with the format core and must give the same
blocks and mementos, or assembly fails for that trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mementokit.errors import StageFailure
from mementokit.format import DEFAULT_MARKERS, Markers, build_response, parse_response
from mementokit.pipeline.split import THINK_END, think_region


def block_texts(cot: str, spans: Sequence[tuple[int, int]], blocks: Sequence[Sequence[int]]) -> list[str]:
    """Text of each block: cot[start of its first sentence : end of its last sentence]."""
    return [cot[spans[int(a)][0] : spans[int(b)][1]] for a, b in blocks]


def answer_after_think(cot: str) -> str:
    """Everything after `</think>`, verbatim ("" when the trace has no closing marker)."""
    _, end = think_region(cot)
    return cot[end + len(THINK_END) :] if cot.startswith(THINK_END, end) else ""


def assemble_response(
    cot: str,
    spans: Sequence[tuple[int, int]],
    blocks: Sequence[Sequence[int]],
    mementos: Sequence[str],
    markers: Markers = DEFAULT_MARKERS,
) -> str:
    """`<think>` block, memento, ... `</think>` answer; validated by parsing it back."""
    texts = block_texts(cot, spans, blocks)
    response = build_response(texts, list(mementos), answer_after_think(cot), markers=markers)
    check_round_trip(response, texts, mementos, markers)
    return response


def check_round_trip(
    response: str, texts: Sequence[str], mementos: Sequence[str], markers: Markers = DEFAULT_MARKERS
) -> None:
    trace = parse_response(response, markers)
    problems = []
    if trace.issues:
        problems.append("; ".join(str(i) for i in trace.issues[:3]))
    if trace.block_texts() != list(texts):
        problems.append("blocks differ after parsing back (does the trace contain marker strings?)")
    if trace.summary_texts() != list(mementos):
        problems.append("mementos differ after parsing back")
    if problems:
        raise StageFailure("assemble", " | ".join(problems), permanent=True)


def openmementos_row(result: dict[str, Any], config: str = "default") -> dict[str, Any]:
    """A result row cut down to the OpenMementos columns (`default` or `full`)."""
    row = {
        "problem": result.get("problem", ""),
        "response": result["response"],
        "domain": result.get("domain", ""),
        "source": result.get("source", ""),
        "difficulty": result.get("difficulty"),
    }
    if config == "full":
        row.update(sentences=result["sentences"], blocks=result["blocks"], block_summaries=result["block_summaries"])
    elif config != "default":
        raise ValueError(f"config must be 'default' or 'full', got {config!r}")
    return row
