"""`memento generate` and `memento replay`: block-masked generation and measured replay (a thin layer over
mementokit.generate)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mementokit.blocks.tokens import load_hf_tokenizer as load_tokenizer
from mementokit.cli.console import stderr, stdout
from mementokit.errors import ConfigError, InputError

DEFAULT_BLOCK_MASKING = '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}'
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "auto": "auto"}

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model folder (a transformers causal LM).", show_default=False)]
BlockMaskingOpt = Annotated[str, typer.Option("--block-masking", help="Block-masking config: JSON text or file (the vLLM overlay's keys).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Model dtype: float32, bfloat16, float16 or auto (the checkpoint's).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ... or auto (cuda when available).")]
AttnOpt = Annotated[str, typer.Option("--attn", help="Attention implementation: sdpa or eager.")]


# ----- loading ------------------------------------------------------------------------------------------------
def load_block_masking_config(text: str):
    from mementokit.blocks import BlockMaskingConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = BlockMaskingConfig.load(text)
    for warning in caught:
        stderr.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    return config



def load_model(path: str, *, dtype: str, device: str, attn: str):
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose float32, bfloat16, float16 or auto")
    if attn not in ("sdpa", "eager"):
        raise ConfigError(f"--attn {attn!r}: choose sdpa or eager")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = "auto" if DTYPES[dtype] == "auto" else getattr(torch, DTYPES[dtype])
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation=attn)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {path!r}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


def read_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """--prompt TEXT, or --prompts FILE: JSONL rows with a prompt / problem / question field, or one per line."""
    if (prompt is None) == (prompts_file is None):
        raise ConfigError("give exactly one of --prompt TEXT or --prompts FILE")
    if prompt is not None:
        return [prompt]
    if not prompts_file.is_file():
        raise InputError("file not found", path=str(prompts_file))
    lines = prompts_file.read_text(encoding="utf-8").splitlines()
    out = []
    as_jsonl = prompts_file.suffix == ".jsonl"
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not as_jsonl:
            out.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=str(prompts_file), line=number) from None
        text = next((row.get(k) for k in ("prompt", "problem", "question") if isinstance(row, dict)
                     and isinstance(row.get(k), str)), None)
        if text is None:
            raise InputError("no string field prompt, problem or question", path=str(prompts_file), line=number,
                             field="prompt")
        out.append(text)
    if not out:
        raise InputError("no prompts in the file", path=str(prompts_file))
    return out


class _Progress:
    """A rich progress bar on stderr (silent when stderr is not a terminal)."""

    def __init__(self, total: int | None, label: str):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.total = total
        self.progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=stderr, transient=True, disable=not stderr.is_terminal)

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("", total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def reset(self, total: int | None) -> None:
        self.progress.reset(self.task, total=total)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


# ----- commands -----------------------------------------------------------------------------------------------
def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        model_path: ModelOpt,
        prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="One prompt (the user's message).", show_default=False)] = None,
        prompts_file: Annotated[Optional[Path], typer.Option("--prompts", help="File of prompts: JSONL (prompt / problem / question) or one per line.", show_default=False)] = None,
        block_masking: BlockMaskingOpt = DEFAULT_BLOCK_MASKING,
        tokenizer_path: Annotated[Optional[str], typer.Option("--tokenizer", "-t", help="Tokenizer folder (default: the model's).", show_default=False)] = None,
        raw: Annotated[bool, typer.Option("--raw", help="Feed the prompt text as is (no chat template); blocks are then tracked from the first token.")] = False,
        max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Cap on generated (logical) tokens.", min=0)] = 512,
        max_cache_tokens: Annotated[Optional[int], typer.Option("--max-cache-tokens", help="Cap on PHYSICAL cache tokens of a row (what memory holds).", min=1)] = None,
        temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.", min=0.0)] = 0.0,
        top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
        top_k: Annotated[int, typer.Option("--top-k", help="0 = off.", min=0)] = 0,
        min_p: Annotated[float, typer.Option("--min-p")] = 0.0,
        seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (row i uses seed + i).")] = None,
        stop: Annotated[Optional[list[str]], typer.Option("--stop", help="Stop string (repeatable).")] = None,
        stop_id: Annotated[Optional[list[int]], typer.Option("--stop-id", help="Stop token id (repeatable).")] = None,
        ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Do not stop at the end-of-sequence token.")] = False,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows decoded together.", min=1)] = 8,
        stream: Annotated[bool, typer.Option("--stream", help="Print tokens as they come (one prompt).")] = False,
        curve: Annotated[Optional[Path], typer.Option("--curve", help="Write the per-step cache curve and evictions (JSON).", show_default=False)] = None,
        plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG of the measured cache curve.", show_default=False)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
        dtype: DtypeOpt = "auto",
        device: DeviceOpt = "auto",
        attn: AttnOpt = "sdpa",
    ) -> None:
        """Generate with block masking: finished blocks leave the KV cache for real, positions stay original.

        Prints the text (special tokens kept) and a summary of evictions and KV memory per prompt.

        Example: memento generate --model ./memento-qwen3-8b --prompt "Prove that sqrt(2) is irrational." --block-masking '{"enable": true, "keep_last_n_blocks": 0, "mask_delimiters": false}' --temperature 0.6 --top-p 0.95 --top-k 20 --max-new-tokens 8192 --plot kv.png
        """
        from mementokit.generate import (
            BlockMaskedGenerator,
            SamplingParams,
            chat_prompt,
        )

        # Everything that can be wrong fails before the model is loaded.
        config = load_block_masking_config(block_masking)
        texts = read_prompts(prompt, prompts_file)
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                min_p=min_p, seed=seed, stop=tuple(stop or ()), stop_token_ids=tuple(stop_id or ()),
                                ignore_eos=ignore_eos, max_cache_tokens=max_cache_tokens)
        if stream and len(texts) > 1:
            raise ConfigError("--stream prints one prompt as it is generated; give --prompt, or drop --stream")
        tokenizer = load_tokenizer(tokenizer_path or model_path)
        if config.enable:
            from mementokit.blocks import resolve_marker_ids

            resolve_marker_ids(tokenizer, config)  # a marker missing from the vocabulary fails before loading
        model = load_model(model_path, dtype=dtype, device=device, attn=attn)
        generator = BlockMaskedGenerator(model, tokenizer, config)
        encoded = [tokenizer.encode(t, add_special_tokens=False) if raw else chat_prompt(tokenizer, t) for t in texts]

        results = []
        if stream:
            events = generator.stream(encoded[0], params, start_inside_assistant=raw)
            for _, text in events:
                stdout.out(text, end="", highlight=False)
            stdout.out("")
            results = events.results
        else:
            with _Progress(len(texts), "generating") as progress:
                for start in range(0, len(encoded), batch_size):
                    chunk = encoded[start:start + batch_size]
                    results += generator.generate_batch(chunk, params, start_inside_assistant=raw)
                    progress.advance(len(chunk))

        rows = [{"index": i, "prompt": text, "text": r.text, **r.summary(),
                 "vanilla_peak_bytes": r.stats.logical_tokens * r.stats.bytes_per_token}
                for i, (text, r) in enumerate(zip(texts, results))]
        if curve is not None:
            curve.parent.mkdir(parents=True, exist_ok=True)
            curve.write_text(json.dumps({"block_masking": config.to_dict(),
                                         "rows": [{"index": i, **r.stats.to_dict()} for i, r in enumerate(results)]}),
                             encoding="utf-8")
        if plot is not None:
            from mementokit.generate.plots import plot_cache_curves

            plot_cache_curves([(f"prompt {i}", r.stats) for i, r in enumerate(results)], plot)
        if as_json:
            print(json.dumps({"model": model_path, "block_masking": config.to_dict(), "rows": rows,
                              "curve": None if curve is None else str(curve),
                              "plot": None if plot is None else str(plot)}, ensure_ascii=False))
            return
        if not stream:
            for i, r in enumerate(results):
                if len(results) > 1:
                    stdout.rule(f"prompt {i}")
                stdout.out(r.text, highlight=False)
        table = Table(title="KV cache (measured)", title_justify="left")
        for column in ("#", "generated", "finish", "evictions", "evicted", "peak tokens", "peak", "vanilla peak",
                       "AUC ratio"):
            table.add_column(column, justify="right")
        for row, r in zip(rows, results):
            vanilla_auc = sum(r.stats.positions)
            table.add_row(str(row["index"]), f"{row['generated_tokens']:,}", row["finish_reason"],
                          str(row["evictions"]), f"{row['evicted_tokens']:,}", f"{row['peak_tokens']:,}",
                          _mb(row["peak_bytes"]), _mb(row["vanilla_peak_bytes"]),
                          f"{r.stats.auc_tokens / vanilla_auc:.3f}" if vanilla_auc else "-")
        stdout.print(table)
        for path, what in ((curve, "curve"), (plot, "plot")):
            if path is not None:
                stdout.print(f"{what} written to {path}")

    @app.command("replay")
    def replay_command(
        source: Annotated[str, typer.Argument(metavar="INPUT", help="JSONL / JSON / Parquet file, dataset folder or hub name with Memento responses (as memento kv).", show_default=False)],
        model_path: ModelOpt,
        tokenizer_path: Annotated[str, typer.Option("--tokenizer", "-t", help="Tokenizer folder. The four block markers are added if missing (the model must embed them).", show_default=False)],
        block_masking: BlockMaskingOpt = DEFAULT_BLOCK_MASKING,
        with_prompt: Annotated[bool, typer.Option("--with-prompt", help="Replay the prompt too (chat template, ChatML fallback); the assistant gate then applies.")] = False,
        limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="At most this many traces.", min=0)] = None,
        save_logits: Annotated[Optional[Path], typer.Option("--save-logits", help="Save the logits of every position of ONE trace: float32 .npy [positions, vocab].", show_default=False)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
        dataset_config: Annotated[str, typer.Option("--config", help="Dataset config: default or full.")] = "default",
        split: Annotated[str, typer.Option("--split", help="Dataset split.")] = "train",
        fields: Annotated[Optional[list[str]], typer.Option("--field", help="Map a field: OURS=THEIRS, e.g. response=cot (repeatable).")] = None,
        skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip bad rows instead of stopping.")] = False,
        dtype: DtypeOpt = "auto",
        device: DeviceOpt = "auto",
        attn: AttnOpt = "sdpa",
    ) -> None:
        """Teacher-force traces through the evicting cache and report the cache MEASURED from the tensors.

        Same input and tokenization as memento kv (the response alone by default, --with-prompt), so the two commands' peak_tokens / peak_bytes are directly comparable; the simulator's figure is shown beside the measured one.

        Example: memento replay traces.jsonl --model ./memento-qwen3-8b --tokenizer ./memento-qwen3-8b --limit 1 --json --save-logits logits.npy
        """
        import numpy as np

        from mementokit.blocks import add_block_markers
        from mementokit.cli.kv import read_traces
        from mementokit.generate import check_markers, replay
        from mementokit.kv import KVSimulator, KVStats, simulate_token_ids

        config = load_block_masking_config(block_masking)
        tokenizer = load_tokenizer(tokenizer_path)
        markers_added = add_block_markers(tokenizer, config)  # as memento kv does, so token counts agree
        traces = list(read_traces(source, limit=limit, dataset_config=dataset_config, split=split, fields=fields,
                                  skip_bad=skip_bad))
        if save_logits is not None and len(traces) != 1:
            raise ConfigError(f"--save-logits saves one trace's logits, but {len(traces)} traces were read "
                              "(use --limit 1)")
        simulator = KVSimulator(tokenizer, config=config, with_prompt=with_prompt, add_markers=False)
        encoded = []
        for index, trace in enumerate(traces):
            response = trace.get("response") if isinstance(trace, dict) else getattr(trace, "response", None)
            problem = trace.get("problem") if isinstance(trace, dict) else getattr(trace, "problem", None)
            if not response:
                raise InputError("trace has no response", line=index + 1, field="response")
            prompt_ids = (tokenizer([simulator.prompt_text(problem or "")], add_special_tokens=False)["input_ids"][0]
                          if with_prompt else [])
            response_ids = tokenizer([response], add_special_tokens=False)["input_ids"][0]
            encoded.append((trace, list(prompt_ids), list(response_ids)))
        model = load_model(model_path, dtype=dtype, device=device, attn=attn)
        markers = check_markers(model, tokenizer, config)

        reports = []
        with _Progress(None, "replaying") as progress:
            for index, (trace, prompt_ids, response_ids) in enumerate(encoded):
                ids = prompt_ids + response_ids
                progress.reset(len(ids))
                result = replay(model, ids, config, markers=markers, start_inside_assistant=not with_prompt,
                                keep_logits=save_logits is not None, progress=progress.advance)
                stats = result.stats
                measured = np.asarray(stats.cache_tokens, dtype=np.int64)
                positions = np.asarray(stats.positions, dtype=np.int64)
                memento = KVStats.from_curves(measured, np.asarray(stats.cache_bytes, dtype=np.int64))
                vanilla = KVStats.from_curves(positions, positions * stats.bytes_per_token)
                simulated = (simulate_token_ids(ids, config, markers, start_inside_assistant=not with_prompt)
                             if markers is not None else None)
                reports.append({
                    "index": index,
                    "id": _trace_field(trace, "id") or _trace_field(trace, "task_id"),
                    "domain": _trace_field(trace, "domain"),
                    "tokens": len(ids),
                    "prompt_tokens": len(prompt_ids),
                    "peak_tokens": memento.peak_tokens,
                    "peak_bytes": memento.peak_bytes,
                    "bytes_per_token": stats.bytes_per_token,
                    "evictions": len(stats.evictions),
                    "evicted_tokens": stats.evicted_tokens,
                    "memento": memento.to_dict(),
                    "vanilla": vanilla.to_dict(),
                    "peak_ratio": memento.peak_bytes / vanilla.peak_bytes if vanilla.peak_bytes else None,
                    "auc_ratio": (memento.auc_gb_ktokens / vanilla.auc_gb_ktokens) if vanilla.auc_gb_ktokens else None,
                    "simulated_peak_tokens": None if simulated is None else simulated.memento.peak_tokens,
                    "matches_simulator": None if simulated is None else
                        memento.peak_tokens == simulated.memento.peak_tokens
                        and abs(memento.auc_token_ktokens - simulated.memento.auc_token_ktokens) < 1e-9,
                })
                if save_logits is not None:
                    save_logits.parent.mkdir(parents=True, exist_ok=True)
                    np.save(save_logits, result.logits.numpy().astype(np.float32))
        if as_json:
            print(json.dumps({"model": model_path, "tokenizer": tokenizer_path, "block_masking": config.to_dict(),
                              "with_prompt": with_prompt, "markers_added": markers_added, "traces": reports,
                              "logits": None if save_logits is None else str(save_logits)}, ensure_ascii=False))
            return
        table = Table(title="replay: KV cache measured from the tensors", title_justify="left")
        for column in ("#", "tokens", "evictions", "peak tokens", "simulated", "peak", "vanilla peak", "peak ratio",
                       "AUC ratio"):
            table.add_column(column, justify="right")
        for r in reports:
            table.add_row(str(r["index"]), f"{r['tokens']:,}", str(r["evictions"]), f"{r['peak_tokens']:,}",
                          "-" if r["simulated_peak_tokens"] is None else f"{r['simulated_peak_tokens']:,}",
                          _mb(r["peak_bytes"]), _mb(r["vanilla"]["peak_bytes"]),
                          f"{r['peak_ratio']:.3f}" if r["peak_ratio"] else "-",
                          f"{r['auc_ratio']:.3f}" if r["auc_ratio"] else "-")
        stdout.print(table)
        if save_logits is not None:
            stdout.print(f"logits written to {save_logits}")


def _trace_field(trace, name: str):
    value = trace.get(name) if isinstance(trace, dict) else getattr(trace, name, None)
    if value is None:
        raw = trace.get("raw") if isinstance(trace, dict) else getattr(trace, "raw", None)
        if isinstance(raw, dict):
            value = raw.get(name)
    return None if value is None else str(value) if not isinstance(value, (int, float)) else value
