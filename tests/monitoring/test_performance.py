"""RealizedPerformance: per-window metrics equal scikit-learn's and the protocol's, and their
intervals cover the population value at their stated level."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom, norm
from sklearn.metrics import average_precision_score, roc_auc_score

from shipyard.errors import ParameterError
from shipyard.monitoring.performance import MetricStatus, RealizedPerformance
from shipyard.training.metrics import alert_budget, card_precision_at_k


def binormal(seed: int, n: int, prevalence: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Scores N(1, 1) for positives and N(0, 1) for negatives: AUC = Φ(1/√2)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    return rng.normal(y.astype(float), 1.0), y


def wilson(successes: int, trials: int, level: float) -> tuple[float, float]:
    """The textbook Wilson score interval, written out as an independent check."""
    z = norm.ppf(0.5 + level / 2)
    p = successes / trials
    centre = (p + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z / (1 + z**2 / trials) * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2))
    return centre - half, centre + half


class TestRealizedMetrics:
    def test_auc_and_ap_per_window_equal_scikit_learns(self) -> None:
        s, y = binormal(0, 3000)
        window = np.repeat(["w1", "w2", "w3"], 1000)
        report = RealizedPerformance(threshold=1.0, n_boot=50).compute(s, y, window=window)
        assert [w.window for w in report.windows] == ["w1", "w2", "w3"]
        for i, w in enumerate(report.windows):
            rows = slice(1000 * i, 1000 * (i + 1))
            assert w["roc_auc"].value == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=1e-12)
            assert w["average_precision"].value == pytest.approx(
                average_precision_score(y[rows], s[rows]), abs=1e-12
            )
            assert w["roc_auc"].low < w["roc_auc"].value < w["roc_auc"].high

    def test_threshold_metrics_are_counts_with_wilson_intervals(self) -> None:
        s, y = binormal(1, 2000)
        report = RealizedPerformance(threshold=1.0, n_boot=20, level=0.9).compute(s, y)
        w = report["all"]
        alert = s >= 1.0
        tp = int((alert & (y == 1)).sum())
        expected = {
            "precision": (tp, int(alert.sum())),
            "recall": (tp, int(y.sum())),
            "false_positive_rate": (int(alert.sum()) - tp, int((y == 0).sum())),
            "alert_rate": (int(alert.sum()), len(y)),
        }
        for name, (k, n) in expected.items():
            assert w[name].value == pytest.approx(k / n)
            assert (w[name].low, w[name].high) == pytest.approx(wilson(k, n, 0.9), abs=1e-9)
            assert w[name].method == "wilson"
        assert (w.n, w.positives, w.alerts) == (2000, int(y.sum()), int(alert.sum()))

    def test_precision_at_k_and_card_precision_follow_the_training_metrics(self) -> None:
        rng = np.random.default_rng(2)
        n = 4000
        day = np.datetime64("2026-01-01") + rng.integers(0, 4, n).astype("timedelta64[D]")
        card = rng.integers(0, 600, n)
        s, y = binormal(2, n, prevalence=0.05)
        perf = RealizedPerformance(k=20, n_boot=20)
        by_card = perf.compute(s, y, day=day, entity=card)["all"]["card_precision@20"]
        assert by_card.value == pytest.approx(card_precision_at_k(day, card, y, s, k=20).mean)
        by_row = perf.compute(s, y, day=day)["all"]["precision@20"]
        assert by_row.value == pytest.approx(alert_budget(day, y, s, per_day=20)["precision"])

    def test_the_bootstrap_is_seeded(self) -> None:
        s, y = binormal(3, 1000)
        a = RealizedPerformance(n_boot=50, seed=4).compute(s, y)["all"]["roc_auc"]
        b = RealizedPerformance(n_boot=50, seed=4).compute(s, y)["all"]["roc_auc"]
        c = RealizedPerformance(n_boot=50, seed=5).compute(s, y)["all"]["roc_auc"]
        assert a == b
        assert (a.low, a.high) != (c.low, c.high)

    def test_the_report_is_json(self) -> None:
        s, y = binormal(4, 500)
        report = RealizedPerformance(n_boot=20).compute(s, y, window=np.arange(500) % 2)
        again = json.loads(json.dumps(report.to_dict()))
        assert again["windows"][0]["metrics"]["roc_auc"]["status"] == "ok"


class TestCoverage:
    """100 seeded samples of one population: each interval holds the population value at
    least as often as a 95 % interval should, up to a binomial tolerance (p < 0.001)."""

    def test_auc_bootstrap_and_fpr_wilson_intervals_cover(self) -> None:
        true_auc, threshold = float(norm.cdf(1 / np.sqrt(2))), 1.0
        true_fpr = float(norm.sf(threshold))
        trials = 100
        covered = {"roc_auc": 0, "false_positive_rate": 0}
        perf = RealizedPerformance(threshold=threshold, n_boot=200, seed=0)
        for seed in range(trials):
            s, y = binormal(100 + seed, 1000, prevalence=0.2)
            w = perf.compute(s, y)["all"]
            covered["roc_auc"] += w["roc_auc"].contains(true_auc)
            covered["false_positive_rate"] += w["false_positive_rate"].contains(true_fpr)
        floor = binom.ppf(0.001, trials, 0.95)
        assert covered["roc_auc"] >= floor, covered
        assert covered["false_positive_rate"] >= floor, covered


class TestInsufficientData:
    def test_a_window_without_positives_has_no_auc_ap_or_recall(self) -> None:
        s, y = binormal(5, 400)
        y[200:] = 0
        w = RealizedPerformance(threshold=0.5, n_boot=20).compute(
            s, y, window=np.repeat(["a", "b"], 200)
        )["b"]
        for name in ("roc_auc", "average_precision", "recall"):
            assert w[name].status is MetricStatus.INSUFFICIENT_DATA
            assert w[name].value is None
        assert w["false_positive_rate"].status is MetricStatus.OK

    def test_too_few_rows_or_alerts_or_cards(self) -> None:
        s, y = binormal(6, 20)
        w = RealizedPerformance(min_rows=30, n_boot=20).compute(s, y)["all"]
        assert all(m.status is MetricStatus.INSUFFICIENT_DATA for m in w.metrics.values())
        s, y = binormal(7, 300)
        w = RealizedPerformance(threshold=99.0, k=500, n_boot=20).compute(s, y)["all"]
        assert w["precision"].status is MetricStatus.INSUFFICIENT_DATA  # no alerts
        assert w["precision@500"].status is MetricStatus.INSUFFICIENT_DATA  # < k rows
        assert w["alert_rate"].value == 0.0
        assert json.loads(json.dumps(w.to_dict()))["metrics"]["precision"]["value"] is None


class TestBadInput:
    @pytest.mark.parametrize(
        ("scores", "labels", "match"),
        [
            ([], [], "'scores' parameter .* non-empty"),
            ([0.1, 0.2], [0], "'labels' parameter .* as long as 'scores' \\(2\\)"),
            ([0.1, np.nan], [0, 1], "'scores' parameter .* finite numbers"),
            ([0.1, 0.2], [0, 2], "'labels' parameter .* 0/1 labels"),
            ([0.1, 0.2], ["yes", "no"], "'labels' parameter .* 0/1 labels"),
            (["a", "b"], [0, 1], "'scores' parameter .* array of numbers"),
        ],
    )
    def test_bad_data_names_the_parameter(self, scores: list, labels: list, match: str) -> None:
        with pytest.raises(ParameterError, match=match):
            RealizedPerformance().compute(scores, labels)

    def test_a_window_key_of_the_wrong_length(self) -> None:
        with pytest.raises(ParameterError, match="'window' parameter"):
            RealizedPerformance().compute([0.1, 0.2], [0, 1], window=[1])

    def test_missing_or_mixed_window_keys(self) -> None:
        with pytest.raises(ParameterError, match=r"'window' parameter .* 1 missing key"):
            RealizedPerformance().compute([0.1, 0.2], [0, 1], window=["a", None])
        with pytest.raises(ParameterError, match=r"'day' parameter .* one comparable type"):
            RealizedPerformance().compute([0.1, 0.2], [0, 1], day=np.array(["a", 1], object))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"k": 0}, "'k' parameter of RealizedPerformance must be an int >= 1"),
            ({"level": 1.5}, "'level' parameter"),
            ({"threshold": float("nan")}, "'threshold' parameter"),
        ],
    )
    def test_bad_parameters(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ParameterError, match=match):
            RealizedPerformance(**kwargs).compute([0.1, 0.2], [0, 1])


def test_intervals_resample_rows_within_few_days_and_days_from_a_week_on() -> None:
    from shipyard.training import metrics as m

    rng = np.random.default_rng(3)
    n = 1_400
    labels = (rng.random(n) < 0.1).astype(int)
    scores = np.clip(0.3 * labels + rng.random(n) * 0.7, 0, 1)
    one_day = np.full(n, np.datetime64("2026-11-20"))
    week = np.datetime64("2026-11-20") + np.arange(n) % 7
    engine = RealizedPerformance(threshold=0.5, n_boot=200, seed=1)
    single = engine.compute(scores, labels, day=one_day).windows[0]["roc_auc"]
    assert single.low is not None and single.high is not None
    assert single.high - single.low > 0.01  # rows resampled: not the zero-width day bootstrap
    weekly = engine.compute(scores, labels, day=week).windows[0]["roc_auc"]
    ranked = m.RankedScores(labels, scores)
    estimate, replicates = m.day_bootstrap(week.astype("datetime64[D]"), ranked.roc_auc, 200, 1)
    expected = m.interval(estimate, replicates, engine.level)
    assert (weekly.low, weekly.high) == pytest.approx((expected.low, expected.high))
