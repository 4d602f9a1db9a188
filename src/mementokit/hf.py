"""Loading Hugging Face tokenizers and causal LMs with one clear error line.

    tokenizer = load_hf_tokenizer("./demo-model")         # a folder, or a hub name where the hub can be reached
    model = load_hf_model("./demo-model", dtype="float32", device="cpu", attn="sdpa")

Every package that needs a tokenizer or a model (blocks, kv, generate, sft, analysis, the CLI) loads it here,
so a missing folder, an empty folder or a folder without weights gives the same message everywhere. A local path
that does not exist says "no such folder" instead of the hub's "Repo id must use alphanumeric chars".
Imports of transformers and torch happen inside the functions (`import mementokit` stays light).
"""

from __future__ import annotations

import re
from pathlib import Path

from mementokit.errors import ConfigError

# What a hub id looks like: "name" or "namespace/name" (letters, digits, - _ .).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "auto": "auto"}


def is_hub_name(name: str) -> bool:
    """Whether `name` can only mean a hub repository: it does not exist locally and has a hub id's shape."""
    return not Path(name).exists() and bool(_HUB_ID.match(name)) and not name.startswith(".")


def _one_line(exc: BaseException) -> str:
    """The whole message of a library exception on one line (transformers spreads its hints over several)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text or type(exc).__name__


def check_local_folder(name_or_path: str | Path, what: str, *, expect: tuple[str, ...] = ()) -> Path | None:
    """The folder `name_or_path` names, checked; None when it is a hub name. ConfigError when it is a local path
    that is missing, not a folder, or (with `expect`: glob patterns) holds none of the expected files."""
    name = str(name_or_path)
    if is_hub_name(name):
        return None
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(f"{what} '{name}': no such folder")
    if not path.is_dir():
        raise ConfigError(f"{what} '{name}': not a folder")
    if expect and not any(any(path.glob(pattern)) for pattern in expect):
        raise ConfigError(f"{what} '{name}': the folder holds none of {', '.join(expect)}")
    return path


def _as_hub(local: Path | None) -> str:
    # A name with a hub id's shape that is not a local folder was tried on the hub: say both.
    return " (no such local folder; tried as a hub name)" if local is None else ""


def load_hf_tokenizer(name_or_path: str | Path):
    """A Hugging Face tokenizer from a local folder, a tokenizer.json file, or a hub name (where the hub can be
    reached, or with the files in the local cache).

    Whatever goes wrong (no such folder, no tokenizer files, no network) becomes one ConfigError line.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if Path(str(name_or_path)).is_file() and str(name_or_path).endswith(".json"):
        try:  # a bare tokenizer.json (the `tokenizers` library's format)
            return PreTrainedTokenizerFast(tokenizer_file=str(name_or_path))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises a bare Exception
            raise ConfigError(f"cannot load tokenizer '{name_or_path}': {_one_line(exc)}") from None
    local = check_local_folder(name_or_path, "tokenizer", expect=TOKENIZER_FILES)
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, HTTP and JSON errors alike
        raise ConfigError(f"cannot load tokenizer '{name_or_path}'{_as_hub(local)}: {_one_line(exc)}") from None


def check_model_folder(name_or_path: str | Path) -> Path | None:
    """Fail early, naming the model, when a local model folder is missing or has no config.json or weights."""
    path = check_local_folder(name_or_path, "model", expect=("config.json",))
    if path is not None and not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ConfigError(f"model '{name_or_path}': the folder has a config.json but no weights "
                          f"({', '.join(WEIGHT_PATTERNS)})")
    return path


def load_hf_model(name_or_path: str | Path, *, dtype: str = "auto", device: str = "auto", attn: str = "sdpa"):
    """A causal LM in eval mode on `device` ("auto": cuda when available). ConfigError with one whole line."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose float32, bfloat16, float16 or auto")
    if attn not in ("sdpa", "eager"):
        raise ConfigError(f"--attn {attn!r}: choose sdpa or eager")
    local = check_model_folder(name_or_path)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = "auto" if DTYPES[dtype] == "auto" else getattr(torch, DTYPES[dtype])
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype, attn_implementation=attn)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model '{name_or_path}'{_as_hub(local)}: {_one_line(exc)}") from None
    return model.to(device).eval()
