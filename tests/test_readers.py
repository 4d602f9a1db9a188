"""Readers: every source kind, lazy and bounded reading, fair samples, field mapping, and bad input.

All data is generated here in tmp_path (the hub is never reached): JSONL, JSON, parquet written with pyarrow,
`datasets` save_to_disk folders, and folders in the layout of the microsoft/OpenMementos hub repository
(README.md `configs:` + data/train-*.parquet + full/train-*.parquet), which are also read through
`datasets.load_dataset(folder, name=config, split=..., streaming=True)`: the code path of a real hub name.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mementokit.errors import ConfigError, InputError
from mementokit.io import (
    FieldMap,
    ReadStats,
    TraceRecord,
    buffered_shuffle,
    iter_rows,
    iter_traces,
    looks_like_hub_id,
    open_hub_stream,
    round_robin,
    stratify,
)

FIXTURES = Path(__file__).parent / "data"
DOMAINS = ("math", "code", "science")


def response(i: int, blocks: int = 2) -> str:
    pairs = "\n".join(
        f"<|block_start|>step {i}.{b}<|block_end|>\n<|summary_start|>s{i}.{b}<|summary_end|>" for b in range(blocks)
    )
    return f"<think>{pairs}\n</think>answer {i}"


def make_rows(domain: str, count: int, start: int = 0) -> list[dict]:
    return [
        {
            "id": f"{domain}-{start + j}",
            "problem": f"problem {start + j}",
            "response": response(start + j),
            "domain": domain,
            "source": f"src-{domain}",
            "difficulty": j % 5,
        }
        for j in range(count)
    ]


def full_columns(row: dict) -> dict:
    """The `full` config's extra columns for a row: two sentences, one block [0, 1] (inclusive), one memento."""
    return dict(row, sentences=[f"A {row['id']}.", "B."], blocks=[[0, 1]], block_summaries=[f"memento {row['id']}"])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


HUB_README = """---
license: mit
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
- config_name: full
  data_files:
  - split: train
    path: full/train-*
---
# A local copy in the layout of microsoft/OpenMementos
"""


def make_hub_folder(root: Path, *, rows_per_shard: int = 20, readme: bool = True) -> list[dict]:
    """Six shards, two per domain, stored domain after domain as the real data set is (one domain per shard)."""
    rows_all = []
    shard_domains = [d for d in DOMAINS for _ in range(2)]
    for shard, domain in enumerate(shard_domains):
        rows = make_rows(domain, rows_per_shard, start=shard * rows_per_shard)
        name = f"train-{shard:05d}-of-{len(shard_domains):05d}.parquet"
        write_parquet(root / "data" / name, rows, row_group_size=5)
        write_parquet(root / "full" / name, [full_columns(r) for r in rows], row_group_size=5)
        rows_all += rows
    if readme:
        (root / "README.md").write_text(HUB_README)
    return rows_all


@pytest.fixture(autouse=True)
def quick_stream_shutdown(monkeypatch):
    """datasets sleeps 5 s whenever a stream that reads several parquet shards at once (its shuffle) ends,
    a guard for an Arrow thread-shutdown crash (apache/arrow#45214) that tiny local files do not need."""
    import datasets

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.05)


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("OpenMementos")
    return root, make_hub_folder(root)


def ids(rows) -> list[str]:
    return [r.data["id"] if hasattr(r, "data") else r.raw["id"] for r in rows]


# ------------------------------------------------------------------------------------------------ readers


def test_jsonl_rows_come_in_file_order_with_line_origins(tmp_path):
    path = tmp_path / "traces.jsonl"
    rows = make_rows("math", 3)
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n" + json.dumps(rows[2]) + "\n")
    got = list(iter_rows(path))
    assert [r.data for r in got] == rows
    assert [r.origin for r in got] == [f"{path}:1", f"{path}:3", f"{path}:4"]  # 1-based, the blank line counted
    assert [r.index for r in got] == [0, 1, 2]


def test_gzipped_jsonl_reads_like_jsonl(tmp_path):
    rows = make_rows("code", 4)
    got = list(iter_rows(write_jsonl(tmp_path / "traces.jsonl.gz", rows)))
    assert [r.data for r in got] == rows


def test_json_list_rows_with_the_line_each_starts_on(tmp_path):
    path = tmp_path / "rows.json"
    rows = make_rows("science", 3)
    path.write_text(json.dumps(rows, indent=2))
    got = list(iter_rows(path))
    assert [r.data for r in got] == rows
    text_lines = path.read_text().splitlines()
    for row in got:  # each origin line is where that object's text begins
        assert text_lines[row.line - 1].strip() == "{"
        assert f'"id": "{row.data["id"]}"' in text_lines[row.line]


def test_json_single_object_is_one_row():
    got = list(iter_rows(FIXTURES / "memento_trace_aime2025_p5.json"))
    assert len(got) == 1
    assert got[0].data["problem_source"] == "AIME 2025 Problem 5"
    assert got[0].origin.endswith("memento_trace_aime2025_p5.json:1")


def test_empty_json_list_has_no_rows(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(" [ ] \n")
    assert list(iter_rows(path)) == []


def test_parquet_rows_with_row_number_origins(tmp_path):
    rows = make_rows("math", 23)
    path = write_parquet(tmp_path / "part.parquet", rows, row_group_size=4)
    got = list(iter_rows(path))
    assert [r.data for r in got] == rows
    assert got[7].origin == f"{path}#7" and got[7].line == 7  # 0-based row number across row groups


def test_save_to_disk_dataset(tmp_path):
    import datasets

    rows = make_rows("code", 7)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    got = list(iter_rows(tmp_path / "saved"))
    assert [r.data for r in got] == rows
    assert got[3].origin == f"{tmp_path / 'saved'}#3"


def test_save_to_disk_dataset_dict_reads_the_chosen_split(tmp_path):
    import datasets

    train, test = make_rows("math", 5), make_rows("science", 3)
    folder = tmp_path / "dict"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)}
    ).save_to_disk(str(folder))
    assert [r.data for r in iter_rows(folder)] == train
    got = list(iter_rows(folder, split="test"))
    assert [r.data for r in got] == test and got[0].origin == f"{folder}[test]#0"
    with pytest.raises(InputError, match="no split 'validation'; splits: train, test"):
        iter_rows(folder, split="validation")


def test_hub_layout_folder_is_detected_and_configs_pick_the_subfolder(hub_folder):
    root, rows = hub_folder
    default = list(iter_rows(root))
    assert [r.data for r in default] == rows  # shards in name order, rows in file order
    assert default[0].origin == f"{root}/data/train-00000-of-00006.parquet#0"
    full = list(iter_rows(root, config="full"))
    assert [r.data["id"] for r in full] == [r["id"] for r in rows]
    assert full[0].data["blocks"] == [[0, 1]] and full[0].origin.startswith(f"{root}/full/")


def test_hub_layout_without_readme_uses_the_conventional_folders(tmp_path):
    rows = make_hub_folder(tmp_path, rows_per_shard=3, readme=False)
    assert ids(iter_rows(tmp_path)) == [r["id"] for r in rows]
    assert "sentences" in next(iter(iter_rows(tmp_path, config="full"))).data
    with pytest.raises(InputError, match="no folder 'other/'"):
        iter_rows(tmp_path, config="other")


def test_unknown_config_or_split_of_a_hub_folder_names_the_choices(hub_folder):
    root, _ = hub_folder
    with pytest.raises(InputError, match="no config 'mini'; configs: default, full") as caught:
        iter_rows(root, config="mini")
    assert caught.value.path == str(root / "README.md") and caught.value.field == "configs"
    with pytest.raises(InputError, match="no split 'test'; splits: train"):
        iter_rows(root, split="test")


def test_plain_folder_of_shards_reads_every_file(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", make_rows("math", 2))
    write_parquet(tmp_path / "b.parquet", make_rows("code", 2))
    assert ids(iter_rows(tmp_path)) == ["math-0", "math-1", "code-0", "code-1"]


def test_hub_code_path_reads_a_local_folder_in_the_hub_layout(hub_folder):
    """The function a hub name goes through, `load_dataset(name, name=config, split, streaming=True)`."""
    root, rows = hub_folder
    got = list(iter_rows(root, reader="hub"))
    assert sorted(ids(got)) == sorted(r["id"] for r in rows)
    assert got[5].origin == f"{root}[train]#5"
    full = next(iter(iter_rows(root, reader="hub", config="full")))
    assert full.data["block_summaries"] and full.origin == f"{root}[full:train]#0"
    stream = open_hub_stream(str(root), config="full", split="train")
    assert "sentences" in next(iter(stream))


def test_hub_code_path_with_an_unknown_config_is_an_input_error(hub_folder):
    root, _ = hub_folder
    with pytest.raises(InputError, match="cannot open the dataset \\(config 'mini'"):
        iter_rows(root, reader="hub", config="mini")


def test_source_dispatch_by_name():
    assert looks_like_hub_id("microsoft/OpenMementos")
    assert not looks_like_hub_id("OpenMementos")
    assert not looks_like_hub_id("data/train.jsonl")
    assert not looks_like_hub_id("./microsoft/OpenMementos")


def test_an_unreachable_hub_name_is_one_input_error():
    """In a fresh process with the hub offline (no machine of ours reaches it): a clear error, not a traceback."""
    code = (
        "from mementokit.io import iter_rows\n"
        "from mementokit.errors import InputError\n"
        "try:\n    iter_rows('nobody-xyz/no-such-dataset')\n"
        "except InputError as e:\n    print('INPUTERROR', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    assert out.startswith(
        "INPUTERROR nobody-xyz/no-such-dataset: cannot open the dataset (config 'default', split 'train')"
    )


# -------------------------------------------------------------------------------- lazy, bounded reading


def test_reading_the_first_jsonl_row_does_not_read_the_rest(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as handle:
        handle.write(json.dumps(make_rows("math", 1)[0]) + "\n")
        handle.write("{ not json\n" * 200_000)  # any read past line 1 would raise
    first = next(iter_rows(path))
    assert first.data["id"] == "math-0"


def test_reading_the_first_json_list_row_does_not_read_the_rest(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "w") as handle:
        handle.write("[" + json.dumps(make_rows("math", 1)[0]) + ",\n")
        handle.write("{ not json " * 500_000)  # 5.5 MB, far past the first read window
    assert next(iter_rows(path)).data["id"] == "math-0"
    with pytest.raises(InputError, match="malformed JSON"):
        list(iter_rows(path))


def test_reading_the_first_parquet_row_does_not_decode_the_rest(tmp_path):
    rows = make_rows("math", 400)
    path = write_parquet(tmp_path / "part.parquet", rows, row_group_size=50)
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[footer_start // 2 : footer_start - 16] = os.urandom(
        footer_start - 16 - footer_start // 2
    )  # ruin later row groups
    path.write_bytes(bytes(data))
    assert next(iter_rows(path)).data == rows[0]
    with pytest.raises(InputError) as caught:
        list(iter_rows(path))
    assert caught.value.path == str(path) and caught.value.line is not None and caught.value.line > 0


def _peak_python_memory(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_memory_stays_flat_as_the_file_grows(tmp_path, kind):
    """Peak Python memory while reading everything: bounded by a row and the read window, not the file."""

    def peak_for(row_count: int) -> tuple[int, int]:
        rows = [dict(r, response=r["response"] + "x" * 10_000) for r in make_rows("math", row_count)]
        path = tmp_path / f"big-{row_count}.{kind}"
        if kind == "jsonl":
            write_jsonl(path, rows)
        else:
            path.write_text(json.dumps(rows))
        del rows
        count = 0

        def read_all():
            nonlocal count
            for _ in iter_rows(path):
                count += 1

        peak = _peak_python_memory(read_all)
        assert count == row_count
        return peak, path.stat().st_size

    small_peak, _ = peak_for(500)  # ~5 MB
    large_peak, large_size = peak_for(2_000)  # ~20 MB
    assert large_peak < 1.5 * small_peak + 100_000, (small_peak, large_peak)
    assert large_peak < large_size / 5, (large_peak, large_size)


# -------------------------------------------------------------------------------------------- fair samples


def test_a_plain_limit_on_sharded_data_sees_one_domain(hub_folder):
    """The problem fair sampling solves: storage order is one shard, one domain, at a time."""
    root, _ = hub_folder
    assert {r.data["domain"] for r in iter_rows(root, limit=30)} == {"math"}


@pytest.mark.parametrize("reader", [None, "hub"])
def test_a_shuffled_read_covers_every_domain_early(hub_folder, reader):
    root, _ = hub_folder
    # A buffer far smaller than a shard: the mixing comes from reading shuffled shards side by side.
    first = list(iter_rows(root, reader=reader, shuffle_seed=7, shuffle_buffer=8, limit=12))
    assert {r.data["domain"] for r in first} == set(DOMAINS)


@pytest.mark.parametrize("reader", [None, "hub"])
def test_a_stratified_read_covers_every_domain_in_its_first_rows(hub_folder, reader):
    root, _ = hub_folder
    first = list(iter_rows(root, reader=reader, stratify_by="domain", shuffle_buffer=8, limit=3))
    assert sorted(r.data["domain"] for r in first) == sorted(DOMAINS)


@pytest.mark.parametrize("reader", [None, "hub"])
def test_the_same_seed_gives_the_same_order_and_another_seed_another(hub_folder, reader):
    root, _ = hub_folder

    def order(seed):
        return ids(iter_rows(root, reader=reader, shuffle_seed=seed, shuffle_buffer=16))

    first = order(3)
    assert order(3) == first
    assert order(4) != first


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "disk", "folder", "hub"])
@pytest.mark.parametrize(
    "sampling", [{"shuffle_seed": 11}, {"stratify_by": "domain"}, {"shuffle_seed": 5, "stratify_by": "domain"}]
)
def test_every_row_comes_exactly_once_without_a_limit(tmp_path, hub_folder, kind, sampling):
    rows = make_rows("math", 30) + make_rows("code", 10) + make_rows("science", 20)
    options = {}
    if kind == "jsonl":
        source = write_jsonl(tmp_path / "rows.jsonl", rows)
    elif kind == "json":
        source = tmp_path / "rows.json"
        source.write_text(json.dumps(rows))
    elif kind == "parquet":
        source = write_parquet(tmp_path / "rows.parquet", rows, row_group_size=7)
    elif kind == "disk":
        import datasets

        source = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(source))
    else:
        source, rows = hub_folder
        options = {"reader": "hub"} if kind == "hub" else {}
    stats = ReadStats()
    got = ids(iter_rows(source, shuffle_buffer=16, stats=stats, **sampling, **options))
    assert sorted(got) == sorted(r["id"] for r in rows)
    assert got != [r["id"] for r in rows]  # and not in storage order
    assert stats.rows_read == stats.rows_yielded == len(rows)


def test_stratified_interleaving_follows_the_domain_proportions(tmp_path):
    rows = make_rows("math", 60) + make_rows("code", 20) + make_rows("science", 20)
    path = write_jsonl(tmp_path / "sorted_by_domain.jsonl", rows)
    first = [r.data["domain"] for r in iter_rows(path, stratify_by="domain", limit=50)]
    assert first[:3] == ["math", "code", "science"]
    counts = Counter(first)
    assert counts["math"] == 30 and counts["code"] == 10 and counts["science"] == 10


def test_iter_traces_stratifies_through_the_field_map(tmp_path):
    rows = [{"cot": response(i), "area": d} for d in DOMAINS for i in range(5)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    field_map = FieldMap().with_overrides(["response=cot", "domain=area"])
    first = list(iter_traces(path, field_map=field_map, stratify_by="domain", limit=3))
    assert [t.domain for t in first] == list(DOMAINS)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=80), st.integers(1, 20), st.integers(0, 2**32))
def test_buffered_shuffle_is_a_permutation(items, buffer_size, seed):
    import random

    assert sorted(buffered_shuffle(items, buffer_size, random.Random(seed))) == sorted(items)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers()), max_size=80), st.integers(1, 20))
def test_stratify_is_a_permutation_that_keeps_order_within_a_key(items, buffer_size):
    out = list(stratify(items, lambda item: item[0], buffer_size))
    assert sorted(out) == sorted(items)
    for key in "abcd":
        assert [i for i in out if i[0] == key] == [i for i in items if i[0] == key]
    # The first keys out are distinct while the read-ahead holds several keys.
    keys_in_buffer = list(dict.fromkeys(k for k, _ in items[:buffer_size]))
    assert [k for k, _ in out[: len(keys_in_buffer)]] == keys_in_buffer


@given(st.lists(st.lists(st.integers(), max_size=10), max_size=6))
def test_round_robin_yields_every_item_once_and_keeps_each_order(lists):
    tagged = [[(n, x) for x in xs] for n, xs in enumerate(lists)]
    out = list(round_robin([iter(t) for t in tagged]))
    assert sorted(out) == sorted(x for t in tagged for x in t)
    for n, t in enumerate(tagged):
        assert [x for x in out if x[0] == n] == t


def test_a_limit_stops_reading(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", make_rows("math", 100))
    stats = ReadStats()
    assert len(list(iter_rows(path, limit=10, stats=stats))) == 10
    assert stats.rows_read == 10 and stats.rows_yielded == 10
    assert list(iter_rows(path, limit=0)) == []
    with pytest.raises(ConfigError):
        iter_rows(path, limit=-1)


# -------------------------------------------------------------------------------------------- field mapping


def test_traces_take_the_default_field_names(tmp_path):
    rows = [
        {"problem": "p", "response": "<think>a</think>", "domain": "math", "source": "s", "difficulty": 3},
        {"prompt": "q", "cot": "<think>b</think>", "problem_source": "AIME"},
        {"prompt": "r", "full_cot": "<think>c</think>", "domain": None},
    ]
    got = list(iter_traces(write_jsonl(tmp_path / "rows.jsonl", rows)))
    assert [(t.problem, t.response, t.domain, t.source, t.difficulty) for t in got] == [
        ("p", "<think>a</think>", "math", "s", 3),
        ("q", "<think>b</think>", "unknown", "AIME", None),
        ("r", "<think>c</think>", "unknown", None, None),
    ]
    assert got[1].origin == f"{tmp_path / 'rows.jsonl'}:2" and got[1].index == 1 and got[1].raw == rows[1]


def test_the_raw_cot_fixture_maps_cot_to_the_response():
    (trace,) = iter_traces(FIXTURES / "raw_cot_openthoughts3.jsonl")
    raw = json.loads((FIXTURES / "raw_cot_openthoughts3.jsonl").read_text())
    assert trace.response == raw["cot"] and trace.problem == raw["problem"] and trace.domain == raw["domain"]


def test_field_overrides_replace_the_candidates(tmp_path):
    rows = [{"response": "not this", "answer_text": "<think>this</think>", "question": "q"}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    field_map = FieldMap().with_overrides(["response=answer_text", "problem=title,question"])
    (trace,) = iter_traces(path, field_map=field_map)
    assert trace.response == "<think>this</think>" and trace.problem == "q"
    assert FieldMap().with_overrides({"domain": "area"}).domain == ("area",)


def test_a_dotted_field_name_reaches_into_nested_rows(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "<think>x</think>"}]}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    field_map = FieldMap().with_overrides(["problem=conversations.0.value", "response=conversations.1.value"])
    (trace,) = iter_traces(path, field_map=field_map)
    assert (trace.problem, trace.response) == ("q", "<think>x</think>")


@pytest.mark.parametrize("spec", ["response", "answer=cot", "response="])
def test_a_bad_field_override_is_a_config_error(spec):
    with pytest.raises(ConfigError):
        FieldMap().with_overrides([spec])


def test_a_segments_row_gets_its_response_built():
    (trace,) = iter_traces(FIXTURES / "memento_trace_aime2025_p5.json")
    raw = json.loads((FIXTURES / "memento_trace_aime2025_p5.json").read_text())
    assert trace.source == "AIME 2025 Problem 5" and trace.raw["segments"] == raw["segments"]
    blocks = [s["text"] for s in raw["segments"] if s["type"] == "block"]
    assert trace.response.startswith("<think><|block_start|>") and trace.response.count("<|block_start|>") == len(
        blocks
    )
    for block in blocks:
        assert f"<|block_start|>{block}<|block_end|>" in trace.response
    assert trace.response.endswith(next(s["text"] for s in raw["segments"] if s["type"] == "answer"))


def test_full_config_rows_keep_their_columns_and_build_a_missing_response(hub_folder, tmp_path):
    root, _ = hub_folder
    trace = next(iter(iter_traces(root, config="full")))
    assert trace.raw["sentences"] and trace.response == trace.raw["response"]
    row = full_columns(make_rows("math", 1)[0])
    del row["response"]
    (built,) = iter_traces(write_jsonl(tmp_path / "full.jsonl", [row]))
    assert f"<|block_start|>{' '.join(row['sentences'])}<|block_end|>" in built.response
    assert f"<|summary_start|>{row['block_summaries'][0]}<|summary_end|>" in built.response


# ----------------------------------------------------------------------------------------------- bad input


def _jsonl_with(tmp_path, bad_line: str, name="rows.jsonl") -> Path:
    rows = make_rows("math", 3)
    path = tmp_path / name
    path.write_text(json.dumps(rows[0]) + "\n" + bad_line + "\n" + json.dumps(rows[2]) + "\n")
    return path


def test_a_malformed_json_line_names_the_file_and_line(tmp_path):
    path = _jsonl_with(tmp_path, '{"problem": "p", "response": ')
    with pytest.raises(InputError) as caught:
        list(iter_rows(path))
    assert (caught.value.path, caught.value.line) == (str(path), 2)
    assert str(caught.value).startswith(f"{path}:2: malformed JSON")


def test_skip_bad_skips_and_counts_a_malformed_line(tmp_path):
    path = _jsonl_with(tmp_path, "{oops")
    stats = ReadStats()
    got = list(iter_rows(path, skip_bad=True, stats=stats))
    assert ids(got) == ["math-0", "math-2"]
    assert stats.rows_read == 3 and stats.rows_yielded == 2 and stats.rows_skipped == 1
    assert stats.skipped_by_kind == {"malformed_json": 1}
    assert stats.examples[0].startswith(f"{path}:2: malformed JSON")
    assert "skipped 1 (1 malformed_json)" in stats.summary()


def test_skip_bad_without_a_stats_object_still_warns(tmp_path):
    path = _jsonl_with(tmp_path, "{oops")
    with pytest.warns(UserWarning, match="skipped 1 \\(1 malformed_json\\)"):
        assert len(list(iter_rows(path, skip_bad=True))) == 2


def test_a_line_that_is_not_an_object(tmp_path):
    path = _jsonl_with(tmp_path, "[1, 2]")
    with pytest.raises(InputError, match=f"{path}:2: expected a JSON object, got a list"):
        list(iter_rows(path))


def test_a_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"response": "ok"}\n{"response": "\xff\xfe"}\n')
    stats = ReadStats()
    assert len(list(iter_rows(path, skip_bad=True, stats=stats))) == 1
    assert stats.skipped_by_kind == {"bad_encoding": 1} and stats.examples[0].startswith(f"{path}:2: not UTF-8")


def test_a_missing_response_names_file_line_and_field(tmp_path):
    path = _jsonl_with(tmp_path, json.dumps({"problem": "p", "domain": "math"}))
    with pytest.raises(InputError) as caught:
        list(iter_traces(path))
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), 2, "response")
    assert "missing field (tried response, cot, full_cot; the row has problem, domain" in str(error)


def test_a_response_that_is_not_a_string_is_a_wrong_type(tmp_path):
    path = _jsonl_with(tmp_path, json.dumps({"problem": "p", "cot": 42}))
    with pytest.raises(InputError, match=f"{path}:2, field 'cot': expected a string, got int"):
        list(iter_traces(path))
    stats = ReadStats()
    assert len(list(iter_traces(path, skip_bad=True, stats=stats))) == 2
    assert stats.skipped_by_kind == {"wrong_type": 1} and stats.rows_yielded == 2


def test_a_problem_that_is_not_a_string_is_a_wrong_type(tmp_path):
    path = _jsonl_with(tmp_path, json.dumps({"problem": ["p"], "response": "<think>x</think>"}))
    with pytest.raises(InputError, match="field 'problem': expected a string, got list"):
        list(iter_traces(path))


def test_traces_skip_bad_counts_every_kind_and_limit_counts_traces(tmp_path):
    good = make_rows("math", 4)
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(good[0]),
                "{bad",
                json.dumps({"problem": "no response"}),
                json.dumps(good[1]),
                json.dumps({"response": 1}),
                "7",
                json.dumps(good[2]),
                json.dumps(good[3]),
            ]
        )
        + "\n"
    )
    stats = ReadStats()
    got = list(iter_traces(path, skip_bad=True, stats=stats, limit=3))
    assert ids(got) == ["math-0", "math-1", "math-2"] and [t.index for t in got] == [0, 1, 2]
    assert stats.skipped_by_kind == {"malformed_json": 1, "missing_field": 1, "wrong_type": 1, "not_an_object": 1}
    assert stats.rows_yielded == 3 and stats.rows_read == 7


def test_segments_that_do_not_pair_up_are_bad_structure(tmp_path):
    row = {"problem": "p", "segments": [{"type": "block", "block_idx": 1, "text": "a"}]}
    path = write_jsonl(tmp_path / "rows.jsonl", [row])
    with pytest.raises(InputError) as caught:
        list(iter_traces(path))
    assert caught.value.path == str(path) and caught.value.line == 1 and caught.value.field == "segments"
    assert "cannot build a response from segments" in str(caught.value)


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.parquet", "nested/missing.json", "not-a-hub-id"])
def test_a_missing_file_is_no_such_file(tmp_path, name):
    with pytest.raises(InputError, match="no such file") as caught:
        iter_rows(tmp_path / name if "/" in name else name)
    assert caught.value.path.endswith(name)


def test_an_unsupported_file_type_is_an_input_error(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n")
    with pytest.raises(InputError, match="unsupported file type"):
        iter_rows(path)


def test_a_corrupt_parquet_file_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(InputError, match="unreadable parquet file") as caught:
        list(iter_rows(path))
    assert caught.value.path == str(path)


def test_skip_bad_skips_a_corrupt_shard_and_reads_the_others(tmp_path):
    write_parquet(tmp_path / "data" / "train-00000-of-00003.parquet", make_rows("math", 3))
    (tmp_path / "data" / "train-00001-of-00003.parquet").write_bytes(b"garbage")
    write_parquet(tmp_path / "data" / "train-00002-of-00003.parquet", make_rows("code", 3))
    for sampling in ({}, {"shuffle_seed": 1}):
        stats = ReadStats()
        got = list(iter_rows(tmp_path, skip_bad=True, stats=stats, **sampling))
        assert sorted(ids(got)) == sorted(["math-0", "math-1", "math-2", "code-0", "code-1", "code-2"])
        assert stats.skipped_by_kind == {"unreadable_file": 1}
        assert stats.examples[0].startswith(f"{tmp_path}/data/train-00001-of-00003.parquet")


def test_a_truncated_gzip_file(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl.gz", make_rows("math", 500))
    path.write_bytes(path.read_bytes()[:400])
    stats = ReadStats()
    got = list(iter_rows(path, skip_bad=True, stats=stats))
    assert len(got) < 500 and stats.skipped_by_kind == {"unreadable_file": 1}
    with pytest.raises(InputError, match="cannot read past line"):
        list(iter_rows(path))


def test_malformed_json_in_a_list_names_its_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"response": "a"},\n  {"response": "b",,}\n]\n')
    stats = ReadStats()
    assert [r.data for r in iter_rows(path, skip_bad=True, stats=stats)] == [{"response": "a"}]
    assert stats.skipped_by_kind == {"malformed_json": 1}
    with pytest.raises(InputError, match=f"{path}:3: malformed JSON"):
        list(iter_rows(path))


def test_a_json_list_element_that_is_not_an_object(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"response": "a"}, 3, {"response": "b"}]')
    stats = ReadStats()
    assert len(list(iter_rows(path, skip_bad=True, stats=stats))) == 2
    assert stats.skipped_by_kind == {"not_an_object": 1} and "list element 1" in stats.examples[0]


def test_record_type_is_importable_from_the_package():
    assert TraceRecord(problem=None, response="r").domain == "unknown"


def test_standard_input_is_read_as_json_lines():
    rows = make_rows("math", 2)
    code = "from mementokit.io import iter_rows\nfor r in iter_rows('-'): print(r.origin, r.data['id'])\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        input="".join(json.dumps(r) + "\n" for r in rows),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert out.splitlines() == ["<stdin>:1 math-0", "<stdin>:2 math-1"]


def test_a_json_file_of_several_objects_reads_each_as_a_row(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('{"response": "a"}\n{"response": "b"} {"response": "c"}\n')
    assert [(r.data["response"], r.line) for r in iter_rows(path)] == [("a", 1), ("b", 2), ("c", 2)]


def test_forcing_a_reader(tmp_path):
    path = tmp_path / "rows.txt"
    write_jsonl(path, make_rows("math", 2))
    assert ids(iter_rows(path, reader="jsonl")) == ["math-0", "math-1"]
    with pytest.raises(ConfigError, match="unknown reader"):
        iter_rows(path, reader="csv")
    with pytest.raises(ConfigError, match="reads files, but"):
        iter_rows(tmp_path, reader="parquet")
