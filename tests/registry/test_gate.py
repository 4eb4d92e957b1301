from __future__ import annotations

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.registry.gate import PromotionGate


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
