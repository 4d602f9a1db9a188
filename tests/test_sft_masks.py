"""Stage-2 masks: the collator's 4-D mask is the block-semantics dense mask, padding is never visible, and on a
tiny model the mask really isolates a finished memento's block (stage 1 does not)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers_models import build_tiny_model, memento_token_sequence
from helpers_sft import short_trace, short_traces
from mementokit.blocks import BlockMaskingConfig, MarkerIds, compact_mask, dense_allowed, resolve_marker_ids
from mementokit.errors import InputError
from mementokit.sft import MementoCollator, SFTTokenizer, attention_mask_for_model, iter_chat_examples

torch.set_num_threads(1)


def allowed_of(mask: torch.Tensor) -> np.ndarray:
    """[B, 1, L, L] additive -> [B, L, L] bool (0 = may attend)."""
    return (mask[:, 0] == 0).numpy()


def check_batch_against_dense(batch, examples, config, markers) -> None:
    allowed = allowed_of(batch["attention_mask"])
    width = allowed.shape[-1]
    for row, example in enumerate(examples):
        n = example.num_tokens
        # The real square is exactly the contract's dense mask of these ids.
        assert np.array_equal(allowed[row, :n, :n], dense_allowed(example.input_ids, config, markers))
        # Padding keys are never visible to a real query; a padding query sees only itself.
        assert not allowed[row, :n, n:].any()
        assert np.array_equal(allowed[row, n:, :], np.eye(width, dtype=bool)[n:])
        assert (batch["labels"][row, n:] == -100).all() and (batch["input_ids"][row, n:] == 0).all()
    assert allowed.any(axis=-1).all()  # no row is fully masked: softmax stays finite


configs = st.builds(
    lambda keep, delimiters, answer, restart: BlockMaskingConfig(
        keep_last_n_blocks=keep, mask_delimiters=delimiters, keep_last_block_for_answer=answer, restart_mode=restart
    ),
    st.integers(0, 3),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    config=configs,
    seed=st.integers(0, 10_000),
    count=st.integers(1, 4),
    max_length=st.one_of(st.none(), st.integers(20, 70)),
)
def test_collator_mask_is_the_dense_mask_of_each_example_and_padding_is_never_visible(
    tokenizer, config, seed, count, max_length
):
    rng = random.Random(seed)
    traces = [short_trace(rng, blocks=rng.randint(0, 4), nested=rng.random() < 0.5) for _ in range(count)]
    sft = SFTTokenizer(tokenizer, stage=2, block_masking=config, max_length=max_length)
    examples = list(sft.tokenize(iter_chat_examples(traces)))
    assume(examples)  # a prompt longer than max_length drops its example
    batch = MementoCollator(pad_token_id=0, stage=2, pad_to_multiple_of=8)([e.to_row() for e in examples])
    check_batch_against_dense(batch, examples, config, sft.markers)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs, seed=st.integers(0, 10_000))
def test_collator_mask_matches_on_random_token_sequences_with_nesting_and_stray_markers(tokenizer, config, seed):
    rng = random.Random(seed)
    markers = resolve_marker_ids(tokenizer, config)
    ordinary = list(range(10, 200))
    sequences = [
        memento_token_sequence(
            rng, markers, ordinary, blocks=rng.randint(0, 5), stray_markers=True, open_tail=rng.random() < 0.3
        )
        for _ in range(3)
    ]

    class Row:  # an SFTExample-like object: the collator takes attributes as well as dict rows
        def __init__(self, ids):
            self.input_ids, self.labels = ids, ids
            self.mask_spans = compact_mask(ids, config, markers)
            self.num_tokens = len(ids)

    rows = [Row(ids) for ids in sequences]
    check_batch_against_dense(MementoCollator(pad_token_id=0)(rows), rows, config, markers)


def test_stage_one_batches_carry_a_padding_mask_and_no_block_mask(tokenizer):
    sft = SFTTokenizer(tokenizer, stage=2, block_masking=BlockMaskingConfig(mask_delimiters=False))
    rows = [e.to_row() for e in sft.tokenize(iter_chat_examples(short_traces(3, blocks=2)))]
    batch = MementoCollator(pad_token_id=0, stage=1)(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["attention_mask"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths


def test_sliding_window_layers_get_the_window_applied_on_top_of_the_memento_mask():
    model = build_tiny_model("olmo3", 50, sliding_window=3)
    length = 6
    mask = torch.zeros(1, 1, length, length)
    mask.masked_fill_(~torch.ones(length, length, dtype=torch.bool).tril(), torch.finfo(torch.float32).min)
    per_type = attention_mask_for_model(model, mask)
    assert set(per_type) == {"sliding_attention", "full_attention"}
    assert torch.equal(per_type["full_attention"], mask)
    sliding = per_type["sliding_attention"][0, 0] == 0
    assert sliding[5].tolist() == [False, False, False, True, True, True]
    assert attention_mask_for_model(build_tiny_model("qwen3", 50), mask) is mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_causal_4d_mask_through_the_window_adapter_matches_transformers_own_sliding_masks(tokenizer, attn):
    # OLMo-3 alternates sliding-window and full layers; with no evictions, our 4-D masks must give exactly what
    # transformers builds itself from a padding mask, or stage 2 would train sliding layers without a window.
    model = build_tiny_model("olmo3", len(tokenizer), sliding_window=4, attn_implementation=attn)
    sft = SFTTokenizer(tokenizer, stage=1)
    rows = [{**e.to_row(), "mask_spans": []} for e in sft.tokenize(iter_chat_examples(short_traces(2, seed=9)))]
    ours = MementoCollator(pad_token_id=0, stage=2)(rows)
    theirs = MementoCollator(pad_token_id=0, stage=1)(rows)
    with torch.no_grad():
        expected = model(input_ids=theirs["input_ids"], attention_mask=theirs["attention_mask"]).logits
        got = model(
            input_ids=ours["input_ids"],
            attention_mask=attention_mask_for_model(model, ours["attention_mask"]),
            position_ids=ours["position_ids"],
        ).logits
        unwindowed = model(
            input_ids=ours["input_ids"], attention_mask=ours["attention_mask"], position_ids=ours["position_ids"]
        ).logits
    real = theirs["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-4)
    assert (unwindowed[real] - expected[real]).abs().max() > 1e-3  # the adapter is what makes them agree


# ---- isolation on a tiny model ------------------------------------------------------------------------------
def isolation_case(tokenizer, seed: int = 0):
    """One stage-2 example with two blocks, and the first block's eviction (K_b, T_b)."""
    config = BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False)
    sft = SFTTokenizer(tokenizer, stage=2, block_masking=config)
    [example] = sft.tokenize(iter_chat_examples([short_trace(random.Random(seed), blocks=2)]))
    key_start, key_stop, trigger = example.mask_spans[0]
    return sft, example, key_start, key_stop, trigger


def per_token_loss(model, batch, input_ids=None, inputs_embeds=None):
    """Cross-entropy of each next-token prediction: [L - 1], entry q is the loss of the logits at query q."""
    kwargs = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {"input_ids": input_ids}
    logits = (
        model(
            **kwargs,
            attention_mask=attention_mask_for_model(model, batch["attention_mask"]),
            position_ids=batch["position_ids"],
        )
        .logits[0]
        .float()
    )  # [L, V]
    return torch.nn.functional.cross_entropy(logits[:-1], batch["labels"][0, 1:].clamp(min=0), reduction="none")


def replaced_block(example, key_start: int, key_stop: int, seed: int = 1) -> torch.Tensor:
    rng = random.Random(seed)
    ids = list(example.input_ids)
    for position in range(key_start, key_stop):
        ids[position] = rng.choice([i for i in range(10, 200) if i != ids[position]])
    return torch.tensor([ids])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_after_a_finished_memento_the_loss_ignores_the_blocks_tokens(tokenizer, attn):
    # One layer: attention from later queries is the only road from the block's tokens to their loss, so the
    # mask alone decides whether the block matters (deeper models: see the test after the next one).
    _, example, key_start, key_stop, trigger = isolation_case(tokenizer)
    model = build_tiny_model("qwen3", len(tokenizer), attn_implementation=attn, num_hidden_layers=1)
    for stage in (2, 1):
        batch = MementoCollator(pad_token_id=0, stage=stage)([example.to_row()])
        original = per_token_loss(model, batch, batch["input_ids"])[trigger:]
        changed = per_token_loss(model, batch, replaced_block(example, key_start, key_stop))[trigger:]
        if stage == 2:
            torch.testing.assert_close(changed, original, rtol=0, atol=1e-6)
        else:
            assert (changed - original).abs().max() > 1e-3


def test_the_gradient_wrt_the_blocks_embeddings_is_zero_through_later_positions(tokenizer):
    _, example, key_start, key_stop, trigger = isolation_case(tokenizer, seed=4)
    model = build_tiny_model("qwen3", len(tokenizer), num_hidden_layers=1)
    for stage in (2, 1):
        batch = MementoCollator(pad_token_id=0, stage=stage)([example.to_row()])
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)  # [1, L, H]
        per_token_loss(model, batch, inputs_embeds=embeds)[trigger:].sum().backward()
        block_grad = embeds.grad[0, key_start:key_stop]  # [|K_b|, H]
        if stage == 2:
            assert torch.count_nonzero(block_grad) == 0
        else:
            assert block_grad.abs().max() > 1e-4
        assert embeds.grad[0, trigger:].abs().max() > 0  # the later positions themselves do get gradient


def test_in_every_layer_no_later_query_puts_weight_on_the_finished_block(tokenizer):
    _, example, key_start, key_stop, trigger = isolation_case(tokenizer, seed=2)
    model = build_tiny_model("qwen3", len(tokenizer), attn_implementation="eager")
    for stage in (2, 1):
        batch = MementoCollator(pad_token_id=0, stage=stage)([example.to_row()])
        attentions = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            output_attentions=True,
        ).attentions
        weight = torch.stack([a[0, :, trigger:, key_start:key_stop] for a in attentions])  # [layers, heads, q, k]
        assert (weight == 0).all() if stage == 2 else (weight > 0).all()
    # What the mask does not promise: with two layers the memento's own keys were computed while the block was
    # visible, so they carry its content forward (by design; the paper's restart ablation removes exactly
    # that) and the loss after the memento does depend on the block.
    batch = MementoCollator(pad_token_id=0, stage=2)([example.to_row()])
    original = per_token_loss(model, batch, batch["input_ids"])[trigger:]
    changed = per_token_loss(model, batch, replaced_block(example, key_start, key_stop))[trigger:]
    assert (changed - original).abs().max() > 1e-4


def test_eager_and_sdpa_agree_on_a_padded_stage_two_batch(tokenizer):
    sft = SFTTokenizer(tokenizer, stage=2, block_masking=BlockMaskingConfig(keep_last_n_blocks=1, mask_delimiters=True))
    rows = [e.to_row() for e in sft.tokenize(iter_chat_examples(short_traces(3, seed=5, blocks=3)))]
    batch = MementoCollator(pad_token_id=0, stage=2)(rows)
    logits = {}
    for attn in ("eager", "sdpa"):
        model = build_tiny_model("qwen3", len(tokenizer), attn_implementation=attn)
        logits[attn] = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
    assert torch.isfinite(logits["eager"]).all() and torch.isfinite(logits["sdpa"]).all()
    real = batch["labels"] != -100
    torch.testing.assert_close(logits["sdpa"][real], logits["eager"][real], rtol=1e-4, atol=1e-4)


# ---- the collator's max_length cut keeps the mask of the CUT sequence (issue 9) ------------------------------
CUT_MARKERS = MarkerIds(block_start=10, block_end=11, summary_start=12, summary_end=13)  # no gating
CUT_TOKENS = st.lists(st.sampled_from([10, 11, 12, 13, 1, 2]), min_size=1, max_size=24)
cut_configs = st.builds(
    lambda keep, delimiters, answer, restart: BlockMaskingConfig(
        keep_last_n_blocks=keep, mask_delimiters=delimiters, keep_last_block_for_answer=answer, restart_mode=restart
    ),
    st.integers(0, 2),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)


def test_restart_mode_cut_before_the_summary_end_hides_nothing():
    # [BS 1 BE SS 2 3 SE 1] cut to 6 tokens: the summary never ends, so no key is hidden.
    config = BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False, restart_mode=True)
    ids = [10, 1, 11, 12, 2, 3, 13, 1]
    spans = compact_mask(ids, config, CUT_MARKERS)
    assert spans and compact_mask(ids[:6], config, CUT_MARKERS) == []
    batch = MementoCollator(pad_token_id=0, max_length=6)([{"input_ids": ids, "labels": ids, "mask_spans": spans}])
    assert np.array_equal(allowed_of(batch["attention_mask"])[0], np.tri(6, dtype=bool))


@settings(max_examples=300, deadline=None)
@given(ids=CUT_TOKENS, config=cut_configs, data=st.data())
def test_collator_cut_equals_the_dense_mask_of_the_cut_sequence(ids, config, data):
    cut = data.draw(st.integers(1, len(ids)))
    spans = compact_mask(ids, config, CUT_MARKERS)
    batch = MementoCollator(pad_token_id=0, max_length=cut)([{"input_ids": ids, "labels": ids, "mask_spans": spans}])
    assert np.array_equal(allowed_of(batch["attention_mask"])[0], dense_allowed(ids[:cut], config, CUT_MARKERS))


def test_collator_feature_without_labels_is_a_clear_error():
    collate = MementoCollator(pad_token_id=0)
    with pytest.raises(InputError, match="example 1 of the batch has no 'labels'"):
        collate([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [1, 2, 3]}])
    with pytest.raises(InputError, match="no 'input_ids'"):
        collate([{"labels": [1, 2]}])
