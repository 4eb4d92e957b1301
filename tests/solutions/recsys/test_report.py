"""The results report: the best baseline is chosen on validation, every other model is
compared with it on test over the same users, and the goal verdict follows the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.solutions.recsys.metrics import Evaluation
from shipyard.solutions.recsys.report import (
    compare,
    plot_results,
    results_table,
    write_report,
)
from shipyard.solutions.recsys.tuning import Trial, Tuned

USERS = 400


def _evaluation(stage: str, mean: float, seed: int, users: int = USERS) -> Evaluation:
    rng = np.random.default_rng(seed)
    ndcg = np.clip(mean + rng.normal(0.0, 0.05, users), 0.0, 1.0)
    return Evaluation(
        stage,
        np.arange(users, dtype=np.int64),
        ndcg,
        np.clip(ndcg + 0.01, 0.0, 1.0),
        np.zeros((users, 10), dtype=np.int64),
        fit_seconds=1.5,
        score_seconds=0.25,
    )


def _tuned(name: str, validation: float, test: float, seed: int, users: int = USERS) -> Tuned:
    params = {"l2": 100.0} if name == "ease" else {}
    trials = [Trial(params, validation, validation, 1.5)]
    return Tuned(
        name,
        params,
        trials,
        _evaluation("validation", validation, seed, users),
        _evaluation("test", test, seed + 1, users),
        scorer=None,  # type: ignore[arg-type]  # the report reads metrics, never the scorer
    )


BASELINES = ["most-popular", "ease", "als"]


@pytest.fixture
def tuned() -> dict[str, Tuned]:
    # ALS is best on test, EASE on validation: the best baseline must be EASE.
    return {
        "most-popular": _tuned("most-popular", 0.10, 0.08, seed=1),
        "ease": _tuned("ease", 0.20, 0.15, seed=3),
        "als": _tuned("als", 0.19, 0.17, seed=5),
        "two-stage": _tuned("two-stage", 0.30, 0.25, seed=7),
        "sequence": _tuned("sequence", 0.21, 0.155, seed=9),
    }


def test_the_best_baseline_is_chosen_on_validation_not_test(tuned: dict[str, Tuned]) -> None:
    table = results_table(tuned, variant="all", baselines=BASELINES, n_boot=200)
    assert "ease (best baseline)" in table
    assert "als (baseline)" in table and "most-popular (baseline)" in table
    assert "**ease** (chosen by validation NDCG@10)" in table
    assert "l2=100.0" in table
    row = next(line for line in table.splitlines() if line.startswith("| two-stage | "))
    validation = tuned["two-stage"].validation.ndcg.mean()
    assert row.startswith(f"| two-stage | {validation:.4f} | ")
    # The comparison rows: two-stage meets the goal, sequence (+3%) does not.
    lines = table.splitlines()
    assert any(line.startswith("| two-stage | +0.09") for line in lines)
    assert [line.endswith("| yes | no | met |") for line in lines].count(True) == 1
    assert any(line.startswith("| sequence | ") and line.endswith("| no | yes | not met |")
               for line in lines)  # fmt: skip
    verdict = table.strip().splitlines()[-1]
    assert verdict.startswith("**Verdict:** two-stage (our best on validation)")
    assert "goal met" in verdict and "do not overlap" in verdict


def test_comparison_is_paired_over_the_same_users(tuned: dict[str, Tuned]) -> None:
    result = compare(tuned["two-stage"], tuned["ease"], n_boot=200)
    ours, theirs = tuned["two-stage"].test.ndcg, tuned["ease"].test.ndcg
    assert result.absolute.estimate == pytest.approx(ours.mean() - theirs.mean())
    assert result.relative.estimate == pytest.approx(ours.mean() / theirs.mean() - 1)
    assert result.relative.low < result.relative.estimate < result.relative.high
    assert result.goal_met and result.overlap is False
    other_users = _tuned("other", 0.3, 0.3, seed=11, users=USERS - 1)
    with pytest.raises(ParameterError, match="same users"):
        compare(other_users, tuned["ease"])


def test_a_model_short_of_the_goal_says_by_how_much(tuned: dict[str, Tuned]) -> None:
    del tuned["two-stage"]
    table = results_table(tuned, variant="positive", baselines=BASELINES, n_boot=200)
    verdict = table.strip().splitlines()[-1]
    assert "sequence (our best on validation)" in verdict
    assert "goal of +10% not met (short by" in verdict
    assert "MovieLens, positive interactions" in table


def test_baselines_alone_and_bad_names(tuned: dict[str, Tuned]) -> None:
    only = {name: tuned[name] for name in BASELINES}
    table = results_table(only, variant="all", baselines=BASELINES, n_boot=0)
    assert "no model of ours" in table.splitlines()[-1] or "no model of ours" in table
    assert "paired over users" not in table
    with pytest.raises(ParameterError, match="'baselines'"):
        results_table(only, variant="all", baselines=["svd"])


def test_plot_and_index_are_written(tuned: dict[str, Tuned], tmp_path: Path) -> None:
    plot = plot_results(tuned, tmp_path / "plots" / "all.png", n_boot=100)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = results_table(tuned, variant="all", baselines=BASELINES, n_boot=0)
    index = write_report(tmp_path / "report", {"all": table}, {"all": plot})
    text = index.read_text()
    assert index.name == "index.md"
    assert "## Variant: all" in text and "ease (best baseline)" in text
    assert "![test NDCG@10, all](all.png)" in text
    assert (tmp_path / "report" / "all.png").read_bytes() == plot.read_bytes()
    with pytest.raises(ParameterError, match="'plots'"):
        write_report(tmp_path / "report", {"all": table}, {"positive": plot})
    with pytest.raises(ParameterError, match="'tables'"):
        write_report(tmp_path / "report", {})
