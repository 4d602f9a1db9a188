"""Shared pieces of the vLLM plugin tests: a tiny Qwen3 saved to a folder, a token-forcing logits processor,
and the references (mementokit's generator, the dense mask, the KV simulator).

vLLM's CPU attention needs head_dim in 32..512, so the model has head_dim 32 (the main suite's uses 16).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers_tokenizer import build_tiny_tokenizer  # noqa: E402

BASE = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}


def build_model_dir(root: Path, *, seed: int = 0) -> Path:
    """A random 2-layer Qwen3 (hidden 64, 2 query heads and 1 KV head of dim 32) and the tiny tokenizer, saved."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    root = Path(root)
    tokenizer = build_tiny_tokenizer(root)
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    model = Qwen3ForCausalLM._from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)  # sharper attention than the default init: a wrong mask shows clearly
    out = root / "tiny-qwen3"
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_hf(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


# ---- a logits processor that forces a token sequence (vLLM side) ------------------------------------------------
def _force_processor_class():
    from mementokit.vllm_plugin.logits import ForceTokensLogitsProcessor

    return ForceTokensLogitsProcessor


def hf_force(force: list[int], prompt_len: int):
    """The same forcing for mementokit's generator: a callable (token_ids_so_far, logits) -> logits."""
    def processor(token_ids, logits):
        i = len(token_ids) - prompt_len
        if i < len(force):
            out = torch.full_like(logits, float("-inf"))
            out[force[i]] = 0.0
            return out
        return logits
    return processor


@functools.cache
def _recording_scheduler_class():
    from mementokit.vllm_plugin.scheduler import MementoScheduler

    class RecordingScheduler(MementoScheduler):
        """Records, after every step it plans, each scheduled request's logical and physical lengths and pages."""

        records: dict[str, list[tuple[int, int, int]]] = {}
        preemptions: list[str] = []

        def schedule(self, *args, **kwargs):
            output = super().schedule(*args, **kwargs)
            for req_id in output.num_scheduled_tokens:
                request = self.requests[req_id]
                physical = self.physical_tokens(req_id)
                pages = len(self.memento_manager.req_to_blocks.get(req_id, []))
                if physical is not None:
                    RecordingScheduler.records.setdefault(req_id, []).append(
                        (request.num_computed_tokens, physical, pages))
            return output

        def _preempt_request(self, request, *args, **kwargs):
            RecordingScheduler.preemptions.append(request.request_id)
            return super()._preempt_request(request, *args, **kwargs)

    return RecordingScheduler
