"""The picture of an experiment: its confidence sequence over time and the metric per arm.

The confidence sequence is the test re-run on the log as it was at each look (every day,
or every N units): the always-valid interval of ``treatment - control`` may be read at
every look, so the plot shows what a person watching each day would have seen, with the
zero line and the first look that decided. Labels are those known now (a look at day 3
counts the labels that arrived since for day-3 predictions).

Example::

    path = plot_experiment(ws, "v4", "v4.png")   # also writes v4.txt, the summary
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.experiments.lifecycle import Experiment, ExperimentStatus
    from shipyard.experiments.metrics import ExperimentData
    from shipyard.workspace import Workspace

DAY = 86_400.0
Z95 = 1.959963984540054
"""The two-sided 95 % normal quantile, for the per-arm bars."""


@dataclass(frozen=True)
class Look:
    """The test of the primary metric on the log up to ``end`` (epoch seconds)."""

    end: float
    n_control: int
    n_treatment: int
    effect: float
    low: float
    high: float
    p_value: float
    decision: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite bounds as None)."""
        out: dict[str, Any] = dict(self.__dict__)
        for key in ("low", "high"):
            out[key] = out[key] if math.isfinite(out[key]) else None
        return out


def looks(experiment: Experiment, data: ExperimentData, every: str | int = "day") -> list[Look]:
    """The primary metric's test at each look: ``every="day"`` (days since the start) or
    every ``N`` units (customers, in the order they first appeared)."""
    from shipyard.experiments.metrics import metric_result

    cuts = _cuts(experiment, data, every)
    out = []
    for end in cuts:
        result = metric_result(experiment, data.until(end), experiment.metric, experiment.method)
        if result.test is None:
            continue
        test = result.test
        out.append(
            Look(end, test.n_control, test.n_treatment, test.effect, test.low, test.high,
                 test.p_value, result.decision)
        )  # fmt: skip
    return out


def _cuts(experiment: Experiment, data: ExperimentData, every: str | int) -> list[float]:
    rows = data.rows
    if rows.empty:
        return []
    last = float(rows["time"].max())
    if every == "day":
        start = experiment.started_at.timestamp()
        days = max(1, math.ceil((last - start) / DAY))
        return [start + DAY * k for k in range(1, days)] + [math.nextafter(last, math.inf)]
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise invalid_parameter("every", "looks", "'day' or a number of units >= 1", every)
    first_seen = rows.groupby("unit")["time"].min().sort_values().to_numpy()
    cuts = [
        float(math.nextafter(first_seen[k - 1], math.inf))
        for k in range(every, len(first_seen), every)
    ]
    return [*cuts, math.nextafter(last, math.inf)]


def plot_experiment(
    workspace: Workspace, name: str, path: str | Path, *, every: str | int = "day"
) -> Path:
    """Draw experiment ``name`` to ``path`` (.png or .svg) and write its summary beside it
    (same name, ``.txt``); returns the picture's path."""
    from shipyard.experiments.lifecycle import evaluate, get_experiment
    from shipyard.experiments.metrics import experiment_data

    target = Path(path)
    if target.suffix.lower() not in (".png", ".svg"):
        raise invalid_parameter("path", "plot_experiment", "a .png or .svg file", str(path))
    experiment = get_experiment(workspace, name)
    data = experiment_data(workspace, experiment)
    status = evaluate(experiment, data)
    sequence = looks(experiment, data, every)
    target.parent.mkdir(parents=True, exist_ok=True)
    by_units = every != "day"
    draw(status, sequence, target, by_units=by_units)
    target.with_suffix(".txt").write_text(summary(status, sequence, by_units=by_units))
    return target


def summary(status: ExperimentStatus, sequence: list[Look], *, by_units: bool = False) -> str:
    """The status in words, then one line per look (its day, or with ``by_units`` only the
    units counted so far)."""
    lines = [status.describe(), "", "looks (effect = treatment - control, always-valid CI):"]
    start = status.experiment.started_at.timestamp()
    lines += [
        ("" if by_units else f"  {(look.end - start) / DAY:6.2f} d")
        + f"  n {look.n_control}/{look.n_treatment}  "
        f"{look.effect:+.4g} [{look.low:+.4g}, {look.high:+.4g}]  p {look.p_value:.3g}  "
        f"{look.decision}"
        for look in sequence
    ]
    return "\n".join(lines) + "\n"


def draw(
    status: ExperimentStatus, sequence: list[Look], path: Path, *, by_units: bool = False
) -> None:
    """Two panels: the confidence sequence over looks (against days since the start, or
    with ``by_units`` the units counted in both arms), the metric per arm with 95 % bars."""
    from matplotlib.figure import Figure

    experiment = status.experiment
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(2, 1))
    start = experiment.started_at.timestamp()
    days = [
        float(look.n_control + look.n_treatment) if by_units else (look.end - start) / DAY
        for look in sequence
    ]
    finite = [(d, lk) for d, lk in zip(days, sequence, strict=True) if math.isfinite(lk.low)]
    if finite:
        x = [d for d, _ in finite]
        left.fill_between(
            x, [lk.low for _, lk in finite], [lk.high for _, lk in finite], alpha=0.25,
            label=f"always-valid {1 - experiment.alpha:.0%} interval",
        )  # fmt: skip
    left.plot(days, [lk.effect for lk in sequence], marker="o", label="effect")
    left.axhline(0.0, color="black", linewidth=0.8)
    decided = next((d for d, lk in zip(days, sequence, strict=True) if _decides(lk)), None)
    if decided is not None:
        left.axvline(decided, color="tab:red", linestyle="--", label="first decision")
    left.set_xlabel("units counted (both arms)" if by_units else "days since the start")
    left.set_ylabel(f"{experiment.metric.name}: treatment - control")
    left.set_title(f"{experiment.name}: {status.decision}")
    left.legend(loc="best", fontsize="small")
    arms = status.primary.arms
    means = [arms["control"].mean, arms["treatment"].mean]
    errors = [Z95 * math.sqrt(a.variance / a.n) if a.n else 0.0 for a in arms.values()]
    labels = [f"control v{experiment.control}", f"treatment v{experiment.treatment}"]
    right.bar(labels, means, yerr=errors, capsize=6, color=["tab:gray", "tab:blue"])
    right.set_ylabel(f"{experiment.metric.name} (95 % interval per arm)")
    right.set_title(f"{arms['control'].n} / {arms['treatment'].n} units")
    figure.savefig(path)


def _decides(look: Look) -> bool:
    from shipyard.experiments.sequential import BETTER, WORSE

    return look.decision in (BETTER, WORSE)
