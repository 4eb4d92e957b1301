"""The decision threshold of each model version: what serving's scores are cut at.

A score at or above the threshold is the adverse decision (an alert, a refusal). The
threshold is configuration, not part of the model: it moves when the alert budget or the
cost of a false positive moves, without retraining. Each setting is an entry of the audit
trail (``action="threshold"``, who, when, why, before and after, how it was chosen), and the
current threshold of a version is the latest such entry for it, else the latest for the
model as a whole, else :data:`DEFAULT_THRESHOLD`. Monitoring's alert rate, the guardrails
and the threshold recalibration all read it from here.

:func:`recalibrate_threshold` chooses a version's threshold on a recent labelled window of
its endpoint's log, for a target false-positive rate or an alert budget, shows the effect
(precision, recall, FPR, alert rate with Wilson intervals, alerts per day, before and
after) and records it here with how it was chosen.

Example::

    set_decision_threshold(ws, "fraud", 3, 0.42, reason="alert budget 0.5 %")
    decision_threshold(ws, "fraud", 3)   # 0.42
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.governance.audit import AuditEntry
    from shipyard.monitoring.performance import Metric
    from shipyard.workspace import Workspace

DEFAULT_THRESHOLD = 0.5
"""The threshold of a version nobody set one for."""


@dataclass(frozen=True)
class ThresholdSetting:
    """One recorded threshold: of ``model`` version ``version`` (``None``: every version)."""

    model: str
    version: int | None
    threshold: float
    previous: float | None
    reason: str
    actor: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The setting as JSON-ready data."""
        return {
            "model": self.model,
            "version": self.version,
            "threshold": self.threshold,
            "previous": self.previous,
            "reason": self.reason,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "details": self.details,
        }


def threshold_history(
    workspace: Workspace, model: str, version: int | None = None
) -> list[ThresholdSetting]:
    """Every threshold recorded for ``model`` (only ``version``'s and the model-wide ones when
    ``version`` is given), oldest first."""
    from shipyard.governance.audit import entries

    found = [
        _setting(entry)
        for entry in entries(workspace, kind="model", name=model, action="threshold")
    ]
    if version is None:
        return found
    return [s for s in found if s.version in (version, None)]


def decision_threshold(workspace: Workspace, model: str, version: int) -> float:
    """The threshold ``model`` version ``version`` is served at (see the module doc)."""
    history = threshold_history(workspace, model, version)
    own = [s for s in history if s.version == version]
    if own:
        return own[-1].threshold
    return history[-1].threshold if history else DEFAULT_THRESHOLD


def set_decision_threshold(
    workspace: Workspace,
    model: str,
    version: int | None,
    threshold: float,
    *,
    reason: str,
    actor: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> ThresholdSetting:
    """Record ``threshold`` as ``model`` version ``version``'s (``None``: every version's
    without one of its own) in the audit trail, with ``details`` on how it was chosen."""
    from shipyard.governance.audit import record_threshold_change

    owner = "set_decision_threshold"
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise invalid_parameter("threshold", owner, "a number in [0, 1]", threshold)
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise invalid_parameter("threshold", owner, "a number in [0, 1]", threshold)
    if not reason or not reason.strip():
        raise invalid_parameter("reason", owner, "why the threshold moves", reason)
    if version is not None:
        before: float | None = decision_threshold(workspace, model, version)
    else:
        wide = [s for s in threshold_history(workspace, model) if s.version is None]
        before = wide[-1].threshold if wide else None
    entry = record_threshold_change(
        workspace,
        model,
        before=before,
        after=float(threshold),
        reason=reason,
        version=version,
        actor=actor,
        details=details,
    )
    return _setting(entry)


def _setting(entry: AuditEntry) -> ThresholdSetting:
    before = entry.before if isinstance(entry.before, dict) else {}
    after = entry.after if isinstance(entry.after, dict) else {}
    previous = before.get("threshold")
    return ThresholdSetting(
        model=entry.name,
        version=entry.version,
        threshold=float(after["threshold"]),
        previous=None if previous is None else float(previous),
        reason=entry.reason,
        actor=entry.actor,
        at=entry.at,
        details=dict(entry.details or {}),
    )


# -- recalibration --------------------------------------------------------------------------

LEVEL = 0.95
"""The confidence level of the recalibration's Wilson intervals."""


@dataclass(frozen=True)
class ThresholdEffect:
    """What deciding at ``threshold`` does on a labelled window (Wilson intervals)."""

    threshold: float
    precision: Metric
    recall: Metric
    fpr: Metric
    alert_rate: Metric
    """Share of all scored rows (labelled or not) at or above the threshold."""
    alerts: int
    alerts_per_day: float
    """Alerts over the window's length in days."""

    def to_dict(self) -> dict[str, Any]:
        """The effect as JSON-ready data."""
        out: dict[str, Any] = {"threshold": self.threshold, "alerts": self.alerts}
        out["alerts_per_day"] = self.alerts_per_day
        for metric in (self.precision, self.recall, self.fpr, self.alert_rate):
            out[metric.name] = {"value": metric.value, "low": metric.low, "high": metric.high}
        return out


@dataclass(frozen=True)
class Recalibration:
    """A threshold chosen for a target FPR or an alert budget, with its effect before/after."""

    endpoint: str
    model: str
    version: int
    threshold: float
    previous: float
    target_fpr: float | None
    alert_budget: float | None
    before: ThresholdEffect
    after: ThresholdEffect
    n_rows: int
    n_labelled: int
    n_positives: int
    n_negatives: int
    start: datetime
    end: datetime
    days: float
    """The window's length in days (first to last prediction unless bounded)."""
    curve: tuple[tuple[float, float, float, float], ...]
    """(threshold, FPR, alert rate, recall) over a grid of thresholds, for the plot."""
    setting: ThresholdSetting | None = None
    """The recorded setting (``None`` for a dry run)."""

    def details(self) -> dict[str, Any]:
        """How the threshold was chosen: what the audit trail records with it."""
        return {
            "endpoint": self.endpoint,
            "target_fpr": self.target_fpr,
            "alert_budget": self.alert_budget,
            "window": [self.start.isoformat(), self.end.isoformat()],
            "rows": self.n_rows,
            "labelled": self.n_labelled,
            "positives": self.n_positives,
            "negatives": self.n_negatives,
            "days": self.days,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        """The recalibration as JSON-ready data."""
        out = {"model": self.model, "version": self.version, "threshold": self.threshold}
        out |= {"previous": self.previous, **self.details()}
        out["registered"] = self.setting is not None
        return out

    def text(self) -> str:
        """A few lines: the goal, the threshold chosen and its effect before -> after."""
        goal = (
            f"target FPR {self.target_fpr:.4g}"
            if self.target_fpr is not None
            else f"alert budget {self.alert_budget:.4g} of traffic"
        )
        lines = [
            f"{self.model} v{self.version} on {self.endpoint}: threshold {self.previous:.4g} -> "
            f"{self.threshold:.4g} ({goal})"
            + ("" if self.setting is not None else " (dry run: not recorded)"),
            f"window {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC, "
            f"{self.days:.1f} days: {self.n_rows:,} predictions, {self.n_labelled:,} "
            f"labelled ({self.n_positives:,} positive, {self.n_negatives:,} negative)",
        ]
        for name in ("precision", "recall", "fpr", "alert_rate"):
            a, b = getattr(self.before, name), getattr(self.after, name)
            lines.append(f"  {name:<10} {a!s:>26} -> {b!s}")
        lines.append(
            f"  alerts/day {self.before.alerts_per_day:>26,.1f} -> {self.after.alerts_per_day:,.1f}"
        )
        return "\n".join(lines)


def recalibrate_threshold(
    workspace: Workspace,
    endpoint: str,
    version: int,
    *,
    target_fpr: float | None = None,
    alert_budget: float | None = None,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    register: bool = True,
    reason: str,
    actor: str | None = None,
) -> Recalibration:
    """Choose ``version``'s threshold on ``endpoint``'s labelled log window, and record it.

    Exactly one goal: ``target_fpr`` (the lowest threshold whose false-positive rate on the
    window's labelled negatives is at most the target: the most recall the target allows)
    or ``alert_budget`` (the lowest threshold alerting at most that share of the window's
    traffic). The window ``[start, end)`` (default: all the log) must hold labels
    (``shipyard monitor labels``), and for a target FPR at least 1 / target negatives.
    ``register=False`` is a dry run; otherwise :func:`set_decision_threshold` records it
    with how it was chosen. Example: ``recalibrate_threshold(ws, "fraud", 2,
    target_fpr=0.01, reason="FPR jumped after the deploy").text()``.
    """
    import numpy as np

    owner = "recalibrate_threshold"
    goal = _goal(target_fpr, alert_budget, owner)
    if not isinstance(reason, str) or not reason.strip():
        raise invalid_parameter("reason", owner, "why the threshold moves", reason)
    if isinstance(version, bool) or not isinstance(version, int):
        raise invalid_parameter("version", owner, "a version number (an int)", version)
    model = endpoint_model(workspace, endpoint, version)
    scores, labels, times = _window(workspace, endpoint, version, start, end, owner)
    labelled = ~np.isnan(labels)
    negatives = scores[labelled & (labels == 0)]
    n_neg = int(negatives.size)
    if target_fpr is not None and n_neg < math.ceil(1 / target_fpr - 1e-9):
        raise DataValidationError(
            f"A target FPR of {target_fpr:g} needs at least {math.ceil(1 / target_fpr - 1e-9):,} "
            f"labelled negatives in the window to be measured; {endpoint!r} v{version} has "
            f"{n_neg:,}. Widen the window (start/end) or wait for more labels."
        )
    threshold = _cut(negatives if target_fpr is not None else scores, goal, owner)
    previous = decision_threshold(workspace, model, version)
    first = _naive(float(times.min()) if start is None else start)
    last = _naive(float(times.max()) if end is None else end)
    days = max((last - first).total_seconds() / 86_400, 1 / 24)  # at least an hour
    recal = Recalibration(
        endpoint=endpoint, model=model, version=version, threshold=threshold,
        previous=previous, target_fpr=target_fpr, alert_budget=alert_budget,
        before=_effect(previous, scores, labels, days),
        after=_effect(threshold, scores, labels, days),
        n_rows=int(scores.size), n_labelled=int(labelled.sum()),
        n_positives=int((labels == 1).sum()), n_negatives=n_neg,
        start=first,
        end=last,
        days=days, curve=_curve(scores, labels, threshold),
    )  # fmt: skip
    if not register:
        return recal
    from dataclasses import replace

    setting = set_decision_threshold(
        workspace, model, version, threshold, reason=reason, actor=actor, details=recal.details()
    )
    return replace(recal, setting=setting)


def _goal(target_fpr: float | None, alert_budget: float | None, owner: str) -> float:
    if (target_fpr is None) == (alert_budget is None):
        raise invalid_parameter(
            "target_fpr", owner, "given alone, or alert_budget alone (exactly one goal)",
            (target_fpr, alert_budget),
        )  # fmt: skip
    name, value = (
        ("target_fpr", target_fpr) if target_fpr is not None else ("alert_budget", alert_budget)
    )
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise invalid_parameter(name, owner, "a share in (0, 1)", value)
    return float(value)


def endpoint_model(workspace: Workspace, endpoint: str, version: int | None = None) -> str:
    """The model ``endpoint`` serves (thresholds are kept per model): its traffic policy's,
    else the one its prediction log names (for ``version`` when given)."""
    from shipyard.errors import ModelNotFoundError
    from shipyard.monitoring.logstore import query
    from shipyard.serving.policy import policy_history

    history = policy_history(workspace, endpoint)
    if history:
        return history[-1].model
    where = f" WHERE version = {int(version)}" if version is not None else ""
    found = query(workspace, endpoint, f"SELECT DISTINCT model FROM predictions{where}")
    models = sorted(str(m) for m in found["model"].dropna())
    if len(models) != 1:
        raise ModelNotFoundError(
            f"Endpoint {endpoint!r} has no traffic policy and its log names "
            f"{models or 'no model'}"
            + (f" for v{version}" if version is not None else "")
            + ": check the endpoint's name (shipyard endpoint list)."
        )
    return models[0]


def _window(
    workspace: Workspace,
    endpoint: str,
    version: int,
    start: datetime | str | float | None,
    end: datetime | str | float | None,
    owner: str,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(scores, labels with NaN for unlabelled, log times) of ``version``'s served rows."""
    import numpy as np

    from shipyard.monitoring.labels import labelled_predictions

    bounds = [datetime.fromisoformat(t) if isinstance(t, str) else t for t in (start, end)]
    frame = labelled_predictions(workspace, endpoint, bounds[0], bounds[1], versions=[version])
    frame = frame[frame["score"].notna()]
    span = f"{start or 'the start'} to {end or 'now'}"
    if frame.empty:
        raise DataValidationError(
            f"No logged prediction of v{version} on endpoint {endpoint!r} from {span}: "
            "nothing to recalibrate on."
        )
    labels = frame["label"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(labels).all():
        raise DataValidationError(
            f"None of the {len(frame):,} predictions of v{version} on {endpoint!r} from {span} "
            "is labelled: a threshold is chosen on outcomes. Ingest labels first "
            "(shipyard monitor labels) or widen the window."
        )
    scores = frame["score"].to_numpy(dtype=np.float64)
    return scores, labels, frame["time"].to_numpy(dtype=np.float64)


def _cut(scores: NDArray[np.float64], share: float, owner: str) -> float:
    """The lowest threshold with at most ``share`` of ``scores`` at or above it, rounded up
    to 4 decimals where that keeps the same alerts."""
    import numpy as np

    ordered = np.sort(scores)[::-1]
    allowed = math.floor(share * ordered.size + 1e-9)
    if allowed >= ordered.size:
        return float(min(1.0, max(0.0, ordered[-1])))
    floor_value = float(ordered[allowed])
    if floor_value >= 1.0:
        raise DataValidationError(
            f"More than {share:g} of the scores are 1.0: no threshold in [0, 1] meets the goal."
        )
    above = ordered[ordered > floor_value]
    ceiling = float(above.min()) if above.size else 1.0
    nice = math.ceil(floor_value * 10_000 + 1e-9) / 10_000
    if floor_value < nice <= ceiling:
        return nice
    return float(np.nextafter(floor_value, np.inf))


def _effect(
    threshold: float, scores: NDArray[np.float64], labels: NDArray[np.float64], days: float
) -> ThresholdEffect:
    from shipyard.monitoring.performance import wilson

    alert = scores >= threshold
    positive, negative = labels == 1, labels == 0
    tp, fp = int((alert & positive).sum()), int((alert & negative).sum())
    return ThresholdEffect(
        threshold=threshold,
        precision=wilson("precision", tp, tp + fp, LEVEL),
        recall=wilson("recall", tp, int(positive.sum()), LEVEL),
        fpr=wilson("fpr", fp, int(negative.sum()), LEVEL),
        alert_rate=wilson("alert_rate", int(alert.sum()), int(scores.size), LEVEL),
        alerts=int(alert.sum()),
        alerts_per_day=float(alert.sum()) / days,
    )


def _curve(
    scores: NDArray[np.float64], labels: NDArray[np.float64], chosen: float
) -> tuple[tuple[float, float, float, float], ...]:
    """(threshold, FPR, alert rate, recall) on 0, 0.005, ..., 1 and the chosen threshold."""
    import numpy as np

    grid = np.unique(np.append(np.linspace(0.0, 1.0, 201), chosen))
    negatives, positives = np.sort(scores[labels == 0]), np.sort(scores[labels == 1])
    every = np.sort(scores)

    def share_at_or_above(values: NDArray[np.float64]) -> NDArray[np.float64]:
        if values.size == 0:
            return np.full(grid.size, np.nan)
        below = np.searchsorted(values, grid, side="left")
        return np.asarray(1.0 - below / values.size, dtype=np.float64)

    rows = zip(
        grid, share_at_or_above(negatives), share_at_or_above(every),
        share_at_or_above(positives), strict=True,
    )  # fmt: skip
    return tuple((float(t), float(f), float(a), float(r)) for t, f, a, r in rows)


def _naive(moment: datetime | str | float) -> datetime:
    from datetime import UTC

    if isinstance(moment, int | float):
        return datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
