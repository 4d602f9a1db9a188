"""Training on the parquet: the teacher's row i must meet the student's logits at position(token i) - 1."""

from __future__ import annotations

import json

import pytest
import torch

import mementokit.distill.train as distill_train
from helpers_cli import invoke
from helpers_distill import build_teacher, calculator_history, memento_serve, write_checkpoint
from helpers_models import build_tiny_model
from mementokit.distill import GenerateConfig, convert, generate
from mementokit.distill.train import evaluate_loss, load_examples, teacher_entropy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A teacher, 6 samples it answered through `memento serve` (top 20, every entry kept), and the parquet:
    (teacher, folder, parquet)."""
    folder = tmp_path_factory.mktemp("train")
    teacher = build_teacher(folder)
    checkpoint = write_checkpoint(folder / "ep_000003", calculator_history(6))
    with memento_serve(teacher) as url:
        generate(GenerateConfig(checkpoint_dir=str(checkpoint), model="teacher", base_url=url, out=str(folder / "gen"),
                                top_logprobs=20, max_tokens=16, temperature=1.0))
    convert(folder / "gen" / "results.jsonl", teacher.folder, folder / "data.parquet", min_prob_mass=1.0)
    return teacher, folder, folder / "data.parquet"


def test_the_student_sees_the_teachers_prompt_exactly(dataset):
    teacher, folder, parquet = dataset
    examples, _ = load_examples(parquet, teacher.tokenizer)
    served = {tuple(json.loads(line)["messages"][-1]["token_ids"]): json.loads(line)["prompt_token_ids"]
              for line in (folder / "gen" / "results.jsonl").read_text().splitlines()}
    for example in examples:
        completion = tuple(example.input_ids[example.prompt_length:])
        assert example.input_ids[:example.prompt_length] == served[completion]


def test_a_student_equal_to_the_teacher_reaches_the_minimum_only_with_the_right_shift(dataset, monkeypatch):
    teacher, _, parquet = dataset
    examples, _ = load_examples(parquet, teacher.tokenizer)
    entropy = teacher_entropy(examples)  # sum over kept entries of -p log p, per token
    assert entropy > 0.1  # a non-degenerate teacher, or the test would prove nothing
    assert evaluate_loss(teacher.model, examples) == pytest.approx(entropy, abs=1e-4)
    # stock cartridges gathers the logits at the token's own position: one step late
    monkeypatch.setattr(distill_train, "student_positions", lambda prompt_length, token_idx: prompt_length + token_idx)
    shifted = evaluate_loss(teacher.model, examples)
    assert shifted > entropy + 0.5
    monkeypatch.setattr(distill_train, "student_positions",
                        lambda prompt_length, token_idx: prompt_length + token_idx - 2)
    assert evaluate_loss(teacher.model, examples) > entropy + 0.5


def test_any_other_student_is_above_the_minimum(dataset):
    teacher, _, parquet = dataset
    examples, _ = load_examples(parquet, teacher.tokenizer)
    entropy = teacher_entropy(examples)
    other = build_tiny_model("qwen3", len(teacher.tokenizer), seed=1)
    assert evaluate_loss(other, examples) > entropy + 0.5


def test_train_command_lowers_the_loss_of_another_student(dataset, tmp_path):
    teacher, _, parquet = dataset
    student = build_tiny_model("qwen3", len(teacher.tokenizer), seed=1)
    student.save_pretrained(tmp_path / "student")
    teacher.tokenizer.save_pretrained(tmp_path / "student")
    result = invoke("distill", "train", parquet, "--model", tmp_path / "student", "--out", tmp_path / "run",
                    "--max-steps", "6", "--lr", "3e-3", "--grad-accum", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["final_loss"] < report["initial_loss"] - 0.3
    assert report["final_loss"] > report["teacher_entropy"]
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 6
