"""Block-masking configuration: the reference vLLM overlay's JSON keys, read strictly.

One JSON file drives both this project and a vLLM server running the Memento overlay, so the key names and
meanings are the overlay's (block-semantics.md, "Configuration names"). Where the overlay is lenient we are not:
unknown keys are an error (the overlay silently drops them), and `mask_delimiters` has no default when masking
is enabled (a wrong guess silently mismatches training).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mementokit.errors import ConfigError
from mementokit.format.machine import queues_completed_blocks
from mementokit.format.markers import DEFAULT_MARKERS

TOKEN_FIELDS = (
    "block_start_token",
    "block_end_token",
    "summary_start_token",
    "summary_end_token",
    "im_start_token",
    "assistant_token",
)
_BOOL_FIELDS = (
    "enable",
    "mask_delimiters",
    "compact_on_summary_end",
    "require_assistant_section",
    "restart_mode",
    "keep_last_block_for_answer",
    "debug",
)
_INT_FIELDS = ("keep_last_n_blocks", "max_block_tokens")


def _mask_delimiters_required(where: str) -> str:
    return (
        f"block masking config{where}: 'mask_delimiters' is required when 'enable' is true "
        "(false: keep <|block_start|>/<|block_end|> visible, Qwen3/OLMo-3 training; "
        "true: hide them with the block, Phi-4 training). There is no default, so inference cannot "
        "silently differ from training."
    )


@dataclass(frozen=True)
class BlockMaskingConfig:
    """Which tokens a Memento model stops seeing, and when (see block-semantics.md).

    keep_last_n_blocks: -1 never evict; 0 evict a block at its own summary end; N > 0 keep the N newest completed
    blocks visible. keep_last_block_for_answer only acts with keep_last_n_blocks == 0 (as in the overlay).
    """

    enable: bool = True
    keep_last_n_blocks: int = 0
    mask_delimiters: bool | None = None  # required when enabled (no silent default); read as false when disabled
    compact_on_summary_end: bool = True
    require_assistant_section: bool = True
    restart_mode: bool = False
    keep_last_block_for_answer: bool = False
    max_block_tokens: int = 0
    debug: bool = False
    # The marker strings default to the format core's, so text and tokens agree unless a user changes both.
    block_start_token: str = DEFAULT_MARKERS.block_start
    block_end_token: str = DEFAULT_MARKERS.block_end
    summary_start_token: str = DEFAULT_MARKERS.summary_start
    summary_end_token: str = DEFAULT_MARKERS.summary_end
    im_start_token: str = "<|im_start|>"
    assistant_token: str = "assistant"

    def __post_init__(self) -> None:
        # One rule for Python and JSON (from_dict): no silent default for mask_delimiters when masking is on.
        if self.mask_delimiters is None:
            if self.enable is True:
                raise ConfigError(_mask_delimiters_required(""))
            object.__setattr__(self, "mask_delimiters", False)
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"block masking: '{name}' must be true or false, got {getattr(self, name)!r}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"block masking: '{name}' must be an integer, got {value!r}")
        if self.keep_last_n_blocks < -1:
            raise ConfigError(
                f"block masking: 'keep_last_n_blocks' must be -1 (never evict), 0 or a positive count, "
                f"got {self.keep_last_n_blocks}"
            )
        if self.max_block_tokens < 0:
            raise ConfigError(
                f"block masking: 'max_block_tokens' must be >= 0 (0 = no cap), got {self.max_block_tokens}")
        for name in TOKEN_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"block masking: '{name}' must be a non-empty string (a token, or an id as a string)")

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def vanilla(cls) -> BlockMaskingConfig:
        """Full attention: nothing is ever evicted (the control model)."""
        return cls(enable=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None) -> BlockMaskingConfig:
        """Read the overlay's JSON keys. Unknown keys, and a missing mask_delimiters when enabled, are errors.

        A missing "enable" means disabled, as in the overlay, so one file means the same thing to both; we warn,
        because that is rarely what the writer wanted.
        """
        where = f" in {source}" if source else ""
        if not isinstance(data, dict):
            raise ConfigError(f"block masking config{where} must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"block masking config{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                f"known keys are {', '.join(sorted(known))}"
            )
        values = dict(data)
        if "enable" not in values:
            warnings.warn(
                f"block masking config{where} has no 'enable' key: read as disabled, like the reference overlay",
                stacklevel=2,
            )
            values["enable"] = False
        if values.get("mask_delimiters") is None and values["enable"] is True:
            raise ConfigError(_mask_delimiters_required(where))
        for name in TOKEN_FIELDS:
            # A JSON integer is read as the id it obviously means ("a string holding an integer is a token id").
            if isinstance(values.get(name), int) and not isinstance(values.get(name), bool):
                values[name] = str(values[name])
        return cls(**values)

    @classmethod
    def load(cls, json_text_or_path: str | Path | dict) -> BlockMaskingConfig:
        """From a dict, a JSON object as text, or the path of a JSON file."""
        if isinstance(json_text_or_path, dict):
            return cls.from_dict(json_text_or_path)
        text = str(json_text_or_path)
        source = None
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise ConfigError(f"block masking config: {text!r} is neither a JSON object nor an existing file")
            source = str(path)
            text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            where = source or "block masking JSON"
            raise ConfigError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data, source=source)

    def to_dict(self) -> dict[str, Any]:
        """The overlay's JSON keys (round-trips through from_dict)."""
        return asdict(self)

    # ---- derived --------------------------------------------------------------------------------------------
    @property
    def evicts(self) -> bool:
        """Whether any block can ever be evicted under this configuration (keep_last_block_for_answer evicts at
        block starts even without compact_on_summary_end, as the overlay does)."""
        return queues_completed_blocks(self)

    @property
    def defers_to_next_block(self) -> bool:
        """keep_last_block_for_answer is in force (the overlay honours it only with keep_last_n_blocks == 0)."""
        return self.keep_last_block_for_answer and self.keep_last_n_blocks == 0
