"""`shipyard serve` of a language model: OpenAI's routes (the ``openai`` client, streamed and
not), bad input in OpenAI's error shape, the prediction log, metrics, V2 ``/infer``, a
pinned prompt rendered from ``variables``, shadows, and a disconnect storm.

One workspace, one server (one worker), model ``chat``: v1 is SmolLM2 as is, v2 the same
GGUF pinning prompt ``tone`` (one engine serves both); the policy splits them 50/50 sticky
by ``user``, so each test picks users the router sends where it wants.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from shipyard.llm.model import load_model
from shipyard.llm.prompts import create_prompt
from shipyard.llm.registry import register_llm
from shipyard.monitoring.logstore import query
from shipyard.registry.models import ModelRegistry
from shipyard.serving.policy import Arm, Router, TrafficPolicy, get_policy, set_policy
from shipyard.workspace import Workspace
from tests.serving.conftest import ADMIN_TOKEN, Server, free_port, wait_for_revision

MODEL = "chat"
SETTINGS = {
    "SHIPYARD_LLM_MAX_RUNNING": "8",
    "SHIPYARD_LLM_MAX_WAITING": "64",
    "SHIPYARD_LLM_MAX_CONTEXT": "512",
    "SHIPYARD_LLM_PREFIX_CACHE_MB": "16",
    "SHIPYARD_SERVING_ADMIN_TOKEN": ADMIN_TOKEN,
}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def start_llm_server(
    ws: Workspace, target: str, tmp: Path, settings: dict[str, str] | None = None
) -> Server:
    """``shipyard serve TARGET`` on a free port with the default workers (one for an LLM),
    :data:`SETTINGS` and ``settings`` in its environment."""
    port = free_port()
    log = tmp / f"serve-{port}.log"
    log_file = log.open("wb")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    environ.update({**SETTINGS, **(settings or {})})
    command = [sys.executable, "-m", "shipyard.cli.main", "-w", str(ws.root), "serve", target]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--no-guardrails"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=environ,
        start_new_session=True,
    )
    server = Server(ws, port, process, log, log_file)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if server.request("GET", "/v2/health/ready")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server did not become ready: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    smollm2 = load_model()  # loaded once here for both registrations' signature samples
    root = tmp_path_factory.mktemp("llm-serving")
    ws = Workspace.init(root / "ws")
    create_prompt(
        ws,
        "tone",
        [{"role": "system", "content": "Answer in a {tone} tone, in one short sentence."}],
        variables={"tone": {"type": "string", "required": False}},
    )
    defaults = {"max_tokens": 12, "temperature": 0.0}
    register_llm(ws, MODEL, defaults=defaults, loaded=smollm2)
    register_llm(ws, MODEL, prompt=("tone", 1), defaults=defaults, loaded=smollm2)
    policy = TrafficPolicy(MODEL, MODEL, (Arm(1, 0.5), Arm(2, 0.5)), sticky_key="user")
    set_policy(ws, policy, reason="test: two LLM versions, sticky by user")
    running = start_llm_server(ws, f"{MODEL}@1", root)
    yield running
    running.stop()
    ws.close()


def user_for(server: Server, version: int) -> str:
    """A ``user`` the endpoint's router sends to ``version``."""
    router = Router(get_policy(server.workspace, MODEL))
    return next(f"user-{i}" for i in range(1000) if router.choose(f"user-{i}") == version)


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _records(server: Server, where: str) -> Any:
    return query(server.workspace, MODEL, f"SELECT * FROM predictions WHERE {where}")


def test_the_openai_client_chats_and_completes_streamed_or_not(server: Server) -> None:
    api, user = client(server), user_for(server, 1)
    answer = api.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        user=user,  # type: ignore[arg-type]
    )
    text = answer.choices[0].message.content
    assert answer.object == "chat.completion" and text and answer.model == MODEL
    assert answer.choices[0].finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage is not None and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    streamed = api.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        user=user,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    pieces = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert pieces == text  # greedy: the same tokens streamed or not
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == usage.completion_tokens
    )
    completion = api.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, user=user
    )
    assert completion.object == "text_completion" and completion.choices[0].text
    parts = api.completions.create(
        model=MODEL,
        prompt="The capital of France is",
        max_tokens=6,
        temperature=0,
        user=user,
        stream=True,
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == completion.choices[0].text


def test_models_lists_the_endpoint(server: Server) -> None:
    ids = [m.id for m in client(server).models.list()]
    assert ids[0] == MODEL


def _error(server: Server, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = server.post_json(path, payload)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return status, body["error"]


@pytest.mark.parametrize(
    ("change", "status", "param", "words"),
    [
        ({"model": "gpt-4"}, 404, "model", "model 'gpt-4' is not served here"),
        ({"model": f"{MODEL}:nope"}, 404, "model", "unknown adapter 'nope'"),
        ({"max_tokens": 0}, 400, "max_tokens", "max_tokens must be an integer > 0; got 0"),
        ({"max_completion_tokens": -3}, 400, "max_completion_tokens", "> 0; got -3"),
        ({"temperature": "hot"}, 400, "temperature", "Expected `float | null`, got `str`"),
        ({"temperature": 7}, 400, "temperature", "temperature must be a number in [0, 2]"),
        ({"messages": "hello"}, 400, "messages", "Expected `array`, got `str`"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages", "role must be"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "nope"}},
                }
            },
            400,
            "response_format",
            "",
        ),
        ({"response_format": {"type": "xml"}}, 400, "response_format", "'xml'"),
        ({"variables": {"tone": "dry"}}, 400, "variables", "pins no prompt"),
    ],
)
def test_bad_requests_get_openai_errors_naming_the_field(
    server: Server, change: dict[str, Any], status: int, param: str, words: str
) -> None:
    payload = {"model": MODEL, "messages": QUESTION, "user": user_for(server, 1), **change}
    got, error = _error(server, "/v1/chat/completions", payload)
    assert (got, error["param"]) == (status, param)
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_prompt_over_the_context_window_is_refused_with_the_limit(server: Server) -> None:
    long = "word " * 700
    status, error = _error(server, "/v1/completions", {"model": MODEL, "prompt": long})
    assert (status, error["code"], error["param"]) == (400, "context_length_exceeded", "prompt")
    assert "context window is 512 tokens" in error["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long}]
        )
    assert refused.value.code == "context_length_exceeded" and refused.value.param == "messages"


def test_a_pinned_prompt_is_rendered_from_variables_and_logged(server: Server) -> None:
    api, user = client(server), user_for(server, 2)
    answer = api.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        user=user,
        extra_body={"variables": {"tone": "cheerful"}},
        extra_headers={"X-Request-Id": "pinned-1"},
    )
    assert answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="has no variable"):
        api.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            user=user,
            extra_body={"variables": {"mood": "x"}},  # type: ignore[arg-type]
        )
    (record,) = _records(server, "request_id = 'pinned-1'").to_dict("records")
    assert record["version"] == 2 and record["routing_key"] == user
    (texts,) = record["texts"]
    assert "Answer in a cheerful tone" in texts[0] and "capital of France" in texts[0]


def test_the_prediction_log_holds_each_completion(server: Server) -> None:
    user = user_for(server, 1)
    status, headers, body = server.post_json(
        "/v1/chat/completions",
        {"model": MODEL, "messages": QUESTION, "max_tokens": 5, "user": user},
        {"X-Request-Id": "logged-1"},
    )
    assert status == 200 and headers["x-model-version"] == "1"
    (record,) = _records(server, "request_id = 'logged-1'").to_dict("records")
    assert (record["version"], record["arm"], record["protocol"]) == (1, "primary", "openai")
    (output,) = json.loads(record["outputs_json"])
    assert output["text"] == body["choices"][0]["message"]["content"]
    assert output["completion_tokens"] == body["usage"]["completion_tokens"] <= 5
    assert output["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert output["ttft_ms"] > 0 and output["tpot_ms"] >= 0 and output["adapter"] is None
    assert record["latency_ms"] >= output["ttft_ms"]


def test_metrics_show_tokens_latency_and_the_engine(server: Server) -> None:
    server.post_json("/v1/completions", {"model": MODEL, "prompt": "Hello", "max_tokens": 3})
    text = server.request("GET", "/metrics")[2].decode()
    for name in (
        "shipyard_llm_time_to_first_token_seconds_count",
        "shipyard_llm_time_per_output_token_seconds_bucket",
        "shipyard_llm_prompt_tokens_total",
        "shipyard_llm_completion_tokens_total",
        "shipyard_llm_running_sequences",
        "shipyard_llm_waiting_sequences",
        "shipyard_llm_kv_slots_used",
        "shipyard_llm_prefix_cache_hit_rate",
    ):
        assert name in text, name
    tokens = [
        line
        for line in text.splitlines()
        if line.startswith("shipyard_llm_completion_tokens_total{")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in tokens) > 0


def test_v2_infer_answers_a_completion_per_row(server: Server) -> None:
    payload = {
        "inputs": [
            {"name": "prompt", "shape": [2], "datatype": "BYTES", "data": ["Hi!", "Name a fruit."]}
        ]
    }
    status, headers, body = server.post_json(f"/v2/models/{MODEL}/versions/1/infer", payload)
    assert status == 200 and headers["x-model-version"] == "1"
    (output,) = body["outputs"]
    assert output["name"] == "completion" and output["shape"] == [2]
    answers = [json.loads(v) for v in output["data"]]
    assert all(a["text"] and 0 < a["completion_tokens"] <= 12 for a in answers)


def test_structured_output_parses(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "maxLength": 20}},
        "required": ["capital"],
        "additionalProperties": False,
    }
    answer = client(server).chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=40,
        user=user_for(server, 1),
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    assert set(json.loads(answer.choices[0].message.content or "")) == {"capital"}


def test_an_adapter_registered_while_serving_is_found_and_chosen_per_request(
    server: Server,
) -> None:
    import torch

    from shipyard.llm.lora import TrainedAdapter, register_adapter
    from shipyard.llm.types import LoraAdapter

    ws, user = server.workspace, user_for(server, 1)
    base = ModelRegistry(ws).get(MODEL, 1).params["gguf_sha256"]
    # a zero update (B = 0): the adapter's answers must be exactly the base model's
    weights = {(0, "q"): (torch.randn(2, 576) * 0.01, torch.zeros(576, 2))}
    adapter = LoraAdapter("zero", 2, 4.0, base, weights, task="test")
    register_adapter(ws, MODEL, 1, TrainedAdapter(adapter, {}, [], [], {}, 0.0, 0))
    request = {"messages": QUESTION, "max_tokens": 8, "temperature": 0, "user": user}
    _, _, plain = server.post_json("/v1/chat/completions", {"model": MODEL, **request})
    status, _, adapted = server.post_json(
        "/v1/chat/completions", {"model": f"{MODEL}:zero", **request}, {"X-Request-Id": "lora-1"}
    )
    assert status == 200, adapted  # the worker read the adapters table again and found it
    text = adapted["choices"][0]["message"]["content"]
    assert text == plain["choices"][0]["message"]["content"]
    assert adapted["model"] == f"{MODEL}:zero"
    assert f"{MODEL}:zero" in [m.id for m in client(server).models.list()]
    (record,) = _records(server, "request_id = 'lora-1'").to_dict("records")
    assert json.loads(record["outputs_json"])[0]["adapter"] == "zero"


def _drop_mid_stream(server: Server, payload: dict[str, Any], dropped: list[bool]) -> None:
    """Open a streamed chat, read until the first generated text arrives, then go away."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(payload), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    seen = 0
    while True:
        line = response.fp.readline()
        if not line:
            break
        if line.startswith(b"data: {"):
            seen += 1
            if seen >= 2:  # the role chunk, then a first piece of text
                dropped.append(True)
                break
    connection.sock.close()  # type: ignore[union-attr]
    connection.close()


def _stream_text(server: Server, payload: dict[str, Any], into: list[str]) -> None:
    stream = client(server).chat.completions.create(**payload, stream=True)
    into.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))


def _engine_gauges(server: Server) -> dict[str, float]:
    text = server.request("GET", "/metrics")[2].decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        for name in (
            "shipyard_llm_running_sequences",
            "shipyard_llm_kv_slots_used",
            "shipyard_llm_waiting_sequences",
        ):
            if line.startswith(name + "{"):
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def test_a_disconnect_storm_frees_every_slot_and_others_stream_on(server: Server) -> None:
    user = user_for(server, 1)
    keep = {"model": MODEL, "messages": QUESTION, "max_tokens": 24, "temperature": 0, "user": user}
    expected = client(server).chat.completions.create(**keep).choices[0].message.content  # type: ignore[arg-type]
    drop = {
        **keep,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }
    drop["stream"] = True
    dropped: list[bool] = []
    kept: list[str] = []
    threads = [
        threading.Thread(target=_drop_mid_stream, args=(server, drop, dropped)) for _ in range(24)
    ]
    threads += [threading.Thread(target=_stream_text, args=(server, keep, kept)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert len(dropped) == 24 and kept == [expected] * 4
    deadline = time.monotonic() + 30
    while (gauges := _engine_gauges(server)) and any(gauges.values()):
        assert time.monotonic() < deadline, f"slots still held after the storm: {gauges}"
        time.sleep(0.2)
    cancelled = _records(server, "protocol = 'openai'")["outputs_json"].map(json.loads)
    reasons = [o[0]["finish_reason"] for o in cancelled]
    assert reasons.count("cancelled") >= 20  # the few that finished first are 'length'/'stop'


def test_shadows_generate_in_the_background_and_are_logged(server: Server) -> None:
    ws = server.workspace
    policy = set_policy(
        ws, TrafficPolicy(MODEL, MODEL, (Arm(1, 1.0),), shadows=(2,)), reason="test: shadow v2"
    )
    wait_for_revision(server, policy.revision, workers=1)
    status, _, _ = server.post_json(
        "/v1/chat/completions",
        {"model": MODEL, "messages": QUESTION, "max_tokens": 4},
        {"X-Request-Id": "shadowed-1"},
    )
    assert status == 200
    deadline = time.monotonic() + 60
    while len(found := _records(server, "request_id = 'shadowed-1'")) < 2:
        assert time.monotonic() < deadline, "the shadow's record never came"
        time.sleep(0.3)
    assert sorted(zip(found["arm"], found["version"], strict=True)) == [
        ("primary", 1),
        ("shadow", 2),
    ]
