"""`memento demo-model`: a small random model and tokenizer, built offline, to try every command with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mementokit.cli.console import stderr, stdout
from mementokit.cli.options import quiet_libraries

OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", metavar="DIR",
    help="Folder to write (created).")]
VocabSizeOpt = Annotated[int, typer.Option(
    "--vocab-size", metavar="N", min=300,
    help="BPE vocabulary size (before the special tokens).")]


def register(app: typer.Typer) -> None:
    @app.command("demo-model")
    def demo_model(
        out: OutOpt = Path("demo-model"),
        vocab_size: VocabSizeOpt = 4096,
        seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the random weights.")] = 0,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
    ) -> None:
        """Build a small random-weight Qwen3-architecture model and a tokenizer, offline, in seconds.

        The tokenizer is byte-level BPE trained on the sample shipped with mementokit, with the four block
        markers, <think>, </think> and ChatML tokens as special tokens and the Memento chat template (ChatML
        without a system prompt). The weights are random, so generated text is noise; every command that takes
        --model or --tokenizer runs on it as on a real checkpoint.

        Examples:

            memento demo-model --out demo-model

            memento generate --model demo-model --prompt "What is 2 + 2?" --max-new-tokens 32
        """
        from mementokit.demo import write_demo_model

        quiet_libraries()
        with stderr.status("training the tokenizer and writing the model"):
            folder = write_demo_model(out, vocab_size=vocab_size, seed=seed, overwrite=overwrite)
        stdout.print(f"demo model written to {folder}/ (tokenizer, config.json, model.safetensors, demo.json)",
                     highlight=False)
