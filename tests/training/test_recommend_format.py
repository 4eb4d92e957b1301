"""The recommender's file: mapped, saved again byte for byte; registered, MLflow gets a pointer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import IntegrityError
from shipyard.registry.models import ModelRegistry
from shipyard.training.recommend import (
    FILE,
    INPUTS,
    RecommenderConfig,
    load_recommender,
    save_recommender,
)
from shipyard.types import ColumnRoles, Lineage
from shipyard.workspace import Workspace
from tests.training.test_recommend import tiny_recommender


def test_the_file_is_mapped_not_read_and_saves_again_byte_for_byte(tmp_path: Path) -> None:
    rec = tiny_recommender()
    first, second = tmp_path / "a" / FILE, tmp_path / "b" / FILE
    save_recommender(rec, first)
    loaded = load_recommender(first)
    assert isinstance(loaded.user_vectors, np.memmap) and isinstance(loaded.seen_indices, np.memmap)
    assert all(np.asarray(a).ctypes.data % 64 == 0 for a in loaded.arrays.values() if a.size)
    save_recommender(loaded, second)  # streams the mapped arrays back out
    assert first.read_bytes() == second.read_bytes()
    assert loaded.recommend(["u9", "x"], sessions=["", "101"], genre="Comedy") == rec.recommend(
        ["u9", "x"], sessions=["", "101"], genre="Comedy"
    )
    (tmp_path / "bad").write_bytes(b"not a recommender at all, sorry")
    with pytest.raises(IntegrityError, match="not a Shipyard recommender file"):
        load_recommender(tmp_path / "bad")


@pytest.mark.slow  # a fresh workspace's MLflow tables and a pyfunc load: ~9 s
def test_mlflow_loads_the_registered_file_through_a_pointer_not_a_copy(
    workspace: Workspace,
) -> None:
    import mlflow.pyfunc

    from shipyard.registry.tracking import Tracker

    registry, tracker = ModelRegistry(workspace), Tracker(workspace)
    rec = tiny_recommender()
    lineage = Lineage("", 0, "", "", {}, "", ColumnRoles("", "", "user"), "random factors")
    run_id = tracker.client.create_run(tracker.experiment_id("recsys-format")).info.run_id
    version = registry.register(
        "movies",
        RecommenderConfig().model(rec),
        lineage=lineage,
        evaluation=None,
        run_id=run_id,
        sample=pd.DataFrame([{**dict.fromkeys(INPUTS.names, ""), "user": "u0"}]),
    )
    logged = workspace.artifact_root / "mlruns"
    assert not list(logged.rglob(FILE))  # the only copy is the registered native file
    pointers = list(logged.rglob("native.json"))
    assert len(pointers) == 1
    held = json.loads(pointers[0].read_text())
    assert held["sha256"] == version.native_sha256
    assert (pointers[0].parent / held["path"]).resolve() == version.native_path.resolve()

    frame = pd.DataFrame({**{n: ["", ""] for n in INPUTS.names}, "user": ["u3", "new"]})
    frame["k"] = ["3", "5"]
    model_dir = str(pointers[0].parent.parent)  # the run's model, as MLflow clients load it
    answers = mlflow.pyfunc.load_model(model_dir).predict(frame)
    expected = rec.recommend(["u3", "new"], k=[3, 5])
    assert [[e["item"] for e in a["items"]] for a in np.asarray(answers).tolist()] == [
        [e["item"] for e in a["items"]] for a in expected
    ]
    version.native_path.write_bytes(version.native_path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        mlflow.pyfunc.load_model(model_dir)
