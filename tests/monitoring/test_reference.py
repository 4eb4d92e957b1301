"""Reference profiles per model version and drift of the logged traffic against them.

On a real workspace: the small simulated fraud data set, two versions trained and registered
by ``train_suite`` (v1 LightGBM, champion; v2 a decision tree), records written by the real
PredictionLog and read back through the log store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import IntegrityError, ParameterError
from shipyard.monitoring.drift import Verdict
from shipyard.monitoring.profiles import DatasetProfile, NumericProfile
from shipyard.monitoring.reference import (
    PREDICTION,
    current_profile,
    drift_report,
    load_reference_profile,
    reference_path,
    reference_profile,
)
from shipyard.registry.models import ModelRegistry
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.workspace import Workspace
from tests.conftest import small_fraud_models

T0 = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
ROWS_PER_REQUEST = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Dataset]]:
    """fraud v1 (LightGBM, champion) and v2 (decision tree), registered on small data."""
    root = tmp_path_factory.mktemp("reference") / "ws"
    ws, dataset = small_fraud_models(root, ("lightgbm", "decision_tree"))
    yield ws, dataset
    ws.close()


def _eval_rows(ws: Workspace, version: int) -> pd.DataFrame:
    """The version's evaluation-window rows, in its input column order."""
    from shipyard.training.frames import Window, load_frame

    registered = ModelRegistry(ws).get("fraud", version)
    frame = load_frame(ws, Window.from_dict(registered.eval_window))
    return frame[registered.input_schema.names]


def _log(ws: Workspace, endpoint: str, traffic: list[tuple[int, str, pd.DataFrame]]) -> int:
    """Score each (version, arm, rows) with the registered model and log it; return records."""
    registry = ModelRegistry(ws)
    log = PredictionLog(log_folder(ws, endpoint), "w1", segment_bytes=256_000)
    records: list[dict[str, Any]] = []
    for version, arm, rows in traffic:
        matrix = rows.to_numpy(dtype=np.float64)
        scores = registry.load("fraud", version).predict(matrix)
        for start in range(0, len(matrix), ROWS_PER_REQUEST):
            stop = start + ROWS_PER_REQUEST
            records.append(
                {
                    "request_id": f"{arm}-{version}-{start}",
                    "time": T0 + len(records),
                    "endpoint": endpoint,
                    "model": "fraud",
                    "version": version,
                    "arm": arm,
                    "routing_key": None,
                    "protocol": "v2",
                    "inputs": matrix[start:stop].tolist(),
                    "outputs": scores[start:stop].tolist(),
                    "latency_ms": 1.0,
                }
            )

    async def run() -> None:
        for record in records:
            await log.commit(record)

    asyncio.run(run())
    log.close()
    return len(records)


def _in_cents(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    out["TX_AMOUNT"] = out["TX_AMOUNT"] * 100
    return out


@pytest.fixture(scope="module")
def logged(trained: tuple[Workspace, Dataset]) -> Workspace:
    """Endpoints 'same' (v1 on its own evaluation rows, shuffled), 'cents' (v1 on the same
    rows with amounts in cents) and 'arms' (v1 champion: same rows; v1 canary: in cents;
    v2 shadow: its own evaluation rows)."""
    ws, _ = trained
    rows = _eval_rows(ws, 1)
    shuffled = rows.sample(frac=1.0, random_state=0)
    _log(ws, "same", [(1, "champion", shuffled)])
    _log(ws, "cents", [(1, "champion", _in_cents(rows))])
    _log(
        ws,
        "arms",
        [(1, "champion", rows), (1, "canary", _in_cents(rows)), (2, "shadow", _eval_rows(ws, 2))],
    )
    return ws


class TestReferenceProfile:
    def test_registration_builds_the_reference_profile(
        self, trained: tuple[Workspace, Dataset]
    ) -> None:
        ws, _ = trained
        for version in (1, 2):  # registered by train_suite in the fixture, before any use
            path = reference_path(ws, "fraud", version)
            assert path.exists()
            assert path.with_name(path.name + ".sha256").exists()

    def test_profiles_every_input_and_the_score_of_the_evaluation_frame(
        self, trained: tuple[Workspace, Dataset]
    ) -> None:
        ws, _ = trained
        profile = reference_profile(ws, "fraud", 1)
        rows = _eval_rows(ws, 1)
        assert profile.names == [*rows.columns, PREDICTION]
        assert profile.n_rows == len(rows) > 500
        scores = ModelRegistry(ws).load("fraud", 1).predict(rows.to_numpy(dtype=np.float64))
        score_profile = profile[PREDICTION]
        assert isinstance(score_profile, NumericProfile)
        assert score_profile.mean == pytest.approx(float(scores.mean()))
        assert score_profile.count == len(rows)

    def test_stored_as_json_with_its_sha256_beside_it(
        self, trained: tuple[Workspace, Dataset]
    ) -> None:
        ws, _ = trained
        profile = reference_profile(ws, "fraud", 1)
        path = reference_path(ws, "fraud", 1)
        assert path == ws.artifact_root / "monitoring" / "reference" / "fraud" / "v1.json"
        digest = path.with_name("v1.json.sha256").read_text().strip()
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
        assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind
        loaded = load_reference_profile(ws, "fraud", "champion")
        assert loaded.to_dict() == profile.to_dict()

    def test_built_on_first_use_and_after_an_interrupted_build(
        self, trained: tuple[Workspace, Dataset]
    ) -> None:
        ws, _ = trained
        path = reference_path(ws, "fraud", 2)
        path.unlink(missing_ok=True)
        path.with_name("v2.json.sha256").unlink(missing_ok=True)
        built = load_reference_profile(ws, "fraud", 2)
        assert path.exists() and built.n_rows == len(_eval_rows(ws, 2))
        # a build that stopped between the JSON and its hash is rebuilt, not refused
        path.with_name("v2.json.sha256").unlink()
        assert load_reference_profile(ws, "fraud", 2).to_dict() == built.to_dict()

    def test_a_tampered_reference_is_refused(self, trained: tuple[Workspace, Dataset]) -> None:
        ws, _ = trained
        reference_profile(ws, "fraud", 1)
        path = reference_path(ws, "fraud", 1)
        original = path.read_bytes()
        data = json.loads(original)
        data["n_rows"] += 1
        path.write_text(json.dumps(data))
        try:
            with pytest.raises(IntegrityError, match=r"reference profile of fraud v1.*rebuild"):
                load_reference_profile(ws, "fraud", 1)
        finally:
            path.write_bytes(original)
        assert load_reference_profile(ws, "fraud", 1).n_rows == data["n_rows"] - 1

    def test_a_version_without_lineage_windows_is_a_clear_error(
        self, trained: tuple[Workspace, Dataset]
    ) -> None:
        """A row registered before windows were recorded (the registry now refuses those)."""
        from sqlalchemy import select, update

        from shipyard.tables import model_versions as table

        ws, _ = trained
        where = (table.c.name == "fraud") & (table.c.version == 2)
        with ws.engine.connect() as conn:
            lineage = dict(conn.execute(select(table.c.lineage).where(where)).scalar_one())
        with ws.engine.begin() as conn:
            stripped = {**lineage, "train_window": None, "eval_window": None}
            conn.execute(update(table).where(where).values(lineage=stripped))
        try:
            with pytest.raises(ParameterError, match=r"fraud v2 records no evaluation window"):
                reference_profile(ws, "fraud", 2)
        finally:
            with ws.engine.begin() as conn:
                conn.execute(update(table).where(where).values(lineage=lineage))


class TestCurrentProfile:
    def test_the_logged_evaluation_rows_give_back_the_reference(self, logged: Workspace) -> None:
        """Inputs map to the schema's columns in order and outputs to the score: the
        reference's own rows, logged in shuffled requests, fill every bucket identically."""
        reference = load_reference_profile(logged, "fraud", 1)
        current = current_profile(logged, "same", version=1)
        assert current.n_rows == reference.n_rows
        for column in reference:
            assert column.histogram().labels == current[column.name].histogram().labels
            assert (column.histogram().counts == current[column.name].histogram().counts).all()

    def test_window_and_arm_select_the_records(self, logged: Workspace) -> None:
        n = load_reference_profile(logged, "fraud", 1).n_rows
        first = ROWS_PER_REQUEST * 10
        assert current_profile(logged, "same", T0, T0 + 10, version=1).n_rows == first
        assert current_profile(logged, "arms", version=1, arm="canary").n_rows == n

    def test_several_versions_need_a_choice(self, logged: Workspace) -> None:
        with pytest.raises(ParameterError, match=r"fraud v1, fraud v2; pass version="):
            current_profile(logged, "arms")

    def test_an_empty_window_is_insufficient_data_not_no_drift(self, logged: Workspace) -> None:
        from shipyard.monitoring.report import DatasetDriftTest

        current = current_profile(logged, "same", T0 - 100, T0, version=1, model="fraud")
        assert current.n_rows == 0
        reference = load_reference_profile(logged, "fraud", 1)
        report = DatasetDriftTest().compare(reference, current)
        assert report.verdict is Verdict.INSUFFICIENT_DATA
        assert drift_report(logged, "same", T0 - 100, T0).groups == ()
        with pytest.raises(ParameterError, match=r"pass model= as well as version="):
            current_profile(logged, "same", T0 - 100, T0, version=1)


class TestDriftReport:
    def test_the_evaluation_period_does_not_drift(self, logged: Workspace) -> None:
        report = drift_report(logged, "same")
        (group,) = report.groups
        assert (group.group.model, group.group.version, group.group.arm) == ("fraud", 1, None)
        assert group.report.verdict is Verdict.NO_DRIFT
        assert group.report.drifted == []

    def test_amounts_in_cents_drift_on_the_amount_and_the_prediction(
        self, logged: Workspace
    ) -> None:
        report = drift_report(logged, "cents")
        drift = report[1].report
        assert drift.verdict is Verdict.DRIFT
        assert {"TX_AMOUNT", PREDICTION} <= set(drift.drifted)
        # only the raw amount was scaled: the features computed from history did not move
        assert drift["CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"].verdict is Verdict.NO_DRIFT
        assert drift["TX_DURING_NIGHT"].verdict is Verdict.NO_DRIFT

    def test_per_arm_and_per_version(self, logged: Workspace) -> None:
        by_arm = drift_report(logged, "arms", by="arm")
        verdicts = {(g.group.arm, g.group.version): g.report.verdict for g in by_arm.groups}
        assert verdicts == {
            ("canary", 1): Verdict.DRIFT,
            ("champion", 1): Verdict.NO_DRIFT,
            ("shadow", 2): Verdict.NO_DRIFT,
        }
        assert {"TX_AMOUNT", PREDICTION} <= set(by_arm["canary"].report.drifted)
        by_version = drift_report(logged, "arms")
        assert by_version[1].report.verdict is Verdict.DRIFT  # half its traffic in cents
        assert by_version[2].report.verdict is Verdict.NO_DRIFT
        assert by_version[2].n_records == by_arm["shadow"].n_records

    def test_the_summary_is_json(self, logged: Workspace) -> None:
        summary = json.loads(json.dumps(drift_report(logged, "arms", T0, by="arm").to_dict()))
        assert summary["by"] == "arm" and summary["start"] == T0 and summary["end"] is None
        canary = next(g for g in summary["groups"] if g["arm"] == "canary")
        assert canary["verdict"] == "drift" and canary["version"] == 1
        assert canary["n_rows"] == canary["n_current"]
        assert "TX_AMOUNT" in canary["drifted"]

    def test_bad_grouping_is_refused(self, logged: Workspace) -> None:
        with pytest.raises(ParameterError, match=r"'by' parameter"):
            drift_report(logged, "same", by="day")  # type: ignore[arg-type]


def test_profiles_of_two_windows_merge_into_the_whole(logged: Workspace) -> None:
    """Current profiles combine with ``+`` like any profile (per-window, per-worker)."""
    first = current_profile(logged, "same", None, T0 + 30, version=1)
    rest = current_profile(logged, "same", T0 + 30, None, version=1)
    whole: DatasetProfile = current_profile(logged, "same", version=1)
    merged = first + rest
    assert merged.n_rows == whole.n_rows > first.n_rows > 0
    for column in whole:
        assert (merged[column.name].histogram().counts == column.histogram().counts).all()


def test_monitor_drift_command(logged: Workspace) -> None:
    from click.testing import CliRunner

    from shipyard.cli.main import cli

    runner = CliRunner()
    root = ["--workspace", str(logged.root), "monitor", "drift"]
    same = runner.invoke(cli, [*root, "same"])
    assert same.exit_code == 0, same.output
    assert "no drift" in same.output
    cents = runner.invoke(cli, [*root, "cents", "--json"])
    assert cents.exit_code == 1  # a group drifted
    (group,) = json.loads(cents.output)["groups"]
    assert group["version"] == 1 and group["verdict"] == "drift"
    assert {"TX_AMOUNT", "prediction"} <= set(group["drifted"])
    arms = runner.invoke(cli, [*root, "arms", "--by", "arm"])
    assert arms.exit_code == 1
    said = " ".join(arms.output.split())
    assert "canary" in said and "shadow" in said
