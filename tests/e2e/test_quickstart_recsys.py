"""The recommendation solution end to end, as its docs run it: ``shipyard quickstart recsys``
on a sample of users, then the registered recommender served and asked as the printed curl
lines do — the second time with a session, which must change the list.

About 30 s on 2 cores with ``--users 40`` (the full data set takes a few minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.registry.models import ModelRegistry
from shipyard.workspace import Workspace
from tests.serving.conftest import start_server


def _quickstart(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "shipyard.cli.main", "quickstart", "recsys", str(root)]
    return subprocess.run(
        [*command, "--users", "40", "--bootstrap", "100"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def _ask(server: object, user: str, session: str, genre: str = "") -> dict[str, object]:
    # as the printed curl lines ask: the nullable columns left empty are left out
    given = {"user": user, "session": session, "k": "5", "genre": genre}
    record = {name: value for name, value in given.items() if value}
    status, _, body = server.post_json("/invocations", {"dataframe_records": [record]})  # type: ignore[attr-defined]
    assert status == 200, body
    answer: dict[str, object] = body["predictions"][0]
    return answer


@pytest.mark.slow
def test_quickstart_recsys_registers_a_recommender_that_answers_with_sessions(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    done = _quickstart(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for model in ("most-popular", "item-knn", "ease", "als", "bpr", "two_stage", "sequence"):
        assert model in out
    assert "(the best baseline on validation)" in out and "paired over users" in out
    assert "session replay over the test period" in out
    assert "shipyard -w" in out and "serve movies --port 8080" in out
    report = root / "reports" / "recsys" / "index.md"
    assert "Recommendations: results against tuned baselines" in report.read_text()

    ws = Workspace.open(root)
    registry = ModelRegistry(ws)
    champion = registry.get("movies", "champion")
    assert champion.model_type == "recommender" and champion.dataset == "movielens"
    assert 0 < champion.metrics["test_ndcg_at_10"] < 1
    card = champion.card_path.read_text()
    assert "strings in columns `user`, `session`" in card and "Offline evaluation" in card

    server = start_server(ws, "movies", tmp_path)
    try:
        alone = _ask(server, "15", "")
        items = alone["items"]
        assert isinstance(items, list) and len(items) == 5 and alone["source"] == "personal"
        # the printed second curl line: a session of three movies and a genre filter
        with_session = _ask(server, "15", "1 2 3", "Animation")
        assert with_session["items"] != items
        # the session is remembered: the next request without one is not the first answer
        assert _ask(server, "15", "")["items"] != items
        stranger = _ask(server, "no-such-user", "")
        assert stranger["source"] == "popular" and len(stranger["items"]) == 5  # type: ignore[arg-type]
    finally:
        server.stop()
