"""`memento generate` and `memento replay`: block-masked generation and measured replay (a thin layer over
mementokit.generate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mementokit.cli.console import progress_bar, size_text, stdout, table, write_json
from mementokit.cli.options import (
    DEFAULT_BLOCK_MASKING,
    AttnOpt,
    BlockMaskingOpt,
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    FieldOpt,
    JsonOpt,
    LimitOpt,
    ModelOpt,
    RequiredInputArg,
    SkipBadOpt,
    SplitOpt,
    load_block_masking_config,
    open_traces,
    quiet_libraries,
)
from mementokit.errors import ConfigError, InputError


def read_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """--prompt TEXT, or --prompts FILE: JSONL rows with a prompt / problem / question field, or one per line."""
    from mementokit.jsonl import read_jsonl

    if (prompt is None) == (prompts_file is None):
        raise ConfigError("give exactly one of --prompt TEXT or --prompts FILE")
    if prompt is not None:
        return [prompt]
    if prompts_file.suffix != ".jsonl":
        if not prompts_file.is_file():
            raise InputError("no such file", path=str(prompts_file))
        out = [line for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        out = []
        for number, row in read_jsonl(prompts_file):
            text = next((row[k] for k in ("prompt", "problem", "question") if isinstance(row.get(k), str)), None)
            if text is None:
                raise InputError("no string field prompt, problem or question", path=str(prompts_file),
                                 line=number, field="prompt")
            out.append(text)
    if not out:
        raise InputError("no prompts in the file", path=str(prompts_file))
    return out


def _generation_table(rows: list[dict]):
    """Eight narrow columns: whole at 80 columns."""
    out = table("KV cache (measured)", ["#", "new\ntokens", "finish", "evic-\ntions", "peak\ntokens", "peak",
                                         "vanilla\npeak", "AUC\nratio"])
    for row in rows:
        out.add_row(str(row["index"]), f"{row['generated_tokens']:,}", row["finish_reason"], str(row["evictions"]),
                    f"{row['peak_tokens']:,}", size_text(row["peak_bytes"]), size_text(row["vanilla_peak_bytes"]),
                    "-" if row["auc_ratio"] is None else f"{row['auc_ratio']:.3f}")
    return out


def _run_generation(generator, encoded, params, *, stream: bool, raw: bool, batch_size: int) -> list:
    if stream:
        events = generator.stream(encoded[0], params, start_inside_assistant=raw)
        for _, text in events:
            stdout.out(text, end="", highlight=False)
        stdout.out("")
        return events.results
    results = []
    with progress_bar(len(encoded), "generating") as advance:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            results += generator.generate_batch(chunk, params, start_inside_assistant=raw)
            advance(len(chunk))
    return results


def _generation_rows(texts: list[str], results: list) -> list[dict]:
    rows = []
    for i, (text, r) in enumerate(zip(texts, results)):
        vanilla_auc = sum(r.stats.positions)
        rows.append({"index": i, "prompt": text, "text": r.text, **r.summary(),
                     "vanilla_peak_bytes": r.stats.logical_tokens * r.stats.bytes_per_token,
                     "auc_ratio": r.stats.auc_tokens / vanilla_auc if vanilla_auc else None})
    return rows


def _write_curve_and_plot(config, results, curve: Path | None, plot: Path | None) -> None:
    if curve is not None:
        from mementokit.jsonl import write_json_atomic

        write_json_atomic(curve, {"block_masking": config.to_dict(),
                                  "rows": [{"index": i, **r.stats.to_dict()} for i, r in enumerate(results)]},
                          indent=None)
    if plot is not None:
        from mementokit.generate.plots import plot_cache_curves

        plot_cache_curves([(f"prompt {i}", r.stats) for i, r in enumerate(results)], plot)


PromptOpt = Annotated[str | None, typer.Option(
    "--prompt", "-p", metavar="TEXT", show_default=False,
    help="One prompt (the user's message).")]
PromptsFileOpt = Annotated[Path | None, typer.Option(
    "--prompts", metavar="FILE", show_default=False,
    help="File of prompts: JSONL (prompt / problem / question) or one per line.")]
TokenizerPathOpt = Annotated[str | None, typer.Option(
    "--tokenizer", "-t", metavar="PATH", show_default=False,
    help="Tokenizer folder (default: the model's).")]
RawOpt = Annotated[bool, typer.Option(
    "--raw",
    help="Feed the prompt text as is (no chat template); blocks are then tracked from the first token.")]
MaxNewTokensOpt = Annotated[int, typer.Option(
    "--max-new-tokens", metavar="N", min=0,
    help="Cap on generated (logical) tokens.")]
MaxCacheTokensOpt = Annotated[int | None, typer.Option(
    "--max-cache-tokens", metavar="N", min=1,
    help="Cap on PHYSICAL cache tokens of a row (what memory holds).")]
TemperatureOpt = Annotated[float, typer.Option(
    "--temperature", min=0.0,
    help="Sampling temperature; 0 = greedy.")]
TopPOpt = Annotated[float, typer.Option(
    "--top-p",
    help="Nucleus sampling: keep the smallest set of tokens with this much probability.")]
MinPOpt = Annotated[float, typer.Option(
    "--min-p",
    help="Drop tokens below this fraction of the top token's probability.")]
StopIdOpt = Annotated[list[int] | None, typer.Option(
    "--stop-id", metavar="ID",
    help="Stop token id (repeatable).")]
CurveOpt = Annotated[Path | None, typer.Option(
    "--curve", metavar="FILE", show_default=False,
    help="Write the per-step cache curve and evictions (JSON).")]
PlotOpt = Annotated[Path | None, typer.Option(
    "--plot", metavar="PNG", show_default=False,
    help="PNG of the measured cache curve.")]


def generate(
    model_path: ModelOpt,
    prompt: PromptOpt = None,
    prompts_file: PromptsFileOpt = None,
    block_masking: BlockMaskingOpt = DEFAULT_BLOCK_MASKING,
    tokenizer_path: TokenizerPathOpt = None,
    raw: RawOpt = False,
    max_new_tokens: MaxNewTokensOpt = 512,
    max_cache_tokens: MaxCacheTokensOpt = None,
    temperature: TemperatureOpt = 0.0,
    top_p: TopPOpt = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Keep the K most likely tokens; 0 = off.", min=0)] = 0,
    min_p: MinPOpt = 0.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed (row i uses seed + i).")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", metavar="TEXT", help="Stop string (repeatable).")] = None,
    stop_id: StopIdOpt = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Do not stop at the end-of-sequence token.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N", help="Rows decoded together.", min=1)] = 8,
    stream: Annotated[bool, typer.Option("--stream", help="Print tokens as they come (one prompt).")] = False,
    curve: CurveOpt = None,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    attn: AttnOpt = "sdpa",
) -> None:
    """Generate with block masking: finished blocks leave the KV cache for real, positions stay original.

    Prints the text (special tokens kept) and a summary of evictions and KV memory per prompt.

    Examples:

        memento generate --model demo-model --prompt "What is 2 + 2?" --max-new-tokens 64 --plot kv.png

        memento generate --model ./memento-qwen3-8b --prompt "Prove that sqrt(2) is irrational." --temperature 0.6 \
            --top-p 0.95 --top-k 20 --max-new-tokens 8192
    """
    from mementokit.generate import SamplingParams, chat_prompt

    # Everything that can be wrong fails before the model is loaded.
    config = load_block_masking_config(block_masking)
    texts = read_prompts(prompt, prompts_file)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                            min_p=min_p, seed=seed, stop=tuple(stop or ()), stop_token_ids=tuple(stop_id or ()),
                            ignore_eos=ignore_eos, max_cache_tokens=max_cache_tokens)
    if stream and len(texts) > 1:
        raise ConfigError("--stream prints one prompt as it is generated; give --prompt, or drop --stream")
    generator = _load_generator(model_path, tokenizer_path, config, dtype=dtype, device=device, attn=attn)
    tokenizer = generator.tokenizer
    encoded = [tokenizer.encode(t, add_special_tokens=False) if raw else chat_prompt(tokenizer, t) for t in texts]
    results = _run_generation(generator, encoded, params, stream=stream, raw=raw, batch_size=batch_size)
    rows = _generation_rows(texts, results)
    _write_curve_and_plot(config, results, curve, plot)
    if as_json:
        write_json({"model": model_path, "block_masking": config.to_dict(), "rows": rows,
                    "curve": None if curve is None else str(curve), "plot": None if plot is None else str(plot)})
        return
    _print_generation(rows, stream=stream, written={"curve": curve, "plot": plot})


def _load_generator(model_path: str, tokenizer_path: str | None, config, **model_options):
    """Model folder checked first (a missing model is named as the model, not as its tokenizer), then the
    tokenizer and its markers, then the weights."""
    from mementokit.blocks import resolve_marker_ids
    from mementokit.generate import BlockMaskedGenerator
    from mementokit.hf import check_model_folder, load_hf_model, load_hf_tokenizer

    check_model_folder(model_path)
    quiet_libraries()
    tokenizer = load_hf_tokenizer(tokenizer_path or model_path)
    if config.enable:
        resolve_marker_ids(tokenizer, config)  # a marker missing from the vocabulary fails before loading
    return BlockMaskedGenerator(load_hf_model(model_path, **model_options), tokenizer, config)


def _print_generation(rows: list[dict], *, stream: bool, written: dict[str, Path | None]) -> None:
    if not stream:
        for row in rows:
            if len(rows) > 1:
                stdout.rule(f"prompt {row['index']}")
            stdout.out(row["text"], highlight=False)
    stdout.print(_generation_table(rows))
    for what, path in written.items():
        if path is not None:
            stdout.print(f"{what} written to {path}", highlight=False)


_TokenizerPathOpt = Annotated[str, typer.Option(
    "--tokenizer", "-t", metavar="PATH", show_default=False,
    help="Tokenizer folder. The four block markers are added if missing (the model must embed them).")]
WithPromptOpt = Annotated[bool, typer.Option(
    "--with-prompt",
    help="Replay the prompt too (chat template, ChatML fallback); the assistant gate then applies.")]
SaveLogitsOpt = Annotated[Path | None, typer.Option(
    "--save-logits", metavar="NPY", show_default=False,
    help="Save the logits of every position of ONE trace: float32 .npy [positions, vocab].")]


def replay_command(
    source: RequiredInputArg,
    model_path: ModelOpt,
    tokenizer_path: _TokenizerPathOpt,
    block_masking: BlockMaskingOpt = DEFAULT_BLOCK_MASKING,
    with_prompt: WithPromptOpt = False,
    limit: LimitOpt = None,
    save_logits: SaveLogitsOpt = None,
    as_json: JsonOpt = False,
    dataset_config: ConfigOpt = "default",
    split: SplitOpt = "train",
    fields: FieldOpt = None,
    skip_bad: SkipBadOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    attn: AttnOpt = "sdpa",
) -> None:
    """Teacher-force traces through the evicting cache and report the cache MEASURED from the tensors.

    Same input and tokenization as memento kv (the response alone by default, --with-prompt), so the two
    commands' peak_tokens / peak_bytes are directly comparable; the simulator's figure is shown beside the
    measured one.

    Examples:

        memento replay tests/data/memento_trace_aime2025_p5.json --model demo-model --tokenizer demo-model

        memento replay traces.jsonl --model ./memento-qwen3-8b --tokenizer ./memento-qwen3-8b --limit 1 --json \
            --save-logits logits.npy
    """
    from mementokit.generate import replay_traces

    config = load_block_masking_config(block_masking)
    traces = list(open_traces(source, limit=limit, config=dataset_config, split=split, fields=fields,
                              skip_bad=skip_bad))
    if save_logits is not None and len(traces) != 1:
        raise ConfigError(f"--save-logits saves one trace's logits, but {len(traces)} traces were read "
                          "(use --limit 1)")
    model, tokenizer, encoded, markers_added = _prepare_replay(model_path, tokenizer_path, traces, config,
                                                               with_prompt, dtype=dtype, device=device, attn=attn)
    reports = []
    with progress_bar(None, "replaying") as advance:
        for row, result in replay_traces(model, tokenizer, encoded, config, with_prompt=with_prompt,
                                         keep_logits=save_logits is not None,
                                         progress=lambda total, done: advance(done, total=total)):
            reports.append(row)
            if save_logits is not None:
                _save_logits(save_logits, result.logits)
    if as_json:
        write_json({"model": model_path, "tokenizer": tokenizer_path, "block_masking": config.to_dict(),
                    "with_prompt": with_prompt, "markers_added": markers_added, "traces": reports,
                    "logits": None if save_logits is None else str(save_logits)})
        return
    stdout.print(_replay_table(reports))
    if save_logits is not None:
        stdout.print(f"logits written to {save_logits}", highlight=False)


def _prepare_replay(model_path: str, tokenizer_path: str, traces: list, config, with_prompt: bool, **model_options):
    """Tokenize first (a bad trace fails before the model loads), markers added as memento kv adds them."""
    from mementokit.blocks import add_block_markers
    from mementokit.generate import tokenize_traces
    from mementokit.hf import check_model_folder, load_hf_model, load_hf_tokenizer

    check_model_folder(model_path)
    quiet_libraries()
    tokenizer = load_hf_tokenizer(tokenizer_path)
    markers_added = add_block_markers(tokenizer, config)  # so token counts agree with memento kv
    encoded = tokenize_traces(traces, tokenizer, config, with_prompt=with_prompt)
    return load_hf_model(model_path, **model_options), tokenizer, encoded, markers_added


def _save_logits(path: Path, logits) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, logits.numpy().astype(np.float32))


def _replay_table(reports: list[dict]):
    """Eight narrow columns with two-line headers: whole at 80 columns."""
    out = table("replay: KV cache measured from the tensors",
                ["#", "tokens", "evic-\ntions", "peak\ntokens", "simu-\nlated", "peak", "vanilla\npeak",
                 "peak\nratio", "AUC\nratio"])
    for r in reports:
        out.add_row(str(r["index"]), f"{r['tokens']:,}", str(r["evictions"]), f"{r['peak_tokens']:,}",
                    "-" if r["simulated_peak_tokens"] is None else f"{r['simulated_peak_tokens']:,}",
                    size_text(r["peak_bytes"]), size_text(r["vanilla"]["peak_bytes"]),
                    f"{r['peak_ratio']:.3f}" if r["peak_ratio"] else "-",
                    f"{r['auc_ratio']:.3f}" if r["auc_ratio"] else "-")
    return out


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("replay")(replay_command)
