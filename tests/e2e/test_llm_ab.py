"""An A/B test of two prompt versions, end to end: two registered SmolLM2 versions that pin
sentiment prompt v1 and v2, an experiment on the endpoint sticky on the OpenAI ``user``, a
real `shipyard serve`, the `openai` client sending evaluation rows as ``variables``, each
answer scored by the task's scorer and posted as a label by request id, and the
experiment's status: per-arm accuracy (recounted here from the answers) and the sequential
test's decision."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.data.catalog import get_dataset
from shipyard.experiments.lifecycle import experiment_status, start_experiment, stop_experiment
from shipyard.experiments.sequential import BETTER, NOT_SIGNIFICANT, UNDECIDED, WORSE
from shipyard.llm.evaluate import evaluate
from shipyard.llm.model import load_model
from shipyard.llm.prompts import create_prompt
from shipyard.llm.registry import register_llm
from shipyard.llm.tasks import SENTIMENT_SYSTEM, get_task, write_eval_set
from shipyard.monitoring.labels import ingest_labels
from shipyard.monitoring.logstore import query
from shipyard.serving.policy import Arm, Router, TrafficPolicy, set_policy
from shipyard.workspace import Workspace
from tests.serving.conftest import ADMIN_TOKEN, Server, free_port, wait_for_revision

MODEL, ENDPOINT, ROWS = "smollm2", "reviews", 40
ASK = "Review: {text}\nIs this review positive or negative? Answer with one word."
"""Prompt v2's user message (v1 sends the bare review, which SmolLM2 mostly continues as
prose: about 6% right on 16 test rows against 56% with this one, offline)."""
CORRECT = "success_rate"
"""Label 1 = the answer was right: success_rate is positives over labelled answers per user."""


def _serve(ws: Workspace, target: str, log: Path) -> Server:
    """``shipyard serve TARGET --endpoint reviews`` with one worker (an LLM's engine uses
    every core), ready."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    environ["SHIPYARD_SERVING_ADMIN_TOKEN"] = ADMIN_TOKEN
    environ["SHIPYARD_LLM_MAX_RUNNING"] = "16"  # a small KV pool: 16 slots
    environ["SHIPYARD_LLM_MAX_CONTEXT"] = "512"
    command = [sys.executable, "-m", "shipyard.cli.main", "-w", str(ws.root), "serve", target]
    options = ["--endpoint", ENDPOINT, "--port", str(port), "--workers", "1", "--no-guardrails"]
    log_file = log.open("wb")
    process = subprocess.Popen(
        [*command, *options],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=environ,
        start_new_session=True,  # its own process group: stopped whole
    )
    server = Server(ws, port, process, log, log_file)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if server.request("GET", "/v2/health/ready")[0] == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become ready: {log.read_text()[-3000:]}")


def _ask(server: Server, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row sent once by the `openai` client as user ``user-<i>``, with its own request
    id, 8 at a time; the answers in row order."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)

    def one(i: int) -> dict[str, Any]:
        request_id = f"ab-{i}"
        answer = client.chat.completions.create(
            model=ENDPOINT,
            messages=[],
            user=f"user-{i}",
            max_tokens=3,
            temperature=0,
            extra_body={"variables": {"text": rows[i]["text"]}},
            extra_headers={"x-request-id": request_id},
        )
        text = answer.choices[0].message.content or ""
        return {"request_id": request_id, "user": f"user-{i}", "text": text}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(len(rows))))


def _refused_without_its_variable(server: Server) -> None:
    """A request that leaves out the pinned prompt's variable is refused naming it."""
    from openai import APIStatusError, OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(APIStatusError) as refused:
        client.chat.completions.create(
            model=ENDPOINT, messages=[], user="user-0", extra_body={"variables": {}}
        )
    assert refused.value.status_code in (400, 422)
    assert "variable 'text'" in str(refused.value)


@pytest.mark.slow
def test_ab_of_two_prompt_versions(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    eval_set = write_eval_set(ws, "sentiment", "test", limit=ROWS)
    rows = get_dataset(ws, eval_set).read().to_dict("records")
    system = {"role": "system", "content": SENTIMENT_SYSTEM}
    for user in ("{text}", ASK):
        create_prompt(ws, "sentiment", [system, {"role": "user", "content": user}],
                      eval_set=eval_set)  # fmt: skip
    smollm2 = load_model()  # once, for both registrations' signature samples and evaluate
    for version in (1, 2):
        register_llm(ws, MODEL, prompt=("sentiment", version), loaded=smollm2,
                     defaults={"max_tokens": 3, "temperature": 0.0})  # fmt: skip
    set_policy(ws, TrafficPolicy(ENDPOINT, MODEL, arms=(Arm(1, 1),)), reason="launch")
    server = _serve(ws, f"{MODEL}@1", tmp_path / "serve.log")
    try:
        experiment = start_experiment(
            ws, "prompt-v2", ENDPOINT, control=1, treatment=2, metric=CORRECT,
            sticky_key="user", planned_units=ROWS // 2, reason="prompt v2 on half the users",
        )  # fmt: skip
        wait_for_revision(server, experiment.revision, workers=1)
        answers = pd.DataFrame(_ask(server, rows))
        _refused_without_its_variable(server)
    finally:
        server.stop()

    # every answer scored by the task's scorer, posted as a label by request id
    task = get_task("sentiment")
    answers["correct"] = [int(task.score(a, r)) for a, r in zip(answers["text"], rows, strict=True)]
    posted = ingest_labels(ws, ENDPOINT, answers[["request_id", "correct"]], label="correct")
    assert (posted.labels, posted.matched, posted.unknown) == (ROWS, ROWS, 0)

    # sticky by user: the log says which version answered, the policy's hash says the same
    logged = query(ws, ENDPOINT, "SELECT request_id, version, arm, texts FROM predictions")
    answers = answers.merge(logged, on="request_id", validate="one_to_one")
    router = Router(experiment.policy())
    assert (answers["user"].map(router.choose) == answers["version"]).all()
    assert set(answers["version"]) == {1, 2}
    # each version rendered its own pinned prompt
    treated = answers.loc[answers["version"] == 2, "texts"].astype(str)
    assert treated.str.contains("Is this review positive or negative?").all()
    control = answers.loc[answers["version"] == 1, "texts"].astype(str)
    assert not control.str.contains("Is this review positive or negative?").any()

    status = experiment_status(ws, "prompt-v2", stop_on_guardrail=False)
    for arm, version in (("control", 1), ("treatment", 2)):
        mine = answers[answers["version"] == version]
        stats = status.primary.arms[arm]
        assert stats.n == len(mine)  # one user, one answer
        assert stats.mean == pytest.approx(mine["correct"].mean())
    assert (status.records, status.unkeyed, status.misrouted) == (ROWS, 0, 0)
    assert status.decision in (BETTER, WORSE, UNDECIDED, NOT_SIGNIFICANT)
    assert "success_rate" in status.describe()
    stopped = stop_experiment(ws, "prompt-v2", reason="read the result", winner=1)
    assert stopped.status == "stopped"

    # offline, the registered version evaluates with the prompt it pins
    offline = evaluate(ws, model=MODEL, version=2, task="sentiment", limit=8, loaded=smollm2)
    assert (offline.subject, offline.model_version, offline.prompt) == ("model", 2, "sentiment@2")
    assert offline.eval_set == eval_set and offline.rows == 8
