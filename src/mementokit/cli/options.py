"""Options and small helpers shared by several commands, declared once.

A command module takes what it needs from here (`InputArg`, `ConfigOpt`, `SplitOpt`, `FieldOpt`, `SkipBadOpt`,
`LimitOpt`, `BlockMaskingOpt`, `TokenizerOpt`, `ModelOpt`, `JsonOpt`, ...), so every command spells, explains and
checks an option the same way, and new commands (serve, distill) get them for free.
"""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from mementokit.cli.console import stderr

# The reference vLLM overlay's settings for Qwen3-style Memento models: a block leaves the cache at its memento's
# end, its delimiters stay.
DEFAULT_BLOCK_MASKING = '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}'
INPUT_HELP = "JSONL / JSON / Parquet file, save_to_disk or hub-layout folder, or a hub dataset name."

# ----- reading traces ------------------------------------------------------------------------------------------
InputArg = Annotated[str | None, typer.Argument(metavar="[INPUT]", help=INPUT_HELP + " Default: the shipped sample.",
                                                   show_default=False)]
RequiredInputArg = Annotated[str, typer.Argument(metavar="INPUT", help=INPUT_HELP, show_default=False)]
ConfigOpt = Annotated[str, typer.Option("--config", metavar="NAME", help="Dataset config: default or full.")]
SplitOpt = Annotated[str, typer.Option("--split", metavar="NAME", help="Dataset split.")]
FieldOpt = Annotated[list[str] | None, typer.Option(
    "--field", metavar="OURS=THEIRS", help="Map a field, e.g. response=cot (repeatable).", show_default=False)]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad",
                                          help="Skip bad rows (counted and reported) instead of stopping.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", metavar="N", min=0, help="At most N traces.",
                                                 show_default=False)]

# ----- models, tokenizers, block masking ----------------------------------------------------------------------
TokenizerOpt = Annotated[str, typer.Option(
    "--tokenizer", "-t", metavar="PATH",
    help="Tokenizer folder (or hub name). The four block markers are added if missing.", show_default=False)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", metavar="PATH", show_default=False,
                                       help="Model folder (a transformers causal LM), or hub name.")]
BlockMaskingOpt = Annotated[str, typer.Option(
    "--block-masking", metavar="JSON",
    help="Block-masking config: JSON text or file (the vLLM overlay's keys).")]
DtypeOpt = Annotated[str, typer.Option("--dtype",
                                       help="Model dtype: float32, bfloat16, float16 or auto (the checkpoint's).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ... or auto (cuda when available).")]
AttnOpt = Annotated[str, typer.Option("--attn", help="Attention implementation: sdpa or eager.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def field_map(pairs: list[str] | None):
    """`--field response=cot` style overrides into a FieldMap (None: the defaults)."""
    from mementokit.io import FieldMap

    return FieldMap().with_overrides(pairs) if pairs else None


def open_traces(source: str, *, config: str = "default", split: str = "train", limit: int | None = None,
                fields: list[str] | None = None, skip_bad: bool = False, **options):
    """Trace records from any source mementokit.io reads (files, folders, hub layouts, hub streams)."""
    from mementokit.io import iter_traces

    return iter_traces(source, config=config, split=split, limit=limit, field_map=field_map(fields),
                       skip_bad=skip_bad, **options)


def load_block_masking_config(text: str):
    """The block-masking config from JSON text or a file; its warnings (ignored keys...) printed on stderr."""
    from mementokit.blocks import BlockMaskingConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = BlockMaskingConfig.load(text)
    for warning in caught:
        stderr.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    return config


def quiet_libraries() -> None:
    """transformers and datasets draw their own bars for every load and save, and warn about their own internals;
    the command's bar and messages are enough."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning)
