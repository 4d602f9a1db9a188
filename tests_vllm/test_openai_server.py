"""vLLM's own OpenAI server with the plugin (started as `memento serve --engine vllm` starts it), through the
official openai client: streaming, a per-request override in vllm_xargs, and the memento counters in /metrics."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers_vllm import BASE, load_hf

from mementokit.blocks import BlockMaskingConfig, resolve_marker_ids
from mementokit.generate import BlockMaskedGenerator, SamplingParams
from mementokit.vllm_plugin.launch import vllm_server_command

PROMPT = ("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n<think><|block_start|>First I add "
          "the two numbers together carefully.<|block_end|><|summary_start|>2 + 2 = 4<|summary_end|>"
          "<|block_start|>Check it again by counting.<|block_end|><|summary_start|>yes<|summary_end|>")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    port = _free_port()
    command = vllm_server_command(model=str(model_dir), block_masking=BlockMaskingConfig.from_dict(BASE), port=port,
                                  dtype="float32", max_model_len=512, max_cache_tokens=1024, max_batch_size=4,
                                  log_level="warning", python=sys.executable,
                                  extra_args=["--enforce-eager", "--gpu-memory-utilization", "0.2"])
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            _get(base + "/health")
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"vLLM server did not start:\n{log.read_text()[-4000:]}") from None
            time.sleep(1)
    yield base
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def reference(model_dir):
    model, tokenizer = load_hf(model_dir)
    return model, tokenizer, resolve_marker_ids(tokenizer)


def _stream_completion(client, model: str, prompt_ids: list[int], xargs: dict | None) -> list[int]:
    extra = {"skip_special_tokens": False, "return_token_ids": True, "ignore_eos": True}
    if xargs is not None:
        extra["vllm_xargs"] = xargs
    stream = client.completions.create(model=model, prompt=prompt_ids, max_tokens=12, temperature=0.0,
                                       stream=True, extra_body=extra)
    ids: list[int] = []
    chunks = 0
    for chunk in stream:
        chunks += 1
        for choice in chunk.choices:
            ids.extend(getattr(choice, "token_ids", None) or [])
    assert chunks > 2  # streamed, not one block
    return ids


KEEP1 = {"keep_last_n_blocks": 1, "mask_delimiters": True}


@pytest.mark.parametrize(("xargs", "override"), [
    (None, None),
    (KEEP1, KEEP1),  # flat keys, as with the embedded `memento serve`
    ({"block_masking": json.dumps({"keep_last_n_blocks": 1})}, {"keep_last_n_blocks": 1}),  # one JSON object
])
def test_streaming_completion_equals_mementokit_generator(server, reference, xargs, override):
    from openai import OpenAI

    model, tokenizer, _ = reference
    client = OpenAI(base_url=server + "/v1", api_key="none")
    served = client.models.list().data[0].id
    prompt_ids = tokenizer.encode(PROMPT, add_special_tokens=False)
    got = _stream_completion(client, served, prompt_ids, xargs)
    config = BlockMaskingConfig.from_dict({**BASE, **(override or {})})
    expected = BlockMaskedGenerator(model, tokenizer, config).generate(
        prompt_ids, SamplingParams(max_new_tokens=12, ignore_eos=True)).token_ids
    assert got == expected


def test_chat_streaming_and_memento_counters_in_metrics(server):
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="none")
    served = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=served, messages=[{"role": "user", "content": "Add 2 and 2."}], max_tokens=8, temperature=0.0,
        stream=True, extra_body={"skip_special_tokens": False, "ignore_eos": True})
    roles = [c.choices[0].delta.role for c in stream if c.choices and c.choices[0].delta.role]
    assert roles == ["assistant"]
    metrics = _get(server + "/metrics")
    values = {}
    for line in metrics.splitlines():
        if line.startswith("memento:") and "{" in line:
            name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
            values[name] = values.get(name, 0.0) + value
    assert values.get("memento:compactions_total", 0) >= 2  # the two prompt blocks of each completion
    assert values.get("memento:evicted_tokens_total", 0) > 0
    assert "vllm:kv_cache_usage_perc" in metrics


def test_bad_override_is_http_400(server):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="none")
    served = client.models.list().data[0].id
    with pytest.raises(BadRequestError, match="unknown key"):
        client.completions.create(model=served, prompt="hi", max_tokens=2,
                                  extra_body={"vllm_xargs": {"block_masking": json.dumps({"keep": 1})}})
