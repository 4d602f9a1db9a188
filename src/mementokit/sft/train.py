"""Two-stage Memento training for causal LMs, in plain PyTorch (stage 1: full attention; stage 2: memento attention).

    result = train(TrainConfig(model="./tiny", data="./sft-out", out="./run", stage=2, max_steps=100))

Why plain PyTorch rather than the transformers Trainer: the Trainer needs `accelerate` (not a dependency
here) and hides the one thing this loop must get right, the attention mask of every micro-batch; the loop is
short enough to read in one sitting. A batch goes through MementoCollator (stage 2: the block state machine's
evictions expanded into a 4-D additive mask; stage 1: a padding mask) and attention_mask_for_model (sliding-window
layers), then the model's own causal-LM loss with `num_items_in_batch`, so gradient accumulation weighs every
label token equally whatever the micro-batch it falls in.

Resumability is a property of the runner: the examples of optimizer step s are a pure function of (seed, s)
(one permutation per epoch), so a checkpoint needs only the weights, the optimizer and scheduler states and the
step; a resumed run continues exactly where the interrupted one was.

Output folder: checkpoint-<step>/ (model, tokenizer, optimizer.pt, scheduler.pt, trainer_state.json),
final/ (model, tokenizer, block_masking.json for stage 2: serve with that file), log.jsonl (one line per
logged step: step, epoch, loss, learning rate, gradient norm, tokens, seconds).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mementokit.errors import ConfigError, InputError
from mementokit.sft.collator import MementoCollator, attention_mask_for_model
from mementokit.sft.export import TOKENIZER_DIR, load_sft_dataset
from mementokit.sft.init_tokens import DEFAULT_SIGMA, add_memento_tokens
from mementokit.sft.tokenize import IGNORE_INDEX

SCHEDULERS = ("cosine", "linear", "constant")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
STATE_FILE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def validate_schedule(config: Any) -> None:
    """The checks every trainer config shares (SFT and distillation): steps or epochs, accumulation, schedule."""
    if config.grad_accum < 1:
        raise ConfigError("grad_accum must be at least 1")
    if config.max_steps is not None and config.max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {config.max_steps}")
    if config.max_steps is None and not config.epochs > 0:
        raise ConfigError(f"epochs must be > 0, got {config.epochs}")
    if config.lr_scheduler not in SCHEDULERS:
        raise ConfigError(f"lr_scheduler must be one of {SCHEDULERS}, got {config.lr_scheduler!r}")


@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint (a resumed run must use the same data and batch shape)."""

    model: str
    data: str
    out: str
    stage: int = 2
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 1  # examples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "cosine"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    bf16: bool | None = None  # None: when the hardware has it (CUDA with bf16 support)
    device: str | None = None  # None: cuda when available, else cpu
    attn_implementation: str = "sdpa"
    max_length: int | None = None  # cut longer examples at collation
    save_steps: int = 0  # 0: only at the end
    save_total_limit: int | None = None  # keep only the newest N checkpoints
    log_steps: int = 1
    resume: str | None = None  # "auto" (newest checkpoint in out; a fresh start when none), a checkpoint folder
    gradient_checkpointing: bool = False
    shuffle: bool = True
    init_sigma: float = DEFAULT_SIGMA  # noise of new marker embeddings, when the model lacks the markers

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 (full attention) or 2 (memento attention), got {self.stage!r}")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        validate_schedule(self)
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS} (a custom 4-D mask "
                              f"needs one of them), got {self.attn_implementation!r}")
        if self.save_steps < 0 or self.log_steps < 1:
            raise ConfigError("save_steps must be >= 0 and log_steps >= 1")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    device: str = "cpu"
    bf16: bool = False
    init_report: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out_dir), "steps": self.steps, "final": str(self.final_dir),
                "resumed_from": self.resumed_from, "device": self.device, "bf16": self.bf16,
                "first_loss": self.history[0]["loss"] if self.history else None,
                "last_loss": self.history[-1]["loss"] if self.history else None,
                "history": self.history, "init_tokens": self.init_report}


# ---- pieces -------------------------------------------------------------------------------------------------
def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint-<step> folder with the highest step that holds a trainer state, or None."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _CHECKPOINT.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def step_indices(num_examples: int, step: int, *, examples_per_step: int, seed: int, shuffle: bool) -> list[int]:
    """Dataset indices of optimizer step `step` (0-based): a pure function, which makes resuming exact."""
    steps_per_epoch = math.ceil(num_examples / examples_per_step)
    epoch, within = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples) if shuffle else np.arange(num_examples)
    return order[within * examples_per_step:(within + 1) * examples_per_step].tolist()


def lr_lambda(kind: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _resolve_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_bf16(requested: bool | None, device: torch.device) -> bool:
    if requested is None:
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if requested and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("bf16 was asked for but this GPU does not support it")
    return requested


def _load_tokenizer(data: Path, model: str):
    from mementokit.hf import load_hf_tokenizer

    # The ids were made by the export's tokenizer (block markers added): prefer it to the model's.
    return load_hf_tokenizer(data / TOKENIZER_DIR if (data / TOKENIZER_DIR).is_dir() else Path(model))


def _load_model(path: str | Path, attn_implementation: str):
    from mementokit.hf import load_hf_model

    # fp32 master weights on CPU; the trainer moves the model and autocasts.
    return load_hf_model(path, dtype="float32", device="cpu", attn=attn_implementation).train()


def _optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.dim() < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def _check_data(dataset, config: TrainConfig, path: str) -> None:
    if len(dataset) == 0:
        raise InputError("the SFT dataset has no examples", path=path)
    if config.stage == 2 and "mask_spans" not in dataset.column_names:
        raise ConfigError(f"stage 2 needs the memento-attention masks, and {path} has none: rebuild it with "
                          "`memento sft ... --stage 2 --mask-delimiters/--keep-delimiters`")


def _save_checkpoint(folder: Path, model, tokenizer, optimizer, scheduler, state: dict[str, Any]) -> None:
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    torch.save(scheduler.state_dict(), partial / "scheduler.pt")
    # The data order needs no RNG state (step_indices); dropout and other torch randomness do.
    state = dict(state, rng={"python": random.getstate(), "torch": torch.get_rng_state().tolist()})
    (partial / STATE_FILE).write_text(json.dumps(state, indent=1, default=str) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)


def _rotate_checkpoints(out: Path, keep: int | None) -> None:
    if not keep:
        return
    found = sorted((int(m.group(1)), p) for p in out.iterdir() if (m := _CHECKPOINT.match(p.name)))
    for _, old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _restore_rng(state: dict[str, Any]) -> None:
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))


def _accumulate_gradients(model, micro_batches: list[dict[str, torch.Tensor]], device: torch.device,
                          bf16: bool) -> tuple[float, int, int]:
    """Forward and backward over one optimizer step's micro-batches; returns (loss, label tokens, tokens).

    Each micro-batch's loss is its summed token loss divided by the label tokens of the WHOLE step (the model's
    `num_items_in_batch`), so the accumulated gradient is that of the mean over every label token of the step.
    """
    label_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)  # after the shift
    step_loss, tokens = 0.0, 0
    for batch in micro_batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        tokens += int(batch["input_ids"].numel())
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            output = model(input_ids=batch["input_ids"],  # [B, L]
                           attention_mask=attention_mask_for_model(model, batch["attention_mask"]),  # [B, 1, L, L]
                           position_ids=batch["position_ids"], labels=batch["labels"],
                           num_items_in_batch=max(label_tokens, 1), use_cache=False)
        output.loss.backward()
        step_loss += float(output.loss.detach())
    return step_loss, label_tokens, tokens


# ---- the loop -----------------------------------------------------------------------------------------------
def train(config: TrainConfig, *, on_log: Callable[[dict[str, Any]], None] | None = None,
          on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Run (or resume) training; on_log gets every logged record, on_step(step, total) every optimizer step."""
    config.validate()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    resume_from: Path | None = None
    if config.resume:
        resume_from = latest_checkpoint(out) if config.resume == "auto" else Path(config.resume)
        if config.resume != "auto" and not (resume_from / STATE_FILE).is_file():
            raise InputError(f"not a checkpoint (no {STATE_FILE})", path=str(resume_from))
    elif latest_checkpoint(out) is not None:
        raise ConfigError(f"{out} already holds checkpoints: resume them (resume='auto', --resume auto) or "
                          "choose another output folder")
    state: dict[str, Any] = {}
    if resume_from is not None:
        state = json.loads((resume_from / STATE_FILE).read_text(encoding="utf-8"))
        saved = state.get("config", {})
        for name in ("data", "stage", "batch_size", "grad_accum", "seed", "shuffle"):
            if name in saved and saved[name] != getattr(config, name):
                raise ConfigError(f"cannot resume from {resume_from}: it was trained with {name}={saved[name]!r}, "
                                  f"this run has {getattr(config, name)!r}")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    dataset, metadata = load_sft_dataset(config.data)
    _check_data(dataset, config, config.data)
    tokenizer = _load_tokenizer(Path(config.data), config.model)
    model = _load_model(resume_from or config.model, config.attn_implementation)
    init_report = None
    if resume_from is None:
        report = add_memento_tokens(model, tokenizer, sigma=config.init_sigma, seed=config.seed)
        init_report = report.as_dict() if report.resized_from is not None or report.markers_added else None
    device = _resolve_device(config.device)
    bf16 = _resolve_bf16(config.bf16, device)
    model.to(device)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = MementoCollator(pad_token_id=pad_id, stage=config.stage, max_length=config.max_length,
                              mask_dtype=torch.bfloat16 if bf16 else torch.float32)
    rows = model.get_input_embeddings().weight.shape[0]

    examples_per_step = config.batch_size * config.grad_accum
    steps_per_epoch = math.ceil(len(dataset) / examples_per_step)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.lr_scheduler, config.warmup_steps,
                                                                       total_steps))
    start_step = 0
    history: list[dict[str, Any]] = list(state.get("history", []))
    if resume_from is not None:
        optimizer.load_state_dict(torch.load(resume_from / "optimizer.pt", map_location=device))
        scheduler.load_state_dict(torch.load(resume_from / "scheduler.pt"))
        start_step = int(state["step"])
        _restore_rng(state)

    started = time.perf_counter()
    # A resumed run's log restarts from the checkpoint's history: steps logged after it were lost with the crash.
    with open(out / "log.jsonl", "w", encoding="utf-8") as log_file:
        log_file.writelines(json.dumps(record) + "\n" for record in history)
        for step in range(start_step, total_steps):
            indices = step_indices(len(dataset), step, examples_per_step=examples_per_step, seed=config.seed,
                                   shuffle=config.shuffle)
            features = [dataset[i] for i in indices]
            micro_batches = [collate(features[i:i + config.batch_size])
                             for i in range(0, len(features), config.batch_size)]
            for batch in micro_batches:
                if int(batch["input_ids"].max()) >= rows:
                    raise ConfigError(f"token id {int(batch['input_ids'].max())} is outside the model's {rows} "
                                      "embedding rows: the data was tokenized with another tokenizer")
            step_loss, label_tokens, tokens = _accumulate_gradients(model, micro_batches, device, bf16)
            grad_norm = None
            if config.max_grad_norm:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if on_step is not None:
                on_step(done, total_steps)
            if done % config.log_steps == 0 or done == total_steps:
                record = {"step": done, "epoch": round(done / steps_per_epoch, 4), "loss": step_loss,
                          "learning_rate": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                          "label_tokens": label_tokens, "tokens": tokens,
                          "seconds": round(time.perf_counter() - started, 3)}
                history.append(record)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                if on_log is not None:
                    on_log(record)
            if (config.save_steps and done % config.save_steps == 0) or done == total_steps:
                _save_checkpoint(out / f"checkpoint-{done}", model, tokenizer, optimizer, scheduler,
                                 {"step": done, "total_steps": total_steps, "config": asdict(config),
                                  "history": history, "data_metadata": metadata})
                _rotate_checkpoints(out, config.save_total_limit)

    final = out / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    masking = (metadata or {}).get("block_masking")
    if config.stage == 2 and masking:
        # Serve the model with the mask it was trained under (mask_delimiters above all).
        (final / "block_masking.json").write_text(json.dumps(masking, indent=2) + "\n", encoding="utf-8")
    return TrainResult(out_dir=out, steps=total_steps, final_dir=final, history=history,
                       resumed_from=str(resume_from) if resume_from else None, device=str(device), bf16=bf16,
                       init_report=init_report)
