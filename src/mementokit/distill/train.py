"""A minimal student trainer on a cartridges parquet: the teacher's sparse top-k as soft targets.

    result = train_student(DistillTrainConfig(data="dataset.parquet", model="./student", out="./run", max_steps=100))

Per assistant token i, the loss is the sum over the kept entries j of -p_teacher(j) * log q_student(j), averaged
over tokens. The alignment is the whole point: teacher row i is the distribution that PRODUCED token i, and a
causal LM's logits at position p predict token p + 1, so row i is matched with the student's logits at
position(token i) - 1 (`student_positions`). Stock cartridges gathers at position(token i), one step late; with
that shift a student identical to the teacher no longer reaches the minimum (the teacher's entropy over the kept
entries), which the tests check.

The student sees the teacher's prompt as the teacher did: the system and user turns through the tokenizer's chat
template (ChatML when it has none) with the generation prompt, then the teacher's exact ids. Plain PyTorch with the
SFT trainer's machinery (step order, optimizer groups, scheduler, device and model loading).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mementokit.errors import ConfigError, InputError


@dataclass
class DistillTrainConfig:
    data: str  # the cartridges parquet
    model: str  # the student (a folder or hub name)
    out: str
    tokenizer: str | None = None  # default: the student's
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    grad_accum: int = 1  # conversations per optimizer step
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "cosine"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    device: str | None = None
    max_length: int | None = None  # drop longer conversations (counted)
    log_steps: int = 1
    attn_implementation: str = "sdpa"

    def validate(self) -> None:
        from mementokit.sft.train import validate_schedule

        if self.log_steps < 1:
            raise ConfigError("log_steps must be at least 1")
        validate_schedule(self)


@dataclass
class DistillExample:
    input_ids: list[int]  # prompt ids + the teacher's completion ids
    prompt_length: int
    token_idx: np.ndarray  # [N] row (completion token) of each kept entry
    token_id: np.ndarray  # [N] vocabulary id of each kept entry
    logprobs: np.ndarray  # [N] teacher log-probability of each kept entry
    num_tokens: int  # completion tokens (rows)


def student_positions(prompt_length: int, token_idx: torch.Tensor) -> torch.Tensor:
    """The positions whose logits predict completion token `token_idx`: one before the token's own position."""
    return prompt_length + token_idx - 1


def load_examples(path: str | Path, tokenizer, *, max_length: int | None = None) -> tuple[list[DistillExample], int]:
    """Training examples from a cartridges parquet (conversations ending with the assistant turn that carries the
    top logprobs); returns (examples, conversations dropped for max_length)."""
    import pyarrow.parquet as pq

    from mementokit.sft.chat import ChatRenderer

    renderer = ChatRenderer(tokenizer)
    examples, dropped = [], 0
    for r, messages in enumerate(pq.read_table(path, columns=["messages"]).column("messages").to_pylist()):
        if not messages or messages[-1]["role"] != "assistant" or messages[-1]["top_logprobs"] is None:
            raise InputError("the conversation does not end with an assistant message with top_logprobs",
                             path=str(path), line=r + 1, field="messages")
        last = messages[-1]
        prompt = renderer.prompt([{"role": m["role"], "content": m["content"]} for m in messages])
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        completion = [int(t) for t in last["token_ids"]]
        if max_length is not None and len(prompt_ids) + len(completion) > max_length:
            dropped += 1
            continue
        top = last["top_logprobs"]
        examples.append(DistillExample(
            input_ids=prompt_ids + completion, prompt_length=len(prompt_ids),
            token_idx=np.asarray(top["token_idx"], dtype=np.int64), token_id=np.asarray(top["token_id"], np.int64),
            logprobs=np.asarray(top["logprobs"], dtype=np.float32), num_tokens=len(completion)))
    return examples, dropped


def example_loss(model, example: DistillExample, device: torch.device) -> torch.Tensor:
    """Sum over the example's completion tokens of sum_j -p_teacher(j) log q_student(j) (not yet averaged)."""
    input_ids = torch.tensor([example.input_ids], device=device)  # [1, L]
    logits = model(input_ids=input_ids, use_cache=False).logits[0]  # [L, V]
    token_idx = torch.from_numpy(example.token_idx).to(device)  # [N]
    positions = student_positions(example.prompt_length, token_idx)  # [N]
    log_q = torch.log_softmax(logits.float(), dim=-1)[positions, torch.from_numpy(example.token_id).to(device)]
    p_teacher = torch.from_numpy(example.logprobs).to(device).double().exp().float()  # [N]
    return -(p_teacher * log_q).sum()


def teacher_entropy(examples: list[DistillExample]) -> float:
    """The loss's minimum for a student equal to the teacher: the teacher's entropy over the kept entries,
    averaged over tokens."""
    total = sum(float(-(np.exp(e.logprobs.astype(np.float64)) * e.logprobs).sum()) for e in examples)
    return total / max(1, sum(e.num_tokens for e in examples))


@torch.no_grad()
def evaluate_loss(model, examples: list[DistillExample], device: torch.device | str = "cpu") -> float:
    """The distillation loss over `examples`, averaged over completion tokens."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total = sum(float(example_loss(model, e, device)) for e in examples)
    model.train(was_training)
    return total / max(1, sum(e.num_tokens for e in examples))


@dataclass
class DistillTrainResult:
    out_dir: Path
    steps: int
    final_dir: Path
    teacher_entropy: float
    initial_loss: float
    final_loss: float
    dropped: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out_dir), "steps": self.steps, "final": str(self.final_dir),
                "teacher_entropy": self.teacher_entropy, "initial_loss": self.initial_loss,
                "final_loss": self.final_loss, "dropped_for_length": self.dropped, "history": self.history}


def train_student(config: DistillTrainConfig, *, on_step: Callable[[int, int], None] | None = None,
                  on_log: Callable[[dict[str, Any]], None] | None = None) -> DistillTrainResult:
    """Train the student on the parquet; saves out/final (model + tokenizer) and out/log.jsonl."""
    from mementokit.hf import load_hf_tokenizer
    from mementokit.sft.train import _load_model, _optimizer, _resolve_device, lr_lambda, step_indices

    config.validate()
    torch.manual_seed(config.seed)
    tokenizer = load_hf_tokenizer(config.tokenizer or config.model)
    examples, dropped = load_examples(config.data, tokenizer, max_length=config.max_length)
    if not examples:
        raise InputError("no conversation to train on", path=config.data)
    device = _resolve_device(config.device)
    model = _load_model(config.model, config.attn_implementation).to(device)
    rows = model.get_input_embeddings().weight.shape[0]
    largest = max(max(e.input_ids) for e in examples)
    if largest >= rows:
        raise ConfigError(f"token id {largest} is outside the student's {rows} embedding rows: the student's "
                          "vocabulary differs from the teacher's")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(len(examples) / config.grad_accum)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.lr_scheduler, config.warmup_steps, total_steps))
    entropy = teacher_entropy(examples)
    initial = evaluate_loss(model, examples, device)
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    model.train()
    with open(out / "log.jsonl", "w", encoding="utf-8") as log:
        for step in range(total_steps):
            batch = [examples[i] for i in step_indices(len(examples), step, examples_per_step=config.grad_accum,
                                                         seed=config.seed, shuffle=True)]
            tokens = sum(e.num_tokens for e in batch)
            step_loss = 0.0
            for example in batch:  # each loss over the step's tokens: the gradient of the step's token mean
                loss = example_loss(model, example, device) / max(1, tokens)
                loss.backward()
                step_loss += float(loss.detach())
            grad_norm = None
            if config.max_grad_norm:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if on_step is not None:
                on_step(step + 1, total_steps)
            if (step + 1) % config.log_steps == 0 or step + 1 == total_steps:
                record = {"step": step + 1, "loss": step_loss, "learning_rate": scheduler.get_last_lr()[0],
                          "grad_norm": grad_norm, "tokens": tokens, "seconds": round(time.perf_counter() - started, 3)}
                history.append(record)
                log.write(json.dumps(record) + "\n")
                if on_log is not None:
                    on_log(record)
    final_loss = evaluate_loss(model, examples, device)
    final = out / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    (out / "train_config.json").write_text(json.dumps(asdict(config), indent=1) + "\n", encoding="utf-8")
    return DistillTrainResult(out_dir=out, steps=total_steps, final_dir=final, teacher_entropy=entropy,
                              initial_loss=initial, final_loss=final_loss, dropped=dropped, history=history)
