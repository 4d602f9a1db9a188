"""Bytes of KV cache per token, from a Hugging Face config.json or a preset (reference-figures.md, "KV cache").

Bytes per cached token and layer = 2 (K and V) x KV heads x head dim x bytes per element. Full-attention layers
hold every surviving token; a sliding-window layer (OLMo-3's hybrid pattern, Mistral, Gemma) holds at most the
surviving tokens among the last `window` positions, so those layers are kept apart, grouped by window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mementokit.errors import ConfigError

GIB = 1024**3  # the paper's units are binary (144 KB = 147,456 bytes), so GB here means 2**30 bytes

DTYPE_BYTES = {
    "float32": 4, "fp32": 4, "float": 4,
    "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2,
    "float8": 1, "fp8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1,
}


@dataclass(frozen=True)
class KVMemoryModel:
    """How many bytes the KV cache of one model spends per surviving token."""

    name: str
    num_layers: int
    full_bytes_per_token: int  # summed over the full-attention layers
    sliding: tuple[tuple[int, int], ...] = ()  # (window, bytes per token summed over layers with that window)
    dtype: str = "bfloat16"
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def bytes_per_token(self) -> int:
        """Bytes one cached token costs across all layers (before any window limit applies)."""
        return self.full_bytes_per_token + sum(b for _, b in self.sliding)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_layers": self.num_layers,
            "dtype": self.dtype,
            "bytes_per_token": self.bytes_per_token,
            "full_attention_bytes_per_token": self.full_bytes_per_token,
            "sliding_windows": [{"window": w, "bytes_per_token": b} for w, b in self.sliding],
            **self.details,
        }


def _uniform(name: str, layers: int, kv_heads: int, head_dim: int, dtype: str = "bfloat16") -> KVMemoryModel:
    per_layer = 2 * kv_heads * head_dim * DTYPE_BYTES[dtype]
    return KVMemoryModel(name, layers, layers * per_layer, (), dtype,
                         {"num_key_value_heads": kv_heads, "head_dim": head_dim})


# The paper's table 1 / appendix A.3 figures, exactly.
PRESETS: dict[str, KVMemoryModel] = {
    "qwen3-8b": _uniform("qwen3-8b", 36, 8, 128),  # 147,456 bytes
    "qwen3-32b": _uniform("qwen3-32b", 64, 8, 128),  # 262,144 bytes
    "phi-4": _uniform("phi-4", 40, 10, 128),  # 204,800 bytes (Phi-4-reasoning)
}
_ALIASES = {"phi-4-reasoning": "phi-4", "phi4": "phi-4", "qwen3_8b": "qwen3-8b", "qwen3_32b": "qwen3-32b"}


def preset(name: str) -> KVMemoryModel:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in PRESETS:
        raise ConfigError(f"unknown KV preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


def _layer_is_sliding(config: dict[str, Any], num_layers: int, window: int | None) -> list[bool]:
    """Which layers use a sliding window, following the conventions transformers configs use."""
    layer_types = config.get("layer_types")
    if layer_types:
        if len(layer_types) != num_layers:
            raise ConfigError(f"config.json: 'layer_types' lists {len(layer_types)} layers, not {num_layers}")
        return [str(t) in ("sliding_attention", "sliding_window", "local", "chunked_attention") for t in layer_types]
    if not window:
        return [False] * num_layers
    if config.get("use_sliding_window") is False:
        return [False] * num_layers  # Qwen2/Qwen3 carry a window they do not use
    if "max_window_layers" in config and config.get("use_sliding_window"):
        # Qwen2 convention: layers from max_window_layers on use the window.
        return [i >= int(config["max_window_layers"]) for i in range(num_layers)]
    pattern = config.get("sliding_window_pattern")
    if pattern:
        # Gemma convention: every pattern-th layer is global, the others slide.
        return [(i + 1) % int(pattern) != 0 for i in range(num_layers)]
    return [True] * num_layers  # Mistral convention: a window applies everywhere


def kv_memory_from_config(source: str | Path | dict[str, Any], *, kv_dtype: str | None = None) -> KVMemoryModel:
    """Read layers, KV heads, head dim, dtype and sliding windows from a config.json (file, folder or dict)."""
    name = "config"
    if isinstance(source, dict):
        config = source
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"model config {str(source)!r} not found (give a config.json or its folder)")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        name = path.parent.name or path.name
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), dict):
        config = {**config["text_config"], "torch_dtype": config.get("torch_dtype", config.get("dtype"))}
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model config {name}: needs num_hidden_layers and num_attention_heads ({exc})") from None
    dtype = str(kv_dtype or config.get("torch_dtype") or config.get("dtype") or "bfloat16").replace("torch.", "")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"model config {name}: unknown dtype {dtype!r}; choose from {', '.join(sorted(DTYPE_BYTES))}")
    element = DTYPE_BYTES[dtype]
    if config.get("kv_lora_rank"):
        # Multi-head latent attention caches one compressed latent plus the rotary key per token and layer.
        per_layer = (int(config["kv_lora_rank"]) + int(config.get("qk_rope_head_dim") or 0)) * element
        return KVMemoryModel(name, layers, layers * per_layer, (), dtype, {"attention": "mla"})
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
    per_layer = 2 * kv_heads * int(head_dim) * element
    window = config.get("sliding_window")
    sliding_flags = _layer_is_sliding(config, layers, window)
    if any(sliding_flags) and not window:
        raise ConfigError(f"model config {name}: sliding-window layers but no 'sliding_window' size")
    n_sliding = sum(sliding_flags)
    sliding = ((int(window), n_sliding * per_layer),) if n_sliding else ()
    return KVMemoryModel(name, layers, (layers - n_sliding) * per_layer, sliding, dtype,
                         {"num_key_value_heads": kv_heads, "head_dim": int(head_dim), "sliding_layers": n_sliding})
