"""Build Memento response strings from the other shapes the data comes in, and back.

- OpenMementos `full` rows: `sentences`, `blocks` (inclusive [start, end] sentence indices), `block_summaries`.
- The reference pipeline's `pipeline_results.jsonl` rows (same three fields, optional `think_prefix` /
  `think_suffix`).
- The `segments` list of microsoft/memento's generated traces (block / summary / answer entries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mementokit.errors import InputError
from mementokit.format.markers import DEFAULT_MARKERS, Markers
from mementokit.format.trace import Kind, Trace, parse_response

# How a built response lays its pieces out. OpenMementos rows start "<think><|block_start|>Okay..." (no
# newline after the wrapper); between a block and its memento and between pairs we put one newline.
DEFAULT_SEPARATOR = "\n"
DEFAULT_SENTENCE_JOINER = " "


def build_response(
    blocks: Sequence[str],
    summaries: Sequence[str],
    answer: str = "",
    *,
    markers: Markers = DEFAULT_MARKERS,
    separator: str = DEFAULT_SEPARATOR,
    preamble: str = "",
    think: bool = True,
) -> str:
    """Lay blocks and their mementos out as one response string.

    `preamble` is text inside <think> before the first block; `answer` follows </think> verbatim.
    """
    if len(blocks) != len(summaries):
        raise ValueError(f"{len(blocks)} blocks but {len(summaries)} mementos: one memento per block")
    m = markers
    parts = [m.think_start if think else "", preamble]
    for i, (block, summary) in enumerate(zip(blocks, summaries)):
        if i:
            parts.append(separator)
        parts += [m.block_start, block, m.block_end, separator, m.summary_start, summary, m.summary_end]
    if think:
        parts += [separator if blocks else "", m.think_end]
    parts.append(answer)
    return "".join(parts)


def _field(row: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str | None) -> Any:
    if name not in row:
        raise InputError("missing field", path=where, field=name)
    value = row[name]
    if not isinstance(value, kind):
        raise InputError(
            f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}", path=where, field=name
        )
    return value


def _blocks_from_sentences(row: Mapping[str, Any], where: str | None, joiner: str) -> tuple[list[str], list[str]]:
    sentences = _field(row, "sentences", (list, tuple), where)
    spans = _field(row, "blocks", (list, tuple), where)
    summaries = list(_field(row, "block_summaries", (list, tuple), where))
    if len(spans) != len(summaries):
        raise InputError(
            f"{len(spans)} blocks but {len(summaries)} block_summaries", path=where, field="block_summaries"
        )
    texts, expected_start = [], 0
    for i, span in enumerate(spans):
        if len(span) != 2:
            raise InputError(f"block {i} is {span!r}, expected [start, end]", path=where, field="blocks")
        start, end = int(span[0]), int(span[1])
        # Inclusive ends (formats.md): block [0, 4] covers five sentences.
        if not (0 <= start <= end < len(sentences)):
            raise InputError(
                f"block {i} = [{start}, {end}] is outside 0..{len(sentences) - 1}", path=where, field="blocks"
            )
        if start != expected_start:
            raise InputError(
                f"block {i} starts at sentence {start}, expected {expected_start} (blocks must tile the sentences)",
                path=where,
                field="blocks",
            )
        texts.append(joiner.join(sentences[start : end + 1]))
        expected_start = end + 1
    if spans and expected_start != len(sentences):
        raise InputError(
            f"blocks end at sentence {expected_start - 1} but there are {len(sentences)}", path=where, field="blocks"
        )
    return texts, [str(s) for s in summaries]


def response_from_full_row(
    row: Mapping[str, Any],
    *,
    answer: str = "",
    markers: Markers = DEFAULT_MARKERS,
    sentence_joiner: str = DEFAULT_SENTENCE_JOINER,
    separator: str = DEFAULT_SEPARATOR,
    where: str | None = None,
) -> str:
    """An OpenMementos `full` row (sentences + inclusive blocks + block_summaries) as a response string."""
    blocks, summaries = _blocks_from_sentences(row, where, sentence_joiner)
    return build_response(blocks, summaries, answer, markers=markers, separator=separator)


def response_from_pipeline_row(
    row: Mapping[str, Any],
    *,
    markers: Markers = DEFAULT_MARKERS,
    sentence_joiner: str = DEFAULT_SENTENCE_JOINER,
    separator: str = DEFAULT_SEPARATOR,
    where: str | None = None,
) -> str:
    """A reference `pipeline_results.jsonl` row as a response string.

    `think_prefix` is the trace text before the first sentence and `think_suffix` the text after the last
    one (typically "</think>" and the final answer). When they hold the think markers they are used as they
    are; otherwise the response gets the standard wrapper around them.
    """
    blocks, summaries = _blocks_from_sentences(row, where, sentence_joiner)
    prefix = str(row.get("think_prefix") or "")
    suffix = str(row.get("think_suffix") or "")
    body = build_response(blocks, summaries, markers=markers, separator=separator, think=False)
    start = "" if markers.think_start in prefix else markers.think_start
    if markers.think_end in suffix:
        end = suffix
    else:
        end = (separator if blocks else "") + markers.think_end + suffix
    return start + prefix + body + end


def response_from_segments(
    segments: Sequence[Mapping[str, Any]],
    *,
    markers: Markers = DEFAULT_MARKERS,
    separator: str = DEFAULT_SEPARATOR,
    where: str | None = None,
) -> str:
    """microsoft/memento's generated-trace `segments` (block / summary / answer) as a response string.

    Blocks and mementos are matched by `block_idx`, not by position.
    """
    blocks: dict[int, str] = {}
    summaries: dict[int, str] = {}
    answer_parts: list[str] = []
    for i, seg in enumerate(segments):
        kind = seg.get("type")
        text = seg.get("text")
        if not isinstance(text, str):
            raise InputError(f"segment {i} has no text", path=where, field=f"segments[{i}].text")
        if kind == "answer":
            answer_parts.append(text)
            continue
        if kind not in ("block", "summary"):
            raise InputError(
                f"segment {i} has type {kind!r}, expected block, summary or answer",
                path=where,
                field=f"segments[{i}].type",
            )
        idx = seg.get("block_idx")
        if not isinstance(idx, int):
            raise InputError(f"segment {i} has no integer block_idx", path=where, field=f"segments[{i}].block_idx")
        target = blocks if kind == "block" else summaries
        if idx in target:
            raise InputError(f"two {kind} segments with block_idx {idx}", path=where, field=f"segments[{i}].block_idx")
        target[idx] = text
    if set(blocks) != set(summaries):
        raise InputError(
            f"blocks {sorted(blocks)} and summaries {sorted(summaries)} do not match by block_idx",
            path=where,
            field="segments",
        )
    order = sorted(blocks)
    answer = "".join(answer_parts)  # verbatim after </think>
    return build_response(
        [blocks[i] for i in order], [summaries[i] for i in order], answer, markers=markers, separator=separator
    )


def response_from_row(row: Mapping[str, Any], *, markers: Markers = DEFAULT_MARKERS, where: str | None = None) -> str:
    """Whatever shape a row has (response / segments / full-config / pipeline), its response string."""
    if isinstance(row.get("response"), str):
        return row["response"]
    if "segments" in row:
        return response_from_segments(_field(row, "segments", (list, tuple), where), markers=markers, where=where)
    if "sentences" in row and "blocks" in row:
        if "think_prefix" in row or "think_suffix" in row or "task_id" in row:
            return response_from_pipeline_row(row, markers=markers, where=where)
        return response_from_full_row(row, markers=markers, where=where)
    raise InputError("missing field (no response, segments, or sentences + blocks)", path=where, field="response")


def full_row_from_trace(trace: Trace, sentences: Sequence[str]) -> dict[str, Any]:
    """Back to the `full` config's columns, given the sentences the blocks were made of.

    Each block's content must be the concatenation of consecutive sentences (with any whitespace between
    them); the returned blocks use inclusive [start, end] sentence indices.
    """
    response = trace.response
    spans: list[list[int]] = []
    next_sentence = 0
    for block in trace.blocks:
        text = block.content(response)
        pos, first = 0, next_sentence
        while next_sentence < len(sentences):
            sentence = sentences[next_sentence]
            found = text.find(sentence, pos)
            if found < 0 or text[pos:found].strip():
                break
            pos = found + len(sentence)
            next_sentence += 1
        if next_sentence == first or text[pos:].strip():
            raise InputError(
                f"block {block.index} is not made of consecutive sentences starting at sentence {first}",
                field="sentences",
            )
        spans.append([first, next_sentence - 1])
    if next_sentence != len(sentences):
        raise InputError(f"{len(sentences) - next_sentence} sentences are in no block", field="sentences")
    summaries = [s.content(response) for s in trace.segments if s.kind is Kind.SUMMARY]
    return {"sentences": list(sentences), "blocks": spans, "block_summaries": summaries}


def trace_from_row(row: Mapping[str, Any], *, markers: Markers = DEFAULT_MARKERS, where: str | None = None) -> Trace:
    return parse_response(response_from_row(row, markers=markers, where=where), markers)
