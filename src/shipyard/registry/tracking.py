"""Experiment tracking: every training run is an MLflow run in the workspace's store.

Shipyard talks to MLflow through an explicit ``MlflowClient`` bound to the workspace's
tracking URI: no global active run, so several workspaces (or threads) never mix runs.
``mlflow ui --backend-store-uri <workspace tracking URI>`` shows everything logged here.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shipyard.training.evaluation import Evaluation
    from shipyard.workspace import Workspace


SERVER_DATABASES = frozenset({"postgresql", "mysql", "mssql"})
"""Tracking URI schemes that name a database server (checked when the tracker is made)."""


class Tracker:
    """Log training runs of one workspace to MLflow."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """The MLflow client bound to the workspace's tracking and registry URI."""
        if self._client is None:
            from mlflow import MlflowClient

            # Alembic's and MLflow's INFO lines about a new SQLite store are quieted by the
            # entry points' logging setup (shipyard.logs), not here: library code leaves
            # the process's loggers alone.
            uri = self.workspace.mlflow_tracking_uri
            if uri.split(":", 1)[0].split("+", 1)[0] in SERVER_DATABASES:
                # MLflow retries an unreachable database for a long while, then fails deep
                # inside a request: say which setting is wrong at once instead
                from shipyard.workspace import check_database

                check_database("mlflow_tracking_uri", uri)
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created with an artifact root inside the workspace."""
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        location = (self.workspace.artifact_root / "mlruns").resolve()
        location.mkdir(parents=True, exist_ok=True)
        return str(self.client.create_experiment(name, artifact_location=location.as_uri()))

    def log_evaluation(
        self,
        experiment: str,
        run_name: str,
        evaluation: Evaluation,
        *,
        params: dict[str, Any],
        tags: dict[str, str],
        extra_metrics: dict[str, float] | None = None,
    ) -> str:
        """Log one configuration's evaluation: params, per-fold and overall metrics, plots."""
        from mlflow.entities import Metric, Param, RunTag

        from shipyard.registry.plots import evaluation_plots

        client = self.client
        run = client.create_run(self.experiment_id(experiment), run_name=run_name)
        run_id = run.info.run_id
        try:
            all_params = {
                **{f"model.{k}": v for k, v in evaluation.config.params.items()},
                **params,
            }
            metrics = [
                Metric(name.replace("@", "_at_"), float(value), 0, result.fold.index)
                for result in evaluation.folds
                for name, value in result.metrics.items()
            ]
            metrics += [
                Metric(name.replace("@", "_at_"), float(value), 0, 0)
                for name, value in {**evaluation.summary(), **(extra_metrics or {})}.items()
            ]
            client.log_batch(
                run_id,
                metrics=metrics,
                params=[Param(k, str(v)[:6000]) for k, v in all_params.items()],
                tags=[RunTag(k, v) for k, v in {**tags, **environment_tags()}.items()],
            )
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                evaluation_plots(evaluation, folder / "plots", run_name)
                folds = [
                    {**r.fold.describe(), **r.metrics, "card_precision_per_day": r.cp_per_day}
                    for r in evaluation.folds
                ]
                (folder / "folds.json").write_text(json.dumps(folds, indent=2))
                client.log_artifacts(run_id, str(folder))
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id)
        return str(run_id)


def environment_tags() -> dict[str, str]:
    """Python and library versions, so a run can be reproduced."""
    from importlib import metadata

    tags = {"env.python": platform.python_version(), "env.platform": platform.platform()}
    for package in (
        "shipyard",
        "numpy",
        "pandas",
        "scikit-learn",
        "lightgbm",
        "xgboost",
        "mlflow",
        "duckdb",
    ):
        try:
            tags[f"env.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags
