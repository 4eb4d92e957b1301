"""Metrics per arm of an online experiment, from the prediction log joined with outcomes.

The **unit** of an experiment is its routing key (a customer): assignment is by key, so
the key, not the request, is what was randomized, and every statistic treats one
customer's predictions as one observation (per-unit sums, then the delta method for
ratios). Reading an experiment's data:

- the endpoint's prediction log since the experiment started (and until it stopped),
  primary answers only (no shadows, no explicitly asked versions), of the two versions;
- records without a routing key are left out (``unkeyed``: they were assigned at random,
  not by unit), and so are records whose version is not the arm their key hashes to under
  the experiment's salt (``misrouted``: answered by a worker that had not switched to the
  experiment's policy yet);
- each prediction gets its label, if one arrived
  (:func:`shipyard.monitoring.labels.labelled_predictions`: by request id or by raw-event
  columns), and an *alert* when its score is at or above its version's decision threshold
  (:func:`shipyard.monitoring.thresholds.decision_threshold`). A model that answers JSON
  values (a recommendation list) has no score (NaN, never an alert); its experiments use
  the generic quantities ``positives`` and ``labelled`` (metric ``ctr``: lists clicked over
  lists labelled).

A metric that needs labels counts only labelled predictions, and a unit with no labelled
prediction yet is not counted at all (``ExperimentData.unlabelled_units`` says how many);
a metric without labels (alert rate, mean score) counts every prediction.

Example::

    data = experiment_data(ws, experiment)
    stats = arm_stats(data, metric_spec("precision"))   # {"control": ArmStats, "treatment": ...}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.experiments.lifecycle import Experiment
    from shipyard.experiments.sequential import ArmStats, TestResult
    from shipyard.workspace import Workspace

ARMS = ("control", "treatment")
WAITING = "waiting for data"
"""The decision while an arm has fewer than two units (nothing to test yet)."""
KINDS = ("proportion", "mean", "ratio")

QUANTITIES = {
    "predictions": False,
    "alerts": False,
    "score": False,
    "frauds": True,
    "legit": True,
    "caught": True,
    "false_alerts": True,
    "positives": True,
    "labelled": True,
}
"""What a metric can sum per unit, and whether it needs labels: predictions, alerts (score
at or above the version's threshold), score (the positive-class probability), frauds
(label 1), legit (label 0), caught (alert and fraud), false_alerts (alert and legit), and
the generic ones for any output, a recommendation list included: positives (label 1: the
list got a click) and labelled (predictions with a label)."""


@dataclass(frozen=True)
class MetricSpec:
    """A metric of an experiment: per unit, ``numerator`` summed over ``denominator``.

    ``kind="ratio"``: sum over units of the numerator over sum of the denominator (delta
    method); ``"mean"``: the mean over units of each unit's own ratio; ``"proportion"``: the
    share of units whose numerator is above 0 (``alerts``: customers alerted at least once).
    ``higher_is_better`` says which direction "treatment better" means.

    Example: ``MetricSpec("precision", "ratio", "caught", "alerts")``.
    """

    name: str
    kind: str
    numerator: str
    denominator: str = "predictions"
    higher_is_better: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        owner = "MetricSpec"
        if not isinstance(self.name, str) or not self.name.strip():
            raise invalid_parameter("name", owner, "a non-empty string", self.name)
        if self.kind not in KINDS:
            raise invalid_parameter("kind", owner, f"one of {list(KINDS)}", self.kind)
        for field in ("numerator", "denominator"):
            if getattr(self, field) not in QUANTITIES:
                raise invalid_parameter(
                    field, owner, f"one of {list(QUANTITIES)}", getattr(self, field)
                )

    @property
    def needs_labels(self) -> bool:
        """Whether the metric reads outcomes (then only labelled predictions count)."""
        return QUANTITIES[self.numerator] or QUANTITIES[self.denominator]

    def describe(self) -> str:
        """One line: ``precision (ratio caught / alerts, higher is better)``."""
        better = "higher" if self.higher_is_better else "lower"
        return (
            f"{self.name} ({self.kind} {self.numerator} / {self.denominator}, {better} is better)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (what the experiment row keeps)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricSpec:
        """The spec :meth:`to_dict` wrote."""
        return cls(**data)


METRICS = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "precision", "ratio", "caught", "alerts", True, "frauds among alerted predictions"
        ),
        MetricSpec("caught_rate", "ratio", "caught", "frauds", True, "frauds that were alerted"),
        MetricSpec("alert_rate", "ratio", "alerts", "predictions", False, "predictions alerted"),
        MetricSpec("false_positive_rate", "ratio", "false_alerts", "legit", False, "legit alerted"),
        MetricSpec("fraud_rate", "ratio", "frauds", "predictions", False, "labelled frauds"),
        MetricSpec("mean_score", "mean", "score", "predictions", False, "mean score per unit"),
        MetricSpec(
            "alerted_units", "proportion", "alerts", "predictions", False, "units alerted once+"
        ),
        MetricSpec("ctr", "ratio", "positives", "labelled", True, "lists that got a click (CTR)"),
        MetricSpec(
            "success_rate", "ratio", "positives", "labelled", True, "answers labelled 1 (right)"
        ),
    )
}
"""The named metrics ``--metric`` and ``--guardrail`` accept."""


def metric_spec(metric: str | MetricSpec) -> MetricSpec:
    """The :class:`MetricSpec` named ``metric`` (one of :data:`METRICS`), or ``metric`` itself."""
    if isinstance(metric, MetricSpec):
        return metric
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]
    raise invalid_parameter(
        "metric", "the experiment", f"one of {sorted(METRICS)} or a MetricSpec", metric
    )


@dataclass(frozen=True)
class ExperimentData:
    """An experiment's predictions, one row each, with their unit, arm, time, alert and label."""

    rows: pd.DataFrame
    """Columns ``unit, arm, time, score, alert, label`` (label NA while unlabelled)."""
    records: int
    """Log records kept (one request may score several rows)."""
    unkeyed: int
    """Records left out because they had no routing key."""
    misrouted: int
    """Records left out because their version is not the arm their key hashes to."""

    def until(self, end: float) -> ExperimentData:
        """The data as it was at epoch second ``end`` (labels as known now)."""
        return ExperimentData(
            self.rows[self.rows["time"] < end], self.records, self.unkeyed, self.misrouted
        )

    @property
    def units(self) -> dict[str, int]:
        """Units seen per arm (labelled or not)."""
        counts = self.rows.groupby("arm")["unit"].nunique()
        return {arm: int(counts.get(arm, 0)) for arm in ARMS}

    def unlabelled_units(self) -> dict[str, int]:
        """Units per arm with no labelled prediction yet (not counted by label metrics)."""
        labelled = self.rows.loc[self.rows["label"].notna(), "unit"].unique()
        none = self.rows[~self.rows["unit"].isin(labelled)]
        counts = none.groupby("arm")["unit"].nunique()
        return {arm: int(counts.get(arm, 0)) for arm in ARMS}


def experiment_data(
    workspace: Workspace, experiment: Experiment, end: float | None = None
) -> ExperimentData:
    """Read ``experiment``'s predictions from its endpoint's log, with labels (module doc)."""
    import pandas as pd

    from shipyard.monitoring.labels import labelled_predictions
    from shipyard.monitoring.logstore import query
    from shipyard.monitoring.thresholds import decision_threshold
    from shipyard.serving.policy import Router

    start = experiment.started_at.timestamp()
    stop = end if end is not None else _stopped(experiment)
    versions = (experiment.control, experiment.treatment)
    rows = labelled_predictions(
        workspace, experiment.endpoint, start, stop, versions=list(versions), arms=["primary"]
    )
    if rows.empty:
        return ExperimentData(_empty_rows(), 0, 0, 0)
    where = f"arm = 'primary' AND time >= {start!r}" + (
        f" AND time < {stop!r}" if stop is not None else ""
    )
    keys = query(
        workspace,
        experiment.endpoint,
        "SELECT DISTINCT request_id, version, routing_key FROM predictions WHERE "
        f"{where} AND version IN ({versions[0]}, {versions[1]})",
    )
    rows = rows.merge(keys, on=["request_id", "version"], how="left")
    records = rows.drop_duplicates(["request_id", "version"])
    keyed = records["routing_key"].notna()
    router = Router(experiment.policy())
    assigned = {k: router.choose(k) for k in records.loc[keyed, "routing_key"].unique()}
    rows = rows[rows["routing_key"].notna()]
    fits = rows["routing_key"].map(assigned) == rows["version"]
    kept_records = records[keyed & (records["routing_key"].map(assigned) == records["version"])]
    rows = rows[fits]
    thresholds = {v: decision_threshold(workspace, experiment.model, v) for v in versions}
    arm_of = {experiment.control: "control", experiment.treatment: "treatment"}
    out = pd.DataFrame(
        {
            "unit": rows["routing_key"].astype(str).to_numpy(),
            "arm": rows["version"].map(arm_of).to_numpy(),
            "time": rows["time"].to_numpy(dtype=float),
            "score": rows["score"].to_numpy(dtype=float),
            "alert": (rows["score"] >= rows["version"].map(thresholds)).to_numpy(dtype=bool),
            "label": rows["label"].astype("Int64").to_numpy(),
        }
    )
    return ExperimentData(
        out.reset_index(drop=True),
        records=len(kept_records),
        unkeyed=int((~keyed).sum()),
        misrouted=int(keyed.sum()) - len(kept_records),
    )


def _stopped(experiment: Experiment) -> float | None:
    return None if experiment.stopped_at is None else experiment.stopped_at.timestamp()


def _empty_rows() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "unit": pd.Series([], dtype=object),
            "arm": pd.Series([], dtype=object),
            "time": pd.Series([], dtype=float),
            "score": pd.Series([], dtype=float),
            "alert": pd.Series([], dtype=bool),
            "label": pd.Series([], dtype="Int64"),
        }
    )


def unit_sums(data: ExperimentData, spec: MetricSpec) -> pd.DataFrame:
    """Per unit: its arm and the sums of ``spec``'s numerator and denominator."""
    rows = data.rows
    if spec.needs_labels:
        rows = rows[rows["label"].notna()]
    label = rows["label"].fillna(0).astype(int).to_numpy()
    alert = rows["alert"].to_numpy(dtype=bool)
    quantities = {
        "predictions": 1.0,
        "alerts": alert.astype(float),
        "score": rows["score"].to_numpy(dtype=float),
        "frauds": (label == 1).astype(float),
        "legit": (label == 0).astype(float),
        "caught": (alert & (label == 1)).astype(float),
        "false_alerts": (alert & (label == 0)).astype(float),
        "positives": (label == 1).astype(float),
        "labelled": rows["label"].notna().to_numpy(dtype=float),
    }
    frame = rows[["unit", "arm"]].assign(
        numerator=quantities[spec.numerator], denominator=quantities[spec.denominator]
    )
    return frame.groupby(["arm", "unit"], as_index=False)[["numerator", "denominator"]].sum()


def arm_stats(data: ExperimentData, spec: MetricSpec) -> dict[str, ArmStats]:
    """``spec`` per arm (``"control"``, ``"treatment"``): statistics of one value per unit."""
    from shipyard.experiments.ratio import ratio_stats
    from shipyard.experiments.sequential import ArmStats

    sums = unit_sums(data, spec)
    out: dict[str, ArmStats] = {}
    for arm in ARMS:
        part = sums[sums["arm"] == arm]
        numerator = part["numerator"].to_numpy(dtype=float)
        denominator = part["denominator"].to_numpy(dtype=float)
        if spec.kind == "ratio":
            if len(numerator) >= 2 and denominator.sum() > 0:
                out[arm] = ratio_stats(numerator, denominator)
            else:  # too little to test: the ratio alone, for display
                total = float(denominator.sum())
                ratio = float(numerator.sum()) / total if total > 0 else 0.0
                out[arm] = ArmStats(n=len(numerator), mean=ratio, variance=0.0)
        elif spec.kind == "mean":
            valid = denominator > 0
            out[arm] = ArmStats.of(numerator[valid] / denominator[valid])
        else:
            out[arm] = ArmStats.of_proportion(int((numerator > 0).sum()), len(numerator))
    return out


@dataclass(frozen=True)
class MetricResult:
    """One metric of an experiment at one look: per-arm statistics and the test."""

    metric: MetricSpec
    arms: dict[str, ArmStats]
    test: TestResult | None
    """None while an arm has fewer than two units."""

    @property
    def decision(self) -> str:
        """The test's decision in the metric's direction ("treatment worse" for a higher
        alert rate), or "waiting for data"."""
        return WAITING if self.test is None else self.test.decision

    @property
    def treatment_worse(self) -> bool:
        """Whether the treatment is significantly worse on this metric."""
        from shipyard.experiments.sequential import WORSE

        return self.decision == WORSE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the metric, each arm's n/mean/variance, the test."""
        return {
            "metric": self.metric.to_dict(),
            "arms": {arm: stats.to_dict() for arm, stats in self.arms.items()},
            "test": None if self.test is None else self.test.to_dict(),
            "decision": self.decision,
        }


def metric_result(
    experiment: Experiment, data: ExperimentData, spec: MetricSpec, method: str
) -> MetricResult:
    """``spec`` per arm on ``data`` and ``method``'s test of it (none before 2 units per arm)."""
    arms = arm_stats(data, spec)
    if min(stats.n for stats in arms.values()) < 2:
        return MetricResult(spec, arms, None)
    return MetricResult(spec, arms, run_test(experiment, spec, arms, method))


def run_test(
    experiment: Experiment, spec: MetricSpec, arms: dict[str, ArmStats], method: str
) -> TestResult:
    """``method``'s test of treatment against control, its decision in ``spec``'s direction.

    The effect is always ``treatment - control`` in the metric's units; for a metric where
    lower is better (alert rate) a positive effect is "treatment worse". The fixed-horizon
    test answers "waiting for N units per arm" before its planned sample size.
    """
    from shipyard.experiments.sequential import BETTER, WORSE, msprt

    control, treatment = arms["control"], arms["treatment"]
    if method == "fixed":
        from shipyard.experiments.fixed import fixed_horizon

        result = fixed_horizon(control, treatment, alpha=experiment.alpha)
        planned = experiment.planned_units or 0
        if min(control.n, treatment.n) < planned:
            return replace(result, decision=f"waiting for {planned} units per arm")
    else:
        result = msprt(control, treatment, alpha=experiment.alpha, horizon=experiment.planned_units)
    if not spec.higher_is_better and result.decision in (BETTER, WORSE):
        result = replace(result, decision=WORSE if result.decision == BETTER else BETTER)
    return result


def units_needed(experiment: Experiment, arms: dict[str, ArmStats]) -> int | None:
    """More units per arm to detect the relative MDE with the experiment's power."""
    from shipyard.experiments.fixed import sample_size

    control = arms["control"]
    variance = max(control.variance, arms["treatment"].variance)
    if control.n < 2 or control.mean == 0 or variance <= 0 or experiment.mde is None:
        return None
    per_arm = sample_size(
        control.mean,
        experiment.mde,
        relative=True,
        sd=math.sqrt(variance),
        alpha=experiment.alpha,
        power=experiment.power,
    )
    done = min(control.n, arms["treatment"].n)
    return max(0, int(per_arm) - done)
