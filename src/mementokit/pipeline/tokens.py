"""Token counts without any download: a local tokenizer the user names, or a documented estimate.

`load_token_counter(None)` (or "estimate") counts ceil(characters / 4), at least 1 per non-empty text:
the usual rule of thumb for English and LaTeX-heavy reasoning with BPE tokenizers. A path to a
`tokenizer.json` file is loaded with `tokenizers`; a folder with transformers' AutoTokenizer
(local_files_only=True). Each text is encoded alone, without special tokens, as the segmentation contract
in the issue says.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mementokit.errors import ConfigError
from mementokit.pipeline.split import estimate_tokens

TokenCounter = Callable[[str], int]


def load_token_counter(spec: str | Path | None) -> tuple[TokenCounter, str]:
    """(counter, description) for a tokenizer spec: None / "estimate", a tokenizer.json, or a local folder."""
    if spec is None or str(spec) in ("", "estimate", "chars/4"):
        return estimate_tokens, "estimate (ceil(chars / 4))"
    path = Path(spec)
    if not path.exists():
        raise ConfigError(
            f"tokenizer {spec!r} is not a local file or folder "
            "(nothing is downloaded at run time; use 'estimate' or a local path)"
        )
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return (lambda text: len(tok.encode(text, add_special_tokens=False).ids)), f"tokenizers:{path}"
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any loading problem is a configuration problem here
        raise ConfigError(f"cannot load a tokenizer from {path}: {exc}") from exc
    return (lambda text: len(hf.encode(text, add_special_tokens=False))), f"transformers:{path}"
