"""The trainer on a tiny model on CPU: the loss goes down, accumulation weighs tokens right, resume is exact."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers_sft import save_tiny_model, short_traces
from helpers_tokenizer import build_tiny_tokenizer
from mementokit.blocks import BlockMaskingConfig
from mementokit.errors import ConfigError
from mementokit.sft import (
    MementoCollator,
    SFTTokenizer,
    TrainConfig,
    export_sft_dataset,
    iter_chat_examples,
    latest_checkpoint,
    load_sft_dataset,
    train,
)

torch.set_num_threads(1)
MASKING = BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False)


def make_data(folder, *, stage: int, n: int = 8):
    tokenizer = build_tiny_tokenizer(folder, with_markers=False)  # the export adds the markers (601 -> 605 ids)
    sft = SFTTokenizer(tokenizer, stage=stage, block_masking=MASKING if stage == 2 else None)
    export_sft_dataset(
        sft.tokenize(iter_chat_examples(short_traces(n, seed=7, blocks=2))),
        folder / "data",
        metadata=sft.metadata(),
        stats=sft.stats,
        tokenizer=tokenizer,
    )
    return folder / "data"


@pytest.fixture(scope="module")
def stage2_data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("sft2"), stage=2)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    # 601 rows: the model has never seen the block markers, so training must add and initialise them.
    return save_tiny_model(tmp_path_factory.mktemp("model") / "base", 601)


def config(model, data, out, **overrides) -> TrainConfig:
    values = {
        "model": str(model),
        "data": str(data),
        "out": str(out),
        "stage": 2,
        "max_steps": 4,
        "batch_size": 2,
        "learning_rate": 3e-3,
        "warmup_steps": 1,
        "lr_scheduler": "linear",
        "seed": 3,
        "device": "cpu",
    }
    return TrainConfig(**{**values, **overrides})


def mean_loss(model_dir, data, stage: int) -> float:
    """Token-mean loss of the model over the whole data set, under the stage's mask."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    dataset, _ = load_sft_dataset(data)
    batch = MementoCollator(pad_token_id=0, stage=stage)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return float(model(**batch).loss)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_a_few_stage_two_steps_lower_the_loss_and_add_the_markers(stage2_data, base_model, tmp_path):
    result = train(config(base_model, stage2_data, tmp_path / "run", max_steps=12))
    assert result.init_report is not None and result.init_report["resized_from"] == 601
    assert len(result.history) == 12 and all(r["label_tokens"] > 0 for r in result.history)
    checkpoint_loss = mean_loss(tmp_path / "run" / "checkpoint-12", stage2_data, 2)
    assert checkpoint_loss == pytest.approx(mean_loss(result.final_dir, stage2_data, 2))
    initial = tmp_path / "initial"
    train(config(base_model, stage2_data, initial, learning_rate=0.0, max_steps=1))  # markers added, no update
    assert mean_loss(result.final_dir, stage2_data, 2) < 0.7 * mean_loss(initial / "final", stage2_data, 2)
    served = json.loads((result.final_dir / "block_masking.json").read_text())
    assert served == MASKING.to_dict()
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 13))


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(stage2_data, base_model, tmp_path):
    whole = train(config(base_model, stage2_data, tmp_path / "whole", save_steps=2, max_steps=5))

    class Interrupted(Exception):
        pass

    def stop_after_step_three(done, total):
        if done == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(
            config(base_model, stage2_data, tmp_path / "cut", save_steps=2, max_steps=5), on_step=stop_after_step_three
        )
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-2"
    resumed = train(config(base_model, stage2_data, tmp_path / "cut", save_steps=2, max_steps=5, resume="auto"))
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5]
    logged = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(config(base_model, stage2_data, tmp_path / "cut", max_steps=5))
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in whole.history], abs=1e-6)
    a, b = weights(whole.final_dir), weights(resumed.final_dir)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)


def test_gradient_accumulation_equals_one_big_batch(stage2_data, base_model, tmp_path):
    big = train(config(base_model, stage2_data, tmp_path / "big", batch_size=2, grad_accum=1, max_steps=3))
    accumulated = train(config(base_model, stage2_data, tmp_path / "acc", batch_size=1, grad_accum=2, max_steps=3))
    # The loss is the mean over the step's label tokens however the micro-batches split them (a mean of
    # per-micro-batch means would differ: the two examples have different lengths), and the same updates
    # follow. Weights are compared through the loss: Adam's first steps are ~lr * sign(gradient), so a
    # gradient element within float noise of zero may legitimately land a whole step apart.
    assert [r["loss"] for r in accumulated.history] == pytest.approx([r["loss"] for r in big.history], rel=1e-5)
    assert mean_loss(accumulated.final_dir, stage2_data, 2) == pytest.approx(
        mean_loss(big.final_dir, stage2_data, 2), rel=1e-4
    )


def test_stage_one_trains_on_stage_one_data_and_stage_two_refuses_it(base_model, tmp_path):
    data = make_data(tmp_path, stage=1, n=4)
    result = train(config(base_model, data, tmp_path / "run1", stage=1, max_steps=2, attn_implementation="eager"))
    assert result.steps == 2 and not (result.final_dir / "block_masking.json").exists()
    with pytest.raises(ConfigError, match="rebuild it with"):
        train(config(base_model, data, tmp_path / "run2", stage=2))


def test_resuming_with_another_batch_shape_is_refused(stage2_data, base_model, tmp_path):
    train(config(base_model, stage2_data, tmp_path / "run", max_steps=1))
    with pytest.raises(ConfigError, match="batch_size"):
        train(config(base_model, stage2_data, tmp_path / "run", max_steps=2, batch_size=1, resume="auto"))


def test_bf16_autocast_trains_with_both_attention_paths(stage2_data, base_model, tmp_path):
    for attn in ("sdpa", "eager"):
        result = train(
            config(base_model, stage2_data, tmp_path / attn, max_steps=2, bf16=True, attn_implementation=attn)
        )
        assert result.bf16 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
