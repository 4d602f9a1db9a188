"""The conversion on its own: flattening top-k by probability mass, bad intermediate rows, the parquet layout."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from helpers_cli import invoke
from mementokit.distill import convert, flatten_top_logprobs, validate_parquet
from mementokit.distill.convert import FlatTopLogprobs
from mementokit.distill.logprobs import TeacherError, assistant_message
from mementokit.errors import InputError


def sorted_rows(probs: np.ndarray) -> np.ndarray:
    return np.log(-np.sort(-probs, axis=1))


@st.composite
def top_k(draw):
    t, k = draw(st.integers(1, 8)), draw(st.integers(1, 6))
    raw = draw(arrays(np.float64, (t, k + 1), elements=st.floats(1e-3, 1.0)))
    probs = raw / raw.sum(axis=1, keepdims=True)  # a full distribution over k + 1 outcomes; we see the top k
    order = np.argsort(-probs, axis=1)[:, :k]
    logprobs = np.log(np.take_along_axis(probs, order, axis=1))
    ids = draw(arrays(np.int64, (t, k), elements=st.integers(0, 999), unique=True))
    return logprobs, ids


@given(top_k(), st.floats(0.05, 1.0))
def test_flatten_keeps_each_rows_head_until_the_mass_is_reached(data, threshold):
    logprobs, ids = data
    flat = flatten_top_logprobs(logprobs, ids, threshold)
    t, k = logprobs.shape
    assert flat.shape == (t, k) and np.all(np.diff(flat.token_idx) >= 0)
    for row in range(t):
        kept = flat.token_idx == row
        n = int(kept.sum())
        assert n >= 1
        assert flat.token_id[kept].tolist() == ids[row, :n].tolist()  # the most likely first, in order
        mass = np.exp(logprobs[row, :n]).sum()
        if n < k:  # stopped: the mass was reached with n, not with n - 1
            assert mass >= threshold - 1e-12 and np.exp(logprobs[row, :n - 1]).sum() < threshold
        else:  # all kept: the mass was reached only at the end, or never
            assert np.exp(logprobs[row, :k - 1]).sum() < threshold
    dense_lp, dense_id = flat.reconstruct()
    assert np.allclose(dense_lp[dense_id >= 0], logprobs[dense_id >= 0].astype(np.float32))
    assert np.all(dense_lp[dense_id < 0] == -1000.0)


def test_flatten_keeps_every_entry_when_the_mass_never_reaches_the_threshold():
    logprobs = sorted_rows(np.array([[0.3, 0.2, 0.1], [0.9, 0.05, 0.01], [0.5, 0.3, 0.1]]))
    ids = np.array([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    flat = flatten_top_logprobs(logprobs, ids, 0.99)
    # upstream kept only the top-1 of rows that never reach 0.99; all three are kept here
    assert flat.token_idx.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    flat = flatten_top_logprobs(logprobs, ids, 0.8)
    assert flat.token_idx.tolist() == [0, 0, 0, 1, 2, 2]
    assert flat.token_id.tolist() == [5, 6, 7, 8, 11, 12]


def test_flatten_orders_unsorted_rows_and_ignores_padding():
    logprobs = np.array([[np.log(0.1), np.log(0.7), np.log(0.15)], [np.log(0.6), np.log(0.3), -np.inf]])  # a pad
    ids = np.array([[1, 2, 3], [4, 5, -1]])
    flat = flatten_top_logprobs(logprobs, ids, 1.0)
    assert flat.token_id.tolist() == [2, 3, 1, 4, 5] and flat.token_idx.tolist() == [0, 0, 0, 1, 1]


def row(assistant: dict, metadata: dict | None = None) -> dict:
    return {"messages": [{"role": "system", "content": "Be brief.", "token_ids": None, "logprobs": None},
                         {"role": "user", "content": "What is 2+2?", "token_ids": None, "logprobs": None},
                         {"role": "assistant", **assistant}],
            "system_prompt": "Be brief.", "metadata": metadata if metadata is not None else {"sample_idx": 0},
            "type": "memory_distillation"}


def exact_assistant(ids: list[int], k: int = 2) -> dict:
    content = [{"token": f"token_id:{t}", "logprob": -0.1, "token_id": t,
                "top_logprobs": [{"token": f"token_id:{t + j}", "logprob": -0.1 - j, "token_id": t + j}
                                 for j in range(k)]} for t in ids]
    return {"content": "4", "token_ids": ids, "logprobs": {"content": content}}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("broken", "field", "reason"), [
    (row({"content": "4", "token_ids": [5], "logprobs": None}), "messages[2].logprobs", "has no logprobs"),
    (row({**exact_assistant([5, 6]), "token_ids": [5]}), "messages[2].token_ids", "1 token ids but 2 logprob rows"),
    (row(exact_assistant([5, 99999])), "messages[2].token_ids", "outside the tokenizer"),
    (row(exact_assistant([5]), metadata={}), "metadata", "non-empty"),
    ({"messages": "hello"}, "messages", "no messages list"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, tokenizer, broken, field, reason):
    source = write(tmp_path / "in.jsonl", [row(exact_assistant([5, 6])), broken])
    with pytest.raises(InputError) as info:
        convert(source, tokenizer, tmp_path / "out.parquet")
    assert (info.value.path, info.value.line, info.value.field) == (str(source), 2, field)
    assert reason in info.value.reason
    report = convert(source, tokenizer, tmp_path / "out.parquet", skip_bad=True)
    assert (report["conversations"], report["skipped"]) == (1, 1)
    assert not (tmp_path / "out.parquet.tmp").exists()


def test_not_json_is_skipped_and_counted_too(tmp_path, tokenizer):
    source = tmp_path / "in.jsonl"
    good = [json.dumps(row(exact_assistant([t]))) for t in (5, 7)]
    source.write_text(good[0] + "\n{oops\n" + good[1] + "\n")
    with pytest.raises(InputError, match=":2: not valid JSON"):
        convert(source, tokenizer, tmp_path / "out.parquet")
    result = invoke("distill", "convert", source, "-t", tokenizer.name_or_path, "--out", tmp_path / "o.parquet",
                    "--skip-bad", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["skipped"] == 1


def test_the_written_file_is_validated(tmp_path, tokenizer):
    source = write(tmp_path / "in.jsonl", [row(exact_assistant([5, 6, 7], k=3))])
    report = convert(source, tokenizer, tmp_path / "out.parquet", min_prob_mass=0.5)
    assert report["assistant_tokens"] == 3 and report["file_bytes"] > 0
    table = pq.read_table(tmp_path / "out.parquet")
    messages = table.column("messages").to_pylist()[0]
    assert messages[1]["token_ids"] == tokenizer.encode("What is 2+2?", add_special_tokens=False)
    top = messages[2]["top_logprobs"]
    assert top["shape"] == [3, 3] and top["token_idx"] == [0, 1, 2]  # exp(-0.1) = 0.905 >= 0.5: the top-1 only
    assert validate_parquet(tmp_path / "out.parquet", len(tokenizer))["entries"] == 3
    with pytest.raises(InputError, match="outside the vocabulary of 6"):
        validate_parquet(tmp_path / "out.parquet", 6)


def test_server_answers_are_read_exactly():
    vllm = {"choices": [{"message": {"content": "hi"}, "token_ids": [3, 9],
                         "logprobs": {"content": [
                             {"token": "token_id:3", "logprob": -0.5,
                              "top_logprobs": [{"token": "token_id:3", "logprob": -0.5},
                                               {"token": "token_id:4", "logprob": -1.5}]},
                             {"token": "token_id:9", "logprob": -0.1,
                              "top_logprobs": [{"token": "token_id:9", "logprob": -0.1},
                                               {"token": "token_id:2", "logprob": -3.0}]}]}}]}
    message = assistant_message(vllm, 2)
    assert message["token_ids"] == [3, 9]
    assert [[t["token_id"] for t in r["top_logprobs"]] for r in message["logprobs"]["content"]] == [[3, 4], [9, 2]]
    with pytest.raises(TeacherError, match="fewer than the 3 asked"):
        assistant_message(vllm, 3)
    vllm["choices"][0]["token_ids"] = [3, 8]
    with pytest.raises(TeacherError, match="disagrees"):
        assistant_message(vllm, 2)


def test_tokasaurus_fingerprint_is_unpacked():
    import base64

    def pack(values, dtype):
        return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()

    fingerprint = json.dumps({"completion_ids": [[7, 1]], "packed_chosen_logprobs": [pack([-0.2, -0.3], np.float32)],
                              "packed_topk_indices": [pack([[7, 4], [1, 0]], np.int32)],
                              "packed_topk_logprobs": [pack([[-0.2, -2.0], [-0.3, -1.6]], np.float32)]})
    response = {"choices": [{"message": {"content": "ok"}, "logprobs": None}], "system_fingerprint": fingerprint}
    message = assistant_message(response, 2)
    assert message["token_ids"] == [7, 1]
    rows = message["logprobs"]["content"]
    assert [[t["token_id"] for t in r["top_logprobs"]] for r in rows] == [[7, 4], [1, 0]]
    assert rows[1]["top_logprobs"][1]["logprob"] == pytest.approx(-1.6)


def test_flat_reconstruct_matches_cartridges_layout():
    flat = FlatTopLogprobs(token_idx=np.array([0, 0, 2]), token_id=np.array([4, 5, 6], np.int32),
                           logprobs=np.array([-0.1, -2.0, -0.3], np.float32), shape=(3, 2))
    lp, ids = flat.reconstruct()
    assert ids.tolist() == [[4, 5], [-1, -1], [6, -1]]
    assert lp[1].tolist() == [-1000.0, -1000.0]


def test_metadata_of_clashing_types_is_an_input_error(tmp_path, tokenizer):
    rows = [row(exact_assistant([5]), metadata={"sample_idx": 0, "note": "a"}),
            row(exact_assistant([6]), metadata={"sample_idx": 1, "note": 3})]
    with pytest.raises(InputError, match="field 'metadata': metadata values of different types"):
        convert(write(tmp_path / "in.jsonl", rows), tokenizer, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()
