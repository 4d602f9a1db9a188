"""Checkpoints, samples, strategies and the teacher's prompts, against prompts worked out by hand."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers_cli import invoke
from helpers_distill import calculator_history, write_checkpoint
from mementokit.distill import (
    PromptOptions,
    is_failure,
    iter_prompts,
    latest_snapshot,
    load_checkpoint,
    memory_view,
)
from mementokit.distill.checkpoint import Entry, iter_samples
from mementokit.errors import ConfigError, InputError

HISTORY = [
    {"type": "Observation", "content": "2+2?"}, {"type": "Action", "content": "4"},
    {"type": "Feedback", "content": "Correct"},
    {"type": "Observation", "content": "3*3?"}, {"type": "Action", "content": "6"},
    {"type": "Feedback", "content": "Incorrect, the answer is 9"},
    {"type": "Observation", "content": "10/2?"}, {"type": "Action", "content": "5"},
    {"type": "Feedback", "content": {"correct": True, "message": "ok"}},
    {"type": "Observation", "content": "7-9?"}, {"type": "Action", "content": "2"},
    {"type": "Feedback", "content": {"score": 0, "message": "wrong sign"}},
]
SYSTEM = ("You are a careful calculator.\n\nYou will be given the previous experiences you've had and their feedback. "
          "You should use this feedback to improve your performance in the subsequent actions.")
E = {  # each history entry as the user prompt shows it
    0: "OBSERVATION: 2+2?", 1: "ACTION: 4", 2: "FEEDBACK: Correct",
    3: "OBSERVATION: 3*3?", 4: "ACTION: 6", 5: "FEEDBACK: Incorrect, the answer is 9",
    6: "OBSERVATION: 10/2?", 7: "ACTION: 5", 8: 'FEEDBACK: {"correct": true, "message": "ok"}',
    9: "OBSERVATION: 7-9?", 10: "ACTION: 2", 11: 'FEEDBACK: {"score": 0, "message": "wrong sign"}',
}


def user(entries: list[int], observation: str) -> str:
    shown = "\n\n".join(E[i] for i in entries) if entries else "No previous experiences."
    return (f"Here is a list of your previous experiences:\n\n{shown}\n\n"
            f"Here is the current observation:\n\n{observation}")


@pytest.fixture
def checkpoint_dir(tmp_path):
    # 12 snapshots: memory_12 (newest by number) holds all 12 entries, memory_9 (last by name) only 9
    return write_checkpoint(tmp_path / "ep_000200", HISTORY, snapshots=12)


def prompts(folder, **options):
    return list(iter_prompts(load_checkpoint(folder), PromptOptions(**options)))


def test_latest_snapshot_is_chosen_by_number_not_by_name(checkpoint_dir):
    assert latest_snapshot(checkpoint_dir).name == "memory_12.jsonl"
    checkpoint = load_checkpoint(checkpoint_dir)
    assert len(checkpoint.entries) == 12 and len(checkpoint.samples) == 4


@pytest.mark.parametrize(("strategy", "options", "sample", "shown"), [
    ("exclude_current", {}, 2, [0, 1, 2, 3, 4, 5, 9, 10, 11]),
    ("exclude_current", {}, 0, [3, 4, 5, 6, 7, 8, 9, 10, 11]),
    ("full_memory", {}, 2, list(range(12))),
    ("rolling_window", {"window": 4}, 2, [2, 3, 4, 5]),
    ("rolling_window", {"window": 2, "types": ("Observation", "Feedback")}, 2, [3, 5]),
    ("rolling_window", {"window": 3}, 0, []),
    ("failure_focus", {}, 2, [3, 4, 5, 9, 10, 11]),
    ("failure_focus", {}, 1, [9, 10, 11]),
    ("failure_focus", {"types": ("Observation", "Action")}, 0, [3, 4, 9, 10]),
    ("full_memory", {"max_entries": 2}, 3, [10, 11]),
])
def test_every_strategy_gives_the_hand_worked_prompt(checkpoint_dir, strategy, options, sample, shown):
    record = prompts(checkpoint_dir, strategy=strategy, **options)[sample]
    observation = ["2+2?", "3*3?", "10/2?", "7-9?"][sample]
    assert record["messages"] == [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": user(shown, observation)}]
    assert record["system_prompt"] == SYSTEM
    assert record["metadata"]["sample_idx"] == sample
    assert record["metadata"]["span"] == [3 * sample, 3 * sample + 2]
    assert record["task_id"] == f"sample-{sample:06d}"


def test_system_prompt_override_may_name_a_file(checkpoint_dir, tmp_path):
    (tmp_path / "system.txt").write_text("Be brief.", encoding="utf-8")
    for override in ("Be brief.", str(tmp_path / "system.txt")):
        checkpoint = load_checkpoint(checkpoint_dir, system_prompt=override)
        record = next(iter_prompts(checkpoint, PromptOptions()))
        assert record["system_prompt"].startswith("Be brief.\n\nYou will be given")


def test_config_metadata_is_merged_and_max_samples_limits(checkpoint_dir):
    records = prompts(checkpoint_dir, max_samples=2, metadata={"dataset_version": "v1"})
    assert len(records) == 2
    assert records[1]["metadata"]["dataset_version"] == "v1"
    assert records[1]["metadata"]["feedback_failed"] is True


@given(st.lists(st.sampled_from(["Observation", "Action", "Feedback"]), max_size=40))
def test_samples_are_exactly_the_consecutive_triples(kinds):
    entries = [Entry(k, f"{k}{i}") for i, k in enumerate(kinds)]
    samples = iter_samples(entries)
    for s in samples:
        assert [e.type for e in entries[s.start:s.end + 1]] == ["Observation", "Action", "Feedback"]
    assert [s.index for s in samples] == list(range(len(samples)))
    assert all(a.end < b.start for a, b in zip(samples, samples[1:]))
    text = "".join(k[0] for k in kinds)  # non-overlapping left-to-right matches of "OAF"
    assert len(samples) == text.count("OAF")


@given(st.integers(3, 12), st.integers(1, 6), st.data())
def test_views_never_show_the_current_answer_except_full_memory(n, window, data):
    entries = [Entry(e["type"], e["content"]) for e in calculator_history(n)]
    samples = iter_samples(entries)
    sample = samples[data.draw(st.integers(0, len(samples) - 1))]
    for strategy in ("exclude_current", "rolling_window", "failure_focus"):
        view = memory_view(entries, sample, strategy, window=window if strategy == "rolling_window" else None)
        assert not any(v is sample.action or v is sample.feedback for v in view)
    rolling = memory_view(entries, sample, "rolling_window", window=window)
    assert rolling == entries[max(0, sample.start - window):sample.start]


@pytest.mark.parametrize(("feedback", "failed"), [
    ("Correct", False), ("Incorrect", True), ("That is wrong.", True), ("The run failed", True),
    ({"correct": False}, True), ({"correct": True, "message": "wrong"}, False), ({"score": 0}, True),
    ({"score": 1.0}, False), ({"message": "Incorrect answer"}, True), ("Correct: 42", False),
])
def test_failure_detection(feedback, failed):
    assert is_failure(feedback) is failed


def test_no_snapshot_is_a_clear_error(tmp_path):
    (tmp_path / "ep_000001").mkdir()
    with pytest.raises(InputError, match="No memory snapshots found") as info:
        load_checkpoint(tmp_path / "ep_000001")
    assert "ep_000001" in str(info.value)


def test_bad_snapshot_lines_name_file_line_and_field(checkpoint_dir):
    snapshot = checkpoint_dir / "memory_12.jsonl"
    lines = snapshot.read_text().splitlines()
    lines[4] = '{"type": "Thought", "content": "hmm"}'
    lines[7] = "{not json"
    snapshot.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        load_checkpoint(checkpoint_dir)
    assert str(info.value).startswith(f"{snapshot}:5, field 'type': unknown entry type 'Thought'")
    bad = []
    checkpoint = load_checkpoint(checkpoint_dir, skip_bad=True, on_bad=bad.append)
    assert checkpoint.skipped_lines == 2 and [e.line for e in bad] == [5, 8]
    assert len(checkpoint.entries) == 10


def test_bad_options_are_config_errors(checkpoint_dir):
    with pytest.raises(ConfigError, match="window"):
        prompts(checkpoint_dir, strategy="rolling_window")
    with pytest.raises(ConfigError, match="unknown strategy"):
        prompts(checkpoint_dir, strategy="everything")
    with pytest.raises(ConfigError, match="unknown entry type"):
        prompts(checkpoint_dir, types=("Thought",))


def test_prompts_command_writes_the_same_records(checkpoint_dir, tmp_path):
    out = tmp_path / "prompts.jsonl"
    result = invoke("distill", "prompts", checkpoint_dir, "--strategy", "rolling_window", "--window", "4",
                    "--types", "Observation,Action,Feedback", "--out", out)
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == prompts(checkpoint_dir, strategy="rolling_window", window=4,
                              types=("Observation", "Action", "Feedback"))
    with pytest.raises(InputError, match="missing: no such checkpoint folder"):
        invoke("distill", "prompts", checkpoint_dir.parent / "missing")
