"""The fraud solution's candidates and full search on the small simulated data set.

A real workspace (SQLite, MLflow, DuckDB offline store) with the extended views
materialized; the plan is shrunk (two feature sets, 7 and 14 training days, two families,
one Optuna trial) so that every stage runs for real in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from click.testing import CliRunner

from shipyard.errors import ParameterError
from shipyard.features.fraud import EXTENDED_VIEWS, FEATURE_SETS
from shipyard.solutions.fraud import (
    Candidate,
    Protocol,
    candidate_features,
    train_suite,
)
from shipyard.solutions.fraud_search import (
    METRICS,
    SearchPlan,
    render_markdown,
    run_search,
    to_json,
)
from shipyard.workspace import Workspace
from tests.conftest import SMALL

if TYPE_CHECKING:
    from shipyard.data.catalog import Dataset
    from shipyard.solutions.fraud_search import SearchResult

PROTOCOL = Protocol(start_date_training="2018-05-06", n_folds=2)
PLAN = SearchPlan(
    feature_sets=("baseline", "extended"),
    train_days=(7, 14),
    families=("xgboost", "decision_tree"),
    n_trials=1,
    n_boot=20,
)


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Dataset]]:
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.offline import OfflineStore

    ws = Workspace.init(tmp_path_factory.mktemp("search") / "ws")
    dataset = simulate_fraud_dataset(ws, FraudSimulator(**SMALL))  # type: ignore[arg-type]
    OfflineStore(ws).materialize(EXTENDED_VIEWS)
    yield ws, dataset
    ws.close()


@pytest.fixture(scope="module")
def searched(extended: tuple[Workspace, Dataset]) -> SearchResult:
    ws, dataset = extended
    return run_search(ws, dataset, PLAN, protocol=PROTOCOL)


def test_candidate_names_and_errors() -> None:
    assert Candidate("xgboost").name == "xgboost"
    assert Candidate("xgboost", features="extended", train_days=28).name == "xgboost/extended/28d"
    assert Candidate("xgboost", label="mine").name == "mine"
    with pytest.raises(ParameterError, match="features must be one of"):
        Candidate("xgboost", features="everything")
    with pytest.raises(ParameterError, match="train_days must be an int >= 1"):
        Candidate("xgboost", train_days=0)
    extended_names = candidate_features(Candidate("xgboost", features="extended"))
    assert len(extended_names) == sum(len(v.features) for v in EXTENDED_VIEWS)
    assert candidate_features(Candidate("xgboost"))[:3] == [
        "TX_AMOUNT",
        "TX_DURING_WEEKEND",
        "TX_DURING_NIGHT",
    ]


def test_plan_rejects_bad_budgets() -> None:
    with pytest.raises(ParameterError, match="feature_sets"):
        SearchPlan(feature_sets=("nope",))
    with pytest.raises(ParameterError, match="train_days"):
        SearchPlan(train_days=(0,))
    with pytest.raises(ParameterError, match="n_trials"):
        SearchPlan(n_trials=-1)
    assert SearchPlan(n_trials=8).trials_for("feedforward") == 2


@pytest.mark.slow
def test_search_chooses_on_validation_only(searched: SearchResult) -> None:
    ablation = [r for r in searched.rows if r.stage == "ablation"]
    families = [r for r in searched.rows if r.stage == "family"]
    assert len(ablation) == 4 and len(families) == 2
    best = max(ablation, key=lambda r: r.validation.mean("average_precision"))
    assert (searched.chosen_features, searched.chosen_train_days) == (
        best.candidate.features,
        best.candidate.train_days,
    )
    for row in families:
        assert row.candidate.features == searched.chosen_features
        assert row.candidate.train_days == searched.chosen_train_days
        assert row.trials == 1
    champion = searched.champion
    assert champion is not None and champion.servable
    assert champion.validation.mean("average_precision") == max(
        r.validation.mean("average_precision") for r in searched.rows if r.servable
    )
    for row in searched.rows:
        assert row.run_id  # logged to MLflow
        assert set(row.test.intervals) >= set(METRICS)
        assert row.fit_score_seconds()[0] > 0


@pytest.mark.slow
def test_longer_windows_keep_the_test_rows(searched: SearchResult) -> None:
    by = {(r.candidate.features, r.candidate.train_days): r for r in searched.rows}
    short, long = by[("baseline", 7)], by[("baseline", 14)]
    for a, b in zip(short.test.folds, long.test.folds, strict=True):
        np.testing.assert_array_equal(a.fold.test, b.fold.test)
        assert len(b.fold.train) > len(a.fold.train)
        assert b.fold.train_end == a.fold.train_end


@pytest.mark.slow
def test_visibility_sets_a_ceiling_above_the_champion(searched: SearchResult) -> None:
    vis, champion = searched.visibility, searched.champion
    assert vis is not None and champion is not None
    assert 0 <= vis.invisible <= vis.frauds
    assert vis.frauds == sum(int(f.labels.sum()) for f in champion.test.folds)
    for metric in ("roc_auc", "average_precision"):
        assert vis.ceiling[metric] >= champion.test.mean(metric) - 1e-12
    assert 0 < vis.perfect_cp <= 1


@pytest.mark.slow
def test_report_and_json(searched: SearchResult) -> None:
    text = render_markdown(searched)
    champion = searched.champion
    assert champion is not None
    assert f"**{champion.candidate.name}**" in text
    assert "## Ablation" in text and "## Model families" in text
    assert "What no causal feature can see" in text
    data = json.loads(json.dumps(to_json(searched), default=str))
    assert data["champion"] == champion.candidate.name
    assert len(data["rows"]) == len(searched.rows)


@pytest.mark.slow
def test_train_suite_registers_the_best_candidate_with_its_views(
    extended: tuple[Workspace, Dataset],
) -> None:
    from shipyard.registry.models import ModelRegistry

    ws, dataset = extended
    candidates = [
        Candidate("logistic_regression"),
        Candidate("xgboost", {"max_bin": 1024}, features="extended", train_days=14),
    ]
    report = train_suite(ws, dataset, candidates=candidates, protocol=PROTOCOL, n_boot=0)
    best = max(report.models, key=lambda r: r.validation.mean("average_precision"))
    assert report.best == best.model_type
    registered = report.registered
    assert registered is not None and best.candidate is not None
    version = ModelRegistry(ws).get("fraud", registered.version)
    assert version.lineage.views == FEATURE_SETS[best.candidate.features]
    assert version.input_schema.names == candidate_features(best.candidate)
    if best.candidate.train_days == 14:
        assert "14 days" in version.lineage.protocol
    with pytest.raises(ParameterError, match="not both"):
        train_suite(ws, dataset, model_types=["xgboost"], candidates=candidates)


@pytest.mark.slow
def test_cli_search_writes_the_report(extended: tuple[Workspace, Dataset], tmp_path: Path) -> None:
    from shipyard.cli.main import cli

    ws, _ = extended
    out, data = tmp_path / "results.md", tmp_path / "results.json"
    result = CliRunner().invoke(
        cli,
        [
            "--workspace",
            str(ws.root),
            "fraud",
            "search",
            "--start-date",
            "2018-05-06",
            "--folds",
            "2",
            "--feature-set",
            "baseline",
            "--train-days",
            "7",
            "--family",
            "logistic_regression",
            "--trials",
            "0",
            "--bootstrap",
            "10",
            "--out",
            str(out),
            "--json",
            str(data),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "## Ablation" in out.read_text()
    saved = json.loads(data.read_text())
    assert [r["candidate"] for r in saved["rows"]] == ["xgboost", "logistic_regression"]
    assert saved["champion"] in ("xgboost", "logistic_regression")
    bad = CliRunner().invoke(
        cli, ["--workspace", str(ws.root), "fraud", "search", "--family", "nope"]
    )
    assert bad.exit_code != 0
    assert isinstance(bad.exception, ParameterError)  # the entry point prints it, exit 2
    assert "Unknown model family 'nope'" in str(bad.exception)
