"""Late labels joined to a real prediction log (records written by PredictionLog)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from shipyard.errors import DataValidationError, ParameterError
from shipyard.monitoring.labels import (
    ingest_labels,
    label_folder,
    labelled_predictions,
    realized_performance,
)
from shipyard.monitoring.logstore import compact
from shipyard.monitoring.performance import RealizedPerformance
from shipyard.serving.predlog import PredictionLog, log_folder
from shipyard.workspace import Workspace

DAY = 86_400.0
T0 = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
N = 400  # 100 records a day over four days


def _score(i: int) -> float:
    return round((i * 37 % 100) / 100 + 0.005, 4)


def _fraud(i: int) -> int:
    # mostly follows the score, so that AUC is well above 0.5, with some noise
    return int(_score(i) > 0.8 or i % 23 == 0)


def _record(i: int) -> dict[str, Any]:
    """Request i: version 1 (arm champion) or 2 (arm challenger); every third one sent as a
    raw event carrying TRANSACTION_ID = 1000 + i, CUSTOMER_ID and TX_DATETIME."""
    record: dict[str, Any] = {
        "request_id": f"req-{i}",
        "time": T0 + i * DAY / 100,
        "endpoint": "fraud",
        "model": "fraud-model",
        "version": 1 + i % 2,
        "arm": "champion" if i % 2 == 0 else "challenger",
        "routing_key": None,
        "protocol": "v2",
        "inputs": [[float(i), 2.5]],
        "outputs": [_score(i)],
        "latency_ms": 1.5,
    }
    if i % 3 == 0:
        when = datetime.fromtimestamp(record["time"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        record["events"] = {
            "TRANSACTION_ID": [1000 + i],
            "CUSTOMER_ID": [str(i % 50)],
            "TX_DATETIME": [when],
        }
    return record


def _shadow(i: int) -> dict[str, Any]:
    return {**_record(i), "version": 3, "arm": "shadow", "outputs": [0.5]}


def _multi_row() -> dict[str, Any]:
    """One request scoring two transactions, as raw events."""
    return {
        **_record(0),
        "request_id": "req-multi",
        "time": T0 + 0.5,
        "inputs": [[1.0, 2.0], [3.0, 4.0]],
        "outputs": [0.9, 0.1],
        "events": {
            "TRANSACTION_ID": [5000, 5001],
            "CUSTOMER_ID": ["7", "8"],
            "TX_DATETIME": ["2026-11-20 00:00:00", "2026-11-20 00:00:00"],
        },
    }


def _write(folder: Path, worker: str, records: list[dict[str, Any]]) -> None:
    """Commit records through a real PredictionLog; small segments make it rotate often."""
    log = PredictionLog(folder, worker, segment_bytes=4_000)

    async def run() -> None:
        for record in records:
            await log.commit(record)

    asyncio.run(run())
    log.close()


def _logged(ws: Workspace, events: bool = True) -> Workspace:
    def keep(record: dict[str, Any]) -> dict[str, Any]:
        return record if events else {k: v for k, v in record.items() if k != "events"}

    folder = log_folder(ws, "fraud")
    _write(folder, "w1", [keep(_record(i)) for i in range(0, N, 2)] + [keep(_multi_row())])
    _write(folder, "w2", [keep(_record(i)) for i in range(1, N, 2)])
    _write(folder, "w3", [keep(_shadow(i)) for i in range(0, 20)])
    return ws


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return _logged(Workspace.init(tmp_path / "ws"))


def _by_id(ids: range | list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {"request_id": [f"req-{i}" for i in ids], "label": [_fraud(i) for i in ids]}
    )


def _labels(frame: pd.DataFrame) -> dict[tuple[str, int], Any]:
    return {
        (r.request_id, r.row): (None if pd.isna(r.label) else int(r.label))
        for r in frame.itertuples()
    }


class TestIngestAndJoin:
    def test_labels_by_request_id_label_exactly_those_predictions(
        self, workspace: Workspace
    ) -> None:
        result = ingest_labels(workspace, "fraud", _by_id(range(0, 100)))

        assert (result.labels, result.matched, result.unknown) == (100, 100, 0)
        assert result.positives == sum(_fraud(i) for i in range(100))
        joined = labelled_predictions(workspace, "fraud")
        assert len(joined) == N + 2  # every primary prediction, one per row; no shadows
        assert set(joined["arm"]) == {"champion", "challenger"}
        labelled = joined[joined["label"].notna()]
        assert sorted(labelled["request_id"]) == sorted(f"req-{i}" for i in range(100))
        for r in labelled.itertuples():
            i = int(r.request_id.removeprefix("req-"))
            assert (r.label, r.score, r.version) == (_fraud(i), _score(i), 1 + i % 2)

    def test_a_later_label_supersedes_an_earlier_one(self, workspace: Workspace) -> None:
        ingest_labels(workspace, "fraud", pd.DataFrame({"request_id": ["req-1"], "label": [0]}))
        ingest_labels(workspace, "fraud", pd.DataFrame({"request_id": ["req-1"], "label": [1]}))
        # by another key, later still: the latest batch wins across keys too
        ingest_labels(
            workspace,
            "fraud",
            pd.DataFrame({"TRANSACTION_ID": [1003], "label": [1]}),
            key="TRANSACTION_ID",
        )
        ingest_labels(workspace, "fraud", pd.DataFrame({"request_id": ["req-3"], "label": [0]}))

        labels = _labels(labelled_predictions(workspace, "fraud"))
        assert labels[("req-1", 0)] == 1 and labels[("req-3", 0)] == 0
        assert len(list(label_folder(workspace, "fraud").glob("*.parquet"))) == 4

    def test_unknown_request_ids_are_stored_and_reported(self, workspace: Workspace) -> None:
        frame = pd.DataFrame({"request_id": ["req-2", "nope-1", "nope-2"], "label": [1, 0, 1]})

        result = ingest_labels(workspace, "fraud", frame)

        assert (result.labels, result.matched, result.unknown) == (3, 1, 2)
        assert result.unknown_examples == ("nope-1", "nope-2")
        assert "2 unknown (e.g. nope-1, nope-2)" in str(result)
        joined = labelled_predictions(workspace, "fraud")
        assert joined["label"].notna().sum() == 1

    def test_labels_by_event_keys(self, workspace: Workspace) -> None:
        ids = list(range(0, 60, 3))
        by_tx = pd.DataFrame(
            {"TRANSACTION_ID": [1000 + i for i in ids], "fraud": [_fraud(i) for i in ids]}
        )
        result = ingest_labels(workspace, "fraud", by_tx, key="TRANSACTION_ID", label="fraud")
        assert (result.matched, result.unknown) == (len(ids), 0)

        # customer + time, the time as a datetime column, the customer as an integer
        when = pd.to_datetime([T0 + 90 * DAY / 100, T0], unit="s")
        by_entity = pd.DataFrame({"CUSTOMER_ID": [40, 8], "TX_DATETIME": when, "label": [1, 1]})
        result = ingest_labels(workspace, "fraud", by_entity, key=["CUSTOMER_ID", "TX_DATETIME"])
        assert (result.matched, result.unknown) == (2, 0)

        labels = _labels(labelled_predictions(workspace, "fraud"))
        for i in ids:
            assert labels[(f"req-{i}", 0)] == _fraud(i)
        assert labels[("req-90", 0)] == 1
        assert labels[("req-multi", 0)] is None and labels[("req-multi", 1)] == 1

    def test_a_multi_row_request_is_labelled_row_by_row(self, workspace: Workspace) -> None:
        frame = pd.DataFrame(
            {"request_id": ["req-multi", "req-multi"], "row": [0, 1], "label": [1, 0]}
        )
        ingest_labels(workspace, "fraud", frame)
        joined = labelled_predictions(workspace, "fraud")
        multi = joined[joined["request_id"] == "req-multi"].sort_values("row")
        assert multi["score"].tolist() == [0.9, 0.1] and multi["label"].tolist() == [1, 0]

    def test_shadows_only_when_asked(self, workspace: Workspace) -> None:
        ingest_labels(workspace, "fraud", _by_id(range(0, 10)))
        joined = labelled_predictions(workspace, "fraud", include_shadows=True)
        shadows = joined[joined["arm"] == "shadow"]
        assert len(shadows) == 20 and shadows["label"].notna().sum() == 10
        assert (shadows["score"] == 0.5).all()
        only = labelled_predictions(workspace, "fraud", versions=[2], arms=["challenger"])
        assert set(only["version"]) == {2} and len(only) == N // 2
        days = labelled_predictions(workspace, "fraud", T0 + DAY, datetime(2026, 11, 22))
        assert len(days) == 100

    def test_compaction_between_ingest_and_join_changes_nothing(self, tmp_path: Path) -> None:
        # requests sent as features: compaction refuses raw-event records (next test)
        ws = _logged(Workspace.init(tmp_path / "ws"), events=False)
        ingest_labels(ws, "fraud", _by_id(range(0, N, 5)))
        ingest_labels(ws, "fraud", _by_id(range(0, 10)).assign(label=1))  # supersedes
        before = labelled_predictions(ws, "fraud", include_shadows=True)

        moved = compact(ws, "fraud")

        assert moved.records > N // 2
        after = labelled_predictions(ws, "fraud", include_shadows=True)
        # 80 + 8 primary answers (ids 0..9 overlap twice), shadows of 0..9, 10 and 15
        assert before["label"].notna().sum() == 88 + 12
        assert _labels(before)[("req-1", 0)] == 1
        pd.testing.assert_frame_equal(
            before.reset_index(drop=True), after.reset_index(drop=True), check_dtype=False
        )

    def test_compaction_keeps_labels_by_event_keys(self, workspace: Workspace) -> None:
        ingest_labels(
            workspace,
            "fraud",
            pd.DataFrame({"TRANSACTION_ID": [1003, 1006], "label": [1, 1]}),
            key="TRANSACTION_ID",
        )
        before = labelled_predictions(workspace, "fraud", include_shadows=True)
        compact(workspace, "fraud")
        after = labelled_predictions(workspace, "fraud", include_shadows=True)
        pd.testing.assert_frame_equal(
            before.reset_index(drop=True), after.reset_index(drop=True), check_dtype=False
        )

    def test_labels_without_a_log_are_all_unknown(self, tmp_path: Path) -> None:
        ws = Workspace.init(tmp_path / "empty")
        result = ingest_labels(ws, "fraud", _by_id([1, 2]))
        assert (result.matched, result.unknown) == (0, 2)
        assert labelled_predictions(ws, "fraud").empty


class TestRealizedPerformance:
    def test_equals_realized_performance_on_the_same_arrays(self, workspace: Workspace) -> None:
        labelled = [i for i in range(N) if i % 4 != 3]  # 75 % of the predictions
        ingest_labels(workspace, "fraud", _by_id(labelled))
        metrics = RealizedPerformance(k=5, n_boot=50, min_rows=10, min_positives=2)

        report = realized_performance(
            workspace, "fraud", threshold=0.7, window="1D", metrics=metrics
        )

        scores = np.array([_score(i) for i in labelled])
        y = np.array([_fraud(i) for i in labelled])
        t = np.array([T0 + i * DAY / 100 for i in labelled])
        days = np.floor(t / DAY).astype(np.int64)
        names = np.array(
            [datetime.fromtimestamp(d * DAY, tz=UTC).strftime("%Y-%m-%d") for d in days]
        )
        direct = RealizedPerformance(
            threshold=0.7, k=5, n_boot=50, min_rows=10, min_positives=2
        ).compute(scores, y, window=names, day=days)
        assert report["all"].to_dict() == direct.to_dict()
        assert all(w["roc_auc"].value is not None for w in direct.windows)
        assert [w.window for w in direct.windows] == [f"2026-11-{d}" for d in range(20, 24)]
        coverage = report.coverage["all"]
        # day 20 also holds the two rows of the multi-row request, unlabelled
        assert (coverage["2026-11-20"].records, coverage["2026-11-20"].labelled) == (102, 75)
        assert coverage["2026-11-21"].share == 0.75

    def test_split_by_version_and_by_arm(self, workspace: Workspace) -> None:
        ingest_labels(workspace, "fraud", _by_id(range(N)))
        metrics = RealizedPerformance(k=5, n_boot=20, min_rows=10, min_positives=2)

        by_version = realized_performance(
            workspace, "fraud", threshold=0.7, window="7D", by="version", metrics=metrics
        )
        by_arm = realized_performance(
            workspace,
            "fraud",
            threshold=0.7,
            window="7D",
            by="arm",
            metrics=metrics,
            include_shadows=True,
        )

        assert set(by_version.reports) == {"v1", "v2"}
        for version in (1, 2):
            ids = [i for i in range(N) if 1 + i % 2 == version]
            days = np.floor(np.array([T0 + i * DAY / 100 for i in ids]) / DAY).astype(np.int64)
            week = datetime.fromtimestamp(np.floor((T0) / (7 * DAY)) * 7 * DAY, tz=UTC).strftime(
                "%Y-%m-%d"
            )
            direct = RealizedPerformance(
                threshold=0.7, k=5, n_boot=20, min_rows=10, min_positives=2
            ).compute(
                [_score(i) for i in ids],
                [_fraud(i) for i in ids],
                window=np.array([week] * len(ids)),
                day=days,
            )
            assert by_version[f"v{version}"].to_dict() == direct.to_dict()
        assert set(by_arm.reports) == {"arm champion", "arm challenger", "arm shadow"}
        assert by_arm["arm shadow"].windows[0].n == 20

    def test_card_precision_at_k_by_an_event_entity(self, workspace: Workspace) -> None:
        ids = list(range(0, N, 3))  # the raw-event requests
        ingest_labels(workspace, "fraud", _by_id(ids))
        metrics = RealizedPerformance(k=5, n_boot=20, min_rows=10, min_positives=2)

        report = realized_performance(
            workspace, "fraud", threshold=0.7, entity="CUSTOMER_ID", metrics=metrics
        )

        days = np.floor(np.array([T0 + i * DAY / 100 for i in ids]) / DAY).astype(np.int64)
        names = [datetime.fromtimestamp(d * DAY, tz=UTC).strftime("%Y-%m-%d") for d in days]
        direct = RealizedPerformance(
            threshold=0.7, k=5, n_boot=20, min_rows=10, min_positives=2
        ).compute(
            [_score(i) for i in ids],
            [_fraud(i) for i in ids],
            window=np.array(names),
            day=days,
            entity=np.array([str(i % 50) for i in ids], dtype=object),
        )
        assert report["all"].to_dict() == direct.to_dict()
        assert all(w["card_precision@5"].value is not None for w in report["all"].windows)
        assert all(w["roc_auc"].value is not None for w in report["all"].windows)

    def test_an_entity_missing_from_labelled_predictions_is_refused(
        self, workspace: Workspace
    ) -> None:
        ingest_labels(workspace, "fraud", _by_id([1, 3]))  # req-1 was sent as features
        with pytest.raises(DataValidationError, match="entity column 'CUSTOMER_ID': 1 "):
            realized_performance(workspace, "fraud", threshold=0.5, entity="CUSTOMER_ID")

    def test_a_window_without_labels_has_coverage_and_no_metrics(
        self, workspace: Workspace
    ) -> None:
        ingest_labels(workspace, "fraud", _by_id(range(100, 200)))  # day 21 only
        report = realized_performance(workspace, "fraud", threshold=0.5)
        assert [w.window for w in report["all"].windows] == ["2026-11-21"]
        assert report.coverage["all"]["2026-11-20"].labelled == 0
        assert report.coverage["all"]["2026-11-21"].share == 1.0

    def test_bad_parameters(self, workspace: Workspace) -> None:
        with pytest.raises(ParameterError, match="'window'"):
            realized_performance(workspace, "fraud", threshold=0.5, window="2H")
        with pytest.raises(ParameterError, match="'by'"):
            realized_performance(workspace, "fraud", threshold=0.5, by="model")


class TestBadLabelFiles:
    def test_missing_columns_are_named(self, workspace: Workspace) -> None:
        with pytest.raises(DataValidationError, match=r"lacks column\(s\) \['label'\]"):
            ingest_labels(workspace, "fraud", pd.DataFrame({"request_id": ["req-1"]}))
        with pytest.raises(DataValidationError, match="TRANSACTION_ID"):
            ingest_labels(workspace, "fraud", _by_id([1]), key="TRANSACTION_ID")

    def test_labels_must_be_zero_or_one(self, workspace: Workspace) -> None:
        for bad in ([2], ["yes"], [0.5]):
            frame = pd.DataFrame({"request_id": ["req-1"], "label": bad})
            with pytest.raises(DataValidationError, match=r"label column 'label'.*0/1"):
                ingest_labels(workspace, "fraud", frame)
        frame = pd.DataFrame({"request_id": ["req-1", "req-2"], "label": [1, None]})
        with pytest.raises(DataValidationError, match="missing"):
            ingest_labels(workspace, "fraud", frame)

    def test_duplicate_keys_in_one_batch_are_refused(self, workspace: Workspace) -> None:
        frame = pd.DataFrame({"request_id": ["req-1", "req-1"], "label": [1, 0]})
        with pytest.raises(DataValidationError, match=r"repeats 1 key.*req-1"):
            ingest_labels(workspace, "fraud", frame)
        frame = pd.DataFrame({"TRANSACTION_ID": [1003, 1003.0], "label": [1, 1]})
        with pytest.raises(DataValidationError, match="repeats"):
            ingest_labels(workspace, "fraud", frame, key="TRANSACTION_ID")
        assert not label_folder(workspace, "fraud").exists()

    def test_missing_keys_and_bad_files(self, workspace: Workspace, tmp_path: Path) -> None:
        frame = pd.DataFrame({"request_id": ["req-1", None], "label": [1, 0]})
        with pytest.raises(DataValidationError, match="key column 'request_id'"):
            ingest_labels(workspace, "fraud", frame)
        with pytest.raises(DataValidationError, match="does not exist"):
            ingest_labels(workspace, "fraud", tmp_path / "absent.csv")
        (tmp_path / "labels.txt").write_text("x")
        with pytest.raises(DataValidationError, match=r"\.csv or \.parquet"):
            ingest_labels(workspace, "fraud", tmp_path / "labels.txt")
        with pytest.raises(DataValidationError, match="empty"):
            ingest_labels(workspace, "fraud", _by_id([]))
        with pytest.raises(ParameterError, match="'key'"):
            ingest_labels(workspace, "fraud", _by_id([1]), key=["request_id", "x"])

    def test_boolean_labels_and_time_zone_aware_keys(self, workspace: Workspace) -> None:
        when = pd.to_datetime([T0 + 3 * DAY / 100], unit="s", utc=True).tz_convert("Europe/Paris")
        frame = pd.DataFrame({"CUSTOMER_ID": ["3"], "TX_DATETIME": when, "label": [True]})
        result = ingest_labels(workspace, "fraud", frame, key=["CUSTOMER_ID", "TX_DATETIME"])
        assert (result.matched, result.positives) == (1, 1)
        assert _labels(labelled_predictions(workspace, "fraud"))[("req-3", 0)] == 1

    def test_csv_parquet_and_arrow_inputs(self, workspace: Workspace, tmp_path: Path) -> None:
        _by_id(range(0, 10)).to_csv(tmp_path / "a.csv", index=False)
        _by_id(range(10, 20)).to_parquet(tmp_path / "b.parquet")
        results = [
            ingest_labels(workspace, "fraud", tmp_path / "a.csv"),
            ingest_labels(workspace, "fraud", str(tmp_path / "b.parquet")),
            ingest_labels(workspace, "fraud", pa.Table.from_pandas(_by_id(range(20, 30)))),
        ]
        assert [(r.labels, r.unknown) for r in results] == [(10, 0)] * 3
        assert labelled_predictions(workspace, "fraud")["label"].notna().sum() == 30

    def test_stored_batches_are_parquet_with_their_ingestion_time(
        self, workspace: Workspace
    ) -> None:
        result = ingest_labels(workspace, "fraud", _by_id([1, 2]))
        stored = pd.read_parquet(result.path)
        assert list(stored.columns) == ["key_names", "key", "row", "label", "ingested_at"]
        assert stored["ingested_at"].nunique() == 1
        assert not list(result.path.parent.glob(".*.tmp"))
        assert json.dumps(stored["key"].tolist()) == '["req-1", "req-2"]'


# -- the command line ------------------------------------------------------------------


def test_monitor_labels_and_performance_commands(workspace: Workspace, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shipyard.cli.main import cli

    ids = list(range(N))
    batch = _by_id(ids)
    batch.loc[len(batch)] = ["req-unknown", 1]
    path = tmp_path / "labels.csv"
    batch.to_csv(path, index=False)
    runner = CliRunner()
    root = ["--workspace", str(workspace.root), "monitor"]
    stored = runner.invoke(cli, [*root, "labels", "fraud", str(path)])
    assert stored.exit_code == 0, stored.output
    said = " ".join(stored.output.split())  # rich wraps long lines
    assert f"{N + 1} label(s) by request_id" in said
    assert f"{N} matched, 1 unknown (e.g. req-unknown)" in said

    shown = runner.invoke(cli, [*root, "performance", "fraud", "--threshold", "0.8", "--json"])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    expected = realized_performance(workspace, "fraud", threshold=0.8)
    assert document["all"]["metrics"] == json.loads(json.dumps(expected["all"].to_dict()))
    days = document["all"]["coverage"]
    assert sum(c["labelled"] for c in days.values()) == N  # req-multi (two rows) has none
    assert sum(c["records"] for c in days.values()) == N + 2

    table = runner.invoke(cli, [*root, "performance", "fraud", "--threshold", "0.8"])
    assert table.exit_code == 0, table.output
    assert "fraud all" in table.output and "2026-11-20" in table.output

    bad = runner.invoke(cli, [*root, "performance", "fraud", "--threshold", "0.8", "--since", "x"])
    assert bad.exit_code == 2 and "expected a number and a unit" in " ".join(bad.output.split())


def test_json_answers_are_labelled_row_by_row_without_a_score(tmp_path: Path) -> None:
    """A recommender's lists (outputs_json, one value per row) join labels like scores do."""
    ws = Workspace.init(tmp_path / "ws")
    lists = [{"items": [{"item": 3, "score": 0.5}]}, {"items": []}]
    records = [
        {**_record(i), "endpoint": "recs", "outputs": None, "outputs_json": lists[: 1 + i % 2]}
        for i in range(6)
    ]
    _write(
        log_folder(ws, "recs"),
        "w1",
        [{k: v for k, v in r.items() if v is not None} for r in records],
    )
    labels = pd.DataFrame(
        {
            "request_id": ["req-1", "req-1", "req-2", "req-9"],
            "row": [0, 1, 0, 0],
            "label": [1, 0, 1, 1],
        }
    )
    ingested = ingest_labels(ws, "recs", labels)
    assert (ingested.matched, ingested.unknown) == (3, 1)
    joined = labelled_predictions(ws, "recs")
    assert len(joined) == 9  # rows 0..1 of the odd requests, row 0 of the even ones
    assert joined["score"].isna().all()
    assert _labels(joined)[("req-1", 0)] == 1 and _labels(joined)[("req-1", 1)] == 0
    assert _labels(joined)[("req-2", 0)] == 1 and _labels(joined)[("req-3", 1)] is None
