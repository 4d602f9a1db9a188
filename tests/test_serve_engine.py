"""The serving engine in process: continuous batching agrees with the generator run alone (tokens, and logits with
the dense mask), whatever joins, leaves or is preempted; the preallocated cache's row operations agree with a
plain list model of the rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_models import MementoScript
from mementokit.generate import (
    BlockMaskedGenerator,
    PhysicalKVCache,
    RowKV,
    SamplingParams,
    chat_prompt,
    dense_reference_logits,
)
from mementokit.serve import Engine, EngineRequest

pytestmark = pytest.mark.usefixtures("one_thread")  # module-wide, from conftest

BASE = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}
TEXTS = ("What is 2 + 2?", "Prove that there are infinitely many primes.", "hi", "Count to ten.",
         "Name a prime above 100.", "Why is the sky blue?")
LENGTHS = (40, 12, 60, 25, 7, 33)


@pytest.mark.parametrize("options", [{}, {"restart_mode": True}, {"keep_last_n_blocks": 1}])
@pytest.mark.parametrize("budget", [None, 70])
def test_rows_joining_leaving_and_preempted_equal_each_request_alone(model, tokenizer, markers, options, budget):
    config = {**BASE, **options}
    script = MementoScript(markers)
    engine = Engine(model, tokenizer, config, max_batch_size=3, max_cache_tokens=budget)
    prompts = [chat_prompt(tokenizer, text) for text in TEXTS]
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in LENGTHS]
    requests = [EngineRequest(p, s, processors=(script,), logprobs=0) for p, s in zip(prompts, params)]
    for wave, steps in ((requests[:2], 4), (requests[2:4], 7), (requests[4:], 0)):  # arrivals at different steps
        for request in wave:
            engine.submit(request)
        engine._take_inbox(block=False)
        for _ in range(steps):
            engine.step()
    engine.run_until_idle()
    generator = BlockMaskedGenerator(model, tokenizer, config)
    for prompt, param, request in zip(prompts, params, requests):
        served = request.sequences[0]
        alone = generator.generate(prompt, param, logits_processors=[script])
        assert served.generated == alone.token_ids
        assert served.finish_reason == alone.finish_reason == "length"
        full = prompt + served.generated
        reference = torch.log_softmax(dense_reference_logits(model, full, config, markers=markers), dim=-1)
        positions = torch.arange(len(prompt) - 1, len(full) - 1)
        got = torch.tensor([lp.logprob for lp in served.token_logprobs])
        # restart mode equals the dense mask from each summary end on (the memento is written seeing its block)
        exact = torch.tensor([not any(e.restart and e.trigger <= q < e.position for e in served.stats.evictions)
                              for q in positions.tolist()])
        want = reference[positions, torch.tensor(served.generated)]
        assert exact.sum() > len(exact) // 2
        assert torch.allclose(got[exact], want[exact], atol=1e-4)
    assert sum(r.sequences[0].machine.completed_blocks for r in requests) >= len(requests) - 1
    assert engine.metrics.evicted_tokens._value.get() > 0
    preempted = engine.metrics.preemptions._value.get()
    if budget is None:
        assert preempted == 0
    else:
        assert preempted > 0 and engine.peak_physical_tokens <= budget


def test_admission_waits_for_physical_room_and_a_request_too_big_alone_stops(model, tokenizer, markers):
    engine = Engine(model, tokenizer, BASE, max_batch_size=4, max_cache_tokens=40)
    prompt = chat_prompt(tokenizer, "What is 2 + 2?")
    assert engine.physical_need(prompt) == len(prompt) < 40
    events = []
    big = EngineRequest(chat_prompt(tokenizer, "x " * 60), SamplingParams(max_new_tokens=3), sink=events.append)
    engine.submit(big)
    small = [EngineRequest(prompt, SamplingParams(max_new_tokens=10, ignore_eos=True)) for _ in range(3)]
    for request in small:
        engine.submit(request)
    engine._take_inbox(block=False)
    engine.step()
    assert big.sequences[0].finish_reason == "length" and not big.sequences[0].generated
    assert [e.kind for e in events] == ["finish"]
    assert len(engine.batch.sequences) == 2  # a third prompt would not fit beside two growing rows
    engine.run_until_idle()
    assert all(len(r.sequences[0].generated) == 10 for r in small) and engine.peak_physical_tokens <= 40


def test_a_cancelled_request_leaves_the_batch_at_the_next_step(model, tokenizer):
    engine = Engine(model, tokenizer, BASE, max_batch_size=4)
    prompt = chat_prompt(tokenizer, "hi")
    keep = EngineRequest(prompt, SamplingParams(max_new_tokens=30, ignore_eos=True))
    drop = EngineRequest(prompt, SamplingParams(max_new_tokens=30, ignore_eos=True))
    engine.submit(keep), engine.submit(drop)
    engine._take_inbox(block=False)
    for _ in range(3):
        engine.step()
    assert engine.batch.physical_tokens() == 2 * (len(prompt) + 3)  # each step feeds one token per row
    drop.cancel()
    engine.step()
    assert [s.tag for s in engine.batch.sequences] == [keep]
    assert engine.batch.physical_tokens() == len(prompt) + 4
    engine.run_until_idle()
    assert len(keep.sequences[0].generated) == 30 and len(drop.sequences[0].generated) == 3


# ----- the cache's row operations against a list model ------------------------------------------------------
OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 3)),
    st.tuples(st.just("evict"), st.integers(0, 7), st.integers(0, 40), st.integers(1, 12)),
    st.tuples(st.just("join"), st.integers(0, 30)),
    st.tuples(st.just("leave"), st.integers(0, 7)),
), min_size=1, max_size=40)


@settings(max_examples=60)
@given(OPS)
def test_cache_row_operations_match_a_list_model(ops):
    """Keys hold a code of (row identity, position); after any mix of appends, evictions, joins and departures,
    every row's slots equal the list model, in logical order, right-aligned; appends never move the buffers."""
    kv = PhysicalKVCache(rows=2, columns=8)
    rows: list[tuple[int, list[int]]] = []  # (row identity, positions)
    next_id = 0

    def code(identity: int, position: int) -> float:
        return identity * 1000.0 + position

    def row_kv(identity: int, positions: list[int]) -> RowKV:
        values = torch.tensor([code(identity, p) for p in positions]).reshape(1, 1, -1, 1)
        return RowKV(keys=[values.clone(), values.clone()], values=[-values, -values], positions=list(positions))

    for op in ops:
        if op[0] == "join" or not rows:
            n = op[1] if op[0] == "join" else 3
            start = 50 * next_id
            kv.add_row(row_kv(next_id, list(range(start, start + n))))
            rows.append((next_id, list(range(start, start + n))))
            next_id += 1
        elif op[0] == "append":
            for _ in range(op[1]):
                new = [(positions[-1] + 1) if positions else 50 * identity for identity, positions in rows]
                keys = torch.tensor([code(i, p) for (i, _), p in zip(rows, new)]).reshape(-1, 1, 1, 1)
                pointers = [layer.key_buf.data_ptr() for layer in kv.cache.layers if layer.is_initialized]
                fits = kv.hi + 1 <= min((layer.key_buf.shape[2] for layer in kv.cache.layers), default=0)
                for layer in range(2):
                    kv.cache.update(keys, -keys, layer)
                kv.note_appended([[p] for p in new])
                if fits and pointers:
                    assert pointers == [layer.key_buf.data_ptr() for layer in kv.cache.layers]
                for (_, positions), p in zip(rows, new):
                    positions.append(p)
        elif op[0] == "evict":
            b = op[1] % len(rows)
            identity, positions = rows[b]
            lo = positions[0] + op[2] if positions else 0
            removed = kv.evict(b, lo, lo + op[3])
            kept = [p for p in positions if not lo <= p < lo + op[3]]
            assert removed == len(positions) - len(kept)
            rows[b] = (identity, kept)
        elif op[0] == "leave":
            b = op[1] % len(rows)
            kv.remove_row(b)
            last = rows.pop()
            if b < len(rows):
                rows[b] = last
        assert kv.batch_size == len(rows)
        assert kv.total_tokens() == sum(len(p) for _, p in rows)
        assert kv.physical_length == max((len(p) for _, p in rows), default=0)
        for b, (identity, positions) in enumerate(rows):
            assert kv.row_positions(b) == positions
            for layer in kv.cache.layers:
                if not layer.is_initialized:
                    continue
                got = layer.keys[b, 0, kv.pad[b]:, 0].tolist()
                assert got == [code(identity, p) for p in positions]
                assert layer.values[b, 0, kv.pad[b]:, 0].tolist() == [-code(identity, p) for p in positions]
