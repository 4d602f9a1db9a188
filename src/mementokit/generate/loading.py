"""Loading a transformers causal LM for generation, with one clear error for whatever goes wrong."""

from __future__ import annotations

from pathlib import Path

from mementokit.errors import ConfigError

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "auto": "auto"}


def resolve_device(device: str) -> str:
    """"auto" -> cuda when available, else cpu; anything else as given."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_model_location(name_or_path: str) -> None:
    """ConfigError when `name_or_path` is written as a local path (not a hub name) and no such folder exists."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    looks_local = (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1
                   or path.exists() or name_or_path.endswith("/"))
    if looks_local:
        what = "is a file, not a model folder" if path.exists() else "does not exist"
        raise ConfigError(f"model folder '{name_or_path}' {what}")


def load_model(name_or_path: str, *, dtype: str = "auto", device: str = "auto", attn: str = "sdpa"):
    """A causal LM in eval mode on `device`; ConfigError (one line) when it cannot be loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose float32, bfloat16, float16 or auto")
    if attn not in ("sdpa", "eager"):
        raise ConfigError(f"attention implementation {attn!r}: choose sdpa or eager")
    torch_dtype = "auto" if DTYPES[dtype] == "auto" else getattr(torch, DTYPES[dtype])
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype, attn_implementation=attn)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    return model.to(resolve_device(device)).eval()
