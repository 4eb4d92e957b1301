"""Parity and timing of a candidate against the original."""

from __future__ import annotations

import numpy as np

from shipyard.optimize.measure import parity, timing


def test_identical_scores_have_zero_change() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.random(200)
    found = parity(labels, scores, scores.copy(), n_boot=100)
    assert found.max_abs_diff == 0.0 and found.flipped_share == 0.0
    change = found.accuracy_change
    assert (change.estimate, change.low, change.high) == (0.0, 0.0, 0.0)
    assert found.roc_auc_change.estimate == 0.0


def test_flipped_decisions_and_the_paired_accuracy_change() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0] * 25)
    original = np.where(labels == 1, 0.8, 0.2)  # all right
    candidate = original.copy()
    candidate[::8] = 0.3  # a quarter of the positives now below 0.5: wrong
    found = parity(labels, original, candidate, n_boot=200)
    assert found.flipped_share == 25 / 200
    assert found.accuracy_change.estimate == -25 / 200
    assert found.accuracy_change.low < -25 / 200 < found.accuracy_change.high < 0
    assert found.max_abs_diff == 0.5
    assert found.accuracy == 175 / 200


def test_timing_reports_latency_and_throughput() -> None:
    calls: list[int] = []

    def score(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.zeros(len(texts))

    found = timing(score, ["a", "b", "c", "d"], threads=1, requests=10, batches=2)
    assert calls.count(1) == 3 + 10 and calls.count(32) == 2
    assert 0 < found.p50_ms <= found.p99_ms and found.reviews_per_s > 0
    assert (found.threads, found.requests, found.batch_size) == (1, 10, 32)
