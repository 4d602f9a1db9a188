"""The vLLM plugin's parts that need no vLLM: version check, config sources, flag mapping, the CLI's clear error.
(The plugin itself is tested in tests_vllm/, in the vLLM environment.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mementokit.blocks import BlockMaskingConfig
from mementokit.errors import ConfigError
from mementokit.vllm_plugin import check_vllm_version
from mementokit.vllm_plugin.config import request_config, server_config
from mementokit.vllm_plugin.launch import vllm_server_command

BASE = {"enable": True, "keep_last_n_blocks": 0, "mask_delimiters": False}


@pytest.mark.parametrize("version", ["0.32.0", "0.32.1+cpu", "0.32.3"])
def test_version_check_accepts_the_0_32_series(version):
    assert check_vllm_version(version) == version


@pytest.mark.parametrize("version", ["0.31.2", "0.33.0", "0.13.0", "1.32.0"])
def test_version_check_refuses_other_releases_clearly(version):
    with pytest.raises(ConfigError, match=f"supports vLLM 0.32.x only.*{version}"):
        check_vllm_version(version)


def test_server_config_from_additional_config():
    assert server_config({}) is None
    assert server_config({"block_masking": BASE}) == BlockMaskingConfig.from_dict(BASE)
    assert server_config(json.dumps({"block_masking": BASE})).keep_last_n_blocks == 0
    with pytest.raises(ConfigError, match="unknown key"):
        server_config({"block_masking": {**BASE, "keep": 1}})
    with pytest.raises(ConfigError, match="restart_mode is not supported"):
        server_config({"block_masking": {**BASE, "restart_mode": True}})


def test_request_overrides_flat_or_nested_and_booleans_from_vllm_xargs():
    server = BlockMaskingConfig.from_dict(BASE)
    assert request_config(server, None) is server
    assert request_config(server, {"force": [1, 2]}) is server  # other extra args are not ours
    flat = request_config(server, {"keep_last_n_blocks": 1, "mask_delimiters": 1})  # vllm_xargs: true -> 1
    assert (flat.keep_last_n_blocks, flat.mask_delimiters) == (1, True)
    nested = request_config(server, {"block_masking": json.dumps({"max_block_tokens": 64, "debug": "true"})})
    assert (nested.max_block_tokens, nested.debug, nested.keep_last_n_blocks) == (64, True, 0)
    for bad in ({"block_masking": "{"}, {"block_masking": [1]}, {"block_masking": {"keep": 1}},
                {"mask_delimiters": 2}):
        with pytest.raises(ConfigError):
            request_config(server, bad)


def test_serve_flags_map_onto_vllm_server_arguments():
    config = BlockMaskingConfig.from_dict(BASE)
    argv = vllm_server_command(model="m", block_masking=config, port=9000, max_batch_size=8, max_cache_tokens=1000,
                               max_model_len=4096, api_key="k", python="py")
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(argv[3::2], argv[4::2]))
    assert json.loads(argv[argv.index("--additional-config") + 1]) == {"block_masking": config.to_dict()}
    assert {"--no-enable-prefix-caching", "--no-async-scheduling"} <= set(argv)
    assert argv[argv.index("--max-num-seqs") + 1] == "8"
    assert argv[argv.index("--num-gpu-blocks-override") + 1] == str(-(-1000 // 32) + 1)
    assert pairs.get("--model") == "m" and argv[argv.index("--max-model-len") + 1] == "4096"


def test_memento_serve_engine_vllm_without_vllm_is_one_clear_error(tmp_path):
    pytest.importorskip("typer")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here; this checks the message users without it get")
    except ImportError:
        pass
    model = tmp_path / "model"
    model.mkdir()
    done = subprocess.run([sys.executable, "-m", "mementokit", "serve", "--engine", "vllm", "--model", str(model),
                           "--block-masking", json.dumps(BASE)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "needs vLLM" in done.stderr and "vllm extra" in done.stderr
