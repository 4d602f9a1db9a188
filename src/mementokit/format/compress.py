"""The text view of "keep the last k blocks" (block-semantics.md, "Text level").

Dropped blocks lose their whole span, markers included (or only their content with keep_delimiters);
every memento, every separator and the answer stay exactly as they were.
"""

from __future__ import annotations

from mementokit.format.trace import Kind, Trace


def compress_trace(trace: Trace, keep_last: int, *, keep_delimiters: bool = False) -> str:
    """The response as the model sees it at the end: all but the last `keep_last` blocks removed.

    Only blocks that have a memento are dropped (a block without one is never evicted, as in the
    token-level contract).
    """
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    response = trace.response
    summarised = [s for s in trace.segments if s.kind is Kind.BLOCK and s.summary >= 0]
    dropped = {id(s) for s in summarised[: max(0, len(summarised) - keep_last)]}
    parts: list[str] = []
    m = trace.markers
    for seg in trace.segments:
        if id(seg) in dropped:
            if keep_delimiters:
                parts += [m.block_start, m.block_end]
            continue
        parts.append(response[seg.start : seg.end])
    return "".join(parts)
