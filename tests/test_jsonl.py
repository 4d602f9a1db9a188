"""The one JSONL module: strict reads naming file and line, ledgers that tolerate a torn tail, atomic writes."""

import json
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mementokit.errors import InputError
from mementokit.jsonl import AppendLog, read_jsonl, read_ledger, repair_tail, write_json_atomic, write_jsonl_atomic

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=12))
def test_write_then_read_round_trips_any_objects(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("rt") / "rows.jsonl"
    assert write_jsonl_atomic(path, rows) == len(rows)
    assert [row for _, row in read_jsonl(path)] == rows


def test_written_files_have_the_default_mode_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"a": 1}])
    write_json_atomic(tmp_path / "report.json", {"b": 2})
    umask = os.umask(0)
    os.umask(umask)
    for name in ("out.jsonl", "report.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "report.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"old": True}])

    def rows():
        yield {"new": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, rows())
    assert [row for _, row in read_jsonl(path)] == [{"old": True}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_lone_surrogates_are_written_as_escapes(tmp_path):
    path = tmp_path / "s.jsonl"
    with AppendLog(path) as log:
        log.append({"text": "a\ud800b"})
    write_jsonl_atomic(tmp_path / "t.jsonl", [{"text": "\udfff"}])
    assert next(read_ledger(path)) == {"text": "a\ud800b"}
    assert next(read_jsonl(tmp_path / "t.jsonl"))[1] == {"text": "\udfff"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [("{bad", "not valid JSON"), ("[1, 2]", "expected a JSON object, got list"), ("\"x\"", "got str")],
)
def test_bad_lines_name_file_and_line(tmp_path, line, reason):
    path = tmp_path / "in.jsonl"
    path.write_text('{"ok": 1}\n\n' + line + "\n")
    with pytest.raises(InputError) as info:
        list(read_jsonl(path))
    assert info.value.line == 3 and info.value.path == str(path) and reason in str(info.value)


def test_skip_bad_reports_every_skipped_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\n{bad\n\xff\xfe\n{"b": 2}\n')
    skipped = []
    rows = list(read_jsonl(path, skip_bad=True, on_bad=skipped.append))
    assert rows == [(1, {"a": 1}), (4, {"b": 2})]
    assert [e.line for e in skipped] == [2, 3]
    assert "not UTF-8" in str(skipped[1])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_ledger_ignores_only_a_torn_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c": ')
    assert list(read_ledger(path)) == [{"a": 1}, {"b": 2}]
    path.write_text('{"a": 1}\n{"b": 2}')  # parses, but the append never finished
    assert list(read_ledger(path)) == [{"a": 1}]
    path.write_text('{"a": 1}\n{oops\n{"b": 2}\n')
    with pytest.raises(InputError) as info:
        list(read_ledger(path))
    assert info.value.line == 2
    assert list(read_ledger(tmp_path / "absent.jsonl")) == []


@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.integers()), min_size=1, max_size=6), st.data())
def test_repair_tail_cuts_exactly_the_torn_line(tmp_path_factory, records, data):
    path = tmp_path_factory.mktemp("tail") / "log.jsonl"
    with AppendLog(path) as log:
        for record in records:
            log.append(record)
    whole = path.read_bytes()
    torn = json.dumps({"torn": "x" * 100}).encode()
    path.write_bytes(whole + torn[: data.draw(st.integers(1, len(torn) - 1))])
    repair_tail(path)
    assert path.read_bytes() == whole
    assert list(read_ledger(path)) == records
