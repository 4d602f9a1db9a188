"""The parallel read (each worker reads its own part of the file) against the streaming path, on every field.

Corpora are generated: good traces, malformed ones, and every kind of bad row (malformed JSON, not an
object, not UTF-8, missing or mistyped fields, blank lines, a BOM, CRLF, no final newline). Parts are made
tiny so that every line boundary case (a part inside a line, a part starting on a newline) is exercised.
"""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.analysis.partitioned import analyze_source
from mementokit.analysis.stats import compressed_length
from mementokit.analysis.synth import synthetic_rows
from mementokit.errors import InputError
from mementokit.format import DEFAULT_MARKERS, build_response, compress_trace, parse_response
from mementokit.io import FieldMap, ReadStats
from mementokit.io import readers as readers_module
from mementokit.io.parts import split_source
from mementokit.io.readers import decode_jsonl_line

MALFORMED = ["<think><|block_start|>open", "<think><|summary_start|>x<|summary_end|></think>", "no markers at all", ""]


def good_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = ["x", "y²", "alpha", "β", "≠", "code()", "é", "the", "\u3000", "\xa0", "😀"]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    rows = []
    for i in range(n):
        k = rng.randint(0, 5)
        response = build_response(
            [text(rng.randint(1, 30)) for _ in range(k)], [text(rng.randint(1, 6)) for _ in range(k)], text(3)
        )
        if rng.random() < 0.15:
            response = rng.choice(MALFORMED)
        rows.append(
            {
                "problem": f"p{i}",
                "response": response,
                "domain": rng.choice(["math", "code", "science"]),
                "source": rng.choice(["a", None]),
            }
        )
    return rows


BAD_LINES = [
    b"{not json",
    b"[1, 2]",
    b'{"response": 5, "domain": "math"}',
    b'{"problem": 3, "response": "<think></think>"}',
    b'{"domain": "math"}',
    b"\xff\xfe not utf-8",
    b'{"response": "x", "difficulty": {"a": 1}}',
    b"   ",
    b"",
    b'{"response": "<think>a</think>", "n": NaN}',
    b'{"response": "\\ud800 lone surrogate</think>", "domain": "code"}',
    b'{"response": "<think>big</think>", "n": 123456789012345678901234567890}',
]


def write_jsonl(
    path, rows, *, seed: int, bad: bool = True, bom: bool = False, crlf: bool = False, final_newline: bool = True
):
    rng = random.Random(seed)
    lines = [json.dumps(r, ensure_ascii=rng.random() < 0.5).encode() for r in rows]
    if bad:
        for raw in BAD_LINES:
            lines.insert(rng.randint(0, len(lines)), raw)
    if bom:
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    end = b"\r\n" if crlf else b"\n"
    data = end.join(lines) + (end if final_newline else b"")
    path.write_bytes(data)
    return path


def run(source, *, parallel: bool, workers: int = 1, **options):
    stats = ReadStats()
    try:
        report = analyze_source(source, parallel_read=parallel, workers=workers, stats=stats, **options)
    except InputError as error:
        return ("error", type(error).__name__, str(error), stats.as_dict())
    return ("report", report.summary(), report.traces, report.pairs, stats.as_dict())


def assert_same(a, b):
    assert a[0] == b[0], (a, b)
    if a[0] == "error":  # the same error (how far the read had gone by then is not part of it)
        assert a[1:3] == b[1:3]
        return
    assert json.dumps(a[1], sort_keys=True) == json.dumps(b[1], sort_keys=True)
    assert a[2].equals(b[2]), "per-trace table differs"
    assert list(a[2].columns) == list(b[2].columns)
    assert a[3].equals(b[3]), "per-pair table differs"
    assert a[4] == b[4], "read statistics differ"


# -- JSONL: byte ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize("part_bytes", [1, 97, 4096, None])
@pytest.mark.parametrize("skip_bad", [True, False])
def test_jsonl_parts_give_the_streaming_report(tmp_path, part_bytes, skip_bad):
    path = write_jsonl(tmp_path / "t.jsonl", good_rows(60, seed=1), seed=2, bom=True)
    reference = run(path, parallel=False, skip_bad=skip_bad)
    assert_same(run(path, parallel=True, skip_bad=skip_bad, part_bytes=part_bytes), reference)
    if skip_bad:
        assert (
            reference[4]["rows_skipped"] == 7
        )  # the blank lines hold no row; NaN, a lone surrogate, a huge int are json
        assert reference[1]["overall"]["traces"] == 63


@pytest.mark.parametrize("limit", [0, 1, 5, 17, 40, 62, 63, 64, 500])
def test_limit_stops_where_the_stream_stops(tmp_path, limit):
    path = write_jsonl(tmp_path / "t.jsonl", good_rows(60, seed=3), seed=4)
    for skip_bad in (True, False):
        reference = run(path, parallel=False, skip_bad=skip_bad, limit=limit)
        assert_same(run(path, parallel=True, skip_bad=skip_bad, limit=limit, part_bytes=113), reference)


def test_two_workers_crlf_and_no_final_newline(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", good_rows(80, seed=5), seed=6, crlf=True, final_newline=False)
    reference = run(path, parallel=False, skip_bad=True)
    assert_same(run(path, parallel=True, workers=2, skip_bad=True, part_bytes=300), reference)
    assert_same(
        run(path, parallel=True, workers=2, skip_bad=True, limit=33, part_bytes=300),
        run(path, parallel=False, skip_bad=True, limit=33),
    )


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [json.dumps(r) for r in good_rows(30, seed=7)]
    path.write_text("\n".join(rows[:20] + ["{oops"] + rows[20:]) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:21: malformed JSON"):
        analyze_source(path, workers=1, part_bytes=64)
    stats = ReadStats()
    report = analyze_source(path, workers=2, part_bytes=64, skip_bad=True, stats=stats)
    assert stats.examples[0].startswith(f"{path}:21:")
    assert list(report.traces["origin"][19:21]) == [f"{path}:20", f"{path}:22"]


def test_strict_mode_names_the_same_trace(tmp_path):
    rows = [
        {"response": build_response(["a b"] * (i % 4), ["m"] * (i % 4), "ans"), "domain": "math"} for i in range(40)
    ]
    rows[25]["response"] = "<think><|block_start|>x</think>"
    path = write_jsonl(tmp_path / "t.jsonl", rows, seed=9, bad=False)
    reference = run(path, parallel=False, strict=True)
    assert reference[0] == "error" and "unclosed_block" in reference[2]
    assert_same(run(path, parallel=True, strict=True, part_bytes=200), reference)
    assert_same(
        run(path, parallel=True, strict=True, limit=20, part_bytes=200),
        run(path, parallel=False, strict=True, limit=20),
    )


def test_token_statistics_are_the_same(tmp_path):
    from helpers_tokenizer import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path)
    tokenizer = str(tmp_path / "tiny-tokenizer")
    path = write_jsonl(tmp_path / "t.jsonl", good_rows(40, seed=10), seed=11)
    reference = run(path, parallel=False, skip_bad=True, tokenizer=tokenizer)
    assert "block_tokens" in reference[2].columns
    assert_same(run(path, parallel=True, workers=2, skip_bad=True, tokenizer=tokenizer, part_bytes=500), reference)


def test_field_map_and_the_synthetic_corpus(tmp_path):
    path = tmp_path / "cot.jsonl"
    rows = [
        {"cot": r["response"], "domain": r["domain"], "problem_source": r["source"]} for r in synthetic_rows(25, seed=3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = FieldMap().with_overrides({"response": "cot"})
    reference = run(path, parallel=False, field_map=fields)
    assert reference[1]["overall"]["traces"] == 25
    assert_same(run(path, parallel=True, workers=2, field_map=fields, part_bytes=20_000), reference)


# -- other input kinds ---------------------------------------------------------------------------------------


def parquet_rows(n: int, seed: int) -> list[dict]:
    rows = good_rows(n, seed)
    for i in range(0, n, 9):
        rows[i]["response"] = None  # falls back to building the response from segments, which it lacks: an error
    return rows


def test_parquet_row_groups_and_pruned_columns(tmp_path):
    rows = parquet_rows(70, seed=12)
    for i, row in enumerate(rows):
        row["extra"] = "x" * i
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=8)
    parts = split_source(path, columns_of=lambda names: ("response", "domain"), part_bytes=1)
    assert len(parts) == 9 and [p.first_row for p in parts][:3] == [0, 8, 16]
    for skip_bad in (True, False):
        for limit in (None, 10, 30):
            reference = run(path, parallel=False, skip_bad=skip_bad, limit=limit)
            assert_same(run(path, parallel=True, workers=2, skip_bad=skip_bad, limit=limit, part_bytes=1), reference)
    assert "row has problem, response, domain, source, extra" in run(path, parallel=True, part_bytes=1)[2]


def test_json_gz_and_a_hub_layout_folder(tmp_path):
    rows = good_rows(30, seed=13)
    (tmp_path / "t.json").write_text(json.dumps(rows, indent=1))
    with gzip.open(tmp_path / "t.jsonl.gz", "wb") as handle:
        handle.write(write_jsonl(tmp_path / "plain.jsonl", rows, seed=14).read_bytes())
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    for shard in range(3):
        pq.write_table(
            pa.Table.from_pylist(parquet_rows(20, seed=20 + shard)),
            hub / f"train-0000{shard}-of-00003.parquet",
            row_group_size=6,
        )
    (hub / "train-00003-of-00003.jsonl").write_bytes(write_jsonl(tmp_path / "x.jsonl", rows, seed=15).read_bytes())
    for source in (tmp_path / "t.json", tmp_path / "t.jsonl.gz", tmp_path / "hub"):
        for limit in (None, 25):
            reference = run(source, parallel=False, skip_bad=True, limit=limit)
            assert reference[0] == "report"
            assert_same(run(source, parallel=True, workers=2, skip_bad=True, limit=limit, part_bytes=200), reference)


def test_shuffled_and_stratified_reads_keep_the_streaming_path(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", good_rows(30, seed=16), seed=17, bad=False)
    assert analyze_source(path, workers=1, shuffle_seed=0).reader.startswith("streamed")
    assert analyze_source(path, workers=1, stratify=True).reader.startswith("streamed")
    assert analyze_source(path, workers=1).reader.startswith("parallel")
    with pytest.raises(InputError, match="no such file"):
        analyze_source(tmp_path / "missing.jsonl", workers=1)


def test_a_save_to_disk_folder_keeps_the_streaming_path(tmp_path):
    import datasets

    datasets.Dataset.from_list(good_rows(12, seed=18)).save_to_disk(str(tmp_path / "saved"))
    report = analyze_source(tmp_path / "saved", workers=1)
    assert report.reader.startswith("streamed") and len(report) == 12


# -- the fast JSON decoder never disagrees with json ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


def decode_both(raw: bytes, line: int):
    results = []
    for fast in (True, False):
        errors: list[str] = []
        saved = readers_module._fast_loads
        if not fast:
            readers_module._fast_loads = None
        try:
            value = decode_jsonl_line(raw, "f.jsonl", line, lambda e, errors=errors: errors.append(str(e)))
        finally:
            readers_module._fast_loads = saved
        results.append((repr(value), errors))
    return results


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from([1, 2]), st.data())
def test_fast_decoding_agrees_with_json_on_any_line(value, line, data):
    raw = json.dumps({"v": value}, ensure_ascii=data.draw(st.booleans())).encode()
    if data.draw(st.booleans()):  # damage it: cut, insert or flip bytes
        i = data.draw(st.integers(0, len(raw)))
        raw = raw[:i] + data.draw(st.binary(max_size=3)) + raw[i + data.draw(st.integers(0, 2)) :]
    fast, plain = decode_both(raw, line)
    assert fast == plain


@pytest.mark.parametrize(
    "raw",
    BAD_LINES
    + [
        b'{"a": 1, "a": 2}',
        b'{"a": "\\u0000\\t"}',
        b'\xef\xbb\xbf{"a": 1}',
        b'{"a": 1e400}',
        b'{"a": -0.0}',
        b'{"a":"\x01"}',
    ],
)
def test_fast_decoding_agrees_with_json_on_edge_cases(raw):
    for line in (1, 2):
        fast, plain = decode_both(raw, line)
        assert fast == plain


# -- the compressed length is computed, not built --------------------------------------------------------------

PIECES = [*DEFAULT_MARKERS.all, "a", " ", "\n", "xy z", "é"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="ab \n", min_size=1, max_size=8).filter(str.strip), max_size=6),
    st.lists(st.sampled_from(PIECES), max_size=25),
    st.integers(0, 4),
)
def test_compressed_length_is_the_length_of_the_compressed_text(contents, soup, keep_last):
    valid = build_response(contents, [c[::-1] for c in contents], "answer")
    for response in (valid, "".join(soup)):
        trace = parse_response(response)
        assert compressed_length(trace, keep_last) == len(compress_trace(trace, keep_last))
