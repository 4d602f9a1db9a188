"""The analysis commands as a user runs them: the real `memento` entry point in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mementokit.cli.analysis import sample_path
from mementokit.format import parse_response
from mementokit.io import iter_traces

DATA = Path(__file__).parent / "data"


def memento(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mementokit", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_main_job_runs_on_the_shipped_sample_and_writes_the_report(tmp_path):
    result = memento("analyze", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = tmp_path / "memento-report"
    assert "memento-report/" in result.stdout and "overall" in result.stdout
    names = {p.name for p in report.iterdir()}
    assert {"summary.json", "traces.parquet", "report.html", "figure3_by_domain.png"} <= names
    summary = json.loads((report / "summary.json").read_text())
    table = pd.read_parquet(report / "traces.parquet")
    assert summary["overall"]["traces"] == len(table) == sum(1 for _ in iter_traces(sample_path()))
    assert set(summary["by_domain"]) == {"math", "code", "science"}


def test_json_output_is_one_object_and_writes_no_files(tmp_path):
    result = memento("analyze", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert list(tmp_path.iterdir()) == []
    for group in [*summary["by_domain"].values(), summary["overall"]]:
        assert group["traces"] > 0
        assert group["per_trace"]["blocks"]["median"] > 0
        assert 0 < group["per_block"]["char_ratio"]["median"] < 1
    # With --out as well, the files are written and stdout is still only the JSON.
    result = memento("analyze", "--json", "--out", "out", "--no-plots", cwd=tmp_path)
    assert json.loads(result.stdout) == summary | {"source": summary["source"]}
    assert (tmp_path / "out" / "summary.json").exists()


def test_field_mapping_and_csv_table(tmp_path):
    rows = [
        {"prompt": "p", "cot": r["response"], "domain": "math"}
        for r in map(json.loads, sample_path().read_text().splitlines()[:3])
    ]
    source = tmp_path / "mapped.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = memento(
        "analyze",
        str(source),
        "--field",
        "response=cot",
        "--out",
        "o",
        "--no-plots",
        "--table-format",
        "csv",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "o" / "traces.csv")) == 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"response": \n', "bad.jsonl:2"),
        ('{"problem": "no response"}\n', "bad.jsonl:2, field 'response'"),
        ('{"response": 7}\n', "bad.jsonl:2, field 'response'"),
    ],
)
def test_bad_input_is_one_clear_line_and_skip_bad_counts_it(tmp_path, content, expected):
    good = (
        json.dumps({"response": "<think><|block_start|>a<|block_end|><|summary_start|>m<|summary_end|></think>x"})
        + "\n"
    )
    (tmp_path / "bad.jsonl").write_text(good + content)
    result = memento("analyze", "bad.jsonl", "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = memento("analyze", "bad.jsonl", "--json", "--skip-bad", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped"] == 1


def test_missing_file_and_unknown_tokenizer_fail_cleanly(tmp_path):
    result = memento("analyze", "nope.jsonl", cwd=tmp_path)
    assert result.returncode == 2 and "nope.jsonl" in result.stderr and "Traceback" not in result.stderr
    result = memento("analyze", "--tokenizer", str(tmp_path / "no-such-tokenizer"), "--json", cwd=tmp_path)
    assert result.returncode == 2 and "no-such-tokenizer" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    result = memento("analyze", "broken.parquet", cwd=tmp_path)
    assert result.returncode == 2 and "broken.parquet" in result.stderr and "Traceback" not in result.stderr


def test_compress_prints_the_compressed_response_and_sizes(tmp_path):
    fixture = DATA / "memento_trace_aime2025_p5.json"
    result = memento("compress", str(fixture), "--keep-last", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = next(iter(iter_traces(fixture)))
    compressed = result.stdout.rstrip("\n")
    trace = parse_response(compressed)
    assert len(trace.blocks) == 1 and len(trace.summaries) == 5
    assert trace.answer.rstrip("\n") == parse_response(record.response).answer.rstrip("\n")
    assert f"{len(record.response):,} -> {len(compressed):,} chars" in result.stderr


def test_render_shows_each_block_beside_its_memento(tmp_path):
    result = memento("render", str(DATA / "memento_trace_aime2025_p5.json"), "--chars", "80", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "memento" in result.stdout and "0.101" in result.stdout  # block 1: 212 / 2092 chars
    result = memento("render", "--index", "999", cwd=tmp_path)
    assert result.returncode == 2 and "no trace at index 999" in result.stderr


def test_synth_writes_the_requested_traces(tmp_path):
    result = memento("synth", "--n", "25", "--seed", "3", "--out", "s.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 25 and all(parse_response(r["response"]).is_valid for r in rows)


def test_every_command_has_help_with_an_example(tmp_path):
    for command in ("analyze", "render", "compress", "synth"):
        result = memento(command, "--help", cwd=tmp_path)
        assert result.returncode == 0 and "memento " + command in result.stdout
