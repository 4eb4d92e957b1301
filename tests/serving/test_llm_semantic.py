"""The semantic response cache behind the OpenAI routes (``llm_semantic_cache``): a greedy
chat asked again is answered from the cache, says so, and is logged and counted; a sampled
one never is."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shipyard.llm.registry import register_llm
from shipyard.monitoring.logstore import query
from shipyard.workspace import Workspace
from tests.serving.conftest import Server
from tests.serving.test_openai import start_llm_server

pytestmark = pytest.mark.slow  # a server of its own, and MiniLM loaded in it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("llm-semantic")
    ws = Workspace.init(root / "ws")
    register_llm(ws, "cached", defaults={"max_tokens": 32, "temperature": 0.0})
    running = start_llm_server(ws, "cached@1", root, {"SHIPYARD_LLM_SEMANTIC_CACHE": "true"})
    yield running
    running.stop()
    ws.close()


def _ask(server: Server, request_id: str, **change: object) -> tuple[dict[str, str], str]:
    payload = {
        "model": "cached",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        **change,
    }
    status, headers, body = server.post_json(
        "/v1/chat/completions", payload, {"X-Request-Id": request_id}
    )
    assert status == 200, body
    return headers, body["choices"][0]["message"]["content"]


def test_a_greedy_chat_asked_again_is_answered_from_the_cache(server: Server) -> None:
    first_headers, first = _ask(server, "first")
    assert "x-shipyard-cache" not in first_headers and first
    again_headers, again = _ask(server, "again")
    assert again_headers.get("x-shipyard-cache") == "semantic" and again == first
    sampled_headers, _ = _ask(server, "sampled", temperature=0.8, seed=1)
    assert "x-shipyard-cache" not in sampled_headers  # sampled answers are never cached
    shorter_headers, _ = _ask(server, "shorter", max_tokens=4)
    assert "x-shipyard-cache" not in shorter_headers  # another budget, another answer
    metrics = server.request("GET", "/metrics")[2].decode()
    (hits,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("shipyard_llm_semantic_cache_hits_total{")
    ]
    assert hits.endswith(" 1")
    found = query(
        server.workspace, "cached", "SELECT * FROM predictions WHERE request_id = 'again'"
    )
    (output,) = json.loads(found["outputs_json"][0])
    assert output["text"] == first and output["completion_tokens"] == 0
