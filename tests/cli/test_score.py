"""``shipyard score`` run as users run it: a real process on a workspace with a champion."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.serving.batch import read_manifest
from shipyard.workspace import Workspace
from tests.cli.test_cli import shipyard
from tests.conftest import SMALL


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    """A workspace folder whose champion fraud v1 is a decision tree (quick to train)."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.fraud import BASELINE_VIEWS
    from shipyard.features.offline import OfflineStore
    from shipyard.solutions.fraud import Protocol, train_suite

    ws = Workspace.init(tmp_path_factory.mktemp("score") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(BASELINE_VIEWS)
    protocol = Protocol(start_date_training="2018-05-06", n_folds=2)
    train_suite(
        ws, dataset, model_types=["decision_tree"], protocol=protocol, n_boot=0, promote=True
    )
    ws.close()
    return ws.root, dataset


def test_score_writes_every_row_with_a_progress_bar_and_a_summary(
    project: tuple[Path, Dataset], tmp_path: Path
) -> None:
    root, dataset = project
    done = shipyard(
        "score",
        "fraud@champion",
        "--data",
        "fraud",
        "--out",
        str(tmp_path / "out"),
        "--engine",
        "local",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert "Scoring partitions" in done.stdout
    assert f"{len(dataset.partitions)}/{len(dataset.partitions)}" in done.stdout
    assert f"Scored {dataset.n_rows:,} rows in {len(dataset.partitions)} parts" in done.stdout
    assert "with fraud v1" in done.stdout and "on the local engine" in done.stdout
    assert "rows/s" in done.stdout
    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == dataset.n_rows and out["TRANSACTION_ID"].is_unique
    assert read_manifest(tmp_path / "out")["version"] == 1


def test_unknown_names_and_a_used_output_folder_are_one_clear_line(
    project: tuple[Path, Dataset], tmp_path: Path
) -> None:
    root, _ = project
    out = str(tmp_path / "out")
    cases = {
        ("fraud@gold", "fraud"): "Model 'fraud' has no alias 'gold' (aliases: champion -> v1)",
        ("credit@champion", "fraud"): "No registered model 'credit'. Registered models: fraud.",
        ("fraud@champion", "fraud@9"): "No data set 'fraud' version 9",
    }
    for (model, data), message in cases.items():
        done = shipyard("score", model, "--data", data, "--out", out, cwd=root)
        assert done.returncode == 2, done.stdout
        assert message in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    done = shipyard("score", "fraud", "--data", "fraud", "--out", out, cwd=root)
    assert done.returncode == 2 and "without" not in done.stdout
    assert "exists and is not empty" in done.stderr and "--overwrite" in done.stderr
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_score_on_a_local_ray_writes_the_same_bytes_as_the_local_engine(
    project: tuple[Path, Dataset], tmp_path: Path
) -> None:
    root, dataset = project
    runs = {}
    for engine in ("local", "ray"):
        done = shipyard(
            "score",
            "fraud@1",
            "--data",
            "fraud",
            "--out",
            str(tmp_path / engine),
            "--engine",
            engine,
            cwd=root,
            env={"SHIPYARD_RAY_NUM_CPUS": "2"},
        )
        assert done.returncode == 0, done.stderr
        assert f"on the {engine} engine" in done.stdout
        runs[engine] = {p.name: p.read_bytes() for p in (tmp_path / engine).glob("part-*")}
    assert len(runs["ray"]) == len(dataset.partitions)
    assert runs["ray"] == runs["local"]
