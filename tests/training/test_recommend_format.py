"""The recommender registered: MLflow gets a pointer to the one native file, not a copy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import IntegrityError
from shipyard.registry.models import ModelRegistry
from shipyard.training.recommend import FILE, INPUTS, RecommenderConfig
from shipyard.types import ColumnRoles, Lineage
from shipyard.workspace import Workspace
from tests.training.test_recommend import tiny_recommender


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
