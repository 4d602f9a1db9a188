"""SFT data: chat formatting, labels, truncation, markers, export (Arrow, Parquet, card, JSONL)."""

from __future__ import annotations

import json
import random

import datasets
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_sft import short_trace, short_traces, write_jsonl
from helpers_tokenizer import build_tiny_tokenizer
from mementokit.blocks import BlockMaskingConfig, compact_mask
from mementokit.errors import ConfigError, InputError
from mementokit.sft import (
    IGNORE_INDEX,
    ChatRenderer,
    SFTTokenizer,
    chat_messages,
    export_sft_dataset,
    iter_chat_examples,
    load_sft_dataset,
)

STAGE2 = BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False)


def labelled(example) -> list[int]:
    return [t for t in example.labels if t != IGNORE_INDEX]


# ---- chat formatting ----------------------------------------------------------------------------------------
def test_chat_messages_have_no_system_turn_unless_asked():
    assert [m["role"] for m in chat_messages("p", "r")] == ["user", "assistant"]
    assert chat_messages("p", "r", system_prompt="be brief")[0] == {"role": "system", "content": "be brief"}


def test_prompt_comes_from_the_chat_template_and_ends_with_the_generation_prompt(tokenizer):
    prompt, completion = ChatRenderer(tokenizer).render(chat_messages("What is 2+2?", "<think>x</think>4"))
    assert prompt == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert completion == "<think>x</think>4<|im_end|>\n"


def test_chatml_is_written_by_hand_when_the_tokenizer_has_no_template(tmp_path):
    bare = build_tiny_tokenizer(tmp_path, chat_template=False)
    renderer = ChatRenderer(bare)
    assert not renderer.uses_template
    prompt, completion = renderer.render(chat_messages("q", "r", system_prompt="s"))
    assert prompt == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    assert completion == "r<|im_end|>\n"


def test_verbatim_keeps_the_response_even_when_the_template_rewrites_it(tokenizer):
    # A template that trims the content, as Qwen3's trims the reasoning of the final turn.
    trimming = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    messages = chat_messages("q", "  <think>\nx\n</think>\n4\n")
    _, verbatim = ChatRenderer(tokenizer, chat_template=trimming).render(messages)
    _, templated = ChatRenderer(tokenizer, chat_template=trimming, mode="template").render(messages)
    assert verbatim == "  <think>\nx\n</think>\n4\n<|im_end|>\n"
    assert templated == "<think>\nx\n</think>\n4<|im_end|>\n"


def test_chat_examples_stream_from_a_file_with_a_field_map(tmp_path):
    from mementokit.io import FieldMap

    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "q1", "cot": "r1"}, {"question": "q2", "cot": "r2"}])
    field_map = FieldMap().with_overrides(["problem=question", "response=cot"])
    examples = list(iter_chat_examples(path, field_map=field_map, system_prompt="s"))
    assert [e.messages for e in examples][1] == chat_messages("q2", "r2", system_prompt="s")
    assert examples[0].origin.endswith("t.jsonl:1")


def test_a_trace_without_a_problem_names_its_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"problem": "q", "response": "r"}, {"response": "r2"}])
    with pytest.raises(InputError, match=r"t\.jsonl:2.*problem"):
        list(iter_chat_examples(path))


# ---- tokenization and labels --------------------------------------------------------------------------------
def test_exactly_the_prompt_is_ignored_and_the_labels_decode_to_the_response(tokenizer):
    trace = short_trace(random.Random(3), blocks=3, nested=True)
    sft = SFTTokenizer(tokenizer)
    [example] = sft.tokenize(iter_chat_examples([trace]))
    prompt, _ = sft.renderer.render(example.messages)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert example.prompt_tokens == len(prompt_ids)
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert example.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert all(t != IGNORE_INDEX for t in example.labels[len(prompt_ids):])
    assert example.labels[len(prompt_ids):] == example.input_ids[len(prompt_ids):]
    # Every completion token is trained on, special tokens included: the markers and the end of turn.
    assert tokenizer.decode(labelled(example)) == trace["response"] + "<|im_end|>\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=st.text(min_size=1, max_size=40), response=st.text(max_size=80),
       system=st.one_of(st.none(), st.text(min_size=1, max_size=10)))
def test_labels_cover_exactly_the_completion_for_any_text(tokenizer, problem, response, system):
    sft = SFTTokenizer(tokenizer)
    [example] = sft.tokenize_batch(list(iter_chat_examples([{"problem": problem, "response": response}],
                                                           system_prompt=system)))
    prompt, completion = sft.renderer.render(example.messages)
    assert example.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert set(example.labels[: example.prompt_tokens]) == {IGNORE_INDEX}
    assert tokenizer.decode(labelled(example)) == completion == response + "<|im_end|>\n"


def test_batched_encoding_equals_the_tokenizers_own_call(tokenizer):
    texts = [r["response"] for r in short_traces(5, nested=True)] + ["", "plain é ≠ text"]
    assert SFTTokenizer(tokenizer).encode_texts(texts) == tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_missing_block_markers_are_added_as_single_special_tokens(tmp_path):
    bare = build_tiny_tokenizer(tmp_path, with_markers=False)
    before = len(bare)
    sft = SFTTokenizer(bare, stage=2, block_masking=STAGE2)
    assert sft.markers_added == 4 and len(bare) == before + 4
    assert all(len(bare.encode(m, add_special_tokens=False)) == 1 for m in
               ("<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>"))
    assert sft.metadata()["markers_added"] == 4


def test_stored_spans_are_the_block_state_machines_compact_mask(tokenizer):
    sft = SFTTokenizer(tokenizer, stage=2, block_masking=BlockMaskingConfig(keep_last_n_blocks=1, mask_delimiters=True))
    for example in sft.tokenize(iter_chat_examples(short_traces(6, seed=1, blocks=3, nested=True))):
        assert example.mask_spans == compact_mask(example.input_ids, sft.block_masking, sft.markers)
        assert example.mask_spans  # keep 1 of 3 blocks: something is hidden
    assert sft.stats.hidden_pairs > 0


def test_stage_one_stores_no_mask_but_still_counts_blocks(tokenizer):
    sft = SFTTokenizer(tokenizer, stage=1)
    examples = list(sft.tokenize(iter_chat_examples(short_traces(3, blocks=2))))
    assert all(e.mask_spans is None and e.blocks_completed == 2 for e in examples)
    assert "mask_spans" not in examples[0].to_row()


def test_truncation_is_counted_and_a_cut_inside_a_block_is_flagged(tokenizer):
    trace = short_trace(random.Random(0), blocks=2)
    full = next(SFTTokenizer(tokenizer).tokenize(iter_chat_examples([trace])))
    first_block_end = full.input_ids.index(tokenizer.convert_tokens_to_ids("<|block_end|>"))
    sft = SFTTokenizer(tokenizer, stage=2, block_masking=STAGE2, max_length=first_block_end)
    [cut] = sft.tokenize(iter_chat_examples([trace]))
    assert cut.num_tokens == first_block_end and cut.input_ids == full.input_ids[:first_block_end]
    assert cut.truncated_tokens == full.num_tokens - first_block_end
    assert cut.ends_inside_block and cut.mask_spans == []
    stats = sft.stats.as_dict()
    assert (stats["truncated_examples"], stats["truncated_tokens"], stats["truncated_inside_block"]) == \
        (1, cut.truncated_tokens, 1)


def test_overflow_drop_and_prompts_that_fill_the_limit_are_counted_not_kept(tokenizer):
    traces = short_traces(4, blocks=2)
    drop = SFTTokenizer(tokenizer, max_length=30, overflow="drop")
    assert list(drop.tokenize(iter_chat_examples(traces))) == []
    assert drop.stats.dropped_overflow == 4 and drop.stats.examples_in == 4
    tiny = SFTTokenizer(tokenizer, max_length=3)
    assert list(tiny.tokenize(iter_chat_examples(traces))) == []
    assert tiny.stats.dropped_prompt_too_long == 4


def test_stage_two_needs_a_config_that_evicts(tokenizer):
    with pytest.raises(ConfigError, match="block-masking config"):
        SFTTokenizer(tokenizer, stage=2)
    with pytest.raises(ConfigError, match="never evicts"):
        SFTTokenizer(tokenizer, stage=2, block_masking=BlockMaskingConfig(keep_last_n_blocks=-1, mask_delimiters=False))


# ---- export -------------------------------------------------------------------------------------------------
def export(tokenizer, out, traces, *, overwrite=False, **options):
    sft = SFTTokenizer(tokenizer, **options)
    result = export_sft_dataset(sft.tokenize(iter_chat_examples(traces)), out, metadata=sft.metadata(),
                                stats=sft.stats, tokenizer=tokenizer, overwrite=overwrite)
    return sft, result


def test_export_writes_the_same_rows_to_arrow_and_parquet_with_card_messages_and_tokenizer(tokenizer, tmp_path):
    traces = short_traces(7, seed=2, blocks=2)
    sft, result = export(tokenizer, tmp_path / "out", traces, stage=2, block_masking=STAGE2, max_length=45)
    out = result.out_dir
    arrow = datasets.load_from_disk(str(out / "arrow"))
    parquet = pq.read_table(out / "data/train-00000-of-00001.parquet").to_pylist()
    assert arrow.to_list() == parquet and len(parquet) == result.examples == 7
    assert parquet[0]["mask_spans"] == [list(s) for s in next(sft.tokenize(iter_chat_examples(traces[:1]))).mask_spans]
    messages = [json.loads(line) for line in (out / "messages.jsonl").read_text().splitlines()]
    assert [m["messages"][1]["content"] for m in messages] == [t["response"] for t in traces]
    metadata = json.loads((out / "memento_sft.json").read_text())
    assert metadata["stage"] == 2 and metadata["mask_delimiters"] is False and metadata["keep_last_n_blocks"] == 0
    assert metadata["statistics"]["truncated_examples"] == sum(r["truncated_tokens"] > 0 for r in parquet)
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "mask_delimiters: False" in card and "| examples | 7 |" in card
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    loaded, loaded_metadata = load_sft_dataset(out)
    assert len(loaded) == 7 and loaded_metadata["block_masking"] == STAGE2.to_dict()
    # The hub layout loads with the datasets library's own parquet builder too.
    hub = datasets.load_dataset("parquet", data_files=str(out / "data/*.parquet"), split="train",
                                cache_dir=str(tmp_path / "cache"))
    assert hub["input_ids"] == arrow["input_ids"]


def test_export_of_nothing_still_writes_parquet_and_the_card_that_says_why(tokenizer, tmp_path):
    _, result = export(tokenizer, tmp_path / "out", short_traces(2), max_length=3)
    assert result.examples == 0 and "arrow" not in result.files  # datasets cannot reload an empty save_to_disk
    loaded, metadata = load_sft_dataset(tmp_path / "out")
    assert len(loaded) == 0 and metadata["statistics"]["dropped_prompt_too_long"] == 2
    assert "| dropped: prompt alone fills max length | 2 |" in (tmp_path / "out" / "README.md").read_text()


def test_export_refuses_a_non_empty_folder_and_leaves_nothing_behind_on_failure(tokenizer, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        export(tokenizer, tmp_path / "out", short_traces(1))
    sft = SFTTokenizer(tokenizer)
    with pytest.raises(InputError, match="not an SFT export"):
        export_sft_dataset(sft.tokenize(iter_chat_examples(short_traces(1))), tmp_path / "out",
                           metadata=sft.metadata(), overwrite=True)
    assert (tmp_path / "out" / "keep.txt").is_file()
    export(tokenizer, tmp_path / "prev", short_traces(1))
    _, again = export(tokenizer, tmp_path / "prev", short_traces(3), overwrite=True)  # an earlier export: replaced
    assert again.examples == 3

    def failing():  # a reader error half-way through the stream
        yield from iter_chat_examples(short_traces(2))
        raise InputError("boom", path="t.jsonl", line=3)

    with pytest.raises(InputError, match="boom"):
        export_sft_dataset(sft.tokenize(failing()), tmp_path / "new", metadata=sft.metadata())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "prev"]
