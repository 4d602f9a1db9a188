"""Small models and tokenizers built locally in seconds, with no hub: for trying every command offline, and for
the tests (they build theirs with the same functions).

    write_demo_model("demo-model")                      # tokenizer + random Qwen3-architecture model, one folder
    tokenizer = train_tokenizer(texts, vocab_size=600)  # byte-level BPE, ChatML + Memento specials
    model = random_causal_lm("qwen3", len(tokenizer))   # random weights, eval mode, fp32, CPU

The tokenizer holds <|endoftext|>, <|im_start|>, <|im_end|>, <think>, </think> and the four block markers as
special tokens and `assistant` as one ordinary token, so ChatML prompts gate exactly as with Qwen3; it is
byte-level, so any text round-trips through decode. The demo model's weights are random: its text is noise, but
every code path (eviction, KV measurement, SFT, training, serving) runs as with a real checkpoint.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from mementokit.format.markers import DEFAULT_MARKERS

BLOCK_MARKERS = DEFAULT_MARKERS.block_markers
CHAT_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", DEFAULT_MARKERS.think_start, DEFAULT_MARKERS.think_end)
# Plain ChatML: every role, system included.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The Memento chat template (microsoft/memento, vllm/chat_templates/memento_nosys.jinja, MIT): ChatML without a
# system prompt, which the Memento Qwen3 models were trained without; system messages are dropped.
MEMENTO_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}"
)
ARCHITECTURES = ("qwen3", "llama", "mistral", "phi3", "qwen2", "olmo2", "olmo3")
# The demo model: a Qwen3 shape scaled down (GQA with 4 query and 2 KV heads), ~1.3M parameters.
DEMO_MODEL = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=40960)
DEMO_VOCAB_SIZE = 4096


def texts_of(value) -> list[str]:
    """Every string inside a JSON value (problems, chains of thought, blocks, summaries)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in texts_of(item)]
    if isinstance(value, list):
        return [t for item in value for t in texts_of(item)]
    return []


def sample_texts() -> list[str]:
    """The strings of the sample shipped with mementokit (what the demo tokenizer is trained on)."""
    from mementokit.data import sample_path
    from mementokit.jsonl import read_jsonl

    return [t for _, row in read_jsonl(sample_path()) for t in texts_of(row)]


@lru_cache(maxsize=8)
def _trained_json(texts: tuple[str, ...], vocab_size: int) -> str:
    # Training is deterministic and takes a fraction of a second to a few seconds; cached for repeated builds.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(CHAT_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return tokenizer.to_str()


def train_tokenizer(texts, *, vocab_size: int = DEMO_VOCAB_SIZE, with_markers: bool = True,
                    chat_template: str | None = MEMENTO_CHAT_TEMPLATE):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts`, with the ChatML and Memento specials.

    eos is <|im_end|>, pad <|endoftext|>. with_markers=False leaves the four block markers out (to test adding
    them); chat_template=None leaves the tokenizer without a template.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_json(tuple(texts), vocab_size))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token=None)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT_SPECIALS], special_tokens=True)
    tokenizer.add_tokens([AddedToken("assistant", special=False, normalized=False)])
    if with_markers:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in BLOCK_MARKERS],
                             special_tokens=True)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def random_causal_lm(arch: str, vocab_size: int, *, attn_implementation: str = "eager", seed: int = 0,
                     sliding_window: int | None = None, weight_std: float = 0.2, **overrides):
    """A randomly initialised causal LM of architecture `arch` (one of ARCHITECTURES): eval mode, fp32, CPU.

    Defaults: 2 layers, hidden 64, 4 query and 2 KV heads (GQA); `overrides` change any config field. Weights are
    drawn from N(0, weight_std) so attention is far from uniform and a wrong mask shows in the logits.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    kwargs = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    kwargs.update(vocab_size=vocab_size, **overrides)
    if arch == "qwen3":
        kwargs.setdefault("head_dim", 16)
        names = ("Qwen3Config", "Qwen3ForCausalLM")
    elif arch in ("mistral", "phi3"):
        # Mistral defaults to a 4096-token sliding window; None makes it a plain full-attention model.
        kwargs["sliding_window"] = sliding_window
        names = ("MistralConfig", "MistralForCausalLM") if arch == "mistral" else ("Phi3Config", "Phi3ForCausalLM")
    elif arch == "olmo3":
        # OLMo-3 alternates sliding-window and full layers; a small window makes the difference visible.
        kwargs.update(sliding_window=sliding_window or 4096, layer_types=["sliding_attention", "full_attention"])
        names = ("Olmo3Config", "Olmo3ForCausalLM")
    elif arch in ("llama", "qwen2", "olmo2"):
        prefix = {"llama": "Llama", "qwen2": "Qwen2", "olmo2": "Olmo2"}[arch]
        names = (f"{prefix}Config", f"{prefix}ForCausalLM")
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    config = getattr(transformers, names[0])(**kwargs)
    model = getattr(transformers, names[1])._from_config(config, attn_implementation=attn_implementation)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, weight_std)
    return model.eval()


def write_demo_model(out: str | os.PathLike, *, vocab_size: int = DEMO_VOCAB_SIZE, seed: int = 0,
                     overwrite: bool = False) -> Path:
    """Write a tokenizer trained on the shipped sample and a random Qwen3-architecture model into one folder.

    The folder loads with `AutoTokenizer.from_pretrained` and `AutoModelForCausalLM.from_pretrained`, as a
    hub checkpoint would; `demo.json` records how it was made.
    """
    from mementokit.errors import ConfigError

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"'{out}' exists and is not empty (give --overwrite to replace the demo model there)")
    tokenizer = train_tokenizer(sample_texts(), vocab_size=vocab_size)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    model = random_causal_lm("qwen3", len(tokenizer), attn_implementation="sdpa", seed=seed, **DEMO_MODEL)
    model.config.eos_token_id, model.config.pad_token_id = eos, pad
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, pad
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    (out / "demo.json").write_text(json.dumps({
        "what": "mementokit demo model: random weights (its text is noise), tokenizer trained on the shipped sample",
        "architecture": "Qwen3ForCausalLM", "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer), "seed": seed, "chat_template": "memento_nosys (ChatML, no system prompt)",
    }, indent=2) + "\n", encoding="utf-8")
    return out
