import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Test helpers (tiny tokenizer and model builders) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

# No time limits per example (the machines are shared and noisy). Under CI the examples are derandomized so a
# run is reproducible; locally they stay random, to keep finding new cases.
settings.register_profile("local", deadline=None, print_blob=True)
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "local")


# ----- fixtures shared by several test modules (each module gets its own instance) --------------------------------
MEMENTO_MASKING = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The tiny local tokenizer (helpers_tokenizer), ChatML template and the four block markers included."""
    from helpers_tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def markers(tokenizer):
    """The tokenizer's marker ids under the default Memento block masking."""
    from mementokit.blocks import BlockMaskingConfig, resolve_marker_ids

    return resolve_marker_ids(tokenizer, BlockMaskingConfig.load(MEMENTO_MASKING))


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny random Qwen3-architecture model over the tokenizer's vocabulary."""
    from helpers_models import build_tiny_model

    return build_tiny_model("qwen3", len(tokenizer))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and the machine's cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
