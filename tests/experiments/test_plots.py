"""The confidence sequence re-run on the log at each look, and the pictures drawn from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.errors import ParameterError
from shipyard.experiments.lifecycle import Experiment, experiment_status
from shipyard.experiments.metrics import experiment_data
from shipyard.experiments.plots import looks, plot_experiment
from shipyard.workspace import Workspace
from tests.experiments import test_lifecycle
from tests.experiments.test_lifecycle import new_endpoint, simulate, start

registered = test_lifecycle.registered  # the shared workspace with two versions


def _run(ws: Workspace, better: float, seed: int, customers: int = 600) -> Experiment:
    """An experiment with four days of traffic; the treatment's precision ``better`` higher.

    Each experiment salts its assignment afresh, so which customers land in which arm (and the
    effect observed) changes from run to run: a decision asserted needs a clear margin.
    """
    experiment = start(ws, new_endpoint(ws))
    simulate(
        ws,
        experiment,
        customers=customers,
        per_customer=4,
        alert_rate={"control": 0.3, "treatment": 0.3},
        precision={"control": 0.3, "treatment": 0.3 + better},
        seed=seed,
        span_s=4 * 86_400.0 - 60,
    )
    return experiment


def test_one_look_per_day_ending_with_todays_status(registered: Workspace) -> None:
    experiment = _run(registered, 0.3, seed=21, customers=1500)
    data = experiment_data(registered, experiment)
    sequence = looks(experiment, data)

    assert len(sequence) == 4
    assert [lk.n_control + lk.n_treatment for lk in sequence] == sorted(
        lk.n_control + lk.n_treatment for lk in sequence
    )
    final = experiment_status(registered, experiment.name).primary.test
    assert final is not None
    assert (sequence[-1].effect, sequence[-1].low, sequence[-1].p_value) == (
        final.effect,
        final.low,
        final.p_value,
    )
    assert sequence[-1].decision == "treatment better"
    # the interval narrows as units accumulate
    widths = [lk.high - lk.low for lk in sequence]
    assert widths[-1] < widths[0]


def test_looks_every_n_units(registered: Workspace) -> None:
    experiment = _run(registered, 0.0, seed=22)
    data = experiment_data(registered, experiment)
    sequence = looks(experiment, data, every=100)
    assert len(sequence) == 6  # 600 customers, one look per 100 new ones
    assert [lk.n_control + lk.n_treatment for lk in sequence[:-1]] == [100, 200, 300, 400, 500]
    assert all(lk.decision == "no decision yet" for lk in sequence)  # an A/A never decides
    with pytest.raises(ParameterError, match="'every'"):
        looks(experiment, data, every=0)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_the_plot_and_its_summary_are_written(
    registered: Workspace, tmp_path: Path, suffix: str
) -> None:
    experiment = _run(registered, 0.3, seed=23, customers=1500)
    path = plot_experiment(registered, experiment.name, tmp_path / f"exp{suffix}")

    content = path.read_bytes()
    if suffix == ".png":
        assert content.startswith(b"\x89PNG")
    else:
        assert b"<svg" in content and b"first decision" in content
    summary = path.with_suffix(".txt").read_text()
    assert f"experiment {experiment.name}" in summary
    assert "decision: treatment better" in summary
    assert summary.count(" d  n ") == 4  # one line per daily look
    # looks every N units are drawn and listed against the units counted, not days
    by_units = plot_experiment(registered, experiment.name, tmp_path / f"units{suffix}", every=500)
    listed = by_units.with_suffix(".txt").read_text()
    assert " d  n " not in listed and listed.count("  n ") == 3  # 1,500 customers
    if suffix == ".svg":
        assert b"units counted (both arms)" in by_units.read_bytes()


def test_a_plot_path_must_be_png_or_svg(registered: Workspace, tmp_path: Path) -> None:
    experiment = start(registered, new_endpoint(registered))
    with pytest.raises(ParameterError, match="'path'"):
        plot_experiment(registered, experiment.name, tmp_path / "exp.pdf")
