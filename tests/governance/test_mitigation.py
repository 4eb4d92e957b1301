"""Mitigated variants on real credit data: what each method guarantees, how each is scored
and served, the trade-off table and plot, and a variant registered, loaded hash-verified
and promoted through a fairness gate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.data.catalog import Dataset
from shipyard.errors import (
    DataValidationError,
    ParameterError,
    PromotionRefusedError,
    TrainingError,
)
from shipyard.governance.fairness import assess_fairness
from shipyard.governance.mitigation import MitigatedConfig, MitigatedModel, tradeoff
from shipyard.registry.card import CardNotes
from shipyard.registry.gate import FairnessGate
from shipyard.registry.models import ModelRegistry
from shipyard.serving.backends import prepare_backends
from shipyard.training.trainers import TrainedModel, load_native, make_config
from shipyard.workspace import Workspace
from tests.governance.fair_data import hmda
from tests.governance.german_views import FEATURES, german_workspace, register, train

ATTRIBUTE = "afam_code"


@pytest.fixture(scope="module")
def halves() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray, pd.DataFrame]:
    """HMDA split in two seeded halves: (X_train, y_train, X_test, y_test, test attributes).

    X holds the features and the sensitive attribute as a 0/1 code (``afam_code``)."""
    X, y, sensitive = hmda()
    X = X.assign(**{ATTRIBUTE: (sensitive["afam"] == "yes").to_numpy(dtype=float)})
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[: len(y) // 2], order[len(y) // 2 :]
    return (
        X.iloc[train],
        y[train],
        X.iloc[test],
        y[test],
        sensitive.iloc[test].reset_index(drop=True),
    )


@pytest.fixture(scope="module")
def models(
    halves: tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray, pd.DataFrame],
) -> dict[str, TrainedModel]:
    X, y, *_ = halves
    features = [c for c in X.columns if c != ATTRIBUTE]
    return {
        "base": make_config("logistic_regression").fit(X[features], y),
        "reductions": MitigatedConfig(
            method="reductions", constraint="demographic_parity", attribute=ATTRIBUTE
        ).fit(X, y),
        "thresholds": MitigatedConfig(
            method="thresholds", constraint="demographic_parity", attribute=ATTRIBUTE
        ).fit(X, y),
    }


def test_the_reductions_variant_needs_the_attribute_only_in_training(
    halves: tuple[pd.DataFrame, ...], models: dict[str, TrainedModel]
) -> None:
    X, _, X_test, *_ = halves
    variant = models["reductions"]
    assert isinstance(variant, MitigatedModel)
    assert variant.features == models["base"].features  # no sensitive input
    assert ATTRIBUTE not in variant.features
    # its score is the probability of deciding 1: expected selection rates per group
    # differ by at most about eps on the rows it was trained on (fairlearn's constraint)
    scores = variant.predict_proba(X)
    group = X[ATTRIBUTE].to_numpy()
    rates = [scores[group == g].mean() for g in (0.0, 1.0)]
    base_scores = models["base"].predict_proba(X)
    base_rates = [(base_scores[group == g] >= 0.5).mean() for g in (0.0, 1.0)]
    assert abs(rates[0] - rates[1]) <= 0.02 < abs(base_rates[0] - base_rates[1])
    # scoring ignores the attribute column: a frame without it scores the same
    np.testing.assert_array_equal(
        variant.predict_proba(X_test.drop(columns=[ATTRIBUTE])), variant.predict_proba(X_test)
    )


def test_the_threshold_variant_reads_the_group_as_its_last_input(
    halves: tuple[pd.DataFrame, ...], models: dict[str, TrainedModel]
) -> None:
    _, _, X_test, *_ = halves
    variant = models["thresholds"]
    assert variant.features == [*models["base"].features, ATTRIBUTE]
    rows = X_test[variant.features].to_numpy(dtype=float)
    scores = variant.predict_proba(rows)
    assert ((scores >= 0) & (scores <= 1)).all()
    # the group changes the decision rule: the same applicants, other group, other scores
    flipped = rows.copy()
    flipped[:, -1] = 1 - flipped[:, -1]
    assert (variant.predict_proba(flipped) != scores).any()
    unseen = rows.copy()
    unseen[:3, -1] = 7.0
    with pytest.raises(DataValidationError, match=r"group code\(s\) \[7.0\].*not seen in training"):
        variant.predict_proba(unseen)
    importance = variant.feature_importance()
    assert importance[ATTRIBUTE] == 0 and sum(importance.values()) == pytest.approx(1)


def test_variants_reduce_the_demographic_parity_difference_out_of_sample(
    halves: tuple[pd.DataFrame, ...], models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    """On the held-out half, the gap in denial rates between African-American applicants
    and the others shrinks, at some cost in AUC."""
    _, _, X_test, y_test, sensitive = halves
    table = tradeoff(models, X_test, y_test, sensitive, "afam", threshold=0.5, n_boot=200)
    base = table.row("base")
    assert base.threshold == 0.5
    base_dp = base.demographic_parity_difference
    assert base_dp is not None
    for name in ("reductions", "thresholds"):
        row = table.row(name)
        dp = row.demographic_parity_difference
        assert dp is not None and dp.estimate < base_dp.estimate
        assert row.roc_auc < base.roc_auc
        # the row is the fairness assessment of the variant's decisions at 0.5
        report = assess_fairness(
            y_test, models[name].predict_proba(X_test), sensitive, ["afam"], n_boot=200
        )
        assert report.attribute("afam").demographic_parity_difference == dp
    assert "reductions" in table.table() and "| model | threshold | AUC |" in table.markdown()
    plot = table.plot(tmp_path / "tradeoff.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = table.card_section(plot)
    assert section.title == "Fairness mitigation" and "data:image/png;base64," in section.html
    assert table.to_dict()["rows"][0]["model"] == "base"


def test_a_variant_saves_and_loads_hash_verified_and_scores_the_same(
    halves: tuple[pd.DataFrame, ...], models: dict[str, TrainedModel], tmp_path: Path
) -> None:
    from shipyard.errors import IntegrityError
    from shipyard.training.trainers import NativePredictor

    _, _, X_test, *_ = halves
    for name in ("reductions", "thresholds"):
        variant = models[name]
        path, sha = variant.save_native(tmp_path / name)
        predictor = NativePredictor(
            "sklearn", load_native("sklearn", path, sha), variant.input_schema
        )
        rows = X_test[variant.features].to_numpy(dtype=float)
        np.testing.assert_array_equal(predictor.predict(rows), variant.predict_proba(rows))
        path.write_bytes(path.read_bytes() + b"\0")
        with pytest.raises(IntegrityError):
            load_native("sklearn", path, sha)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"method": "magic", "attribute": "a"}, "'method' parameter of MitigatedConfig"),
        ({"constraint": "parity", "attribute": "a"}, "'constraint' parameter"),
        ({}, "'attribute' parameter of MitigatedConfig must be the name"),
        ({"attribute": "a", "base": "svm"}, "'base' parameter"),
        ({"attribute": "a", "holdout": 0.9}, "'holdout' parameter"),
    ],
)
def test_bad_mitigation_parameters_are_named(params: dict[str, object], message: str) -> None:
    X = pd.DataFrame({"x": np.arange(40.0), "a": [0.0, 1.0] * 20})
    with pytest.raises(ParameterError, match=message):
        MitigatedConfig(**params).fit(X, np.array([0, 1] * 20))


def test_a_missing_or_single_group_attribute_is_refused_naming_it() -> None:
    X = pd.DataFrame({"x": np.arange(40.0), "a": [0.0] * 40})
    y = np.array([0, 1] * 20)
    with pytest.raises(DataValidationError, match="'b' of MitigatedConfig is not a column"):
        MitigatedConfig(attribute="b").fit(X, y)
    with pytest.raises(DataValidationError, match="'a' has a single group"):
        MitigatedConfig(attribute="a").fit(X, y)
    with pytest.raises(DataValidationError, match="'a' has 1 missing value"):
        MitigatedConfig(attribute="a").fit(X.assign(a=[np.nan] + [0.0, 1.0] * 19 + [0.0]), y)
    words = X.assign(a=["x", "y"] * 20)
    with pytest.raises(DataValidationError, match="'a' must hold numeric group codes"):
        MitigatedConfig(method="thresholds", attribute="a").fit(words, y)
    with pytest.raises(TrainingError, match="single class"):
        MitigatedConfig(method="thresholds", attribute="a").fit(X.assign(a=[0.0, 1.0] * 20), y * 0)


# -- registered variants -------------------------------------------------------------------


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Dataset]]:
    ws, dataset = german_workspace(tmp_path_factory.mktemp("german") / "ws")
    yield ws, dataset
    ws.close()


@pytest.mark.slow
def test_mitigated_variants_are_registered_loaded_verified_and_promoted_by_fairness(
    german: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    """Base model and two variants on German credit: registered with their lineage and a
    card showing the trade-off, loaded hash-verified, and a fairness gate at promotion that
    tells the base model and the reductions variant apart."""
    ws, dataset = german
    registry = ModelRegistry(ws)
    base = train(ws, dataset, make_config("logistic_regression"), FEATURES)
    with_group = [*FEATURES, "is_female"]
    variants = {
        method: train(
            ws, dataset, MitigatedConfig(method=method, attribute="is_female"), with_group
        )
        for method in ("reductions", "thresholds")
    }
    test = base.test.reset_index(drop=True)
    sex = pd.DataFrame({"sex": np.where(test["is_female"] == 1, "female", "male")})
    models = {"base": base.model, **{k: v.model for k, v in variants.items()}}
    table = tradeoff(models, test[with_group], test["bad_risk"], sex, "sex", n_boot=200)
    section = table.card_section(table.plot(tmp_path / "tradeoff.png"))
    notes = CardNotes(intended_use="Fairness tests on German credit.", sections=(section,))

    base_version = register(ws, base, notes)
    registry.promote(dataset.name, base_version.version, reason="first model")
    versions = {k: register(ws, v, notes) for k, v in variants.items()}
    for method, version in versions.items():
        assert version.model_type == "mitigated" and version.framework == "sklearn"
        assert version.params["method"] == method and version.params["attribute"] == "is_female"
        assert version.lineage.dataset_hash == base_version.lineage.dataset_hash
        assert version.eval_window == base_version.eval_window
        predictor = registry.load(dataset.name, version.version)  # hash-verified
        rows = test[version.input_schema.names].to_numpy(dtype=float)
        np.testing.assert_array_equal(predictor.predict(rows), models[method].predict_proba(rows))
        card = version.card_path.read_text()
        assert "## Fairness mitigation" in card and "| reductions |" in card
        # serving prepares it like any model: the native predictor, no converted backend
        backends = prepare_backends(registry, dataset.name, version.version)
        assert backends.chosen == "native" and backends.candidates["native"].max_abs_diff == 0
    # the reductions variant takes the base model's inputs; the threshold variant the group too
    assert versions["reductions"].input_schema.names == base_version.input_schema.names
    assert versions["thresholds"].input_schema.names == with_group

    # a fairness gate on the equalized-odds estimate, its bound between the base model's
    # and the reductions variant's: it refuses the one that measures higher on the
    # evaluation window and promotes the other
    eo = {k: table.row(k).equalized_odds_difference for k in ("base", "reductions")}
    estimates = {k: v.estimate for k, v in eo.items() if v is not None}
    fairer, other = sorted(estimates, key=estimates.__getitem__)
    bound = (estimates[fairer] + estimates[other]) / 2
    gate = FairnessGate("sex", bound=bound, threshold=0.5, require_significance=False)
    number = {"base": base_version.version, "reductions": versions["reductions"].version}
    with pytest.raises(PromotionRefusedError, match="fairness gate equalized_odds_difference"):
        registry.promote(dataset.name, number[other], reason="check", fairness=[gate])
    registry.promote(dataset.name, number[fairer], reason="fairer", fairness=[gate])
    assert registry.aliases(dataset.name)["champion"] == number[fairer]
    refused, promoted = registry.history(dataset.name)[-2:]
    assert refused.action == "refuse" and refused.details["fairness"][0]["passed"] is False
    assert promoted.details["fairness"][0]["estimate"] == pytest.approx(estimates[fairer])
