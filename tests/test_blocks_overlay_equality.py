"""BlockStateMachine equals the reference vLLM overlay token for token (block-semantics.md, "Equality with the
reference overlay"), on thousands of random token streams under every option combination.

The other side is tests/overlay_reference.py, a deliberately simple reading of the overlay's own rules. After
every token we compare the set of evicted positions, in restart mode the position the recomputation starts from
(the overlay's rewind), and whether the block-length cap forces <|block_end|> next. The whole-sequence `feed`
(numpy path) must report the same evictions as token-by-token `step`.

Streams are well-formed Memento structures perturbed the ways real model output goes wrong: doubled, dropped and
swapped markers, nested blocks, summaries inside open blocks, stray </think>, and chat headers (<|im_start|>,
`assistant`) in all places, including prompts with blocks before the assistant section.
"""

from __future__ import annotations

import itertools
import random

import pytest

from mementokit.blocks import BlockMaskingConfig, BlockStateMachine, MarkerIds
from overlay_reference import OverlayReference

BS, BE, SS, SE, THINK_END, IM, AS = 1, 2, 3, 4, 5, 6, 7
ORDINARY = (0, 8, 9)
GATED = MarkerIds(BS, BE, SS, SE, think_end=THINK_END, im_start=IM, assistant=AS)
UNGATED = MarkerIds(BS, BE, SS, SE, think_end=THINK_END)  # the tokenizer has no single-token header: no gating

OPTION_NAMES = ("keep_last_n_blocks", "mask_delimiters", "compact_on_summary_end", "require_assistant_section",
                "restart_mode", "keep_last_block_for_answer")
OPTION_SETS = [dict(zip(OPTION_NAMES, values)) for values in itertools.product(
    (-1, 0, 1, 2), (False, True), (False, True), (False, True), (False, True), (False, True))]  # 128
CAPS = (0, 2, 5)  # max_block_tokens; every option set runs with each cap
STREAMS = 240  # per option set: STREAMS // len(CAPS) per (option set, cap), half with gating ids


def _ordinary(rng: random.Random, most: int = 3) -> list[int]:
    return [rng.choice(ORDINARY) for _ in range(rng.randint(0, most))]


def _block(rng: random.Random, depth: int = 0) -> list[int]:
    body = _ordinary(rng)
    if depth < 2 and rng.random() < 0.25:  # nesting
        body += _block(rng, depth + 1) + _ordinary(rng)
    out = [BS, *body, BE]
    if rng.random() < 0.85:
        out += _ordinary(rng, 1) + [SS, *_ordinary(rng), SE]
    return out


def _perturb(rng: random.Random, seq: list[int]) -> list[int]:
    seq = list(seq)
    for _ in range(rng.randint(0, 4)):
        if not seq:
            break
        i = rng.randrange(len(seq))
        kind = rng.randrange(6)
        if kind == 0:
            seq.insert(i, seq[i])  # doubled
        elif kind == 1:
            del seq[i]  # dropped
        elif kind == 2 and i + 1 < len(seq):
            seq[i], seq[i + 1] = seq[i + 1], seq[i]  # swapped
        elif kind == 3:
            seq.insert(i, rng.choice((BS, BE, SS, SE)))  # stray marker (summary inside an open block, ...)
        elif kind == 4:
            seq.insert(i, THINK_END)  # stray </think>
        else:
            seq[i:i] = rng.choice(([IM, AS], [IM, 0, AS], [IM, 0, 8, AS], [AS], [IM]))  # headers anywhere
    return seq


def random_stream(rng: random.Random) -> list[int]:
    prompt: list[int] = []
    if rng.random() < 0.7:  # a chat prompt, sometimes quoting blocks before the assistant header
        prompt = [IM, 8, *_ordinary(rng)]
        if rng.random() < 0.3:
            prompt += _block(rng)
        prompt += [IM, rng.choice((AS, 0)), *rng.choice(([], [0]))] if rng.random() < 0.8 else [IM, 0, 0, AS]
    response = []
    for _ in range(rng.randint(1, 5)):
        response += _ordinary(rng, 2) + _block(rng)
    response += [THINK_END, *_ordinary(rng)]
    if rng.random() < 0.2:
        response += _block(rng)  # blocks after </think>
    if rng.random() < 0.15:
        return _perturb(rng, [rng.choice((BS, BE, SS, SE, IM, AS, THINK_END, *ORDINARY)) for _ in range(30)])
    return _perturb(rng, prompt + response) if rng.random() < 0.75 else prompt + response


def compare_stream(seq: list[int], options: dict, cap: int, markers: MarkerIds) -> None:
    config = BlockMaskingConfig(enable=True, max_block_tokens=cap, **options)
    ids = {"bs": BS, "be": BE, "ss": SS, "se": SE, "im": markers.im_start, "assistant": markers.assistant}
    reference = OverlayReference({**options, "enable": True, "max_block_tokens": cap}, ids)
    machine = BlockStateMachine(config, markers)
    evicted: set[int] = set()
    stepped = []

    def where(p: int) -> str:
        return f"at position {p} of {seq} with {options}, cap {cap}, gating ids {markers.can_gate}"

    assert machine.must_close_block() == reference.forces_block_end()
    for p, token in enumerate(seq):
        events = machine.step(token)
        reference.token(token, p)
        stepped += events
        for e in events:
            evicted.update(e.keys)
        if events or len(reference.evicted) != len(evicted):
            assert evicted == reference.evicted, where(p)
        assert machine.evicted_tokens == len(reference.evicted), where(p)
        if options["restart_mode"]:
            rewind = min((e.recompute_from for e in events), default=None)
            assert rewind == reference.rewind, where(p)
            assert all(e.trigger == e.recompute_from for e in events)
        assert all(e.at == p for e in events)
        assert machine.must_close_block() == reference.forces_block_end(), where(p)
    assert BlockStateMachine(config, markers).feed(seq) == stepped, f"feed != step on {seq} with {options}"


def test_state_machine_equals_the_overlay_on_every_option_set():
    # 128 option sets x 3 caps x (with / without gating ids) = 768 combinations; every option set gets its own
    # 240 fresh streams (40 per combination), 30,720 streams in all (about 1.3 million tokens).
    compared = tokens = 0
    for k, options in enumerate(OPTION_SETS):
        rng = random.Random(20261130 + k)
        for i in range(STREAMS):
            seq = random_stream(rng)
            markers = GATED if (i // len(CAPS)) % 2 == 0 else UNGATED
            compare_stream(seq, options, CAPS[i % len(CAPS)], markers)
            compared += 1
            tokens += len(seq)
    assert compared == len(OPTION_SETS) * STREAMS == 30_720 and tokens > 1_000_000


@pytest.mark.parametrize("seq, options, expected", [
    # Rule 1: SS attaches to the most recently OPENED closed block (the inner one), not the last closed.
    ([BS, BS, 8, BE, BE, SS, 8, SE], {"keep_last_n_blocks": 0}, {2}),
    # Rule 2: with keep_last_block_for_answer each BS evicts at most one queued block (the oldest) ...
    ([BS, BS, 8, BE, SS, 8, SE, BE, SS, 8, SE, BS], {"keep_last_block_for_answer": True}, {2}),
    # ... and it does so with compact_on_summary_end false.
    ([BS, 8, BE, SS, 8, SE, BS], {"keep_last_block_for_answer": True, "compact_on_summary_end": False}, {1}),
])
def test_the_corrected_rules_on_hand_worked_streams(seq, options, expected):
    full = {"keep_last_n_blocks": 0, "mask_delimiters": False, "compact_on_summary_end": True,
            "require_assistant_section": False, "restart_mode": False, "keep_last_block_for_answer": False, **options}
    compare_stream(seq, full, 0, UNGATED)
    machine = BlockStateMachine(BlockMaskingConfig(enable=True, **full), UNGATED)
    assert {k for e in machine.feed(seq) for k in e.keys} == expected


def test_the_cap_is_one_flag_ungated_and_counts_prompt_tokens():
    # Cap 2: the prompt's BS (before any assistant header) sets the flag; the nested BE clears it.
    seq = [BS, 8, IM, AS, 8]
    machine = BlockStateMachine(BlockMaskingConfig(enable=True, mask_delimiters=False, max_block_tokens=2), GATED)
    machine.feed(seq)
    assert machine.must_close_block()
    assert machine.open_blocks == 0  # ... although the block state machine does not track that block
    machine.feed([BE, BS, 8, BS, 8, 8, BE])  # an inner block closes while the outer one is still open ...
    assert not machine.must_close_block() and machine.open_blocks == 1  # ... and the flag is off
    machine.feed([8, 8])
    assert not machine.must_close_block()
