"""The format core: markers, the lossless trace model, validation problems, builders, and the block state
machine (`machine`: the one reading of block-semantics.md, on token ids in mementokit.blocks and on marker
occurrences in the text view here).

Everything else in mementokit depends on this package; it depends on nothing but the standard library.
"""

from mementokit.format.builders import (
    build_response,
    full_row_from_trace,
    response_from_full_row,
    response_from_pipeline_row,
    response_from_row,
    response_from_segments,
    trace_from_row,
)
from mementokit.format.chat import chat_prompt_ids, chatml, render_chat
from mementokit.format.compress import compress_trace
from mementokit.format.markers import DEFAULT_MARKERS, Markers
from mementokit.format.trace import Issue, Kind, Problem, Segment, Trace, parse_response

__all__ = [
    "DEFAULT_MARKERS",
    "Issue",
    "Kind",
    "Markers",
    "Problem",
    "Segment",
    "Trace",
    "build_response",
    "chat_prompt_ids",
    "chatml",
    "compress_trace",
    "full_row_from_trace",
    "parse_response",
    "render_chat",
    "response_from_full_row",
    "response_from_pipeline_row",
    "response_from_row",
    "response_from_segments",
    "trace_from_row",
]
