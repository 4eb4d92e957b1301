"""The results report of the recommendation solution: every tuned model against the best
tuned baseline, with intervals, in Markdown and one plot per variant.

The best baseline is chosen by **validation** NDCG@10 (choosing it by test would flatter the
baselines' side with the test set's noise, and is not something a team could do before
shipping). Each other model is compared with it on test, over the same users: the paired
difference of NDCG@10 (absolute and relative, with user-bootstrap 95% intervals), whether it
reaches the goal of +10%, and whether the two models' own test intervals overlap. The goal
of the issue is met when the relative gain is at least +10% **and** the intervals do not
overlap.

Example::

    table = results_table(tuned, variant="all", baselines=list(BASELINES))
    plot = plot_results(tuned, folder / "all.png")
    index = write_report(folder, {"all": table}, {"all": plot})
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.errors import invalid_parameter
from shipyard.solutions.recsys.metrics import N_BOOT, K

if TYPE_CHECKING:
    from shipyard.solutions.recsys.tuning import Tuned
    from shipyard.training.metrics import Interval

__all__ = [
    "GOAL",
    "Comparison",
    "best_baseline",
    "compare",
    "plot_results",
    "results_table",
    "write_report",
]

GOAL = 0.10
"""The issue's goal: test NDCG@10 at least 10% above the best tuned baseline."""


@dataclass(frozen=True)
class Comparison:
    """One model against the best tuned baseline on test NDCG@10 (module doc)."""

    model: str
    baseline: str
    absolute: Interval
    relative: Interval
    model_ndcg: Interval
    baseline_ndcg: Interval

    @property
    def overlap(self) -> bool | None:
        """Whether the two models' test intervals overlap (None without intervals)."""
        a, b = self.model_ndcg, self.baseline_ndcg
        if any(math.isnan(v) for v in (a.low, a.high, b.low, b.high)):
            return None
        return a.low <= b.high and b.low <= a.high

    @property
    def goal_met(self) -> bool:
        """At least +10% relative and intervals that do not overlap."""
        return self.relative.estimate >= GOAL and self.overlap is False


def best_baseline(tuned: Mapping[str, Tuned], baselines: Sequence[str]) -> str:
    """The baseline with the best validation NDCG@10 (ties: the first named)."""
    missing = [name for name in baselines if name not in tuned]
    if not baselines or missing:
        raise invalid_parameter(
            "baselines", "results_table", f"names among the tuned models {sorted(tuned)}",
            missing or list(baselines),
        )  # fmt: skip
    return max(
        baselines, key=lambda name: (tuned[name].validation.ndcg.mean(), -baselines.index(name))
    )


def compare(model: Tuned, baseline: Tuned, n_boot: int = N_BOOT) -> Comparison:
    """``model`` against ``baseline`` on test NDCG@10, paired over the same users."""
    import numpy as np

    from shipyard.solutions.recsys.metrics import paired_difference

    if not np.array_equal(model.test.users, baseline.test.users):
        raise invalid_parameter(
            "model", "compare", f"a model tested on the same users as {baseline.name!r}",
            f"{model.name!r} tested on {len(model.test.users)} users",
        )  # fmt: skip
    absolute, relative = paired_difference(
        baseline.test.ndcg, model.test.ndcg, n_boot=max(n_boot, 1)
    )
    if n_boot == 0:
        absolute, relative = _point(absolute), _point(relative)
    return Comparison(
        model.name,
        baseline.name,
        absolute,
        relative,
        model.test.interval("ndcg", n_boot),
        baseline.test.interval("ndcg", n_boot),
    )


def _point(value: Interval) -> Interval:
    from shipyard.training.metrics import Interval

    return Interval(value.estimate, math.nan, math.nan, value.level)


def _ci(value: Interval, digits: int = 4, percent: bool = False, signed: bool = False) -> str:
    scale, unit = (100.0, "%") if percent else (1.0, "")
    sign = "+" if percent or signed else ""
    text = f"{value.estimate * scale:{sign}.{digits}f}{unit}"
    if math.isnan(value.low):
        return text
    low, high = value.low * scale, value.high * scale
    return f"{text} [{low:{sign}.{digits}f}{unit}, {high:{sign}.{digits}f}{unit}]"


def _params(params: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "none"


def results_table(
    tuned: Mapping[str, Tuned],
    *,
    variant: str,
    baselines: Sequence[str],
    n_boot: int = N_BOOT,
) -> str:
    """Markdown: every model's validation and test metrics, then every non-baseline model
    against the best tuned baseline (chosen on validation), then a one-line verdict."""
    best = best_baseline(tuned, list(baselines))
    users = len(tuned[best].test.users)
    lines = [
        f"### MovieLens, {variant} interactions: test on {users:,} users",
        "",
        f"| model | validation NDCG@{K} | test NDCG@{K} [95% CI] | test recall@{K} [95% CI] "
        "| chosen parameters | settings tried | fit s | scoring s |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name, model in tuned.items():
        marker = (
            " (best baseline)" if name == best else (" (baseline)" if name in baselines else "")
        )
        lines.append(
            f"| {name}{marker} | {model.validation.ndcg.mean():.4f} "
            f"| {_ci(model.test.interval('ndcg', n_boot))} "
            f"| {_ci(model.test.interval('recall', n_boot))} | {_params(model.params)} "
            f"| {len(model.trials)} | {model.test.fit_seconds:.1f} "
            f"| {model.test.score_seconds:.2f} |"
        )
    lines += ["", "Fit and scoring seconds are those of the refit on train + validation."]
    ours = [name for name in tuned if name not in baselines]
    comparisons = [compare(tuned[name], tuned[best], n_boot) for name in ours]
    if comparisons:
        lines += [
            "",
            f"Against the best tuned baseline, **{best}** (chosen by validation NDCG@{K}), "
            f"on test NDCG@{K}, paired over users:",
            "",
            "| model | absolute difference [95% CI] | relative [95% CI] | +10% | CIs overlap "
            "| goal |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for c in comparisons:
            overlap = {None: "n/a", True: "yes", False: "no"}[c.overlap]
            lines.append(
                f"| {c.model} | {_ci(c.absolute, 4, signed=True)} "
                f"| {_ci(c.relative, 1, percent=True)} "
                f"| {'yes' if c.relative.estimate >= GOAL else 'no'} | {overlap} "
                f"| {'met' if c.goal_met else 'not met'} |"
            )
    lines += ["", _verdict(tuned, best, ours, comparisons), ""]
    return "\n".join(lines)


def _verdict(
    tuned: Mapping[str, Tuned], best: str, ours: list[str], comparisons: list[Comparison]
) -> str:
    baseline = tuned[best]
    if not comparisons:
        return (
            f"**Verdict:** the best tuned baseline is {best} (validation NDCG@{K} "
            f"{baseline.validation.ndcg.mean():.4f}, test {baseline.test.ndcg.mean():.4f}); "
            "no model of ours in this table."
        )
    # Our best model is chosen the same way as the baseline: by validation, not test.
    top = max(ours, key=lambda name: tuned[name].validation.ndcg.mean())
    c = next(c for c in comparisons if c.model == top)
    overlap = {None: "no intervals", True: "the CIs overlap", False: "the CIs do not overlap"}
    outcome = "goal met" if c.goal_met else f"goal of +{GOAL:.0%} not met"
    if not c.goal_met and c.relative.estimate < GOAL:
        outcome += f" (short by {(GOAL - c.relative.estimate) * 100:.1f} points)"
    return (
        f"**Verdict:** {top} (our best on validation) scores test NDCG@{K} "
        f"{c.model_ndcg.estimate:.4f} against {best}'s {c.baseline_ndcg.estimate:.4f}: "
        f"{_ci(c.relative, 1, percent=True)} relative, {overlap[c.overlap]}; {outcome}."
    )


def plot_results(tuned: Mapping[str, Tuned], path: Path | str, *, n_boot: int = N_BOOT) -> Path:
    """A PNG of every model's test NDCG@10 with its 95% user-bootstrap interval."""
    from matplotlib.figure import Figure

    from shipyard.integrity import write_atomically

    if not tuned:
        raise invalid_parameter("tuned", "plot_results", "at least one tuned model", {})
    path = Path(path)
    names = list(tuned)
    intervals = [tuned[name].test.interval("ndcg", n_boot) for name in names]
    estimates = [i.estimate for i in intervals]
    errors = [
        [0.0 if math.isnan(i.low) else i.estimate - i.low for i in intervals],
        [0.0 if math.isnan(i.high) else i.high - i.estimate for i in intervals],
    ]
    figure = Figure(figsize=(7, 0.5 * len(names) + 1.5), layout="constrained")
    axes = figure.subplots()
    positions = list(range(len(names)))[::-1]
    axes.barh(positions, estimates, xerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    axes.set_yticks(positions, names)
    axes.set_xlabel(f"test NDCG@{K} (95% interval over users)")
    axes.set_xlim(left=0.0)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomically(path, buffer.getvalue())
    return path


def write_report(
    folder: Path | str, tables: Mapping[str, str], plots: Mapping[str, Path | str] | None = None
) -> Path:
    """Write ``folder/index.md``: per variant its table and plot (copied into ``folder``)."""
    from shipyard.integrity import write_atomically

    if not tables:
        raise invalid_parameter("tables", "write_report", "at least one variant's table", {})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = dict(plots or {})
    unknown = sorted(set(plots) - set(tables))
    if unknown:
        raise invalid_parameter(
            "plots", "write_report", f"variants among {sorted(tables)}", unknown
        )
    parts = ["# Recommendations: results against tuned baselines", ""]
    for variant, table in tables.items():
        parts += [f"## Variant: {variant}", "", table.strip(), ""]
        if variant in plots:
            source = Path(plots[variant])
            if not source.is_file():
                raise invalid_parameter(
                    "plots", "write_report", "existing image files", str(source)
                )
            target = folder / source.name
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            parts += [f"![test NDCG@{K}, {variant}]({target.name})", ""]
    index = folder / "index.md"
    write_atomically(index, "\n".join(parts).encode())
    return index
