"""Tiny randomly initialised causal LMs built from a config (no hub access): 2 layers, hidden 64.

Every builder returns a model in eval mode, fp32, on CPU, with the requested attention implementation, so
the equivalence tests can compare the evicting path against one dense-mask forward pass on several architectures.
"""

from __future__ import annotations

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Olmo3Config,
    Olmo3ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# Shared by every architecture: small enough for 2 shared CPU cores, big enough to have GQA (4 query heads, 2 KV).
_COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

ARCHITECTURES = ("qwen3", "llama", "mistral", "phi3", "qwen2", "olmo2", "olmo3")


def build_tiny_model(arch: str, vocab_size: int, *, attn_implementation: str = "eager", seed: int = 0,
                     sliding_window: int | None = None, **overrides):
    """A random tiny causal LM of architecture `arch` whose vocabulary holds `vocab_size` ids."""
    torch.manual_seed(seed)
    kwargs = dict(_COMMON, vocab_size=vocab_size, **overrides)
    if arch == "qwen3":
        config = Qwen3Config(head_dim=16, **kwargs)
        model_cls = Qwen3ForCausalLM
    elif arch == "qwen2":
        config = Qwen2Config(**kwargs)
        model_cls = Qwen2ForCausalLM
    elif arch == "llama":
        config = LlamaConfig(**kwargs)
        model_cls = LlamaForCausalLM
    elif arch == "mistral":
        # Mistral defaults to a 4096-token sliding window; None makes it a plain full-attention model.
        config = MistralConfig(sliding_window=sliding_window, **kwargs)
        model_cls = MistralForCausalLM
    elif arch == "phi3":
        config = Phi3Config(sliding_window=sliding_window, **kwargs)
        model_cls = Phi3ForCausalLM
    elif arch == "olmo2":
        config = Olmo2Config(**kwargs)
        model_cls = Olmo2ForCausalLM
    elif arch == "olmo3":
        # OLMo-3 alternates sliding-window and full layers; a small window makes the difference visible.
        config = Olmo3Config(sliding_window=sliding_window or 4096,
                             layer_types=["sliding_attention", "full_attention"], **kwargs)
        model_cls = Olmo3ForCausalLM
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    model = model_cls._from_config(config, attn_implementation=attn_implementation)
    # Random init in transformers is small; scale weights up a little so attention is not nearly uniform and a
    # wrong mask shows up clearly in the logits.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)
    return model.eval()


def memento_token_sequence(rng, markers, ordinary_ids, *, blocks: int = 4, nest_probability: float = 0.3,
                           chat_prefix: bool = True, stray_markers: bool = False, open_tail: bool = False,
                           block_tokens: tuple[int, int] = (1, 8), summary_tokens: tuple[int, int] = (1, 4)) -> list[int]:
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
