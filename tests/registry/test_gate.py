from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import DataValidationError, ParameterError, PromotionRefusedError
from shipyard.governance.audit import entries, verify
from shipyard.governance.fairness import assess_fairness
from shipyard.registry.gate import FairnessGate, PromotionGate
from shipyard.registry.models import ModelRegistry, ModelVersion
from shipyard.training.frames import Window, load_frame
from shipyard.training.trainers import make_config
from tests.governance.fair_data import german_credit, split_scores
from tests.governance.german_views import FEATURES, german_workspace, register, train


@pytest.fixture
def window() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 14 * 400
    days = np.datetime64("2018-08-29") + np.repeat(np.arange(14), 400).astype("timedelta64[D]")
    y = (rng.random(n) < 0.03).astype(int)
    cards = rng.integers(0, 2000, n)
    signal = y + rng.normal(0, 0.8, n)
    return y, days, cards, signal


def test_a_clearly_better_challenger_passes(window: tuple[np.ndarray, ...]) -> None:
    y, days, cards, signal = window
    rng = np.random.default_rng(1)
    champion = signal + rng.normal(0, 1.5, len(y))  # same signal, more noise
    result = PromotionGate(n_boot=300).compare(y, days, cards, champion, signal)
    assert result.passed
    assert result.delta.low > 0
    assert result.challenger > result.champion
    assert result.n_days == 14


@pytest.mark.parametrize("metric", ["roc_auc", "average_precision", "card_precision@100"])
def test_an_identical_or_worse_challenger_is_refused(
    metric: str, window: tuple[np.ndarray, ...]
) -> None:
    y, days, cards, signal = window
    gate = PromotionGate(metric=metric, n_boot=200)
    same = gate.compare(y, days, cards, signal, signal)
    assert not same.passed
    assert same.delta.estimate == 0
    worse = gate.compare(
        y, days, cards, signal, signal + np.random.default_rng(2).normal(0, 2, len(y))
    )
    assert not worse.passed
    assert "does not exceed" in worse.reason


def test_a_strict_and_a_loose_gate_disagree_on_a_small_unproven_gain(
    window: tuple[np.ndarray, ...],
) -> None:
    """Same pair, same draws: a gain whose interval includes 0 passes only the loose gate."""
    y, days, cards, signal = window
    champion = signal + np.random.default_rng(5).normal(0, 0.1, len(y))  # a little noisier
    strict = PromotionGate(n_boot=200).compare(y, days, cards, champion, signal)
    loose = PromotionGate(n_boot=200, require_significance=False).compare(
        y, days, cards, champion, signal
    )
    assert strict.delta == loose.delta  # identical measurement ...
    assert loose.delta.estimate > 0 and loose.delta.low < 0  # ... of a gain not significant
    assert loose.passed and not strict.passed  # ... decided differently
    assert "the estimate exceeds 0" in loose.reason
    assert "the lower bound of the interval does not exceed 0" in strict.reason


def test_a_margin_refuses_a_significant_gain_that_is_too_small(
    window: tuple[np.ndarray, ...],
) -> None:
    y, days, cards, signal = window
    champion = signal + np.random.default_rng(4).normal(0, 0.3, len(y))
    plain = PromotionGate(n_boot=200).compare(y, days, cards, champion, signal)
    assert plain.passed and 0 < plain.delta.low < 0.05
    demanding = PromotionGate(n_boot=200, min_improvement=0.05).compare(
        y, days, cards, champion, signal
    )
    assert not demanding.passed
    assert demanding.delta == plain.delta


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "f1"}, "'metric' parameter of PromotionGate must be one of"),
        ({"n_boot": 10}, "'n_boot' parameter of PromotionGate must be an int >= 100"),
        ({"level": 1.5}, "'level' parameter"),
    ],
)
def test_bad_gate_parameters_are_named(
    kwargs: dict[str, object], message: str, window: tuple[np.ndarray, ...]
) -> None:
    y, days, cards, signal = window
    with pytest.raises(ParameterError, match=message):
        PromotionGate(**kwargs).compare(y, days, cards, signal, signal)  # type: ignore[arg-type]


# -- fairness gates ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def german() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """German credit test half: labels (bad = 1), a logistic model's scores, attributes."""
    X, y, sensitive = german_credit()
    test, labels, scores = split_scores(X, y)
    return labels, scores, sensitive.iloc[test].reset_index(drop=True)


def test_a_fairness_gate_compares_the_intervals_upper_end_with_the_bound(
    german: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    y, scores, data = german
    report = assess_fairness(y, scores, data, ["age_group"], threshold=0.3, n_boot=300)
    eo = report.attribute("age_group").equalized_odds_difference
    assert eo is not None and eo.estimate < eo.high
    kwargs = {"threshold": 0.3, "n_boot": 300}
    # a bound between the estimate and the interval's upper end: only the loose gate passes
    middle = (eo.estimate + eo.high) / 2
    strict = FairnessGate("age_group", bound=middle, **kwargs).check(y, scores, data)
    loose = FairnessGate("age_group", bound=middle, require_significance=False, **kwargs).check(
        y, scores, data
    )
    assert strict.measured == loose.measured == eo  # the same measurement as the report's
    assert not strict.passed and loose.passed
    assert "the upper end of its 95% interval" in strict.reason and "exceeds" in strict.reason
    assert (
        FairnessGate("age_group", bound=min(eo.high + 0.01, 0.99), **kwargs)
        .check(y, scores, data)
        .passed
    )
    # decide() on the report gives the same result as check()
    assert FairnessGate("age_group", bound=middle, **kwargs).decide(report) == strict
    assert json.loads(json.dumps(strict.to_dict()))["high"] == eo.high
    # the card section shows the gates with the assessment they were decided on
    section = report.with_gates([strict, loose]).card_section()
    assert f"| {strict.describe()} | FAILED |" in section.markdown
    assert f"| {loose.describe()} | passed |" in section.markdown
    assert "<td>FAILED</td>" in section.html


def test_a_ratio_gate_compares_the_lower_end(
    german: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    y, scores, data = german
    gate = FairnessGate("sex", "demographic_parity_ratio", bound=0.99, threshold=0.3, n_boot=200)
    result = gate.check(y, scores, data)
    assert result.measured is not None and result.measured.low < 0.99
    assert not result.passed and "is below the bound 0.99" in result.reason
    assert result.describe() == "demographic_parity_ratio(sex) >= 0.99"
    lenient = FairnessGate("sex", "demographic_parity_ratio", bound=0.01, threshold=0.3)
    assert lenient.check(y, scores, data).passed


def test_a_fairness_gate_fails_when_the_groups_are_too_small_to_assess(
    german: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    y, scores, data = german
    result = FairnessGate("foreign_worker", bound=0.5, threshold=0.3).check(y, scores, data)
    assert not result.passed and result.measured is None
    assert result.insufficient == ("no",)
    assert "cannot be assessed" in result.reason


def test_a_fairness_gate_on_an_attribute_the_data_lacks_is_a_clear_error(
    german: tuple[np.ndarray, np.ndarray, pd.DataFrame],
) -> None:
    y, scores, data = german
    with pytest.raises(DataValidationError, match="'religion' is not a column of the data"):
        FairnessGate("religion").check(y, scores, data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "accuracy"}, "'metric' parameter of FairnessGate must be one of"),
        ({"bound": 1.5}, "'bound' parameter of FairnessGate must be a difference in"),
        (
            {"metric": "equalized_odds_ratio", "bound": 0.0},
            "'bound' parameter of FairnessGate must be a ratio",
        ),
    ],
)
def test_bad_fairness_gate_parameters_are_named(
    kwargs: dict[str, object], message: str, german: tuple[np.ndarray, np.ndarray, pd.DataFrame]
) -> None:
    y, scores, data = german
    with pytest.raises(ParameterError, match=message):
        FairnessGate("sex", **kwargs).check(y, scores, data)  # type: ignore[arg-type]


# -- fairness gates at promotion -------------------------------------------------------------


@pytest.fixture(scope="module")
def german_registry(
    tmp_path_factory: pytest.TempPathFactory, database: str
) -> Iterator[tuple[ModelRegistry, ModelVersion]]:
    """German credit in a workspace (on ``database``), a logistic regression registered (no
    champion yet)."""
    ws, dataset = german_workspace(tmp_path_factory.mktemp("german") / "ws")
    version = register(ws, train(ws, dataset, make_config("logistic_regression"), FEATURES))
    yield ModelRegistry(ws), version
    ws.close()


def test_promotion_is_refused_by_a_failing_fairness_gate_and_the_refusal_recorded(
    german_registry: tuple[ModelRegistry, ModelVersion],
) -> None:
    registry, version = german_registry
    strict = FairnessGate("sex", "demographic_parity_difference", bound=0.001, threshold=0.3)
    with pytest.raises(PromotionRefusedError, match=r"fairness gate demographic_parity_diff"):
        registry.promote(
            version.name, version.version, reason="first model", fairness=[strict], actor="t"
        )
    assert "champion" not in registry.aliases(version.name)  # nothing changed
    refusal = registry.history(version.name)[-1]
    assert refusal.action == "refuse" and refusal.version == version.version
    recorded = refusal.details["fairness"][0]
    assert recorded["attribute"] == "sex" and recorded["passed"] is False
    assert recorded["high"] > 0.001

    # what the gate measured is the assessment of the version's evaluation window, with
    # the attribute read from the data set (it is not an input of the model)
    assert "sex" not in version.input_schema.names
    window = Window.from_dict(version.eval_window)
    frame = load_frame(registry.workspace, replace(window, columns=(*window.columns, "sex")))
    scores = registry.load(version.name, version.version).predict(
        frame[version.input_schema.names].to_numpy(dtype=float)
    )
    report = assess_fairness(frame["bad_risk"], scores, frame, ["sex"], threshold=0.3)
    dp = report.attribute("sex").demographic_parity_difference
    assert dp is not None and recorded["estimate"] == pytest.approx(dp.estimate)
    assert recorded["n_rows"] == len(frame) == 300

    # a bound the model meets: promoted, and the promotion records the gate's result
    loose = FairnessGate("sex", "demographic_parity_difference", bound=0.9, threshold=0.3)
    registry.promote(version.name, version.version, reason="fair enough", fairness=[loose])
    assert registry.aliases(version.name)["champion"] == version.version
    promotion = registry.history(version.name)[-1]
    assert promotion.action == "promote"
    assert promotion.details["fairness"][0]["passed"] is True
    # both are entries of the workspace's hash-chained audit trail, which still verifies
    trail = entries(registry.workspace, kind="model", name=version.name)
    assert [e.action for e in trail[-2:]] == ["refuse", "promote"]
    assert trail[-2].details["fairness"][0]["passed"] is False
    assert verify(registry.workspace).ok


def test_a_fairness_gate_on_an_attribute_the_data_set_lacks_names_it(
    german_registry: tuple[ModelRegistry, ModelVersion],
) -> None:
    registry, version = german_registry
    before = len(registry.history(version.name))
    with pytest.raises(DataValidationError, match="'religion' is not a column of data set"):
        registry.promote(
            version.name, version.version, reason="x", fairness=[FairnessGate("religion")]
        )
    assert len(registry.history(version.name)) == before
