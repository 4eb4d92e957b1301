"""The NLP solution end to end, as its docs run it: ``shipyard quickstart nlp``, then both
registered models served and asked in English and French, as the printed curl lines do.

About 3-5 minutes on 2 cores (embedding the reviews with MiniLM is most of it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.errors import IntegrityError
from shipyard.registry.models import ModelRegistry
from shipyard.workspace import Workspace
from tests.serving.conftest import start_server


def _quickstart(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "shipyard.cli.main", "quickstart", "nlp", str(root)]
    return subprocess.run(
        [*command, "--bootstrap", "200"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.mark.slow
def test_quickstart_nlp_registers_serves_and_answers_in_both_languages(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    done = _quickstart(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "tfidf-logreg" in out and "minilm-classifier" in out
    assert "(paired, resampling movies (cluster))" in out
    assert "shipyard serve sentiment --port 8080" in out
    assert "shipyard serve entities --port 8081" in out
    assert "Emmanuel Macron a visité Marseille avec Airbus." in out  # a French curl line

    ws = Workspace.open(root)
    registry = ModelRegistry(ws)
    sentiment = registry.versions("sentiment")
    assert sorted(v.model_type for v in sentiment) == ["minilm-classifier", "tfidf-logreg"]
    champion = registry.get("sentiment", "champion")
    assert champion.dataset == "rotten_tomatoes" and "split by movie" in champion.lineage.protocol
    assert champion.metrics["accuracy_ci_low"] < champion.metrics["accuracy_mean"]
    assert registry.get("entities", "champion").framework == "spacy"

    entity_server = start_server(ws, "entities", tmp_path)
    try:
        status, _, body = entity_server.post_json(
            "/invocations",
            {
                "dataframe_split": {
                    "columns": ["text"],
                    "data": [
                        ["Tim Cook visited Paris with Apple engineers on Monday."],
                        ["Emmanuel Macron a visité Marseille avec Airbus."],
                    ],
                }
            },
        )
        assert status == 200, body
        english, french = body["predictions"]
        assert (english["language"], french["language"]) == ("en", "fr")
        assert {"Marseille", "Airbus"} <= {e["text"] for e in french["entities"]}
        status, _, body = entity_server.post_json(
            "/invocations", {"instances": ["Angela Merkel besuchte gestern Berlin mit Siemens."]}
        )
        assert status == 422 and "German (de)" in body["error"]
    finally:
        entity_server.stop()

    sentiment_server = start_server(ws, "sentiment", tmp_path)
    try:
        reviews = ["A gorgeous, heartfelt film with a superb cast.", "Dull and far too long."]
        status, _, body = sentiment_server.post_json("/invocations", {"instances": reviews})
        assert status == 200, body
        good, bad = (row[1] for row in body["predictions"])  # (rotten, fresh) per review
        assert 0 <= bad < good <= 1
        # a French review: the models read English only, so it is refused, not scored
        french = "Un film magnifique, porté par des acteurs formidables."
        status, _, body = sentiment_server.post_json("/invocations", {"instances": [french]})
        assert status == 422 and "French (fr)" in body["error"], body
        assert "trained on English (en) text only" in body["error"]
    finally:
        sentiment_server.stop()

    # the entities' manifest edited after registration is refused before anything loads
    manifest = registry.get("entities", "champion").native_path
    manifest.write_text(manifest.read_text().replace('"3.8.0"', '"3.7.1"'))
    with pytest.raises(IntegrityError, match="Refusing to load"):
        registry.load("entities", "champion")
