"""Speed of SFT data preparation and of stage-2 training steps (prints figures; not a test).

    /work/venv/bin/python benchmarks/bench_sft.py [--traces 100] [--repeat 3] [--lengths 1024 2048] [--threads 1]

1. Tokenizing and masking: SFTTokenizer (chat template, prompt and completion encoded in batched `tokenizers`
   calls, labels, the block state machine's compact mask, statistics) against the plain `tokenizers` batch
   encode of the same text (prompt + completion): traces/s, tokens/s and the ratio. Stage 1 (no mask) is shown
   too, so the mask's own cost is visible.
2. Collation: expanding the compact mask into the 4-D additive mask vs padding alone.
3. Training step (forward + backward + AdamW, CPU) at the same length: stage 2 (4-D float mask) against plain
   causal (2-D padding mask, which SDPA turns into its fused causal kernel) and against the same causal mask
   given as a 4-D float tensor (so the cost of the mask's content and of the 4-D path are told apart).

Synthetic OpenMementos-shaped traces (mementokit.analysis.synth: ~9 blocks of ~3,750 chars, ~45K chars per
trace); a byte-level BPE with 8,192 ids trained here on them (no hub), with the ChatML template and the markers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from itertools import islice

if "--threads" in sys.argv:  # thread pools read these at import
    _threads = sys.argv[sys.argv.index("--threads") + 1]
else:
    _threads = "1"
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_name, _threads)

import numpy as np  # noqa: E402 (thread counts are set before these imports)
import torch  # noqa: E402 (thread counts are set before these imports)

from mementokit.analysis.synth import synthetic_rows  # noqa: E402 (thread counts are set before these imports)
from mementokit.blocks import BlockMaskingConfig  # noqa: E402 (thread counts are set before these imports)
from mementokit.sft import MementoCollator, SFTTokenizer, iter_chat_examples  # noqa: E402 (thread counts are set before these imports)

MARKERS = ("<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MASKING = BlockMaskingConfig(keep_last_n_blocks=0, mask_delimiters=False)


def build_tokenizer(rows: list[dict], vocab_size: int = 8192):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator((r["response"] for r in rows[:30]), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIALS + MARKERS], special_tokens=True
    )
    tokenizer.add_tokens([AddedToken("assistant", special=False, normalized=False)])
    tokenizer.chat_template = CHATML
    with tempfile.TemporaryDirectory() as folder:  # round trip, as a user's tokenizer would be loaded
        tokenizer.save_pretrained(folder)
        return PreTrainedTokenizerFast.from_pretrained(folder)


def best_of(repeat: int, function) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - start)
    return best, value


def bench_tokenizing(tokenizer, rows: list[dict], repeat: int) -> list:
    backend = tokenizer.backend_tokenizer
    sft1 = SFTTokenizer(tokenizer, stage=1)
    texts = [p + c for p, c in (sft1.renderer.render(e.messages) for e in iter_chat_examples(rows))]

    def plain():
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]

    def ours(stage: int):
        sft = SFTTokenizer(tokenizer, stage=stage, block_masking=MASKING if stage == 2 else None)
        return list(sft.tokenize(iter_chat_examples(rows), batch_size=64))

    baseline, plain_ids = best_of(repeat, plain)
    stage1, _ = best_of(repeat, lambda: ours(1))
    stage2, examples = best_of(repeat, lambda: ours(2))
    tokens = sum(e.num_tokens for e in examples)
    plain_tokens = sum(len(x) for x in plain_ids)
    n = len(rows)
    chars = sum(len(t) for t in texts)
    print(
        f"\n1. Tokenizing and masking: {n} traces, {chars / n:,.0f} chars and {tokens / n:,.0f} tokens per trace "
        f"(plain encode of the joined text: {plain_tokens / n:,.0f}), "
        f"{os.environ['RAYON_NUM_THREADS']} tokenizer thread(s)"
    )
    print(f"  {'':<44}{'traces/s':>10}{'M tokens/s':>12}{'time vs plain':>15}")
    for label, seconds in (
        ("plain tokenizers encode_batch_fast (baseline)", baseline),
        ("SFTTokenizer stage 1 (labels, stats)", stage1),
        ("SFTTokenizer stage 2 (+ compact masks)", stage2),
    ):
        print(f"  {label:<44}{n / seconds:>10,.1f}{tokens / seconds / 1e6:>12.2f}{seconds / baseline:>14.2f}x")
    spans = sum(len(e.mask_spans) for e in examples)
    print(
        f"  compact mask: {spans / n:.1f} spans per trace, {spans * 3 * 4 / n:,.0f} bytes per trace as int32 "
        f"(a dense [L, L] bool mask would be {np.mean([e.num_tokens**2 for e in examples]) / 1e6:,.0f} MB)"
    )
    return examples


def bench_collation(examples, length: int, repeat: int) -> None:
    rows = [e.to_row() for e in examples[:4]]
    stage2 = MementoCollator(pad_token_id=0, stage=2, max_length=length)
    stage1 = MementoCollator(pad_token_id=0, stage=1, max_length=length)
    t2, _ = best_of(repeat, lambda: stage2(rows))
    t1, _ = best_of(repeat, lambda: stage1(rows))
    print(
        f"  batch of 4 x {length:,} tokens: stage 2 {t2 * 1e3:7.1f} ms, padding only {t1 * 1e3:6.1f} ms "
        f"({t2 / t1:,.0f}x)"
    )


def tiny_model(vocab_size: int, attn: str):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )
    return Qwen3ForCausalLM._from_config(config, attn_implementation=attn).train()


def bench_training(examples, vocab_size: int, lengths: list[int], repeat: int) -> None:
    print("\n3. Training step on CPU (forward + backward + AdamW; Qwen3-style 2 layers, hidden 128, batch 1)")
    print(
        f"  {'length':>7} {'attention':>9} {'causal 2-D':>12} {'causal 4-D':>12} {'stage 2 4-D':>12} "
        f"{'stage 2 / causal':>17}"
    )
    example = max(examples, key=lambda e: e.num_tokens)
    for length in lengths:
        if example.num_tokens < length:
            print(f"  {length:>7} skipped: the longest trace has {example.num_tokens:,} tokens")
            continue
        row = example.to_row()
        stage2 = MementoCollator(pad_token_id=0, stage=2, max_length=length)([row])
        stage1 = MementoCollator(pad_token_id=0, stage=1, max_length=length)([row])
        causal4d = MementoCollator(pad_token_id=0, stage=2, max_length=length)([{**row, "mask_spans": []}])
        for attn in ("sdpa", "eager"):
            model = tiny_model(vocab_size, attn)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step(batch, model=model, optimizer=optimizer):
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            times = {}
            for label, batch in (("causal 2-D", stage1), ("causal 4-D", causal4d), ("stage 2", stage2)):
                step(batch)  # warm-up
                times[label], _ = best_of(repeat, lambda b=batch: step(b))
            print(
                f"  {length:>7} {attn:>9} {times['causal 2-D'] * 1e3:>9.0f} ms {times['causal 4-D'] * 1e3:>9.0f} ms "
                f"{times['stage 2'] * 1e3:>9.0f} ms {times['stage 2'] / times['causal 2-D']:>16.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and tokenizers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = list(islice(synthetic_rows(args.traces, seed=0), args.traces))
    tokenizer = build_tokenizer(rows)
    examples = bench_tokenizing(tokenizer, rows, args.repeat)
    print("\n2. Collation (compact mask -> 4-D additive float mask)")
    for length in args.lengths:
        bench_collation(examples, length, args.repeat)
    bench_training(examples, len(tokenizer), args.lengths, args.repeat)


if __name__ == "__main__":
    main()
