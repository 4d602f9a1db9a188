"""Memory distillation datasets: a HistoryAgent's memory snapshots -> teacher logprobs -> a cartridges parquet.

    ckpt = load_checkpoint("ep_000200")                                     # latest snapshot, by number
    prompts = list(iter_prompts(ckpt, PromptOptions(strategy="exclude_current")))
    generate(GenerateConfig(checkpoint_dir="ep_000200", model="teacher", base_url=URL, out="gen"))  # resumable
    convert("gen/results.jsonl", tokenizer="./teacher", out="dataset.parquet", min_prob_mass=0.99)
    inspect_dataset("dataset.parquet")
    train_student(DistillTrainConfig(data="dataset.parquet", model="./student", out="run"))  # needs torch

Generation reuses the pipeline's client, response cache and resumable runner; training reuses the SFT trainer's
machinery. Torch is imported only by the trainer.
"""

from mementokit.distill.checkpoint import Checkpoint, Entry, Sample, iter_samples, latest_snapshot, load_checkpoint
from mementokit.distill.convert import (
    FlatTopLogprobs,
    cartridges_schema,
    convert,
    flatten_top_logprobs,
    validate_parquet,
)
from mementokit.distill.generate import GenerateConfig, generate, generate_async, load_config
from mementokit.distill.inspect import inspect_dataset
from mementokit.distill.logprobs import TeacherError, assistant_message, request_options
from mementokit.distill.prompts import (
    EXPERIENCE_INSTRUCTION,
    PromptOptions,
    build_system_prompt,
    build_user_prompt,
    iter_prompts,
)
from mementokit.distill.strategies import STRATEGIES, is_failure, memory_view

_TRAIN_NAMES = ("DistillTrainConfig", "DistillTrainResult", "evaluate_loss", "load_examples", "train_student")


def __getattr__(name: str):
    if name in _TRAIN_NAMES:  # torch only when training is asked for
        from mementokit.distill import train

        return getattr(train, name)
    raise AttributeError(name)


__all__ = [
    "EXPERIENCE_INSTRUCTION", "STRATEGIES", "Checkpoint", "Entry", "FlatTopLogprobs", "GenerateConfig",
    "PromptOptions", "Sample", "TeacherError", "assistant_message", "build_system_prompt", "build_user_prompt",
    "cartridges_schema", "convert", "flatten_top_logprobs", "generate", "generate_async", "inspect_dataset",
    "is_failure", "iter_prompts", "iter_samples", "latest_snapshot", "load_checkpoint", "load_config",
    "memory_view", "request_options", "validate_parquet", *_TRAIN_NAMES,
]
