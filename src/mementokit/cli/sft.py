"""`memento sft` (traces -> tokenized SFT data with stage-2 masks) and `memento train` (a thin layer over
mementokit.sft)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mementokit.cli.console import progress_bar, stderr, stdout, write_json
from mementokit.cli.options import (
    ConfigOpt,
    FieldOpt,
    JsonOpt,
    LimitOpt,
    RequiredInputArg,
    SkipBadOpt,
    SplitOpt,
    TokenizerOpt,
    field_map,
    load_block_masking_config,
    quiet_libraries,
)
from mementokit.errors import ConfigError


def block_masking_for(stage: int, block_masking: str | None, keep_last_n: int | None, mask_delimiters: bool | None):
    """The stage-2 block-masking config from --block-masking and the two flags (flags win); None for stage 1.

    mask_delimiters has no default: it must match how the model will be served, so it is asked for explicitly.
    """
    from mementokit.blocks import BlockMaskingConfig

    if stage == 1:
        if block_masking is not None or keep_last_n is not None or mask_delimiters is not None:
            raise ConfigError("--block-masking, --keep-last-n and --mask-delimiters/--keep-delimiters apply to "
                              "--stage 2 only (stage 1 trains with full attention)")
        return None
    if block_masking is not None:
        values = load_block_masking_config(block_masking).to_dict()
    else:
        values = {"enable": True, "keep_last_n_blocks": 0}
    if keep_last_n is not None:
        values["keep_last_n_blocks"] = keep_last_n
    if mask_delimiters is not None:
        values["mask_delimiters"] = mask_delimiters
    elif block_masking is None:
        raise ConfigError("--stage 2 needs --mask-delimiters (Phi-4 style: the block's delimiters are hidden with it) "
                          "or --keep-delimiters (Qwen3 / OLMo-3 style): it must match how the model will be served")
    return BlockMaskingConfig.from_dict(values)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", metavar="DIR", show_default=False,
    help="Output folder (Arrow, Parquet, dataset card, JSONL messages, tokenizer).")]
MaxLengthOpt = Annotated[int | None, typer.Option(
    "--max-length", metavar="N", min=2,
    help="Cut examples to this many tokens (counted in the card, never silent).")]
StageOpt = Annotated[int, typer.Option(
    "--stage", min=1, max=2,
    help="1: full attention (no masks stored); 2: memento attention (masks stored).")]
KeepLastNOpt = Annotated[int | None, typer.Option(
    "--keep-last-n", metavar="N", min=-1,
    help="Stage 2: completed blocks that stay visible (0: a block disappears at its memento's end; -1: never).")]
MaskDelimitersOpt = Annotated[bool | None, typer.Option(
    "--mask-delimiters/--keep-delimiters", show_default=False,
    help="Stage 2 (required): hide a block's delimiters with it (Phi-4) or keep them (Qwen3, OLMo-3). Must "
         "match serving.")]
BlockMaskingOpt = Annotated[str | None, typer.Option(
    "--block-masking", metavar="JSON", show_default=False,
    help="Stage 2: block-masking config, JSON text or file (the vLLM overlay's keys); the flags above override "
         "it.")]
SystemPromptOpt = Annotated[str | None, typer.Option(
    "--system-prompt", metavar="TEXT", show_default=False,
    help="A system turn before the problem (Qwen3-style Memento models use none).")]
RenderOpt = Annotated[str, typer.Option(
    "--render",
    help="Assistant turn: verbatim (response exactly as given, template's prompt and turn end) or template "
         "(the template's own rendering).")]
FormatsOpt = Annotated[list[str] | None, typer.Option(
    "--format", metavar="FORMAT", show_default=False,
    help="What to write: arrow, parquet, jsonl (repeatable; default all three).")]


def sft(
    source: RequiredInputArg,
    tokenizer: TokenizerOpt,
    out: OutOpt,
    max_length: MaxLengthOpt = None,
    overflow: Annotated[str, typer.Option("--overflow", help="Over --max-length: truncate or drop.")] = "truncate",
    stage: StageOpt = 1,
    keep_last_n: KeepLastNOpt = None,
    mask_delimiters: MaskDelimitersOpt = None,
    block_masking: BlockMaskingOpt = None,
    system_prompt: SystemPromptOpt = None,
    render: RenderOpt = "verbatim",
    formats: FormatsOpt = None,
    limit: LimitOpt = None,
    dataset_config: ConfigOpt = "default",
    split: SplitOpt = "train",
    fields: FieldOpt = None,
    skip_bad: SkipBadOpt = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn Memento traces into SFT data: chat messages, input ids, labels (-100 on the prompt) and, for stage 2,
    the memento-attention masks stored compactly.

    Writes Arrow (save_to_disk), Parquet, a dataset card with counts, token statistics and the options used, JSONL
    messages for other trainers, and the tokenizer the ids belong to.

    Examples:

        memento sft synthetic.jsonl --limit 8 --tokenizer demo-model --out sft-data --stage 2 --keep-delimiters

        memento sft traces.jsonl --tokenizer ./qwen3-tokenizer --out sft-stage2 --max-length 32768 --stage 2 \
            --keep-last-n 0 --keep-delimiters
    """
    from mementokit.hf import load_hf_tokenizer
    from mementokit.io import ReadStats
    from mementokit.sft import SFTTokenizer, export_sft_dataset, iter_chat_examples

    masking = block_masking_for(stage, block_masking, keep_last_n, mask_delimiters)
    quiet_libraries()
    hf_tokenizer = load_hf_tokenizer(tokenizer)
    sft_tokenizer = SFTTokenizer(hf_tokenizer, stage=stage, block_masking=masking, max_length=max_length,
                                 overflow=overflow, render_mode=render)
    read_stats = ReadStats()
    examples = iter_chat_examples(source, system_prompt=system_prompt, field_map=field_map(fields), limit=limit,
                                  config=dataset_config, split=split, skip_bad=skip_bad, stats=read_stats)
    with progress_bar(limit, "tokenizing") as advance:
        result = export_sft_dataset(sft_tokenizer.tokenize(examples), out, metadata=sft_tokenizer.metadata(),
                                    stats=sft_tokenizer.stats, tokenizer=hf_tokenizer,
                                    formats=formats or ("arrow", "parquet", "jsonl"), overwrite=overwrite,
                                    progress=advance)
    statistics = result.metadata["statistics"]
    if as_json:
        write_json({"out": str(result.out_dir), "examples": result.examples, "files": result.files,
                    "statistics": statistics, "read": read_stats.as_dict(),
                    "options": {k: v for k, v in result.metadata.items() if k not in ("statistics", "files")}})
        return
    stdout.print(_sft_table(stage, result, statistics, sft_tokenizer.markers_added, masking))
    if read_stats.rows_skipped:
        stdout.print(f"skipped rows: {read_stats.summary()}", highlight=False)


def _sft_table(stage: int, result, statistics: dict, markers_added: int, masking) -> Table:
    table = Table(title=f"memento sft: stage {stage} -> {result.out_dir}", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    per = statistics["tokens_per_example"]
    for label, value in (
        ("examples", statistics["examples"]),
        ("dropped (overflow / prompt too long)",
         f"{statistics['dropped_overflow']} / {statistics['dropped_prompt_too_long']}"),
        ("truncated examples (inside a block)",
         f"{statistics['truncated_examples']} ({statistics['truncated_inside_block']})"),
        ("tokens (trained on)", f"{_fmt(statistics['tokens'])} ({_fmt(statistics['label_tokens'])})"),
        ("tokens per example median / p90 / max", f"{_fmt(per['median'])} / {_fmt(per['p90'])} / {_fmt(per['max'])}"),
        ("completed blocks", statistics["blocks_completed"]),
        ("block markers added", markers_added),
    ):
        table.add_row(label, _fmt(value))
    if stage == 2:
        table.add_row("attention pairs hidden (stage 2)", f"{100 * statistics['hidden_attention_fraction']:.1f}%")
        table.add_row("mask_delimiters / keep_last_n_blocks",
                      f"{masking.mask_delimiters} / {masking.keep_last_n_blocks}")
    return table


ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", metavar="PATH", show_default=False,
    help="Causal LM folder (or hub name) to start from.")]
DataOpt = Annotated[Path, typer.Option(
    "--data", "-d", metavar="DIR", show_default=False,
    help="`memento sft` output folder (or a save_to_disk folder / Parquet).")]
_StageOpt = Annotated[int, typer.Option(
    "--stage", min=1, max=2, show_default=False,
    help="1: full causal attention; 2: memento attention (needs data made with --stage 2).")]
_OutOpt = Annotated[Path | None, typer.Option(
    "--out", "-o", metavar="DIR", show_default=False,
    help="Run folder: checkpoints, final model, log.jsonl. Default: memento-run-stage<N>.")]
GradAccumOpt = Annotated[int, typer.Option(
    "--grad-accum", metavar="N", min=1,
    help="Micro-batches per optimizer step.")]
WeightDecayOpt = Annotated[float, typer.Option(
    "--weight-decay",
    help="AdamW weight decay (not on norms and biases).")]
_MaxLengthOpt = Annotated[int | None, typer.Option(
    "--max-length", metavar="N", min=2,
    help="Cut longer examples at collation.")]
Bf16Opt = Annotated[bool | None, typer.Option(
    "--bf16/--no-bf16", show_default=False,
    help="bf16 autocast. Default: on when the GPU supports it, off on CPU.")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", show_default=False,
    help="cpu, cuda, cuda:1 ... Default: cuda when available.")]
AttnOpt = Annotated[str, typer.Option(
    "--attn",
    help="Attention implementation: sdpa or eager (both take the 4-D stage-2 mask).")]
SaveStepsOpt = Annotated[int, typer.Option(
    "--save-steps", metavar="N", min=0,
    help="Checkpoint every N steps (0: only at the end).")]
SaveTotalLimitOpt = Annotated[int | None, typer.Option(
    "--save-total-limit", metavar="N", min=1,
    help="Keep only the newest N checkpoints.")]
ResumeOpt = Annotated[str | None, typer.Option(
    "--resume", metavar="auto|DIR", show_default=False,
    help="auto (newest checkpoint in --out, or a fresh start when there is none) or a checkpoint folder.")]
GradientCheckpointingOpt = Annotated[bool, typer.Option(
    "--gradient-checkpointing",
    help="Recompute activations in the backward pass (less memory).")]


def train_command(
    model: ModelOpt,
    data: DataOpt,
    stage: _StageOpt,
    out: _OutOpt = None,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the data (ignored with --max-steps).")] = 1.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", metavar="N", help="Optimizer steps.", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Examples per micro-batch.", min=1)] = 1,
    grad_accum: GradAccumOpt = 1,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 1e-5,
    weight_decay: WeightDecayOpt = 0.0,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", metavar="N", help="Linear warm-up steps.", min=0)] = 0,
    scheduler: Annotated[str, typer.Option("--scheduler", help="cosine, linear or constant after warm-up.")] = "cosine",
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Gradient clipping (0: off).", min=0)] = 1.0,
    max_length: _MaxLengthOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Data order and initialisation seed.")] = 0,
    bf16: Bf16Opt = None,
    device: DeviceOpt = None,
    attn: AttnOpt = "sdpa",
    save_steps: SaveStepsOpt = 0,
    save_total_limit: SaveTotalLimitOpt = None,
    log_steps: Annotated[int, typer.Option("--log-steps", metavar="N", help="Log the loss every N steps.", min=1)] = 1,
    resume: ResumeOpt = None,
    gradient_checkpointing: GradientCheckpointingOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a causal LM on `memento sft` data: stage 1 with full attention, stage 2 with memento attention (a
    finished memento's block is invisible to later tokens).

    Gradient accumulation, bf16 when the hardware has it, checkpoints and --resume; the loss of every logged step
    goes to OUT/log.jsonl. Missing block markers are added to the model and initialised from related words. Stage 2
    writes OUT/final/block_masking.json: serve the model with it.

    Examples:

        memento train --model demo-model --data sft-data --stage 2 --max-steps 4 --out run

        memento train --model ./qwen3-0.6b --data sft-stage2 --stage 2 --out run2 --batch-size 1 --grad-accum 8 \
            --lr 1e-5 --save-steps 200
    """
    from mementokit.sft import TrainConfig

    quiet_libraries()
    config = TrainConfig(
        model=model, data=str(data), out=str(out or Path(f"memento-run-stage{stage}")), stage=stage,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
        learning_rate=learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps,
        lr_scheduler=scheduler, max_grad_norm=max_grad_norm or None, max_length=max_length, seed=seed,
        bf16=bf16, device=device, attn_implementation=attn, save_steps=save_steps,
        save_total_limit=save_total_limit, log_steps=log_steps, resume=resume,
        gradient_checkpointing=gradient_checkpointing,
    )
    result = _train_with_progress(config)
    if as_json:
        write_json(result.as_dict())
        return
    _print_train_result(stage, result)


def _train_with_progress(config):
    """Run the trainer with a progress bar on stderr that shows the latest loss."""
    from mementokit.sft import train

    columns = [SpinnerColumn(), TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("", total=None)

        def on_step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_log(record: dict) -> None:
            progress.update(task, description=f"loss {record['loss']:.4f}")

        return train(config, on_log=on_log, on_step=on_step)


def _print_train_result(stage: int, result) -> None:
    history = result.history
    stdout.print(f"stage {stage}: {result.steps} steps on {result.device}{' (bf16)' if result.bf16 else ''}"
                 + (f", resumed from {result.resumed_from}" if result.resumed_from else ""), highlight=False)
    if history:
        stdout.print(f"loss {history[0]['loss']:.4f} (step {history[0]['step']}) -> {history[-1]['loss']:.4f} "
                     f"(step {history[-1]['step']}); log: {result.out_dir / 'log.jsonl'}", highlight=False)
    if result.init_report:
        stdout.print(f"block markers initialised: {', '.join(result.init_report['initialised'])}", highlight=False)
    stdout.print(f"final model: {result.final_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sft")(sft)
    app.command("train")(train_command)
