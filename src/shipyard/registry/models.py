"""The model registry: MLflow model versions plus what MLflow lacks.

MLflow is the system of record for runs, registered model versions and aliases
(``champion``, ``challenger``). Shipyard adds, in its own tables of the workspace database:
each version's lineage (run, data set hash, feature definitions hash, windows), its native
model file with SHA-256, its schema, its model card, and an audit trail of every
registration, promotion, refusal and rollback with who, when and why.

Example::

    registry = ModelRegistry(ws)
    version = registry.register("fraud", model, run_id=..., evaluation=..., ...)
    registry.promote("fraud", version.version, reason="better AP", gate=PromotionGate())
    predictor = registry.load("fraud", "champion")     # hash-verified native model
"""

from __future__ import annotations

import getpass
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import ModelNotFoundError, PromotionRefusedError, SchemaError
from shipyard.types import Schema

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.registry.gate import GateResult, PromotionGate
    from shipyard.registry.tracking import Tracker
    from shipyard.serving.predictors import NativePredictor
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.frames import Window
    from shipyard.training.trainers import TrainedModel
    from shipyard.workspace import Workspace

PLOT_TITLES = {
    "roc": "ROC curve",
    "pr": "Precision-recall curve",
    "calibration": "Reliability curve",
    "importance": "Feature importance",
}
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version with its lineage."""

    name: str
    version: int
    run_id: str
    model_type: str
    framework: str
    params: dict[str, Any]
    native_path: Path
    native_sha256: str
    input_schema: Schema
    dataset: str
    dataset_version: int
    dataset_hash: str
    features_hash: str
    features_ref: str
    train_window: dict[str, Any]
    eval_window: dict[str, Any]
    metrics: dict[str, float]
    card_path: Path
    created_at: datetime
    aliases: tuple[str, ...] = field(default=())

    @property
    def card_html(self) -> Path:
        """The HTML model card beside the Markdown one."""
        return self.card_path.with_suffix(".html")


@dataclass(frozen=True)
class RegistryEvent:
    """One line of the registry's audit trail."""

    name: str
    version: int | None
    action: str
    alias: str | None
    previous_version: int | None
    actor: str
    reason: str
    details: dict[str, Any]
    at: datetime


def current_user() -> str:
    """The operating-system user, recorded as the actor when none is given."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class ModelRegistry:
    """Register, look up, promote, roll back and load models of one workspace."""

    def __init__(self, workspace: Workspace, tracker: Tracker | None = None) -> None:
        from shipyard.registry.tracking import Tracker

        self.workspace = workspace
        self.tracker = tracker if tracker is not None else Tracker(workspace)

    # -- registration ----------------------------------------------------------------------

    def register(
        self,
        name: str,
        model: TrainedModel,
        *,
        run_id: str,
        evaluation: Evaluation,
        y: Any,
        dataset: Dataset,
        features_ref: str,
        features_hash: str,
        train_window: Window,
        eval_window: Window,
        protocol: str,
        sample: pd.DataFrame,
        actor: str | None = None,
        reason: str = "trained",
    ) -> ModelVersion:
        """Register ``model`` as a new version of ``name`` with lineage and a model card.

        The model is logged to its run in MLflow's format (so MLflow clients can serve it)
        and saved natively with its SHA-256 (what Shipyard loads). The new version gets the
        ``challenger`` alias; promote it to make it the champion.
        """
        from sqlalchemy import insert

        from shipyard.registry.card import ModelCard
        from shipyard.tables import model_versions

        client = self.tracker.client
        version = self._create_mlflow_version(name, model, run_id, sample)
        folder = self.workspace.artifact_root / "models" / name / f"v{version}"
        try:
            native_path, sha256 = model.save_native(folder)
            plots_dir = folder / "plots"
            from shipyard.registry.plots import evaluation_plots

            plots = evaluation_plots(evaluation, y, plots_dir, f"{name} v{version}")
            summary = evaluation.summary()
            card = ModelCard(
                name=name,
                version=version,
                model_type=model.config.model_type,
                params=model.config.get_params(),
                run_id=run_id,
                dataset=dataset.name,
                dataset_version=dataset.version,
                dataset_hash=dataset.content_hash,
                features_ref=features_ref,
                features_hash=features_hash,
                features=model.features,
                train_window=f"{train_window.start} .. {train_window.end}",
                eval_window=f"{eval_window.start} .. {eval_window.end}",
                protocol=protocol,
                metrics=metric_rows(evaluation),
                calibration=calibration_summary(evaluation, y),
                plots={PLOT_TITLES.get(p.stem, p.stem): p for p in plots},
            )
            card_md, card_html = card.write(folder)
            client.log_artifact(run_id, str(card_md), "model_card")
            client.log_artifact(run_id, str(card_html), "model_card")
            client.set_registered_model_alias(name, CHALLENGER, str(version))
            row = {
                "name": name,
                "version": version,
                "run_id": run_id,
                "model_type": model.config.model_type,
                "framework": model.config.framework,
                "params": _jsonable(model.config.get_params()),
                "native_path": str(native_path.relative_to(self.workspace.artifact_root)),
                "native_sha256": sha256,
                "input_schema": model.input_schema.to_dict(),
                "output_schema": model.output_schema.to_dict(),
                "dataset": dataset.name,
                "dataset_version": dataset.version,
                "dataset_hash": dataset.content_hash,
                "features_hash": features_hash,
                "features_ref": features_ref,
                "train_window": train_window.to_dict(),
                "eval_window": eval_window.to_dict(),
                "metrics": {k: float(v) for k, v in summary.items()},
                "card_path": str(card_md.relative_to(self.workspace.artifact_root)),
                "created_at": _now(),
            }
            with self.workspace.engine.begin() as conn:
                conn.execute(insert(model_versions).values(**row))
        except BaseException:
            # leave no half-registered version behind
            client.delete_model_version(name, str(version))
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._record(name, version, "register", CHALLENGER, None, actor, reason, {"run_id": run_id})
        return self.get(name, version)

    def _create_mlflow_version(
        self, name: str, model: TrainedModel, run_id: str, sample: pd.DataFrame
    ) -> int:
        """Log ``model`` to its run in MLflow's format with its signature; register a version."""
        import mlflow.sklearn
        from mlflow.models import infer_signature

        client = self.tracker.client
        # MLflow warns that pickled models run code when loaded; Shipyard loads only files
        # whose SHA-256 it recorded (load_native), so the warning says nothing new here.
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory() as tmp:
            flavor_dir = Path(tmp) / "model"
            X = sample[model.features].astype(float)
            mlflow.sklearn.save_model(
                model.estimator,
                str(flavor_dir),
                signature=infer_signature(X, model.predict_proba(X)),
                pyfunc_predict_fn="predict_proba",
                serialization_format="pickle",
            )
            client.log_artifacts(run_id, str(flavor_dir), "model")
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description="Registered by Shipyard")
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        return int(client.create_model_version(name, source, run_id=run_id).version)

    # -- lookup ----------------------------------------------------------------------------

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """Registered versions (of ``name``, or of every model), newest first."""
        from sqlalchemy import select

        from shipyard.tables import model_versions as table

        query = select(table).order_by(table.c.name, table.c.version.desc())
        if name is not None:
            query = query.where(table.c.name == name)
        with self.workspace.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        aliases: dict[str, dict[int, list[str]]] = {}
        for model in {r["name"] for r in rows}:
            for alias, version in self.aliases(model).items():
                aliases.setdefault(model, {}).setdefault(version, []).append(alias)
        return [
            self._version(r, tuple(aliases.get(r["name"], {}).get(r["version"], []))) for r in rows
        ]

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of a registered model (from MLflow)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.tracker.client.get_registered_model(name)
        except MlflowException:
            return {}
        return {alias: int(version) for alias, version in (model.aliases or {}).items()}

    def get(self, name: str, ref: int | str) -> ModelVersion:
        """A version by number (3, "3"), alias ("champion", "@champion") or "latest"."""
        from sqlalchemy import select

        from shipyard.tables import model_versions as table

        version = self._resolve(name, ref)
        query = select(table).where((table.c.name == name) & (table.c.version == version))
        with self.workspace.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            known = sorted({v.name for v in self.versions()})
            raise ModelNotFoundError(
                f"No registered model {name!r} version {version}. "
                f"Registered models: {', '.join(known) or 'none'}."
            )
        held = tuple(a for a, v in self.aliases(name).items() if v == version)
        return self._version(dict(row), held)

    def _resolve(self, name: str, ref: int | str) -> int:
        if isinstance(ref, int):
            return ref
        text = ref.lstrip("@")
        if text.isdigit():
            return int(text)
        if text == "latest":
            versions = self.versions(name)
            if not versions:
                raise ModelNotFoundError(f"No registered model {name!r}.")
            return versions[0].version
        aliases = self.aliases(name)
        if text not in aliases:
            held = ", ".join(f"{a} -> v{v}" for a, v in aliases.items()) or "none"
            raise ModelNotFoundError(f"Model {name!r} has no alias {text!r} (aliases: {held}).")
        return aliases[text]

    def history(self, name: str) -> list[RegistryEvent]:
        """The audit trail of ``name``, oldest first."""
        from sqlalchemy import select

        from shipyard.tables import registry_events as table

        query = select(table).where(table.c.name == name).order_by(table.c.id)
        with self.workspace.engine.connect() as conn:
            return [
                RegistryEvent(**{k: v for k, v in r.items() if k != "id"})
                for r in conn.execute(query).mappings()
            ]

    # -- promotion and rollback -------------------------------------------------------------

    def promote(
        self,
        name: str,
        version: int,
        *,
        reason: str,
        gate: PromotionGate | None = None,
        actor: str | None = None,
        alias: str = CHAMPION,
    ) -> GateResult | None:
        """Make ``version`` the ``alias`` holder if its schema is compatible and it passes the gate.

        Without a current holder the version is promoted directly. With one, the input schemas
        must match and, if a ``gate`` is given, the challenger must beat the holder on the
        challenger's out-of-time evaluation window. A refusal raises PromotionRefusedError,
        is recorded in the audit trail, and changes nothing else.
        """
        challenger = self.get(name, version)
        current = self.aliases(name).get(alias)
        result = None
        if current is not None and current != challenger.version:
            incumbent = self.get(name, current)
            try:
                incumbent.input_schema.check_compatible(
                    challenger.input_schema, f"{name} v{version} against {alias} v{current}"
                )
            except SchemaError as exc:
                self._record(
                    name, version, "refuse", alias, current, actor, reason, {"schema": str(exc)}
                )
                raise PromotionRefusedError(f"Promotion refused: {exc}") from None
            if gate is not None:
                result = self.compare(name, incumbent, challenger, gate)
                if not result.passed:
                    self._record(
                        name, version, "refuse", alias, current, actor, reason, result.to_dict()
                    )
                    raise PromotionRefusedError(
                        f"Promotion of {name} v{version} to {alias} refused: {result.reason}."
                    )
        client = self.tracker.client
        client.set_registered_model_alias(name, alias, str(challenger.version))
        if alias == CHAMPION and self.aliases(name).get(CHALLENGER) == challenger.version:
            client.delete_registered_model_alias(name, CHALLENGER)  # it is no longer a challenger
        details = result.to_dict() if result is not None else {}
        self._record(name, version, "promote", alias, current, actor, reason, details)
        return result

    def compare(
        self, name: str, incumbent: ModelVersion, challenger: ModelVersion, gate: PromotionGate
    ) -> GateResult:
        """Score both versions on the challenger's evaluation window and apply ``gate``."""
        from shipyard.training.frames import Window, load_frame

        window = Window.from_dict(challenger.eval_window)
        frame = load_frame(self.workspace, window)
        champion_scores = self.load(name, incumbent.version).predict(
            frame[incumbent.input_schema.names].to_numpy(dtype="float64")
        )
        challenger_scores = self.load(name, challenger.version).predict(
            frame[challenger.input_schema.names].to_numpy(dtype="float64")
        )
        return gate.compare(
            frame["TX_FRAUD"],
            frame["TX_DATETIME"],
            frame["CUSTOMER_ID"],
            champion_scores,
            challenger_scores,
        )

    def rollback(
        self, name: str, *, reason: str, actor: str | None = None, alias: str = CHAMPION
    ) -> ModelVersion:
        """Give ``alias`` back to the version that held it before the current holder."""
        current = self.aliases(name).get(alias)
        if current is None:
            raise ModelNotFoundError(f"Model {name!r} has no {alias}; nothing to roll back.")
        previous = None
        for event in reversed(self.history(name)):
            if (
                event.alias == alias
                and event.action in ("promote", "rollback")
                and event.version == current
            ):
                previous = event.previous_version
                break
        if previous is None:
            raise ModelNotFoundError(
                f"{name} v{current} is the first {alias} on record; there is no earlier version "
                "to roll back to."
            )
        self.tracker.client.set_registered_model_alias(name, alias, str(previous))
        self._record(name, previous, "rollback", alias, current, actor, reason, {})
        return self.get(name, previous)

    # -- loading ---------------------------------------------------------------------------

    def load(self, name: str, ref: int | str) -> NativePredictor:
        """A predictor over the version's native model file, verified against its SHA-256."""
        from shipyard.serving.predictors import NativePredictor
        from shipyard.training.trainers import load_native

        version = self.get(name, ref)
        model = load_native(version.framework, version.native_path, version.native_sha256)
        return NativePredictor(version.framework, model, version.input_schema)

    # -- internals -------------------------------------------------------------------------

    def _record(
        self,
        name: str,
        version: int | None,
        action: str,
        alias: str | None,
        previous: int | None,
        actor: str | None,
        reason: str,
        details: dict[str, Any],
    ) -> None:
        from sqlalchemy import insert

        from shipyard.tables import registry_events

        with self.workspace.engine.begin() as conn:
            conn.execute(
                insert(registry_events).values(
                    name=name,
                    version=version,
                    action=action,
                    alias=alias,
                    previous_version=previous,
                    actor=actor or current_user(),
                    reason=reason,
                    details=_jsonable(details),
                    at=_now(),
                )
            )

    def _version(self, row: dict[str, Any], aliases: tuple[str, ...]) -> ModelVersion:
        root = self.workspace.artifact_root
        return ModelVersion(
            name=row["name"],
            version=row["version"],
            run_id=row["run_id"],
            model_type=row["model_type"],
            framework=row["framework"],
            params=dict(row["params"]),
            native_path=root / row["native_path"],
            native_sha256=row["native_sha256"],
            input_schema=Schema.from_dict(row["input_schema"]),
            dataset=row["dataset"],
            dataset_version=row["dataset_version"],
            dataset_hash=row["dataset_hash"],
            features_hash=row["features_hash"],
            features_ref=row["features_ref"],
            train_window=dict(row["train_window"]),
            eval_window=dict(row["eval_window"]),
            metrics=dict(row["metrics"]),
            card_path=root / row["card_path"],
            created_at=row["created_at"],
            aliases=aliases,
        )


def metric_rows(evaluation: Evaluation) -> list[tuple[str, str, str, str]]:
    """Rows of the model card's metrics table."""
    meanings = {
        "roc_auc": "probability that a fraud scores above a genuine transaction",
        "average_precision": "area under the precision-recall curve",
        "card_precision@100": "share of frauds among the 100 riskiest cards a day",
        "brier": "mean squared error of the probabilities (lower is better)",
        "precision@100_per_day": "precision of the 100 riskiest transactions a day",
        "recall@100_per_day": "share of frauds caught by those 100 a day",
    }
    rows = []
    for name in evaluation.folds[0].metrics:
        interval = evaluation.intervals.get(name)
        ci = f"[{interval.low:.3f}, {interval.high:.3f}]" if interval else "—"
        digits = 5 if name == "brier" else 3
        spread = f"{evaluation.mean(name):.{digits}f} ± {evaluation.std(name):.{digits}f}"
        rows.append((name, spread, ci, meanings.get(name, "")))
    return rows


def calibration_summary(evaluation: Evaluation, y: Any) -> dict[str, float]:
    """Brier score, mean predicted probability and observed rate over the test folds."""
    import numpy as np

    labels = np.asarray(y)
    predicted = np.concatenate([r.scores for r in evaluation.folds])
    observed = np.concatenate([labels[r.fold.test] for r in evaluation.folds])
    return {
        "brier": evaluation.mean("brier"),
        "mean_predicted": float(predicted.mean()),
        "observed_rate": float(observed.mean()),
    }


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
