"""Tiny randomly initialised causal LMs built from a config (no hub access): 2 layers, hidden 64.

Built with mementokit.demo.random_causal_lm (the builder `memento demo-model` uses): eval mode, fp32, CPU, with
the requested attention implementation, so the equivalence tests can compare the evicting path against one
dense-mask forward pass on several architectures.
"""

from __future__ import annotations

from mementokit.demo import ARCHITECTURES, random_causal_lm

__all__ = ["ARCHITECTURES", "build_tiny_model", "memento_token_sequence"]


def build_tiny_model(arch: str, vocab_size: int, *, attn_implementation: str = "eager", seed: int = 0,
                     sliding_window: int | None = None, **overrides):
    """A random tiny causal LM of architecture `arch` whose vocabulary holds `vocab_size` ids."""
    return random_causal_lm(arch, vocab_size, attn_implementation=attn_implementation, seed=seed,
                            sliding_window=sliding_window, **overrides)


def memento_token_sequence(rng, markers, ordinary_ids, *, blocks: int = 4, nest_probability: float = 0.3,
                           chat_prefix: bool = True, stray_markers: bool = False, open_tail: bool = False,
                           block_tokens: tuple[int, int] = (1, 8),
                           summary_tokens: tuple[int, int] = (1, 4)) -> list[int]:
    """A random token sequence with the Memento structure: a ChatML head, then blocks (some nested), each followed
    by its summary, ordinary tokens between them, optionally stray markers and a block left open at the end.

    rng: random.Random; markers: mementokit.blocks.MarkerIds; ordinary_ids: ids to draw ordinary tokens from.
    """
    def ordinary(low: int, high: int) -> list[int]:
        return [rng.choice(ordinary_ids) for _ in range(rng.randint(low, high))]

    def block(depth: int) -> list[int]:
        out = [markers.block_start] + ordinary(*block_tokens)
        if depth < 2 and rng.random() < nest_probability:
            out += block(depth + 1) + ordinary(0, 3)
        out += [markers.block_end] + ordinary(0, 2)
        out += [markers.summary_start] + ordinary(*summary_tokens) + [markers.summary_end]
        return out

    ids: list[int] = []
    if chat_prefix and markers.im_start is not None and markers.assistant is not None:
        ids += [markers.im_start] + ordinary(1, 3) + [markers.im_start, markers.assistant] + ordinary(1, 2)
    ids += ordinary(0, 3)
    strays = [markers.block_end, markers.summary_start, markers.summary_end]
    for _ in range(blocks):
        ids += block(0) + ordinary(0, 3)
        if stray_markers and rng.random() < 0.3:
            ids += [rng.choice(strays)] + ordinary(0, 2)
    if open_tail:
        ids += [markers.block_start] + ordinary(2, 5)
    return ids


class MementoScript:
    """A logits processor that steers a random model into the Memento structure (BS .. BE SS .. SE, repeated),
    with lengths that depend on the ids so far, so different rows evict at different times. Deterministic."""

    def __init__(self, markers, *, close_blocks: bool = True):
        self.m = markers
        self.close_blocks = close_blocks

    def __call__(self, ids, logits):
        m = self.m
        logits = logits.clone()
        marks = [i for i, t in enumerate(ids) if t in m.block_markers]
        last = ids[marks[-1]] if marks else m.summary_end
        since = len(ids) - 1 - (marks[-1] if marks else 0)
        following = {m.summary_end: m.block_start, m.block_start: m.block_end, m.block_end: m.summary_start,
                     m.summary_start: m.summary_end}[last]
        if following == m.block_end and not self.close_blocks:
            logits[list(m.block_markers)] = float("-inf")  # only the cap may close a block
            return logits
        if since >= 3 + (sum(ids) % 6):
            logits[following] += 1e4
        else:
            logits[list(m.block_markers)] = float("-inf")
        return logits
