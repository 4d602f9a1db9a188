"""The block state machine over token ids: the single implementation of block-semantics.md.

The rules themselves live in `mementokit.format.machine` (standard library only, so the text view in the format
core runs the very same machine over marker occurrences); this module binds them to a BlockMaskingConfig and
MarkerIds and adds a numpy fast path for whole sequences.

Every consumer derives from it: the KV simulator (occupancy = positions - evicted), the stage-2 training mask
(masks.py), the block-masked generator (which calls `step` for every token it produces, and `must_close_block`
for the block-length cap) and the text view.

Incremental (`step`) and whole-sequence (`feed`) use run the same `_process` for every token that can have an
effect; `feed` merely finds those tokens with numpy instead of looking at every token in Python. Ordinary tokens
have no effect in any state (the block-length count is derived lazily from positions), which is what makes
that skipping exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.blocks.tokens import MarkerIds
from mementokit.format.machine import BlockMachine, Eviction

__all__ = ["BlockStateMachine", "Eviction", "evictions_for_sequence"]


class BlockStateMachine(BlockMachine):
    """Feed token ids in order; get the evictions each token triggers. See block-semantics.md.

    position: absolute position of the NEXT token to be fed (starts at 0: feed the prompt too, or use
    `start_inside_assistant=True` when replaying a response alone).
    """

    __slots__ = ("_watch_all",)

    def __init__(self, config: BlockMaskingConfig, markers: MarkerIds, *, start_inside_assistant: bool = False,
                 record: bool = False):
        super().__init__(config, markers, start_inside_assistant=start_inside_assistant, record=record)
        self._watch_all = np.array(sorted(self._watch_all_set), dtype=np.int64)

    def step(self, token_id: int) -> list[Eviction]:
        """Feed the token at `position`; return the evictions reported at this position (see Eviction.at).

        The keys they name must be removed before this token's query attends and before its key/value is stored.
        """
        if type(token_id) is not int:  # numpy / torch scalars: a tensor would hash by identity and never match
            token_id = int(token_id)
        return super().step(token_id)

    def feed(self, token_ids: Iterable[int] | np.ndarray) -> list[Eviction]:
        """Feed many tokens at once (same semantics as calling step for each); returns all their evictions."""
        if not isinstance(token_ids, (list, tuple, np.ndarray)) and not hasattr(token_ids, "__array__"):
            token_ids = list(token_ids)
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        base = self.position
        out: list[Eviction] = []
        if self._watch_all.size:
            hits = np.flatnonzero(np.isin(ids, self._watch_all))
            for offset, token_id in zip(hits.tolist(), ids[hits].tolist()):
                self.position = base + offset + 1
                out.extend(self._process(token_id, base + offset))
        self.position = base + len(ids)
        return out


def evictions_for_sequence(token_ids, config: BlockMaskingConfig, markers: MarkerIds, *,
                           start_inside_assistant: bool = False) -> list[Eviction]:
    """Every eviction a whole sequence triggers (the compact form of its attention mask)."""
    return BlockStateMachine(config, markers, start_inside_assistant=start_inside_assistant).feed(token_ids)
