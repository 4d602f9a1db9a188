"""The text view of "keep the last k blocks" (block-semantics.md, "Text level").

What is dropped is what the block state machine evicts when run over the response's markers (each marker one
token): every completed block but the last `keep_last`, whole (markers included) or, with keep_delimiters, its
content only. Every memento, every separator and the answer stay exactly as they were; on malformed responses
(nesting, a memento inside an open block, stray markers) the same machine decides, so text and tokens agree.
"""

from __future__ import annotations

from mementokit.format.textview import MarkerRun, TextRules
from mementokit.format.trace import Trace


def compress_trace(trace: Trace, keep_last: int, *, keep_delimiters: bool = False) -> str:
    """The response as the model sees it at the end: all but the last `keep_last` completed blocks removed.

    A block without a finished memento is never evicted, as in the token-level contract.
    """
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    rules = TextRules(keep_last_n_blocks=keep_last, mask_delimiters=not keep_delimiters)
    return MarkerRun(trace.response, trace.markers, rules).kept_text()
