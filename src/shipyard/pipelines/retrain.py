"""The retraining pipeline: retrain the champion on its newest labelled data, promote it only
if it is significantly better, through a guarded canary.

:func:`retraining_pipeline` builds the step graph (``shipyard pipeline run
shipyard.pipelines.retrain:retraining_pipeline``); each step is a thin adapter over a plain
function of explicit arguments, so the logic is testable (and usable) without a pipeline:

1. ``window`` (:func:`labelled_window`): as of ``now``, labels are known up to ``now`` - the
   label delay - 1 day. The newest ``eval_days`` of them are the evaluation window; the
   challenger trains on the champion's number of days ending one delay before it (the
   protocol's train / delay / test, so the comparison mimics deployment). A window with no
   labelled rows (or no positive one) is refused, naming its days.
2. ``features`` (:func:`materialize_features`): the champion's feature views materialized
   for the data set version (the offline store reuses unchanged views; the step cache skips
   the step when data set and definitions are unchanged).
3. ``challenger`` (:func:`train_challenger`): the champion's model type and parameters
   fitted on the training window, scored on the evaluation window, logged to MLflow.
4. ``evaluate`` (:func:`compare_on_window`): champion and challenger on the same rows of
   the evaluation window (which neither trained on), the difference in the selection metric
   with its paired day-bootstrap interval (:class:`~shipyard.registry.gate.PromotionGate`).
5. ``gates`` (:func:`check_gates`): significantly better (the interval's lower end > 0),
   fairness where declared, identical input schema. A failed gate *keeps* the champion:
   the later steps are skipped, with the reason, and the run succeeds.
6. ``register`` (:func:`register_challenger`): the challenger registered with its lineage
   (data set version, windows), and its serving backends built and parity-checked.
7. ``canary`` (:func:`canary_rollout`): 5 % -> 25 % -> 100 % of the endpoint's traffic
   with guardrails at each step; not enough guardrail data makes the run wait (never a
   blind promotion); a guardrail that trips rolls back.
8. ``decision`` (:func:`decide`): promoted, rolled back or kept, with every step's reason.

Example::

    from shipyard.pipelines.runs import run_pipeline
    run = run_pipeline(ws, retraining_pipeline(now="2018-07-01"), trigger={"kind": "command"})
    print(run.outputs("decision")["decision"], run.outputs("decision")["reasons"])
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, SchemaError, invalid_parameter
from shipyard.pipelines.windows import RetrainWindow, labelled_window
from shipyard.serialize import jsonable

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.pipelines.graph import Pipeline, StepContext
    from shipyard.registry.models import ModelVersion
    from shipyard.training.evaluation import Evaluation
    from shipyard.training.splits import Fold
    from shipyard.workspace import Workspace

EXPERIMENT_SUFFIX = "-retraining"
"""Challengers are logged to the MLflow experiment ``<model>-retraining``."""
METRICS = ("average_precision", "card_precision@100", "roc_auc")
SAMPLE_ROWS = 500


# -- 2. features ----------------------------------------------------------------------------


def materialize_features(
    workspace: Workspace, *, dataset: str, version: int, views: str
) -> dict[str, Any]:
    """Materialize the feature views ``views`` (``module:attribute``) for a data set version."""
    from shipyard.features.definitions import definitions_hash, load_views
    from shipyard.features.offline import OfflineStore

    loaded = load_views(views)
    done = OfflineStore(workspace).materialize(loaded, version)
    reused = [m.view for m in done if m.reused]
    computed = [m.view for m in done if not m.reused]
    return {
        "dataset": dataset,
        "version": version,
        "views": views,
        "features_hash": definitions_hash(loaded),
        "computed": computed,
        "reused": reused,
        "reason": (
            f"{len(loaded)} feature views of {views} for {dataset} v{version}: "
            f"{len(computed)} computed, {len(reused)} reused"
        ),
    }


# -- 3. challenger --------------------------------------------------------------------------


def window_frame(
    workspace: Workspace,
    champion: ModelVersion,
    window: RetrainWindow,
    extra: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Training and evaluation days with the champion's features (point-in-time correct),
    its label, time and entity columns and the data set's ``extra`` columns."""
    from shipyard.training.frames import Window, load_frame

    lineage = champion.lineage
    columns = tuple(dict.fromkeys([*lineage.columns.names, *extra]))
    first, last = window.train_start.isoformat(), window.eval_end.isoformat()
    return load_frame(
        workspace, Window(window.dataset, window.version, first, last, lineage.views, columns)
    )


def train_challenger(
    workspace: Workspace, *, model: str, window: RetrainWindow, folder: Path
) -> dict[str, Any]:
    """Fit the champion's configuration on the training window, score the evaluation window,
    log it to MLflow; the fitted evaluation is kept (hash-checked) in ``folder``."""
    from shipyard.integrity import file_sha256
    from shipyard.registry.models import ModelRegistry
    from shipyard.registry.tracking import Tracker
    from shipyard.training.evaluation import evaluate
    from shipyard.training.trainers import make_config

    champion = ModelRegistry(workspace).get(model, "champion")
    frame = window_frame(workspace, champion, window)
    split = window.split(champion.lineage.columns)
    config = make_config(champion.model_type, **champion.params)
    features = champion.input_schema.names
    evaluation = evaluate(frame, features, config, split, n_boot=0, keep_models=True)
    result = evaluation.folds[0]
    fold = result.fold
    run_id = Tracker(workspace).log_evaluation(
        model + EXPERIMENT_SUFFIX,
        f"challenger as of {window.now}",
        evaluation,
        params={"split": split.describe(), "champion_version": champion.version},
        tags={
            "shipyard.dataset": window.dataset,
            "shipyard.dataset_version": str(window.version),
            "shipyard.features": champion.lineage.views,
            "shipyard.model_type": champion.model_type,
            "shipyard.retraining_of": f"{model} v{champion.version}",
        },
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "challenger.pkl"
    sample = frame.iloc[fold.test[:SAMPLE_ROWS]][features]
    with path.open("wb") as fh:
        pickle.dump({"evaluation": evaluation, "sample": sample}, fh)
    return {
        "run_id": run_id,
        "model_type": champion.model_type,
        "params": jsonable(champion.params),
        "champion_version": champion.version,
        "n_train": len(fold.train),
        "n_eval": len(fold.test),
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "path": str(path),
        "sha256": file_sha256(path),
        "reason": (
            f"{champion.model_type} with {model} v{champion.version}'s parameters fitted on "
            f"{len(fold.train):,} rows of {window.train_start}..{window.train_end} "
            f"(MLflow run {run_id[:8]})"
        ),
    }


def load_challenger(outputs: Mapping[str, Any]) -> tuple[Evaluation, pd.DataFrame]:
    """The challenger step's evaluation (with the fitted model) and sample rows, hash-checked."""
    from shipyard.integrity import verify_sha256

    path = Path(outputs["path"])
    verify_sha256(path, outputs["sha256"])
    with path.open("rb") as fh:
        kept = pickle.load(fh)  # written by train_challenger in this workspace, hash verified
    return kept["evaluation"], kept["sample"]


# -- 4. evaluate ----------------------------------------------------------------------------


def compare_on_window(
    workspace: Workspace,
    *,
    model: str,
    window: RetrainWindow,
    challenger: Mapping[str, Any],
    metric: str = "average_precision",
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[str, Any]:
    """Champion and challenger on the same evaluation rows: the metric's difference with its
    paired day-bootstrap interval (the :class:`~shipyard.registry.gate.PromotionGate`)."""
    from shipyard.registry.gate import PromotionGate
    from shipyard.registry.models import ModelRegistry

    registry = ModelRegistry(workspace)
    champion = registry.get(model, int(challenger["champion_version"]))
    evaluation, _ = load_challenger(challenger)
    result = evaluation.folds[0]
    fold: Fold = result.fold
    frame = window_frame(workspace, champion, window)
    rows = frame.iloc[fold.test]
    if len(rows) != len(result.scores):
        raise DataValidationError(
            f"The evaluation window {window.eval_start}..{window.eval_end} now holds {len(rows)} "
            f"rows; the challenger was scored on {len(result.scores)}. Rerun the challenger step."
        )
    names = champion.input_schema.names
    champion_scores = registry.load(model, champion.version).predict(
        rows[names].to_numpy(dtype="float64")
    )
    roles = champion.lineage.columns
    gate = PromotionGate(metric=metric, n_boot=n_boot, level=level)
    judged = gate.compare(
        rows[roles.label], rows[roles.time], rows[roles.entity], champion_scores, result.scores
    )
    return {
        **judged.to_dict(),
        "champion_version": champion.version,
        "evaluation": [window.eval_start.isoformat(), window.eval_end.isoformat()],
        "reason": f"on {judged.n_rows:,} rows over {judged.n_days} days: {judged.reason}",
    }


# -- 5. gates -------------------------------------------------------------------------------


def check_gates(
    workspace: Workspace,
    *,
    model: str,
    window: RetrainWindow,
    challenger: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    fairness: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The metric gate (significantly better), declared fairness gates, identical schema.

    ``fairness``: keyword arguments of :class:`~shipyard.registry.gate.FairnessGate`, one
    dict per gate, e.g. ``[{"attribute": "sex", "bound": 0.1}]``. ``passed`` is False when
    any gate fails; ``reasons`` says why for each.
    """
    from shipyard.registry.models import ModelRegistry

    champion = ModelRegistry(workspace).get(model, int(challenger["champion_version"]))
    trained, _ = load_challenger(challenger)
    results = [
        {
            "gate": "metric",
            "passed": bool(evaluation["passed"]),
            "reason": _metric_reason(evaluation),
        }
    ]
    model_fit = trained.folds[0].model
    try:
        if model_fit is None:
            raise SchemaError("the challenger kept no fitted model")
        champion.input_schema.check_compatible(
            model_fit.input_schema, f"challenger against {model} v{champion.version}"
        )
        results.append({"gate": "schema", "passed": True, "reason": "input schema identical"})
    except SchemaError as exc:
        results.append({"gate": "schema", "passed": False, "reason": str(exc)})
    results += _fairness_results(workspace, champion, window, trained, fairness or [])
    passed = all(r["passed"] for r in results)
    failed = [r for r in results if not r["passed"]]
    reason = (
        "every gate passed: " + "; ".join(str(r["reason"]) for r in results)
        if passed
        else f"champion {model} v{champion.version} kept: "
        + "; ".join(f"{r['gate']} gate: {r['reason']}" for r in failed)
    )
    return {"passed": passed, "gates": results, "reason": reason}


def _metric_reason(evaluation: Mapping[str, Any]) -> str:
    verdict = "significantly better" if evaluation["passed"] else "not significantly better"
    return (
        f"challenger {verdict} on {evaluation['metric']}: {evaluation['challenger']:.4f} vs "
        f"{evaluation['champion']:.4f}, difference {evaluation['delta']:+.4f} "
        f"[{evaluation['delta_low']:+.4f}, {evaluation['delta_high']:+.4f}] "
        f"({evaluation['level']:.0%} paired day-bootstrap)"
    )


def _fairness_results(
    workspace: Workspace,
    champion: ModelVersion,
    window: RetrainWindow,
    trained: Evaluation,
    declared: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each declared fairness gate on the challenger's evaluation rows."""
    from shipyard.registry.gate import FairnessGate

    if not declared:
        return [{"gate": "fairness", "passed": True, "reason": "no fairness gate declared"}]
    gates = [FairnessGate(**spec) for spec in declared]
    roles = champion.lineage.columns
    frame = window_frame(workspace, champion, window, tuple(g.attribute for g in gates))
    fold = trained.folds[0]
    rows = frame.iloc[fold.fold.test]
    out = []
    for gate in gates:
        result = gate.check(rows[roles.label], fold.scores, rows)
        out.append({"gate": "fairness", "passed": result.passed, "reason": result.reason})
    return out


# -- 6. register ----------------------------------------------------------------------------


def register_challenger(
    workspace: Workspace,
    *,
    model: str,
    window: RetrainWindow,
    challenger: Mapping[str, Any],
    gates: Mapping[str, Any],
    actor: str | None = None,
) -> dict[str, Any]:
    """Register the challenger (if every gate passed) with its lineage, and build and
    parity-check its serving backends; ``registered`` is False, with why, otherwise."""
    from shipyard.data.catalog import get_dataset
    from shipyard.registry.models import ModelRegistry
    from shipyard.types import Lineage

    if not gates["passed"]:
        return {
            "registered": False,
            "skipped": True,
            "reason": "not registered: a gate kept the champion",
        }
    registry = ModelRegistry(workspace)
    champion = registry.get(model, int(challenger["champion_version"]))
    evaluation, sample = load_challenger(challenger)
    fitted = evaluation.folds[0].model
    if fitted is None:
        raise DataValidationError("the challenger step kept no fitted model")
    dataset = get_dataset(workspace, window.dataset, window.version)
    lineage = Lineage.of(
        dataset,
        champion.lineage.views,
        columns=champion.lineage.columns,
        protocol=f"retraining: {window.describe()}",
    ).with_windows(
        train=(window.train_start.isoformat(), window.train_end.isoformat()),
        evaluation=(window.eval_start.isoformat(), window.eval_end.isoformat()),
    )
    version = registry.register(
        model,
        fitted,
        lineage=lineage,
        evaluation=evaluation,
        run_id=challenger["run_id"],
        sample=sample,
        actor=actor,
        reason=f"retraining as of {window.now}: {gates['reason']}",
    )
    served = _backends(registry, model, version.version)
    return {
        "registered": True,
        "version": version.version,
        **served,
        "reason": (
            f"registered {model} v{version.version} (data set {window.dataset} v{window.version}, "
            f"trained {window.train_start}..{window.train_end}); {served['parity_reason']}"
        ),
    }


def _backends(registry: Any, model: str, version: int) -> dict[str, Any]:
    """Build the version's serving backends and check their parity with the native model."""
    from shipyard.serving.backends import prepare_backends

    backends = prepare_backends(registry, model, version)
    return {
        "backend": backends.chosen,
        "parity": {
            name: {"max_abs_diff": jsonable(c.max_abs_diff), "note": c.note}
            for name, c in backends.candidates.items()
        },
        "parity_reason": (
            f"serving backend {backends.chosen}, parity-checked: {backends.describe()}"
        ),
    }


# -- 7. canary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanarySettings:
    """How the canary rolls out: traffic steps (%), guardrail data per step, timeouts."""

    steps: tuple[int, ...] = (5, 25, 100)
    min_requests: int = 200
    step_timeout_s: float = 600.0
    poll_s: float = 1.0
    retry_after_s: float = 60.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (the step's parameters)."""
        return {**asdict(self), "steps": list(self.steps)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanarySettings:
        """Inverse of :meth:`to_dict` (other keys ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**known, "steps": tuple(known.get("steps", cls.steps))})


def canary_rollout(
    workspace: Workspace,
    *,
    endpoint: str,
    model: str,
    registered: Mapping[str, Any],
    settings: CanarySettings,
    reason: str = "",
    actor: str | None = None,
) -> dict[str, Any]:
    """Roll the registered challenger out by canary; ``outcome`` is "promoted", "rolled
    back", "insufficient data" (the caller waits and retries), or "skipped"."""
    if not registered.get("registered"):
        return {"outcome": "skipped", "skipped": True, "reason": "skipped: nothing registered"}
    from shipyard.pipelines.canary import run_canary

    version = int(registered["version"])
    result = run_canary(
        workspace,
        endpoint,
        version,
        steps=settings.steps,
        min_requests=settings.min_requests,
        step_timeout_s=settings.step_timeout_s,
        poll_s=settings.poll_s,
        reason=reason or f"retrained {model} v{version}",
        actor=actor,
    )
    steps = [jsonable(step.to_dict()) for step in result.steps]
    return {
        "outcome": str(result.outcome),
        "version": version,
        "steps": steps,
        "reason": f"canary of {model} v{version} on {endpoint}: {result.outcome} ({result.reason})",
    }


# -- 8. decision ----------------------------------------------------------------------------


def decide(outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The run's decision from its steps' outputs: promoted, rolled back or kept, and why."""
    gates = outputs.get("gates", {})
    canary = outputs.get("canary", {})
    if not gates.get("passed", False):
        decision = "kept"
    elif canary.get("outcome") == "promoted":
        decision = "promoted"
    elif canary.get("outcome") == "rolled back":
        decision = "rolled back"
    else:
        decision = "kept"
    order = ("window", "features", "challenger", "evaluate", "gates", "register", "canary")
    reasons = [
        f"{name}: {outputs[name]['reason']}" for name in order if "reason" in outputs.get(name, {})
    ]
    evaluation = outputs.get("evaluate", {})
    return {
        "decision": decision,
        "version": outputs.get("register", {}).get("version"),
        "champion_version": evaluation.get("champion_version"),
        "metric": evaluation.get("metric"),
        "delta": evaluation.get("delta"),
        "delta_low": evaluation.get("delta_low"),
        "delta_high": evaluation.get("delta_high"),
        "reasons": reasons,
        "reason": _decision_reason(decision, gates, canary),
    }


def _decision_reason(decision: str, gates: Mapping[str, Any], canary: Mapping[str, Any]) -> str:
    """The one reason that decided: the gates' (kept) or the canary's (promoted, rolled back)."""
    if not gates.get("passed", False):
        return str(gates.get("reason", "kept: the gates did not run"))
    return f"{decision}: {canary.get('reason', 'the canary did not run')}"


# -- the pipeline ---------------------------------------------------------------------------


def retraining_pipeline(
    endpoint: str = "fraud",
    model: str = "fraud",
    dataset: str = "fraud",
    *,
    now: str | None = None,
    delay_days: int = 7,
    eval_days: int = 7,
    metric: str = "average_precision",
    n_boot: int = 1000,
    fairness: list[dict[str, Any]] | None = None,
    canary: dict[str, Any] | None = None,
) -> Pipeline:
    """The retraining pipeline of ``model`` served on ``endpoint``, trained on ``dataset``.

    ``now`` (an ISO date) is the clock the window is read by, so that a run is reproducible;
    ``None`` reads today's date (UTC) when the window step runs (what a schedule wants).
    ``canary`` overrides :class:`CanarySettings` fields; ``fairness`` declares fairness
    gates (keyword arguments of :class:`~shipyard.registry.gate.FairnessGate`).

    Example::

        run_pipeline(ws, retraining_pipeline("fraud", now="2018-07-01"))
    """
    from shipyard.pipelines.graph import Pipeline, Step

    settings = _checked(now, metric, canary or {})
    base = {"model": model, "dataset": dataset}
    steps = [
        Step(
            "window",
            _window_step,
            params={**base, "now": now, "delay_days": delay_days, "eval_days": eval_days},
            cache=False,
        ),
        Step("features", _features_step, inputs=("window",)),
        Step("challenger", _challenger_step, inputs=("window", "features"), params=base),
        Step(
            "evaluate",
            _evaluate_step,
            inputs=("window", "challenger"),
            params={**base, "metric": metric, "n_boot": n_boot},
        ),
        Step(
            "gates",
            _gates_step,
            inputs=("window", "challenger", "evaluate"),
            params={**base, "fairness": fairness or []},
        ),
        # cached: a rerun on the same inputs reuses the version it registered
        Step("register", _register_step, inputs=("window", "challenger", "gates"), params=base),
        Step(
            "canary",
            _canary_step,
            inputs=("register",),
            params={**base, "endpoint": endpoint, **settings.to_dict()},
            cache=False,
        ),
        Step(
            "decision",
            _decision_step,
            inputs=("window", "features", "challenger", "evaluate", "gates", "register", "canary"),
            cache=False,
        ),
    ]
    return Pipeline(f"retrain-{model}", tuple(steps))


def _checked(now: str | None, metric: str, canary: dict[str, Any]) -> CanarySettings:
    """The pipeline's canary settings; ParameterError naming a bad clock, metric or key."""
    owner = "retraining_pipeline"
    if now is not None:
        try:
            date.fromisoformat(now)
        except (TypeError, ValueError):
            raise invalid_parameter("now", owner, "an ISO date", now) from None
    if metric not in METRICS:
        raise invalid_parameter("metric", owner, f"one of {METRICS}", metric)
    known = set(CanarySettings().to_dict())
    unknown = sorted(set(canary) - known)
    if unknown:
        raise invalid_parameter("canary", owner, f"keys among {sorted(known)}", unknown)
    return CanarySettings.from_dict({**CanarySettings().to_dict(), **canary})


def _window_step(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    window = labelled_window(
        ctx.workspace,
        model=p["model"],
        dataset=p["dataset"],
        now=date.fromisoformat(p["now"]) if p["now"] else datetime.now(UTC).date(),
        delay_days=p["delay_days"],
        eval_days=p["eval_days"],
    )
    from shipyard.registry.models import ModelRegistry

    champion = ModelRegistry(ctx.workspace).get(p["model"], "champion")
    return {
        **window.to_dict(),
        "champion_version": champion.version,
        "views": champion.lineage.views,
        "reason": window.describe(),
    }


def _features_step(ctx: StepContext) -> dict[str, Any]:
    window = ctx.upstream["window"]
    return materialize_features(
        ctx.workspace, dataset=window["dataset"], version=window["version"], views=window["views"]
    )


def _challenger_step(ctx: StepContext) -> dict[str, Any]:
    window = RetrainWindow.from_dict(ctx.upstream["window"])
    folder = ctx.workspace.artifact_root / "pipelines" / ctx.run_id / ctx.step
    return train_challenger(ctx.workspace, model=ctx.params["model"], window=window, folder=folder)


def _evaluate_step(ctx: StepContext) -> dict[str, Any]:
    return compare_on_window(
        ctx.workspace,
        model=ctx.params["model"],
        window=RetrainWindow.from_dict(ctx.upstream["window"]),
        challenger=ctx.upstream["challenger"],
        metric=ctx.params["metric"],
        n_boot=ctx.params["n_boot"],
    )


def _gates_step(ctx: StepContext) -> dict[str, Any]:
    return check_gates(
        ctx.workspace,
        model=ctx.params["model"],
        window=RetrainWindow.from_dict(ctx.upstream["window"]),
        challenger=ctx.upstream["challenger"],
        evaluation=ctx.upstream["evaluate"],
        fairness=ctx.params["fairness"],
    )


def _register_step(ctx: StepContext) -> dict[str, Any]:
    return register_challenger(
        ctx.workspace,
        model=ctx.params["model"],
        window=RetrainWindow.from_dict(ctx.upstream["window"]),
        challenger=ctx.upstream["challenger"],
        gates=ctx.upstream["gates"],
    )


def _canary_step(ctx: StepContext) -> Any:
    from shipyard.pipelines.graph import Wait

    p = dict(ctx.params)
    settings = CanarySettings.from_dict(p)
    out = canary_rollout(
        ctx.workspace,
        endpoint=p["endpoint"],
        model=p["model"],
        registered=ctx.upstream["register"],
        settings=settings,
    )
    if out["outcome"] == "insufficient data":
        return Wait(out["reason"], settings.retry_after_s)
    return out


def _decision_step(ctx: StepContext) -> dict[str, Any]:
    return decide(ctx.upstream)
