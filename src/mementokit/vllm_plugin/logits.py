"""The block-length cap (max_block_tokens) as a vLLM logits processor (entry point `vllm.logits_processors`).

Each request with a cap gets its own BlockStateMachine fed with its prompt and output tokens (the same rule as
mementokit's generator: `must_close_block`); when the cap is reached every logit but <|block_end|>'s becomes
-inf. Requests without block masking or without a cap are untouched. `validate_params` checks a request's
`block_masking` override in the front end, so a bad one is an HTTP 400, not an engine crash.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, resolve_marker_ids
from mementokit.errors import MementoError
from mementokit.vllm_plugin.config import request_config, server_config


class _Capped:
    __slots__ = ("machine", "prompt", "output", "fed")

    def __init__(self, machine: BlockStateMachine, prompt: list[int], output: list[int]) -> None:
        self.machine, self.prompt, self.output, self.fed = machine, prompt, output, 0

    def must_close(self) -> bool:
        n_prompt = len(self.prompt)
        total = n_prompt + len(self.output)
        if self.fed < n_prompt:
            self.machine.feed(self.prompt[self.fed:])
            self.fed = n_prompt
        if self.fed < total:
            self.machine.feed(self.output[self.fed - n_prompt:])
            self.fed = total
        return self.machine.must_close_block()


class BlockCapLogitsProcessor(LogitsProcessor):
    """Forces <|block_end|> once a block holds max_block_tokens ordinary tokens (block-semantics.md)."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        try:
            self.server = server_config(vllm_config.additional_config)
        except MementoError:
            self.server = None
        self.tokenizer_name = vllm_config.model_config.tokenizer if vllm_config.model_config else None
        self._tokenizer = None
        self.rows: dict[int, _Capped] = {}

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        try:
            request_config(BlockMaskingConfig(enable=False), sampling_params.extra_args)
        except MementoError as exc:
            raise ValueError(str(exc)) from None

    def is_argmax_invariant(self) -> bool:
        return False

    def _machine(self, params) -> BlockStateMachine | None:
        if self.server is None:
            return None
        config = request_config(self.server, params.extra_args)
        if not (config.enable and config.max_block_tokens > 0):
            return None
        if self._tokenizer is None:
            from mementokit.hf import load_hf_tokenizer

            self._tokenizer = load_hf_tokenizer(self.tokenizer_name)
        return BlockStateMachine(config, resolve_marker_ids(self._tokenizer, config))

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def capped(params, prompt, output) -> _Capped | None:
            machine = self._machine(params) if params is not None else None
            return None if machine is None else _Capped(machine, list(prompt or []), output)

        follow_batch(self.rows, batch_update, capped)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for index, row in self.rows.items():
            if index < logits.shape[0] and row.must_close():
                block_end = row.machine.markers.block_end
                keep = logits[index, block_end].clone()
                logits[index].fill_(float("-inf"))
                logits[index, block_end] = keep if torch.isfinite(keep) else 0.0
        return logits


def follow_batch(rows: dict, batch_update: BatchUpdate | None, state_of) -> None:
    """Keep per-row state in step with vLLM's persistent batch: rows removed, added (`state_of(params, prompt,
    output)` gives the new row's state, or None for a row this processor leaves alone), moved and swapped."""
    if batch_update is None:
        return
    for index in batch_update.removed:
        rows.pop(index, None)
    for index, params, prompt, output in batch_update.added:
        state = state_of(params, prompt, output)
        if state is None:
            rows.pop(index, None)
        else:
            rows[index] = state
    for a, b, direction in batch_update.moved:
        row_a, row_b = rows.pop(a, None), rows.pop(b, None)
        if row_a is not None:
            rows[b] = row_a
        if direction == MoveDirectionality.SWAP and row_b is not None:
            rows[a] = row_b


class ForceTokensLogitsProcessor(LogitsProcessor):
    """Teacher forcing for tests and benchmarks (pass it in `logits_processors`; it is not an entry point): a
    request with extra_args {"force": [ids]} samples force[i] as its i-th output token while i < len(force),
    then decodes normally. vLLM reads logprobs from the raw logits, so forcing does not change them."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, tuple[list[int], list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def forced(params, _prompt, output):
            force = (params.extra_args or {}).get("force") if params is not None else None
            return (list(force), output) if force else None

        follow_batch(self.rows, batch_update, forced)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        rows, tokens = [], []
        for index, (force, output) in self.rows.items():
            if index < logits.shape[0] and len(output) < len(force):
                rows.append(index)
                tokens.append(force[len(output)])
        if rows:  # one indexed write for the whole batch
            rows_t = torch.tensor(rows, device=logits.device)
            logits[rows_t] = float("-inf")
            logits[rows_t, torch.tensor(tokens, device=logits.device)] = 0.0
        return logits
