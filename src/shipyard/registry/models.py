"""The model registry: MLflow model versions plus what MLflow lacks.

MLflow is the system of record for runs, registered model versions and aliases
(``champion``, ``challenger``). Shipyard adds, in its own tables of the workspace database:
each version's :class:`~shipyard.types.Lineage` (data set version and hash, feature views
and their definition hashes, protocol, windows, and the label, time and entity column
names), its native model file with SHA-256, its input schema with the feature views'
declared constraints and the ranges seen in training, its model card, and an audit trail
of every registration, promotion, refusal and rollback with who, when and why.

The registry knows no solution's columns: the promotion gate reads the label, time and
entity names from the challenger's lineage.

Text models (a ``string`` column in the input schema, see :func:`shipyard.types.text_columns`)
register without feature views (``lineage.views == ""``) and without time windows (the split is
described by ``lineage.protocol``), optionally without an evaluation (``evaluation=None``: a
pretrained pipeline; the card says it was not evaluated here). They get no SHAP explanation and
no monitoring reference profile at registration, and their MLflow flavour is a pyfunc model
(:func:`shipyard.training.text.save_pyfunc`). A promotion gate or fairness gate needs the
version's evaluation window as a numeric frame, which a text model does not have: a gated
promotion of a text model is refused with ParameterError before anything changes; promote it
with ``gate=None`` (and no fairness gates) after comparing the versions' recorded test metrics
(``ModelVersion.metrics``, e.g. their accuracy intervals from
:func:`~shipyard.training.text.evaluate_texts`).

Example::

    lineage = Lineage.of(dataset, "my.features:VIEWS", columns=roles, protocol="...")
    version = registry.register(
        "credit", model, lineage=lineage.with_windows(train, test), evaluation=evaluation,
        run_id=run_id, sample=frame.head(200),
    )
    registry.promote("credit", version.version, reason="better AP", gate=PromotionGate())
    predictor = registry.load("credit", "champion")     # hash-verified native model
"""

from __future__ import annotations

import getpass
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import (
    ConcurrentChangeError,
    FeatureDefinitionError,
    ModelNotFoundError,
    ParameterError,
    PromotionRefusedError,
    SchemaError,
)
from shipyard.types import Lineage, Schema, text_columns

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection

    from shipyard.registry.card import CardNotes
    from shipyard.registry.gate import FairnessGate, GateResult, PromotionGate
    from shipyard.registry.tracking import Tracker
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.trainers import NativePredictor, TrainedModel
    from shipyard.workspace import Workspace


logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version with its lineage.

    ``input_schema`` carries, per column, the constraint its feature view declares and the
    range seen in training. ``train_window`` and ``eval_window`` are training-frame windows
    (``Window.to_dict()``) built from the lineage: ``load_frame(ws,
    Window.from_dict(version.eval_window))`` rebuilds the gate's evaluation frame.
    """

    name: str
    version: int
    run_id: str
    model_type: str
    framework: str
    params: dict[str, Any]
    native_path: Path
    native_sha256: str
    input_schema: Schema
    lineage: Lineage
    metrics: dict[str, float]
    card_path: Path
    created_at: datetime
    aliases: tuple[str, ...] = field(default=())
    output_schema: Schema | None = None
    """What the version answers: a probability for classifiers, a JSON value per row for the
    entity recognizer (``None`` only on records built by hand)."""

    @property
    def card_html(self) -> Path:
        """The HTML model card beside the Markdown one."""
        return self.card_path.with_suffix(".html")

    @property
    def dataset(self) -> str:
        """Name of the data set the model was trained on."""
        return self.lineage.dataset

    @property
    def dataset_version(self) -> int:
        """Version of that data set."""
        return self.lineage.dataset_version

    @property
    def dataset_hash(self) -> str:
        """Content hash of that data set version."""
        return self.lineage.dataset_hash

    @property
    def features_ref(self) -> str:
        """The feature views as ``module:attribute``."""
        return self.lineage.views

    @property
    def features_hash(self) -> str:
        """Hash of the feature views' definitions."""
        return self.lineage.features_hash

    @property
    def train_window(self) -> dict[str, Any]:
        """The training window as ``Window.to_dict()``."""
        return _window_dict(self.lineage, self.lineage.train_window)

    @property
    def eval_window(self) -> dict[str, Any]:
        """The out-of-time window the gate compares on, as ``Window.to_dict()``."""
        return _window_dict(self.lineage, self.lineage.eval_window)


def _window_dict(lineage: Lineage, days: tuple[str, str] | None) -> dict[str, Any]:
    from shipyard.training.frames import Window

    if days is None:
        raise ParameterError(
            f"The lineage of {lineage.dataset} v{lineage.dataset_version} records no training "
            "or evaluation window (text models have none: their data has no time); add them "
            "with lineage.with_windows(train, evaluation)."
        )
    return Window.of(lineage, *days).to_dict()


@dataclass(frozen=True)
class RegistryEvent:
    """One registry entry of the workspace's audit trail (who, when, why, alias before/after)."""

    name: str
    version: int | None
    action: str
    alias: str | None
    previous_version: int | None
    actor: str
    reason: str
    details: dict[str, Any]
    at: datetime
    sequence: int = 0
    """Its number in the workspace's audit trail (:mod:`shipyard.governance.audit`)."""
    before: Any = None
    after: Any = None


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
        lineage: Lineage,
        evaluation: Evaluation | None,
        run_id: str,
        sample: pd.DataFrame,
        notes: CardNotes | None = None,
        actor: str | None = None,
        reason: str = "trained",
        metrics: Mapping[str, float] | None = None,
    ) -> ModelVersion:
        """Register ``model`` as a new version of ``name`` with its lineage and a model card.

        ``lineage`` must record the training and evaluation windows
        (``lineage.with_windows(...)``) unless the model takes text; ``evaluation`` is the
        evaluation the card reports (its folds' labels and scores; ``None`` for a pretrained
        pipeline not evaluated here); ``run_id`` is the MLflow run the model belongs to;
        ``sample`` holds rows of the model's features from the evaluation window (for
        MLflow's signature and the card's global explanation, up to 500 of them; texts in a
        ``text`` column for a text model);
        ``notes`` say what the model is for; ``metrics`` are recorded as the version's metrics
        when there is no ``evaluation`` (a recommender's protocol numbers, measured by its
        solution). The input schema gets the constraints its
        feature views declare. The model is logged to its run in MLflow's format (so MLflow
        clients can serve it) and saved natively with its SHA-256 (what Shipyard loads).
        The new version gets the ``challenger`` alias; promote it to make it the champion.
        """
        from sqlalchemy import insert

        from shipyard.tables import model_versions

        input_schema = self._input_schema(model, lineage)
        takes_text = bool(text_columns(input_schema))
        client = self.tracker.client
        by_reference = self._by_reference(model, run_id)
        version = self._create_mlflow_version(name, model, run_id, sample, copy=not by_reference)
        folder = self.workspace.artifact_root / "models" / name / f"v{version}"
        try:
            native_path, sha256 = model.save_native(folder)
            if by_reference:
                self._log_pointer(model, run_id, native_path, sha256, sample)
            card_md = self._write_card(
                name, version, model, lineage, evaluation, run_id, notes, folder, sample
            )
            client.set_registered_model_alias(name, CHALLENGER, str(version))
            root = self.workspace.artifact_root
            row = {
                "name": name,
                "version": version,
                "run_id": run_id,
                "model_type": model.config.model_type,
                "framework": model.config.framework,
                "params": _jsonable(model.config.get_params()),
                "native_path": str(native_path.relative_to(root)),
                "native_sha256": sha256,
                "input_schema": input_schema.to_dict(),
                "output_schema": model.output_schema.to_dict(),
                "lineage": lineage.to_dict(),
                # the lineage's headline fields again, as columns that SQL can filter on
                "dataset": lineage.dataset,
                "dataset_version": lineage.dataset_version,
                "dataset_hash": lineage.dataset_hash,
                "features_hash": lineage.features_hash,
                "features_ref": lineage.views,
                "train_window": _stored_window(lineage, lineage.train_window),
                "eval_window": _stored_window(lineage, lineage.eval_window),
                "metrics": {
                    k: float(v)
                    for k, v in (evaluation.summary() if evaluation else metrics or {}).items()
                },
                "card_path": str(card_md.relative_to(root)),
                "created_at": _now(),
            }
            with self.workspace.engine.begin() as conn:
                conn.execute(insert(model_versions).values(**row))
        except BaseException:
            # leave no half-registered version behind
            client.delete_model_version(name, str(version))
            shutil.rmtree(folder, ignore_errors=True)
            raise
        recorded = {  # what was registered, by hash: the trail proves which file it was
            "run_id": run_id,
            "native_sha256": sha256,
            "dataset_hash": lineage.dataset_hash,
            "features_hash": lineage.features_hash,
        }
        self._record(name, version, "register", CHALLENGER, None, actor, reason, recorded)
        if not takes_text:  # a text profile needs text statistics, not a numeric window
            _build_reference_profile(self.workspace, name, version)
        return self.get(name, version)

    def _write_card(
        self,
        name: str,
        version: int,
        model: TrainedModel,
        lineage: Lineage,
        evaluation: Evaluation | None,
        run_id: str,
        notes: CardNotes | None,
        folder: Path,
        sample: pd.DataFrame,
    ) -> Path:
        """Write the model card (:func:`~shipyard.registry.card.build_card`: Markdown, HTML,
        plots) into ``folder`` and log it to the run."""
        from shipyard.registry.card import build_card

        card = build_card(name, version, model, lineage, evaluation, run_id, notes, folder, sample)
        card_md, card_html = card.write(folder)
        self.tracker.client.log_artifact(run_id, str(card_md), "model_card")
        self.tracker.client.log_artifact(run_id, str(card_html), "model_card")
        return card_md

    @staticmethod
    def _input_schema(model: TrainedModel, lineage: Lineage) -> Schema:
        """The model's input schema with its feature views' declared constraints.

        The observed ranges come from the training data (``ModelConfig.fit``). Refuses a
        lineage without windows (unless the model takes text), or whose views no longer hash
        to what it recorded. A text model's lineage may name no views: its schema is its own.
        """
        from shipyard.features.definitions import definitions_hash, load_views, view_constraints

        takes_text = bool(text_columns(model.input_schema))
        if not lineage.views and takes_text:
            return model.input_schema
        if not takes_text and (lineage.train_window is None or lineage.eval_window is None):
            raise ParameterError(
                "The 'lineage' parameter of ModelRegistry.register must record its training "
                "and evaluation windows (lineage.with_windows(train, evaluation)). "
                f"Got train_window={lineage.train_window}, eval_window={lineage.eval_window}."
            )
        views = load_views(lineage.views)
        current = definitions_hash(views)
        if current != lineage.features_hash:
            raise FeatureDefinitionError(
                f"The feature views {lineage.views} changed since the model was trained "
                f"(definitions hash {current[:12]}, lineage records "
                f"{lineage.features_hash[:12]}); retrain before registering."
            )
        return model.input_schema.with_constraints(view_constraints(views))

    def _create_mlflow_version(
        self, name: str, model: TrainedModel, run_id: str, sample: pd.DataFrame, *, copy: bool
    ) -> int:
        """Log ``model`` to its run in MLflow's format with its signature; register a version.

        A text model is logged as a pyfunc model holding its native file (MLflow clients
        ``predict(pd.DataFrame({"text": [...]}))``); the others in MLflow's scikit-learn format.
        With ``copy`` false nothing is logged here: :meth:`_log_pointer` logs the model once
        its native file is saved.
        """
        if not copy:
            return self._new_mlflow_version(name, run_id)
        client = self.tracker.client
        with tempfile.TemporaryDirectory() as tmp:
            flavor_dir = Path(tmp) / "model"
            if text_columns(model.input_schema):
                from shipyard.training.text import save_pyfunc

                save_pyfunc(model, flavor_dir, sample)
            else:
                _save_sklearn_flavor(model, flavor_dir, sample)
            client.log_artifacts(run_id, str(flavor_dir), "model")
        return self._new_mlflow_version(name, run_id)

    def _new_mlflow_version(self, name: str, run_id: str) -> int:
        """A new MLflow version of ``name`` whose source is the run's ``model`` artifacts."""
        client = self.tracker.client
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description="Registered by Shipyard")
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        return int(client.create_model_version(name, source, run_id=run_id).version)

    def _by_reference(self, model: TrainedModel, run_id: str) -> bool:
        """Whether MLflow gets a pointer to the native file instead of a copy: the model's
        native format says so (``mlflow_by_reference``, for multi-GB files) and the run's
        artifacts are on this machine's disk, where the pointer resolves."""
        from urllib.parse import urlparse

        from shipyard.training.trainers import native_format

        if not native_format(model.config.framework).mlflow_by_reference:
            return False
        uri = self.tracker.client.get_run(run_id).info.artifact_uri
        return urlparse(uri).scheme in ("", "file")

    def _log_pointer(
        self, model: TrainedModel, run_id: str, native: Path, sha256: str, sample: pd.DataFrame
    ) -> None:
        """Log ``model`` to its run as a pyfunc model holding a pointer to its native file
        (``native.json``: the path relative to the pointer, the SHA-256), not a copy of it."""
        import json
        import os
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        client = self.tracker.client
        run_dir = Path(url2pathname(urlparse(client.get_run(run_id).info.artifact_uri).path))
        logged = run_dir / "model" / "artifacts"  # where MLflow puts the pyfunc's artifacts
        with tempfile.TemporaryDirectory() as tmp:
            pointer = Path(tmp) / POINTER_FILE
            relative = os.path.relpath(native.resolve(), logged.resolve())
            pointer.write_text(json.dumps({"path": relative, "sha256": sha256}))
            flavor_dir = Path(tmp) / "model"
            _save_pointer_pyfunc(model, flavor_dir, pointer, sha256, sample)
            client.log_artifacts(run_id, str(flavor_dir), "model")

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
        """The audit trail of ``name``, oldest first (``shipyard audit log`` shows all of it)."""
        from shipyard.governance.audit import entries

        return [
            RegistryEvent(
                name=e.name,
                version=e.version,
                action=e.action,
                alias=e.alias,
                previous_version=e.previous_version,
                actor=e.actor,
                reason=e.reason,
                details=e.details,
                at=e.at,
                sequence=e.sequence,
                before=e.before,
                after=e.after,
            )
            for e in entries(self.workspace, kind="model", name=name)
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
        fairness: Sequence[FairnessGate] = (),
    ) -> GateResult | None:
        """Make ``version`` the ``alias`` holder if its schema is compatible and it passes the gate.

        Without a current holder the version is promoted directly. With one, the input schemas
        must match and, if a ``gate`` is given, the challenger must beat the holder on the
        challenger's out-of-time evaluation window. Every ``fairness`` gate (first promotion
        included) must pass on that window, with the sensitive attributes read from the data
        set. A refusal raises PromotionRefusedError, is recorded in the audit trail, and
        changes nothing else.
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
                _check_gateable(challenger, alias, "promotion gate")
                result = self.compare(name, incumbent, challenger, gate)
                if not result.passed:
                    self._record(
                        name, version, "refuse", alias, current, actor, reason, result.to_dict()
                    )
                    raise PromotionRefusedError(
                        f"Promotion of {name} v{version} to {alias} refused: {result.reason}."
                    )
        fair = self._check_fairness(challenger, fairness, alias, current, actor, reason)
        details = result.to_dict() if result is not None else {}
        if fair:
            details["fairness"] = fair
        # the alias change and its audit entry under the model's lock: two processes
        # promoting at once never both act on the holder they read (no lost update)
        with self.workspace.lock(f"model:{name}") as conn:
            holder = self.aliases(name).get(alias)
            if holder != current:
                raise ConcurrentChangeError(
                    f"The {alias} of {name} changed from {_held(current)} to {_held(holder)} "
                    f"while v{version} was being checked against it; nothing was changed. "
                    "Promote again to check it against the new holder."
                )
            self._move_alias(name, alias, challenger.version, current)
            self._record(
                name, version, "promote", alias, current, actor, reason, details, connection=conn
            )
        return result

    def _move_alias(self, name: str, alias: str, version: int, holder: int | None) -> None:
        """Point ``alias`` at ``version`` (a champion is no longer a challenger); if that
        fails half-way, give it back to ``holder``."""
        client = self.tracker.client
        client.set_registered_model_alias(name, alias, str(version))
        try:
            if alias == CHAMPION and self.aliases(name).get(CHALLENGER) == version:
                client.delete_registered_model_alias(name, CHALLENGER)
        except BaseException:
            if holder is not None:
                client.set_registered_model_alias(name, alias, str(holder))
            raise

    def _check_fairness(
        self,
        challenger: ModelVersion,
        gates: Sequence[FairnessGate],
        alias: str,
        current: int | None,
        actor: str | None,
        reason: str,
    ) -> list[dict[str, Any]]:
        """Apply the fairness gates; record and raise a refusal if one fails."""
        from shipyard.registry.gate import check_fairness

        if gates:
            _check_gateable(challenger, alias, "fairness gate")
        results = check_fairness(self, challenger, gates)
        found = [r.to_dict() for r in results]
        failed = [r for r in results if not r.passed]
        if failed:
            name, version = challenger.name, challenger.version
            self._record(
                name, version, "refuse", alias, current, actor, reason, {"fairness": found}
            )
            raise PromotionRefusedError(
                f"Promotion of {name} v{version} to {alias} refused by the fairness gate "
                f"{failed[0].describe()}: {failed[0].reason}."
            )
        return found

    def compare(
        self, name: str, incumbent: ModelVersion, challenger: ModelVersion, gate: PromotionGate
    ) -> GateResult:
        """Score both versions on the challenger's evaluation window and apply ``gate``.

        Labels, days and entities are the columns the challenger's lineage names.
        """
        from shipyard.training.frames import Window, load_frame

        _check_gateable(challenger, "champion", "promotion gate")
        roles = challenger.lineage.columns
        frame = load_frame(self.workspace, Window.from_dict(challenger.eval_window))
        champion_scores = self.load(name, incumbent.version).predict(
            frame[incumbent.input_schema.names].to_numpy(dtype="float64")
        )
        challenger_scores = self.load(name, challenger.version).predict(
            frame[challenger.input_schema.names].to_numpy(dtype="float64")
        )
        return gate.compare(
            frame[roles.label],
            frame[roles.time],
            frame[roles.entity],
            champion_scores,
            challenger_scores,
        )

    def rollback(
        self, name: str, *, reason: str, actor: str | None = None, alias: str = CHAMPION
    ) -> ModelVersion:
        """Give ``alias`` back to the version that held it before the current holder."""
        with self.workspace.lock(f"model:{name}") as conn:  # read and move under one lock
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
                    f"{name} v{current} is the first {alias} on record; there is no earlier "
                    "version to roll back to."
                )
            self.tracker.client.set_registered_model_alias(name, alias, str(previous))
            try:
                self._record(
                    name, previous, "rollback", alias, current, actor, reason, {}, connection=conn
                )
            except BaseException:
                self.tracker.client.set_registered_model_alias(name, alias, str(current))
                raise
        return self.get(name, previous)

    # -- loading ---------------------------------------------------------------------------

    def load(self, name: str, ref: int | str) -> NativePredictor:
        """A Predictor over the version's native model file, verified against its SHA-256.

        Its ``input_schema`` is the registered one (declared constraints, observed ranges).
        """
        from shipyard.training.trainers import NativePredictor, load_native

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
        connection: Connection | None = None,
    ) -> None:
        """Append the action to the workspace's audit trail, with the alias before and after
        (in ``connection``'s transaction when given)."""
        from shipyard.governance.audit import append

        before = None if action == "register" else {"alias": alias, "version": previous}
        held = previous if action == "refuse" else version
        append(
            self.workspace,
            kind="model",
            name=name,
            version=version,
            action=action,
            alias=alias,
            previous_version=previous,
            actor=actor,
            reason=reason,
            details=details,
            before=before,
            after={"alias": alias, "version": held},
            connection=connection,
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
            lineage=Lineage.from_dict(row["lineage"]),
            metrics=dict(row["metrics"]),
            card_path=root / row["card_path"],
            created_at=row["created_at"],
            aliases=aliases,
            output_schema=Schema.from_dict(row["output_schema"]),
        )


def _check_gateable(version: ModelVersion, alias: str, gate: str) -> None:
    """ParameterError if no gate can score ``version``: it reads text (the gates score numeric
    frames of an evaluation window) or its lineage records no evaluation window."""
    takes_text = bool(text_columns(version.input_schema))
    if takes_text or version.lineage.eval_window is None:
        what = (
            "a text model (gates score a numeric evaluation window)"
            if takes_text
            else "a model whose lineage records no evaluation window"
        )
        raise ParameterError(
            f"{version.name} v{version.version} is {what}, so no {gate} can score it against "
            f"the {alias}; nothing was changed. Compare the versions' recorded test metrics "
            "(ModelVersion.metrics) and promote it without gates (gate=None, fairness=())."
        )


def _stored_window(lineage: Lineage, days: tuple[str, str] | None) -> Any:
    """The window as stored in the version's row: JSON null where a text model has none."""
    from sqlalchemy import JSON

    return JSON.NULL if days is None else _window_dict(lineage, days)


def _save_sklearn_flavor(model: TrainedModel, folder: Path, sample: pd.DataFrame) -> None:
    """Write ``model`` to ``folder`` in MLflow's scikit-learn format (pickle), with signature."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from shipyard.logs import dropping

    # MLflow warns that pickled models run code when loaded; Shipyard loads only files
    # whose SHA-256 it recorded (load_native), so that one warning says nothing new here.
    pickle_warning = "Saving scikit-learn models in the pickle or cloudpickle format"
    with dropping("mlflow.sklearn", pickle_warning):
        X = sample[model.features].astype(float)
        mlflow.sklearn.save_model(
            model.estimator,
            str(folder),
            signature=infer_signature(X, model.predict_proba(X)),
            pyfunc_predict_fn="predict_proba",
            serialization_format="pickle",
        )


POINTER_FILE = "native.json"
"""The pointer a by-reference pyfunc model holds: ``{"path": relative path, "sha256": ...}``."""


def _save_pointer_pyfunc(
    model: TrainedModel, folder: Path, pointer: Path, sha256: str, sample: pd.DataFrame
) -> None:
    """Write ``model`` to ``folder`` as an MLflow pyfunc model whose one artifact is
    ``pointer`` (its native file is loaded from where the pointer says, SHA-256 verified)."""
    import warnings

    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from shipyard.logs import dropping
    from shipyard.training.text import pinned

    requirements = pinned(("numpy", "pandas", "shipyard"))
    # as in shipyard.training.text.save_pyfunc: the wrapper class is pickled by reference and
    # the signature says what the input is; MLflow's two warnings about them say nothing new
    with (
        dropping("mlflow.pyfunc", "Passing a Python object as `python_model`"),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", "(?s).*An input example was not provided", UserWarning)
        X = sample[model.input_schema.names].head(20).astype(str)
        mlflow.pyfunc.save_model(
            str(folder),
            python_model=_pointer_pyfunc_class()(),
            artifacts={"pointer": str(pointer)},
            model_config={"framework": model.config.framework, "sha256": sha256},
            signature=infer_signature(X, model.predict_proba(X)),
            pip_requirements=requirements,
        )


@cache
def _pointer_pyfunc_class() -> type[Any]:
    from shipyard.training import text

    base: Any = text.TextPyfuncModel

    class PointerPyfuncModel(base):  # type: ignore[misc]
        """A registered model as an MLflow pyfunc that points at its native file (relative
        path and SHA-256 in its ``pointer`` artifact) instead of holding a copy."""

        def load_context(self, context: Any) -> None:
            """Verify, then load the native file the pointer names."""
            import json

            from shipyard.integrity import verify_sha256
            from shipyard.training.trainers import native_format

            pointer = Path(context.artifacts["pointer"])
            held = json.loads(pointer.read_text())
            path = pointer.parent / held["path"]
            verify_sha256(path, context.model_config["sha256"])
            self.framework = str(context.model_config["framework"])
            self.model = native_format(self.framework).load(path)

    PointerPyfuncModel.__module__ = __name__  # pickled by reference: this module's __getattr__
    PointerPyfuncModel.__qualname__ = "PointerPyfuncModel"
    return PointerPyfuncModel


def __getattr__(name: str) -> Any:
    """``PointerPyfuncModel`` (an MLflow ``PythonModel``) is defined on first access."""
    if name == "PointerPyfuncModel":
        return _pointer_pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _held(version: int | None) -> str:
    return "no version" if version is None else f"v{version}"


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _build_reference_profile(workspace: Workspace, name: str, version: int) -> None:
    """Build the new version's monitoring reference profile (its evaluation window's inputs
    and scores); if that fails, the version stays registered, a warning says why, and the
    profile is built on first use (``load_reference_profile``)."""
    from shipyard.monitoring.reference import reference_profile

    try:
        reference_profile(workspace, name, version)
    except Exception as exc:
        logger.warning(
            "%s v%d is registered, but its monitoring reference profile could not be built "
            "(%s: %s); it will be built when first needed",
            name,
            version,
            type(exc).__name__,
            exc,
        )
