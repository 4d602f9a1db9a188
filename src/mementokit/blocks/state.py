"""The block state machine: the single implementation of block-semantics.md over token ids.

Every consumer derives from it: the KV simulator (occupancy = positions - evicted), the stage-2 training mask
(masks.py) and the block-masked generator (which calls `step` for every token it produces).

State per sequence: a stack of open blocks; a stack of closed blocks still waiting for a summary; the block whose
summary is open; a first-in-first-out queue of completed blocks not yet evicted; and the merged set of key
positions already evicted (blocks nest, so spans can contain earlier spans: a key position is reported once).

Incremental (`step`) and whole-sequence (`feed`) use run the same `_process` for every token that can have an
effect; `feed` merely finds those tokens with numpy instead of looking at every token in Python. Ordinary tokens
have no effect in any state (the block-length count is derived lazily from positions), which is what makes
that skipping exact.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from mementokit.blocks.config import BlockMaskingConfig
from mementokit.blocks.tokens import MarkerIds

log = logging.getLogger("mementokit.blocks")


@dataclass(frozen=True)
class Eviction:
    """Key positions range(key_start, key_stop) become invisible to every query at position >= trigger.

    `at` is the position whose step() reports this eviction: the physical cache drops the keys before that
    token's own key/value is stored. It equals `trigger` except in restart mode, where the eviction is reported
    at a summary end (or, with keep_last_block_for_answer, at the next block start) but the dense mask treats it
    as happening from `recompute_from` (= trigger): the caller recomputes the surviving keys/values of positions
    recompute_from .. at-1 with the block invisible, then processes `at`.

    A block whose span contains keys evicted earlier (nesting) yields one Eviction per still-visible piece, all
    with the same block_index; a block whose span was already entirely evicted yields none.
    """

    block_index: int  # 0-based index of the completed block, in completion order
    key_start: int  # first evicted absolute position (inclusive)
    key_stop: int  # one past the last evicted position (half-open)
    trigger: int  # T_b: first query position that no longer sees the keys
    summary_start: int  # position of the block's SS
    summary_end: int  # position of the block's SE
    restart: bool = False
    at: int | None = None  # position whose step() reports it; None -> trigger
    recompute_from: int | None = None  # restart mode only: first position whose key/value must be recomputed

    def __post_init__(self) -> None:
        if self.at is None:
            object.__setattr__(self, "at", self.trigger)

    @property
    def size(self) -> int:
        return self.key_stop - self.key_start

    @property
    def keys(self) -> range:
        return range(self.key_start, self.key_stop)


class _Block:
    __slots__ = ("start", "end", "summary_start", "summary_end", "index")

    def __init__(self, start: int) -> None:
        self.index = -1  # completion order, set when its summary ends
        self.start = start
        self.end = -1
        self.summary_start = -1
        self.summary_end = -1


class BlockStateMachine:
    """Feed token ids in order; get the evictions each token triggers. See block-semantics.md.

    position: absolute position of the NEXT token to be fed (starts at 0: feed the prompt too, or use
    `start_inside_assistant=True` when replaying a response alone).
    """

    __slots__ = (
        "config", "markers", "position", "evicted_tokens", "completed_blocks",
        "_watch", "_watch_all", "_marker_watch", "_gating", "_gate_open", "_last_im_start",
        "_open", "_closed", "_summarizing", "_queue", "_ev_starts", "_ev_stops",
        "_count_anchor", "_markers_since_anchor", "_bs", "_be", "_ss", "_se", "_im", "_as",
    )

    def __init__(self, config: BlockMaskingConfig, markers: MarkerIds, *, start_inside_assistant: bool = False):
        self.config = config
        self.markers = markers
        self.position = 0
        self.evicted_tokens = 0
        self.completed_blocks = 0
        self._bs, self._be, self._ss, self._se = markers.block_markers
        self._im = markers.im_start
        self._as = markers.assistant
        self._gating = config.require_assistant_section and markers.can_gate and not start_inside_assistant
        self._gate_open = not self._gating
        self._last_im_start: int | None = None
        self._open: list[_Block] = []
        self._closed: list[_Block] = []  # closed, no summary yet; most recently closed last
        self._summarizing: _Block | None = None
        self._queue: deque[_Block] = deque()  # completed, not yet evicted, oldest first
        self._ev_starts: list[int] = []  # merged evicted spans, sorted, disjoint, never adjacent
        self._ev_stops: list[int] = []
        self._count_anchor = -1  # position of the last BS/BE: the block-length count starts after it
        self._markers_since_anchor = 0
        if not config.enable:
            self._marker_watch: frozenset[int] = frozenset()
            gate_watch: frozenset[int] = frozenset()
        else:
            self._marker_watch = frozenset(markers.block_markers)
            gate_watch = frozenset(t for t in (self._im, self._as) if t is not None) if self._gating else frozenset()
        # Tokens that can change the state: before the gate opens only its two tokens matter, after it only
        # the markers. `_watch_all` is the union, for feed() (which does not know in advance when the gate opens).
        self._watch = self._marker_watch if self._gate_open else gate_watch
        self._watch_all = np.array(sorted(self._marker_watch | gate_watch), dtype=np.int64)

    # ---- feeding ------------------------------------------------------------------------------------------
    def step(self, token_id: int) -> list[Eviction]:
        """Feed the token at `position`; return the evictions reported at this position (see Eviction.at).

        The keys they name must be removed before this token's query attends and before its key/value is stored.
        """
        if type(token_id) is not int:  # numpy / torch scalars: a tensor would hash by identity and never match
            token_id = int(token_id)
        p = self.position
        self.position = p + 1
        if token_id in self._watch:
            return self._process(token_id, p)
        return []

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

    # ---- the contract's table -----------------------------------------------------------------------------
    def _process(self, token_id: int, p: int) -> list[Eviction]:
        out: list[Eviction] = []
        if token_id == self._im:
            self._last_im_start = p
        if not self._gate_open:
            # Assistant gating: tracking starts after the first <|im_start|> followed within two positions by
            # `assistant`; the assistant token itself is not tracked and the gate never closes again.
            if token_id == self._as and self._last_im_start is not None and p - self._last_im_start <= 2:
                self._gate_open = True
                self._watch = self._marker_watch
                if self.config.debug:
                    log.debug("assistant section opens after position %d", p)
            return out
        config = self.config
        if token_id == self._bs:
            if self._queue and config.defers_to_next_block and config.evicts:
                # keep_last_block_for_answer: a new block starts, so the deferred one was not the last.
                while self._queue:
                    block = self._queue.popleft()
                    recompute_from = block.summary_start if config.restart_mode else None
                    self._evict(block, at=p, recompute_from=recompute_from, out=out)
            self._open.append(_Block(p))
            self._count_anchor, self._markers_since_anchor = p, 0
        elif token_id == self._be:
            if self._open:
                block = self._open.pop()
                block.end = p
                self._closed.append(block)
                self._count_anchor, self._markers_since_anchor = p, 0
        elif token_id == self._ss:
            self._markers_since_anchor += 1
            if self._closed:
                # A summary already open is abandoned (its block never completes), as in the reference overlay.
                block = self._closed.pop()
                block.summary_start = p
                self._summarizing = block
        elif token_id == self._se:
            self._markers_since_anchor += 1
            block = self._summarizing
            if block is not None:
                self._summarizing = None
                block.summary_end = p
                self._complete(block, p, out)
        if out and config.debug:
            log.debug("position %d evicts %s", p, [(e.key_start, e.key_stop) for e in out])
        return out

    def _complete(self, block: _Block, p: int, out: list[Eviction]) -> None:
        block.index = self.completed_blocks
        self.completed_blocks += 1
        config = self.config
        if not config.evicts:
            return  # never evicted (keep -1, or compaction not on summary end): nothing to queue
        self._queue.append(block)
        if config.defers_to_next_block:
            return  # evicted by the next block start, if one comes
        # Restart mode recomputes the summary that just ended, so the evicted block is invisible from its start.
        recompute_from = block.summary_start if config.restart_mode else None
        while len(self._queue) > config.keep_last_n_blocks:
            self._evict(self._queue.popleft(), at=p, recompute_from=recompute_from, out=out)

    def _evict(self, block: _Block, *, at: int, recompute_from: int | None, out: list[Eviction]) -> None:
        """Report the not-yet-evicted parts of the block's key span K_b, and mark them evicted."""
        if self.config.mask_delimiters or self.config.restart_mode:
            a, b = block.start, block.end + 1  # delimiters go with the block (Phi-4 style, and restart)
        else:
            a, b = block.start + 1, block.end  # content only (Qwen3 / OLMo-3 style)
        if a >= b:
            return
        restart = recompute_from is not None
        trigger = recompute_from if restart else at
        starts, stops = self._ev_starts, self._ev_stops
        # Spans are laminar (blocks nest), but merge generally: find the stored spans touching [a, b).
        first = bisect_left(stops, a)
        last = first
        cursor = a
        while last < len(starts) and starts[last] <= b:
            if starts[last] > cursor:
                self._report(block, cursor, starts[last], trigger, at, restart, recompute_from, out)
            cursor = max(cursor, stops[last])
            last += 1
        if cursor < b:
            self._report(block, cursor, b, trigger, at, restart, recompute_from, out)
        if last > first:
            merged_start, merged_stop = min(a, starts[first]), max(b, stops[last - 1])
        else:
            merged_start, merged_stop = a, b
        starts[first:last] = [merged_start]
        stops[first:last] = [merged_stop]

    def _report(self, block, start, stop, trigger, at, restart, recompute_from, out) -> None:
        self.evicted_tokens += stop - start
        out.append(Eviction(block.index, start, stop, trigger, block.summary_start, block.summary_end,
                            restart, at, recompute_from))

    # ---- inspection ---------------------------------------------------------------------------------------
    @property
    def in_assistant_section(self) -> bool:
        """Whether tokens are being tracked (the assistant gate is open, or gating is off)."""
        return self._gate_open

    @property
    def open_blocks(self) -> int:
        return len(self._open)

    @property
    def queued_blocks(self) -> int:
        """Completed blocks still visible (kept by keep_last_n_blocks or deferred for the answer)."""
        return len(self._queue)

    @property
    def summary_open(self) -> bool:
        return self._summarizing is not None

    @property
    def evicted_spans(self) -> list[tuple[int, int]]:
        """Evicted key positions so far, as merged half-open (start, stop) spans."""
        return list(zip(self._ev_starts, self._ev_stops))

    @property
    def cache_tokens(self) -> int:
        """Physical cache length after the tokens fed so far: positions minus evicted keys (invariant 2)."""
        return self.position - self.evicted_tokens

    def block_tokens_since_open(self) -> int:
        """Ordinary tokens (not the four markers) in the innermost open block since the last BS or BE; 0 when none open."""
        if not self._open:
            return 0
        return self.position - self._count_anchor - 1 - self._markers_since_anchor

    def must_close_block(self) -> bool:
        """max_block_tokens reached: the next token must be BE (the generator masks every other logit)."""
        cap = self.config.max_block_tokens
        return cap > 0 and self.config.enable and bool(self._open) and self.block_tokens_since_open() >= cap


def evictions_for_sequence(token_ids, config: BlockMaskingConfig, markers: MarkerIds, *,
                           start_inside_assistant: bool = False) -> list[Eviction]:
    """Every eviction a whole sequence triggers (the compact form of its attention mask)."""
    return BlockStateMachine(config, markers, start_inside_assistant=start_inside_assistant).feed(token_ids)
