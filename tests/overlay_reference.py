"""A second, deliberately simple reading of the reference vLLM overlay's block rules, for differential tests.

Written from reading microsoft/memento's overlay (vllm/v1/core/block_masking/tracker.py, processor.py, the
scheduler's mask_token_span, and vllm/v1/sample/logits_processor/block_length_cap.py), NOT from mementokit:
no stacks of closed blocks, no queues, no merged spans, no lazy counts. Every block is a dict in creation order,
lookups are linear searches, the evicted positions are a plain set, the cap counts token by token.

What the overlay does per generated token at absolute position p (process_token):
- <|im_start|> records its position; `assistant` within two positions of the last one opens the assistant
  section (gating, only when require_assistant_section and both ids exist); until then, and for the assistant
  token itself, nothing else happens.
- BS: when keep_last_block_for_answer and keep_last_n_blocks == 0 and some completed block is pending, the
  OLDEST pending block is compacted (one); in restart mode the rewind goes to that block's summary start. Then a
  block is created.
- BE: the innermost open block (last opened, still open) ends at p.
- SS: searching blocks from the newest CREATED, the first that has ended and has no summary start gets p as
  its summary start and becomes the current summary. None found: nothing changes.
- SE: with a current summary, its block gets p as summary end and is appended to the pending list. Then, only
  when compact_on_summary_end: with keep_last_block_for_answer and keep 0 nothing (deferred); otherwise, when
  keep >= 0 and more than keep blocks are pending, the oldest pending block is compacted (one); in restart mode
  the rewind goes to the summary start of the block that just ENDED its summary.
- A compacted block removes [start, end] (mask_delimiters or restart) or (start, end) from the cache: the
  scheduler merges it into the request's compacted spans, so the evicted positions are a union.
The cap (block_length_cap.py) scans every token, prompt and output alike, with no gating: BS sets "in block"
and count 0, BE clears it and count 0, any other token but the four markers adds 1 while in block. BE is forced
when in block and count >= max_block_tokens.
"""

from __future__ import annotations


class OverlayReference:
    def __init__(self, options: dict, ids: dict):
        self.o = options
        self.ids = ids  # bs, be, ss, se, im (or None), assistant (or None)
        self.require = options["require_assistant_section"] and ids["im"] is not None and ids["assistant"] is not None
        self.blocks: list[dict] = []
        self.pending: list[int] = []  # indices into blocks, in completion order
        self.current_summary: int | None = None
        self.last_im: int | None = None
        self.section_at: int | None = None
        self.evicted: set[int] = set()
        self.rewind: int | None = None  # set by the last token (restart mode), else None
        self.in_block = False
        self.count = 0

    # ---- the cap processor ----
    def _cap_scan(self, tok: int) -> None:
        if tok == self.ids["bs"]:
            self.in_block, self.count = True, 0
        elif tok == self.ids["be"]:
            self.in_block, self.count = False, 0
        elif self.in_block and tok not in (self.ids["bs"], self.ids["be"], self.ids["ss"], self.ids["se"]):
            self.count += 1

    def forces_block_end(self) -> bool:
        cap = self.o["max_block_tokens"]
        return self.o["enable"] and cap > 0 and self.in_block and self.count >= cap

    # ---- the tracker and processor ----
    def _compact(self, index: int) -> None:
        block = self.blocks[index]
        if self.o["restart_mode"] or self.o["mask_delimiters"]:
            span = range(block["start"], block["end"] + 1)
        else:
            span = range(block["start"] + 1, block["end"])
        self.evicted.update(span)

    def token(self, tok: int, p: int) -> None:
        self.rewind = None
        if not self.o["enable"]:
            return
        self._cap_scan(tok)
        ids, o = self.ids, self.o
        if ids["im"] is not None and tok == ids["im"]:
            self.last_im = p
        if (self.require and tok == ids["assistant"] and self.section_at is None and self.last_im is not None
                and p - self.last_im <= 2):
            self.section_at = p
        if self.require and (self.section_at is None or p <= self.section_at):
            return
        if tok == ids["bs"]:
            if o["keep_last_block_for_answer"] and o["keep_last_n_blocks"] == 0 and self.pending:
                oldest = self.pending.pop(0)
                self._compact(oldest)
                if o["restart_mode"]:
                    self.rewind = self.blocks[oldest]["ss"]
            self.blocks.append({"start": p, "end": None, "ss": None, "se": None})
        elif tok == ids["be"]:
            still_open = [i for i, b in enumerate(self.blocks) if b["end"] is None]
            if still_open:
                self.blocks[still_open[-1]]["end"] = p
        elif tok == ids["ss"]:
            for i in reversed(range(len(self.blocks))):
                if self.blocks[i]["end"] is not None and self.blocks[i]["ss"] is None:
                    self.blocks[i]["ss"] = p
                    self.current_summary = i
                    break
        elif tok == ids["se"]:
            if self.current_summary is None:
                return
            ended = self.current_summary
            self.blocks[ended]["se"] = p
            self.current_summary = None
            self.pending.append(ended)
            if not o["compact_on_summary_end"]:
                return
            if o["keep_last_block_for_answer"] and o["keep_last_n_blocks"] == 0:
                return
            keep = o["keep_last_n_blocks"]
            if keep >= 0 and len(self.pending) > keep:
                oldest = self.pending.pop(0)
                self._compact(oldest)
                if o["restart_mode"]:
                    self.rewind = self.blocks[ended]["ss"]
