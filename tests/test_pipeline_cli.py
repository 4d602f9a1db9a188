"""`memento pipeline ...` commands: the stage commands' field semantics, dry run, report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from helpers_llm_server import Script, running_server
from mementokit.cli.main import app
from mementokit.pipeline.segment import optimal_segmentation

FIXTURE = Path(__file__).parent / "data" / "raw_cot_openthoughts3.jsonl"
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, ["pipeline", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def local_tokenizer(tmp_path: Path) -> Path:
    """A tiny BPE tokenizer trained here on the fixture (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(
        [json.loads(FIXTURE.read_text())["cot"]], trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"])
    )
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def test_split_rows_gain_sentences_and_separators_that_rebuild_the_cot(tmp_path):
    out = tmp_path / "split.jsonl"
    invoke("split", FIXTURE, "--out", out)
    row = json.loads(out.read_text())
    cot = json.loads(FIXTURE.read_text())["cot"]
    seps, sents = row["separators"], row["sentences"]
    assert len(seps) == len(sents) + 1
    assert seps[0] + "".join(s + sep for s, sep in zip(sents, seps[1:])) == cot


def test_segment_adds_inclusive_blocks_at_the_optimum_with_a_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    split = tmp_path / "split.jsonl"
    invoke("split", FIXTURE, "--out", split)
    row = json.loads(split.read_text())
    row["boundary_scores"] = [float((i * 7) % 4) for i in range(len(row["sentences"]) - 1)]
    scored = tmp_path / "scored.jsonl"
    scored.write_text(json.dumps(row) + "\n")
    tok_path = local_tokenizer(tmp_path)
    out = tmp_path / "seg.jsonl"
    result = invoke(
        "segment",
        scored,
        "--out",
        out,
        "--tokenizer",
        tok_path,
        "--min-block-tokens",
        "300",
        "--variance-penalty",
        "0.5",
        "--json",
    )
    assert json.loads(result.stdout)["rows"] == 1
    blocks = json.loads(out.read_text())["blocks"]
    tok = Tokenizer.from_file(str(tok_path))
    counts = [len(tok.encode(s, add_special_tokens=False).ids) for s in row["sentences"]]
    expected = optimal_segmentation(row["boundary_scores"], counts, min_block_tokens=300, variance_penalty=0.5)
    assert blocks == [list(b) for b in expected.blocks]
    assert blocks[0][0] == 0 and blocks[-1][1] == len(row["sentences"]) - 1
    assert all(sum(counts[a : b + 1]) >= 300 for a, b in blocks)


def test_segment_names_the_line_and_field_of_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sentences": ["a", "b"], "boundary_scores": [1, 2]}) + "\n")
    result = runner.invoke(app, ["pipeline", "segment", str(bad), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code != 0 and "boundary_scores" in str(result.exception)


def test_dry_run_estimates_without_calling_anything(tmp_path):
    result = invoke("run", FIXTURE, "--out", tmp_path / "out", "--dry-run", "--json")
    estimate = json.loads(result.stdout)
    assert estimate["traces"] == 1 and estimate["calls"] > 0 and estimate["prompt_tokens"] > 0


def test_run_then_report_over_the_output_folder(tmp_path):
    with running_server(Script()) as url:
        result = invoke(
            "run", FIXTURE, "--out", tmp_path / "out", "--model", "m", "--base-url", url, "--api-key", "x", "--json"
        )
    report = json.loads(result.stdout)
    assert report["traces"] == 1
    again = json.loads(invoke("report", tmp_path / "out", "--json").stdout)
    assert again["traces"] == 1 and again["usage"]["calls"] == report["usage"]["calls"]


def test_select_maps_openthoughts_conversations_and_filters(tmp_path):
    rows = [
        {
            "conversations": [
                {"from": "human", "value": "What is 2+2?"},
                {"from": "gpt", "value": "<think>2+2=4</think>4"},
            ],
            "domain": "math",
        },
        {"prompt": "p", "full_cot": "no think markers", "domain": "code"},
        {"problem": "q", "cot": "<think>\u4f60\u597d</think>", "domain": "math"},
    ]
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sel.jsonl"
    summary = json.loads(invoke("select", src, "--out", out, "--drop-cjk", "--json").stdout)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["problem"] for r in kept] == ["What is 2+2?"] and kept[0]["cot"].startswith("<think>")
    assert summary["rejected"] == {"incomplete_think": 1, "cjk": 1}
