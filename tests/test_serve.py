"""`memento serve` through the official openai client against a real uvicorn server on 127.0.0.1 (tiny models)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from helpers_serve import MASKING, metric, running, tiny_server
from mementokit.blocks import BlockMaskingConfig
from mementokit.generate import dense_reference_logits

BLOCK = "<|block_start|>{}<|block_end|><|summary_start|>{}<|summary_end|>"
REASONING = ("First I add the two numbers and check the carry digit by digit, then I compare the result with "
             "an estimate to make sure nothing went wrong along the way.")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    return tiny_server(tmp_path_factory.mktemp("serve"), max_batch_size=4, max_cache_tokens=2048)


@pytest.fixture(scope="module")
def base_url(server):
    with running(server) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def root(base_url):
    return base_url.removesuffix("/v1")


def memento_prompt(tokenizer, blocks: int = 3, tail: str = " So") -> list[int]:
    """A ChatML prompt whose assistant part already holds `blocks` completed blocks (each evicted at its SE)."""
    text = "<|im_start|>user\nWhat is 17 + 25?<|im_end|>\n<|im_start|>assistant\n<think>"
    text += "".join(BLOCK.format(f"{REASONING} Step {i}.", f"Step {i} done.") for i in range(blocks)) + tail
    return tokenizer.encode(text, add_special_tokens=False)


# ----- the endpoints ------------------------------------------------------------------------------------------
def test_chat_and_completions_answer_and_streams_carry_the_same_text(client, server):
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 12
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12

    completion = client.completions.create(model="tiny", prompt="The answer is", max_tokens=8, temperature=0)
    assert completion.object == "text_completion" and completion.usage.completion_tokens == 8
    pieces = client.completions.create(model="tiny", prompt="The answer is", max_tokens=8, temperature=0,
                                       stream=True)
    assert "".join(c.choices[0].text for c in pieces) == completion.choices[0].text


def test_n_choices_interleave_with_their_index_and_seeded_sampling_repeats(client):
    kwargs = dict(model="tiny", prompt="Count:", max_tokens=6, temperature=1.0, seed=7, n=3)
    first = client.completions.create(**kwargs)
    again = client.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert first.usage.completion_tokens == 18
    seen = {}
    for chunk in client.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            seen[choice.index] = seen.get(choice.index, "") + choice.text
    assert [seen[i] for i in range(3)] == [c.text for c in first.choices]


def test_markers_stay_visible_unless_skip_special_tokens(client, server):
    ids = memento_prompt(server.tokenizer, blocks=1)
    markers = server.engine.markers
    bias = {str(markers.block_start): 100}  # the model must write <|block_start|> first
    kept = client.completions.create(model="tiny", prompt=ids, max_tokens=2, temperature=0, logit_bias=bias)
    hidden = client.completions.create(model="tiny", prompt=ids, max_tokens=2, temperature=0, logit_bias=bias,
                                       extra_body={"skip_special_tokens": True})
    assert kept.choices[0].text.startswith("<|block_start|>")
    assert "<|block_start|>" not in hidden.choices[0].text


def test_stop_strings_and_stop_token_ids_end_the_text(client, server):
    base = client.completions.create(model="tiny", prompt="Once upon", max_tokens=12, temperature=0,
                                     extra_body={"return_token_ids": True})
    text, ids = base.choices[0].text, base.choices[0].model_extra["token_ids"]
    stop = text[3:6]
    cut = client.completions.create(model="tiny", prompt="Once upon", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].model_extra["stop_reason"] == stop
    assert cut.choices[0].text == text[: text.find(stop)]
    kept = client.completions.create(model="tiny", prompt="Once upon", max_tokens=12, temperature=0, stop=stop,
                                     extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].text == text[: text.find(stop) + len(stop)]
    by_id = client.completions.create(model="tiny", prompt="Once upon", max_tokens=12, temperature=0,
                                      extra_body={"stop_token_ids": [ids[4]], "return_token_ids": True})
    assert by_id.choices[0].model_extra["token_ids"] == ids[: ids.index(ids[4]) + 1]
    assert by_id.choices[0].model_extra["stop_reason"] == ids[4]
    held = client.completions.create(model="tiny", prompt="Once upon", max_tokens=12, temperature=0,
                                     extra_body={"stop_token_ids": [ids[0]], "min_tokens": 3})
    assert held.usage.completion_tokens >= 3


# ----- logprobs and ids ---------------------------------------------------------------------------------------
def test_logprobs_of_a_prompt_holding_completed_blocks_equal_a_dense_mask_forward(client, server, root):
    tokenizer, model = server.tokenizer, server.engine.model
    ids = memento_prompt(tokenizer, blocks=3)
    out = client.completions.create(model="tiny", prompt=ids, max_tokens=5, temperature=0, logprobs=3,
                                    extra_body={"prompt_logprobs": 2, "return_token_ids": True})
    choice = out.choices[0]
    extra = choice.model_extra
    assert extra["prompt_token_ids"] == ids
    generated = extra["token_ids"]
    full = ids + generated
    config = BlockMaskingConfig.load(MASKING)
    with torch.no_grad():
        reference = torch.log_softmax(dense_reference_logits(model, full, config, tokenizer=tokenizer), dim=-1)
        causal = torch.log_softmax(dense_reference_logits(model, full, BlockMaskingConfig.vanilla()), dim=-1)
    prompt_logprobs = extra["prompt_logprobs"]
    assert prompt_logprobs[0] is None
    got = torch.tensor([prompt_logprobs[i][str(ids[i])]["logprob"] for i in range(1, len(ids))])
    want = reference[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, causal[torch.arange(len(ids) - 1), torch.tensor(ids[1:])], atol=1e-3)
    ranks = [prompt_logprobs[i][str(ids[i])]["rank"] for i in range(1, len(ids))]
    assert ranks == [int((reference[i - 1] > reference[i - 1, ids[i]]).sum()) + 1 for i in range(1, len(ids))]
    steps = torch.arange(len(ids) - 1, len(full) - 1)
    assert torch.allclose(torch.tensor(choice.logprobs.token_logprobs), reference[steps, torch.tensor(generated)],
                          atol=1e-4)
    assert generated == reference[steps].argmax(-1).tolist()  # greedy under the dense mask
    usage = out.usage.model_extra
    assert usage["completed_blocks"] == 3 and usage["evicted_tokens"] > 3 * 20
    assert usage["peak_cache_tokens"] == len(full) - 1 - usage["evicted_tokens"]
    metrics = httpx.get(f"{root}/metrics").text
    assert metric(metrics, "memento:evicted_tokens_total") >= usage["evicted_tokens"]
    assert metric(metrics, "memento:compactions_total") >= 3


def test_vllm_xargs_override_the_block_masking_per_request(client, server):
    tokenizer, model = server.tokenizer, server.engine.model
    ids = memento_prompt(tokenizer, blocks=2)
    out = client.completions.create(model="tiny", prompt=ids, max_tokens=1, temperature=0,
                                    extra_body={"prompt_logprobs": 0, "vllm_xargs": {"enable": False}})
    with torch.no_grad():
        causal = torch.log_softmax(dense_reference_logits(model, ids, BlockMaskingConfig.vanilla()), dim=-1)
    got = torch.tensor([out.choices[0].model_extra["prompt_logprobs"][i][str(ids[i])]["logprob"]
                        for i in range(1, len(ids))])
    assert torch.allclose(got, causal[torch.arange(len(ids) - 1), torch.tensor(ids[1:])], atol=1e-4)
    assert out.usage.model_extra["evicted_tokens"] == 0
    kept = client.completions.create(model="tiny", prompt=ids, max_tokens=1, temperature=0,
                                     extra_body={"vllm_xargs": {"keep_last_n_blocks": 1}})
    assert 0 < kept.usage.model_extra["evicted_tokens"] < len(ids) // 2


def test_chat_logprobs_and_exact_token_ids(client, server):
    tokenizer = server.tokenizer
    out = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                         temperature=0, logprobs=True, top_logprobs=3,
                                         extra_body={"return_token_ids": True, "return_tokens_as_token_ids": True})
    choice = out.choices[0]
    ids = choice.model_extra["token_ids"]
    content = choice.logprobs.content
    assert [c.token for c in content] == [f"token_id:{i}" for i in ids]
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs),
                                                                 reverse=True)
        assert entry.logprob == entry.top_logprobs[0].logprob  # greedy picks the most likely token
    prompt = tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert out.model_extra["prompt_token_ids"] == prompt
    assert tokenizer.decode(ids, skip_special_tokens=False) == choice.message.content


# ----- continuous batching ------------------------------------------------------------------------------------
def test_concurrent_greedy_requests_of_different_lengths_equal_each_alone(client, server):
    tokenizer = server.tokenizer
    prompts = [memento_prompt(tokenizer, blocks=b, tail=t) for b, t in
               [(0, " A"), (1, " B"), (2, " Then"), (3, ""), (1, " So the"), (2, " x")]]
    lengths = [3, 17, 9, 25, 5, 13]

    def ask(k):
        out = client.completions.create(model="tiny", prompt=prompts[k], max_tokens=lengths[k], temperature=0,
                                        extra_body={"return_token_ids": True})
        return out.choices[0].model_extra["token_ids"]

    alone = [ask(k) for k in range(len(prompts))]
    with ThreadPoolExecutor(len(prompts)) as pool:  # more requests than rows: they join as others leave
        together = list(pool.map(ask, range(len(prompts))))
    assert together == alone
    assert [len(t) for t in alone] == lengths


def test_a_client_that_disconnects_mid_stream_frees_its_row(root):
    before = metric(httpx.get(f"{root}/metrics").text, "vllm:generation_tokens_total")
    body = {"model": "tiny", "prompt": "Tell a long story", "max_tokens": 3000, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{root}/v1/completions", json=body) as response:
            frames = 0
            for line in response.iter_lines():
                frames += line.startswith("data: ")
                if frames == 3:
                    break
    deadline = time.monotonic() + 5
    while metric(httpx.get(f"{root}/metrics").text, "vllm:num_requests_running") != 0:
        assert time.monotonic() < deadline, "the disconnected request still holds its row"
        time.sleep(0.02)
    generated = metric(httpx.get(f"{root}/metrics").text, "vllm:generation_tokens_total") - before
    assert generated < 1500  # it would have produced about 2,000 before the physical limit


# ----- limits and errors --------------------------------------------------------------------------------------
BAD = [
    ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**9}, 400, "max_tokens"),
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"prompt": "x", "stop": 5}, 400, "stop"),
    ({"prompt": "x", "logprobs": 99}, 400, "logprobs"),
    ({"prompt": "x", "prompt_logprobs": 1, "stream": True}, 400, "prompt_logprobs"),
    ({"prompt": [1] * 5000}, 400, "prompt"),
    ({"prompt": [10**7]}, 400, "prompt"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": "x", "stop_token_ids": ["a"]}, 400, "stop_token_ids"),
    ({"prompt": "x", "vllm_xargs": {"keep_last_n_blocks": -5}}, 400, "vllm_xargs"),
    ({"prompt": "x", "vllm_xargs": {"keep_last_blocks": 1}}, 400, "vllm_xargs"),
    ({"prompt": "x", "model": "other"}, 404, "model"),
    ({"messages": [], "chat": True}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21, "chat": True}, 400,
     "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2, "chat": True}, 400, "top_logprobs"),
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_requests_get_vllm_shaped_errors_naming_the_field(root, body, status, param):
    body = dict(body)
    path = "/v1/chat/completions" if body.pop("chat", False) else "/v1/completions"
    response = httpx.post(f"{root}{path}", json=body, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["param"] == param
    assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError")
    if param == "vllm_xargs" and "keep_last_blocks" in json.dumps(body):
        assert "keep_last_blocks" in error["message"]
    assert "Traceback" not in response.text


def test_malformed_json_is_a_400_and_the_openai_client_sees_bad_request(root, client):
    response = httpx.post(f"{root}/v1/completions", content=b'{"prompt": ', timeout=30,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="x", max_tokens=0)
    assert "max_tokens" in str(caught.value)


def test_models_tokenize_detokenize_health_version(root, client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"] and models.data[0].model_extra["max_model_len"] == 4096
    tokens = httpx.post(f"{root}/tokenize", json={"prompt": "Hello there"}).json()
    assert tokens["tokens"] == server.tokenizer.encode("Hello there") and tokens["count"] == len(tokens["tokens"])
    chat = httpx.post(f"{root}/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert server.tokenizer.decode(chat["tokens"]).endswith("<|im_start|>assistant\n")
    text = httpx.post(f"{root}/detokenize", json={"tokens": tokens["tokens"]}).json()["prompt"]
    assert text == "Hello there"
    assert httpx.get(f"{root}/health").status_code == 200
    assert httpx.get(f"{root}/version").json()["version"]
    metrics = httpx.get(f"{root}/metrics").text
    for name in ("vllm:kv_cache_usage_perc", "vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:num_preemptions_total",
                 "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_bucket", "memento:physical_cache_tokens",
                 "memento:logical_cache_tokens", "memento:compactions_total"):
        assert name in metrics


# ----- a small server: physical admission, load, 429 ----------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    server = tiny_server(tmp_path_factory.mktemp("small"), max_batch_size=4, max_cache_tokens=300, max_waiting=4)
    with running(server) as url:
        yield server, url


def test_admission_counts_physical_tokens_after_eviction(small):
    server, url = small
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    evicting = memento_prompt(server.tokenizer, blocks=6)
    assert len(evicting) > 300  # longer than --max-cache-tokens, but most of it is evicted
    out = client.completions.create(model="tiny", prompt=evicting, max_tokens=4, temperature=0)
    assert out.usage.model_extra["peak_cache_tokens"] < 300 and out.usage.prompt_tokens == len(evicting)
    plain = server.tokenizer.encode(REASONING * 5)
    assert len(plain) > 300
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt=plain, max_tokens=4)
    assert "--max-cache-tokens" in str(caught.value)


def test_bounded_load_every_request_completes_or_gets_a_clean_429(small):
    server, url = small
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=60)
    outcomes = []
    lock = threading.Lock()

    def one(k):
        try:
            out = client.completions.create(model="tiny", prompt=f"Request {k}:", max_tokens=4, temperature=0,
                                             extra_body={"ignore_eos": True})
            result = ("ok", out.usage.completion_tokens)
        except openai.RateLimitError as exc:
            result = ("429", exc.body["message"] if isinstance(exc.body, dict) else str(exc))
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, range(200)))
    assert len(outcomes) == 200
    kinds = {kind for kind, _ in outcomes}
    assert kinds <= {"ok", "429"} and "ok" in kinds and "429" in kinds
    assert all(value == 4 for kind, value in outcomes if kind == "ok")
    assert all("queue is full" in value for kind, value in outcomes if kind == "429")
    root = url.removesuffix("/v1")
    deadline = time.monotonic() + 5
    while metric(httpx.get(f"{root}/metrics").text, "vllm:num_requests_waiting") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    metrics = httpx.get(f"{root}/metrics").text
    assert metric(metrics, "memento:requests_rejected_total") == sum(kind == "429" for kind, _ in outcomes)


# ----- the command ---------------------------------------------------------------------------------------------
def test_serve_command_checks_before_binding_and_says_which_limit_is_which(tmp_path, server):
    import subprocess
    import sys

    from helpers_cli import invoke
    from mementokit.errors import ConfigError

    missing = subprocess.run([sys.executable, "-m", "mementokit.cli", "serve", "--model", str(tmp_path / "nothing"),
                              "--port", "1"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nothing': no such folder" in missing.stderr
    assert "Traceback" not in missing.stderr and "Uvicorn running" not in missing.stderr
    with pytest.raises(ConfigError, match="mask_delimiters"):
        invoke("serve", "--model", tmp_path, "--block-masking-config", '{"enable": true}')
    with pytest.raises(ConfigError, match="embedded"):
        invoke("serve", "--model", tmp_path, "--engine", "tgi")
    help_text = " ".join(invoke("serve", "--help").output.split())
    assert "PHYSICAL" in help_text and "LOGICAL" in help_text and "memento serve --model" in help_text


def test_load_server_serves_a_saved_model_under_its_folder_name(tmp_path, server):
    from mementokit.serve import ServeOptions, load_server

    folder = tmp_path / "my-memento"
    server.engine.model.save_pretrained(folder)
    server.tokenizer.save_pretrained(folder)
    loaded = load_server(ServeOptions(model=str(folder), block_masking=MASKING, max_cache_tokens=512, dtype="float32",
                                      device="cpu"))
    assert loaded.model_name == "my-memento" and loaded.engine.max_cache_tokens == 512
    assert loaded.engine.config.enable and loaded.engine.markers == server.engine.markers


def test_api_key_guards_the_v1_routes_only(server):
    from fastapi.testclient import TestClient

    from mementokit.serve import Server

    guarded = TestClient(Server(server.engine, server.tokenizer, model_name="tiny", api_key="sesame").app)
    refused = guarded.get("/v1/models")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == 401
    assert guarded.get("/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert guarded.get("/health").status_code == 200
