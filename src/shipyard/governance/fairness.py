"""Fairness assessment: how a binary classifier's decisions and scores differ across groups.

For each declared sensitive attribute (a column of the evaluation data, not necessarily a
model input) the assessment reports, per group, the selection rate (share of rows decided
positive, i.e. flagged as the adverse outcome when the label is the adverse outcome), the
true- and false-positive rates, precision, and calibration (mean score against the observed
rate, and the expected calibration error over ten equal-width bins); and across groups the
demographic-parity and equalized-odds differences and ratios, each with a seeded bootstrap
confidence interval (rows resampled within each group, so every group keeps its size).

fairlearn's ``MetricFrame`` computes the per-group rates and the point estimates, so the
numbers equal fairlearn's ``demographic_parity_difference``, ``equalized_odds_difference``
and their ratios on the groups assessed. A group with fewer than ``min_rows`` rows, or fewer
than ``min_positives`` positive or negative labels, has no stable TPR or FPR: it is reported
as *insufficient* (its size shown, no rates) and left out of the differences.

Example::

    report = assess_fairness(y, scores, data, ["sex", "age_group"], threshold=0.5)
    print(report.table())
    report.attribute("sex").equalized_odds_difference   # Interval(estimate, low, high)
    section = report.card_section()                     # for CardNotes(sections=...)
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, invalid_parameter
from shipyard.training.metrics import Interval, interval

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.registry.card import CardSection
    from shipyard.registry.gate import FairnessGateResult

DISPARITIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
)
"""The between-group measures each attribute reports (differences: 0 is parity; ratios: 1)."""
ECE_BINS = 10


@dataclass(frozen=True)
class GroupMetrics:
    """One group's size and, when the group is large enough, its rates and calibration."""

    group: str
    n: int
    positives: int
    sufficient: bool
    selection_rate: float | None = None
    tpr: float | None = None
    fpr: float | None = None
    precision: float | None = None
    mean_score: float | None = None
    observed_rate: float | None = None
    ece: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "group": self.group,
            "n": self.n,
            "positives": self.positives,
            "sufficient": self.sufficient,
            "selection_rate": self.selection_rate,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "precision": self.precision,
            "mean_score": self.mean_score,
            "observed_rate": self.observed_rate,
            "ece": self.ece,
        }


@dataclass(frozen=True)
class AttributeFairness:
    """Per-group metrics of one sensitive attribute and the disparities between its groups.

    A disparity is ``None`` when fewer than two groups are large enough to compare.
    """

    attribute: str
    groups: tuple[GroupMetrics, ...]
    demographic_parity_difference: Interval | None
    demographic_parity_ratio: Interval | None
    equalized_odds_difference: Interval | None
    equalized_odds_ratio: Interval | None

    @property
    def insufficient(self) -> tuple[str, ...]:
        """Groups too small for a stable estimate (left out of the disparities)."""
        return tuple(g.group for g in self.groups if not g.sufficient)

    @property
    def assessable(self) -> bool:
        """Whether at least two groups were large enough to compare."""
        return self.equalized_odds_difference is not None

    def disparity(self, name: str) -> Interval | None:
        """One of :data:`DISPARITIES` by name."""
        if name not in DISPARITIES:
            raise invalid_parameter(
                "name", "AttributeFairness.disparity", f"one of {', '.join(DISPARITIES)}", name
            )
        value: Interval | None = getattr(self, name)
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        out: dict[str, Any] = {
            "attribute": self.attribute,
            "groups": [g.to_dict() for g in self.groups],
            "insufficient": list(self.insufficient),
        }
        for name in DISPARITIES:
            value = self.disparity(name)
            out[name] = None if value is None else _interval_dict(value)
        return out


@dataclass(frozen=True)
class FairnessReport:
    """What :func:`assess_fairness` measured, attribute by attribute."""

    attributes: tuple[AttributeFairness, ...]
    threshold: float
    min_rows: int
    min_positives: int
    n_rows: int
    n_boot: int
    level: float
    seed: int
    gates: tuple[FairnessGateResult, ...] = field(default=())
    """Fairness gate results shown with the report; add them with :meth:`with_gates`."""

    def attribute(self, name: str) -> AttributeFairness:
        """The assessment of one attribute; ParameterError naming the assessed ones."""
        for found in self.attributes:
            if found.attribute == name:
                return found
        assessed = [a.attribute for a in self.attributes]
        raise invalid_parameter("name", "FairnessReport.attribute", f"one of {assessed}", name)

    def with_gates(self, results: Sequence[FairnessGateResult]) -> FairnessReport:
        """The same report carrying fairness gate results (shown in the card section)."""
        from dataclasses import replace

        return replace(self, gates=tuple(results))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "threshold": self.threshold,
            "min_rows": self.min_rows,
            "min_positives": self.min_positives,
            "n_rows": self.n_rows,
            "n_boot": self.n_boot,
            "level": self.level,
            "seed": self.seed,
            "attributes": [a.to_dict() for a in self.attributes],
            "gates": [g.to_dict() for g in self.gates],
        }

    # -- rendering -----------------------------------------------------------------------

    def _group_rows(self) -> list[list[str]]:
        rows = []
        for a in self.attributes:
            for g in a.groups:
                if g.sufficient:
                    values = [
                        g.selection_rate,
                        g.tpr,
                        g.fpr,
                        g.precision,
                        g.mean_score,
                        g.observed_rate,
                        g.ece,
                    ]
                    cells = [_fmt(v) for v in values]
                else:
                    cells = ["insufficient"] + ["—"] * 6
                rows.append([a.attribute, g.group, str(g.n), str(g.positives), *cells])
        return rows

    def _disparity_rows(self) -> list[list[str]]:
        rows = []
        pct = f"{self.level:.0%}"
        for a in self.attributes:
            for name in DISPARITIES:
                value = a.disparity(name)
                text = (
                    "not assessable (fewer than two groups large enough)"
                    if value is None
                    else f"{value.estimate:.3f} [{value.low:.3f}, {value.high:.3f}] ({pct} CI)"
                )
                rows.append([a.attribute, name.replace("_", " "), text])
        return rows

    def _gate_rows(self) -> list[list[str]]:
        return [[g.describe(), "passed" if g.passed else "FAILED", g.reason] for g in self.gates]

    def _preamble(self) -> str:
        return (
            f"Decisions at threshold {self.threshold:g} on {self.n_rows:,} rows; a group needs "
            f"at least {self.min_rows} rows and {self.min_positives} positive and negative "
            f"labels for its rates to be reported. Intervals: {self.n_boot} bootstrap draws "
            f"within groups (seed {self.seed}, percentile). Differences: 0 is parity; ratios: "
            "1 is parity. A difference is a maximum minus a minimum over groups: with small "
            "groups its bootstrap replicates lean upward, so its interval can lie above the "
            "estimate (a gate on the interval's upper end is then conservative)."
        )

    def table(self) -> str:
        """A plain-text table for a terminal: groups, then disparities, then gate results."""
        blocks = [
            _text_table(GROUP_HEADER, self._group_rows()),
            _text_table(DISPARITY_HEADER, self._disparity_rows()),
        ]
        if self.gates:
            blocks.append(_text_table(GATE_HEADER, self._gate_rows()))
        return "\n\n".join(blocks)

    def markdown(self) -> str:
        """The report as Markdown (what the model card's fairness section shows)."""
        parts = [
            self._preamble(),
            _md_table(GROUP_HEADER, self._group_rows()),
            _md_table(DISPARITY_HEADER, self._disparity_rows()),
        ]
        if self.gates:
            parts.append(_md_table(GATE_HEADER, self._gate_rows()))
        return "\n\n".join(parts)

    def html(self) -> str:
        """The report as an HTML fragment (escaped)."""
        parts = [
            f"<p>{html.escape(self._preamble())}</p>",
            _html_table(GROUP_HEADER, self._group_rows()),
            _html_table(DISPARITY_HEADER, self._disparity_rows()),
        ]
        if self.gates:
            parts.append(_html_table(GATE_HEADER, self._gate_rows()))
        return "\n".join(parts)

    def card_section(self, title: str = "Fairness") -> CardSection:
        """The report as a model card section (pass it in ``CardNotes(sections=...)``)."""
        from shipyard.registry.card import CardSection

        return CardSection(title, self.markdown(), self.html())


GROUP_HEADER = [
    "attribute",
    "group",
    "rows",
    "positives",
    "selection rate",
    "TPR",
    "FPR",
    "precision",
    "mean score",
    "observed rate",
    "ECE",
]
DISPARITY_HEADER = ["attribute", "measure", "estimate [CI]"]
GATE_HEADER = ["gate", "result", "reason"]


# -- assessment ----------------------------------------------------------------------------


def assess_fairness(
    y_true: Any,
    scores: Any,
    data: pd.DataFrame,
    attributes: Sequence[str],
    *,
    threshold: float = 0.5,
    min_rows: int = 30,
    min_positives: int = 5,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> FairnessReport:
    """Assess the decisions ``scores >= threshold`` across the groups of each attribute.

    ``y_true`` holds binary labels (1 = the outcome the model flags), ``scores`` the
    model's probabilities (or 0/1 decisions), ``data`` one row per label with a column per
    attribute in ``attributes`` (values are group labels; bin numeric ones first, e.g. ages).
    """
    import numpy as np

    owner = "assess_fairness"
    if not 0 <= threshold <= 1:
        raise invalid_parameter("threshold", owner, "a float in [0, 1]", threshold)
    if not isinstance(min_rows, int) or min_rows < 1:
        raise invalid_parameter("min_rows", owner, "an int >= 1", min_rows)
    if not isinstance(min_positives, int) or min_positives < 1:
        raise invalid_parameter("min_positives", owner, "an int >= 1", min_positives)
    if not isinstance(n_boot, int) or n_boot < 100:
        raise invalid_parameter("n_boot", owner, "an int >= 100", n_boot)
    if not 0.5 < level < 1:
        raise invalid_parameter("level", owner, "a float in (0.5, 1)", level)
    if isinstance(attributes, str) or not attributes:
        raise invalid_parameter("attributes", owner, "a non-empty list of column names", attributes)
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape or len(data) != len(y):
        raise DataValidationError(
            f"assess_fairness needs one label, one score and one data row per row; got "
            f"{y.shape} labels, {s.shape} scores and {len(data)} data rows."
        )
    if not np.isin(y, (0, 1)).all():
        raise DataValidationError("assess_fairness needs binary labels (0/1) in 'y_true'.")
    if not np.isfinite(s).all():
        raise DataValidationError("assess_fairness: 'scores' hold NaN or infinite values.")
    labels = y.astype(np.int64)
    decisions = (s >= threshold).astype(np.int64)
    results = []
    for i, name in enumerate(attributes):
        groups = sensitive_groups(data, name)
        results.append(
            _assess_attribute(
                name, labels, decisions, s, groups, min_rows, min_positives, n_boot, level, seed + i
            )
        )
    return FairnessReport(
        tuple(results), float(threshold), min_rows, min_positives, len(y), n_boot, level, seed
    )


def sensitive_groups(data: pd.DataFrame, attribute: str) -> NDArray[Any]:
    """The group labels (as strings) of ``attribute`` in ``data``; clear errors if unusable.

    A missing column, missing values (NaN/None) or a single group are refused, naming the
    column: none of them can say anything about fairness.
    """
    import numpy as np

    if attribute not in data.columns:
        raise DataValidationError(
            f"The sensitive attribute {attribute!r} is not a column of the data; its columns "
            f"are {', '.join(map(str, data.columns))}."
        )
    column = data[attribute]
    missing = int(column.isna().sum())
    if missing:
        raise DataValidationError(
            f"The sensitive attribute {attribute!r} has {missing} missing value(s) (NaN/None); "
            "give every row a group (for example an explicit 'unknown' group)."
        )
    values = np.asarray(column.astype(str))
    distinct = np.unique(values)
    if len(distinct) < 2:
        raise DataValidationError(
            f"The sensitive attribute {attribute!r} has a single group ({distinct[0]!r} in all "
            f"{len(values)} rows); fairness compares at least two groups."
        )
    return values


def _assess_attribute(
    name: str,
    labels: NDArray[np.int64],
    decisions: NDArray[np.int64],
    scores: NDArray[np.float64],
    groups: NDArray[Any],
    min_rows: int,
    min_positives: int,
    n_boot: int,
    level: float,
    seed: int,
) -> AttributeFairness:
    import numpy as np

    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    sufficient = [
        g
        for g, idx in members.items()
        if len(idx) >= min_rows
        and labels[idx].sum() >= min_positives
        and len(idx) - labels[idx].sum() >= min_positives
    ]
    per_group: dict[str, dict[str, float]] = {}
    point: dict[str, float] = {}
    if sufficient:
        keep = np.isin(groups, sufficient)
        per_group, point = fairlearn_metrics(labels[keep], decisions[keep], groups[keep])
    metrics = []
    for g, idx in members.items():
        n, positives = len(idx), int(labels[idx].sum())
        if g not in per_group:
            metrics.append(GroupMetrics(str(g), n, positives, False))
            continue
        rates = per_group[g]
        metrics.append(
            GroupMetrics(
                str(g),
                n,
                positives,
                True,
                selection_rate=rates["selection_rate"],
                tpr=rates["tpr"],
                fpr=rates["fpr"],
                precision=rates["precision"],
                mean_score=float(scores[idx].mean()),
                observed_rate=float(labels[idx].mean()),
                ece=expected_calibration_error(labels[idx], scores[idx]),
            )
        )
    disparities: dict[str, Interval | None] = dict.fromkeys(DISPARITIES)
    if len(sufficient) >= 2:
        reps = _bootstrap(labels, decisions, [members[g] for g in sufficient], n_boot, seed)
        for j, measure in enumerate(DISPARITIES):
            disparities[measure] = interval(point[measure], reps[:, j], level)
    return AttributeFairness(name, tuple(metrics), **disparities)


def fairlearn_metrics(
    labels: Any, decisions: Any, groups: Any
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-group rates and the four disparities, computed by fairlearn's ``MetricFrame``.

    Returns ``({group: {selection_rate, tpr, fpr, precision}}, {disparity: value})``.
    """
    import numpy as np
    from fairlearn.metrics import (  # type: ignore[import-untyped]
        MetricFrame,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import precision_score

    def precision(y_true: Any, y_pred: Any) -> float:
        return float(precision_score(y_true, y_pred, zero_division=0))

    frame = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "precision": precision,
        },
        y_true=labels,
        y_pred=decisions,
        sensitive_features=np.asarray(groups),
    )
    by_group = frame.by_group
    per_group = {
        str(g): {k: float(by_group.loc[g, k]) for k in by_group.columns} for g in by_group.index
    }
    difference = frame.difference(method="between_groups")
    ratio = frame.ratio(method="between_groups")
    point = {
        "demographic_parity_difference": float(difference["selection_rate"]),
        "demographic_parity_ratio": float(ratio["selection_rate"]),
        "equalized_odds_difference": float(max(difference["tpr"], difference["fpr"])),
        "equalized_odds_ratio": float(min(ratio["tpr"], ratio["fpr"])),
    }
    return per_group, point


def _bootstrap(
    labels: NDArray[np.int64],
    decisions: NDArray[np.int64],
    members: list[NDArray[np.intp]],
    n_boot: int,
    seed: int,
) -> NDArray[np.float64]:
    """Replicates (n_boot x 4) of the disparities, resampling rows within each group."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rates = np.empty((3, n_boot, len(members)))  # selection rate, TPR, FPR
    for j, idx in enumerate(members):
        draws = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        y, d = labels[draws], decisions[draws]
        positives = y.sum(axis=1)
        negatives = len(idx) - positives
        with np.errstate(invalid="ignore", divide="ignore"):
            rates[0, :, j] = d.mean(axis=1)
            rates[1, :, j] = (y * d).sum(axis=1) / positives
            rates[2, :, j] = ((1 - y) * d).sum(axis=1) / negatives
    low, high = rates.min(axis=2), rates.max(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = low / high
    out = np.empty((n_boot, 4))
    out[:, 0] = high[0] - low[0]
    out[:, 1] = ratios[0]
    out[:, 2] = np.maximum(high[1] - low[1], high[2] - low[2])
    out[:, 3] = np.minimum(ratios[1], ratios[2])
    return out


def expected_calibration_error(labels: Any, scores: Any, bins: int = ECE_BINS) -> float:
    """Mean |observed rate - mean score| over equal-width score bins, weighted by rows."""
    import numpy as np

    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    which = np.minimum((s * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(which):
        mask = which == b
        total += mask.sum() * abs(y[mask].mean() - s[mask].mean())
    return float(total / len(y))


# -- formatting ----------------------------------------------------------------------------


def _interval_dict(value: Interval) -> dict[str, float]:
    return {"estimate": value.estimate, "low": value.low, "high": value.high, "level": value.level}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))
    return "\n".join([head, "  ".join("-" * w for w in widths), *lines])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
