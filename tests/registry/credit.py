"""A second, non-fraud tabular solution for tests: loan applications and their defaults.

Different label, time and entity columns (``default``, ``application_date``,
``applicant_id``) and its own feature views: what the credit-risk solution will look like.
Nothing here names a fraud column; the registry and training must take everything they
need from the lineage.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from shipyard.features.definitions import Aggregation, FeatureView, RowFeature
from shipyard.types import NON_NEGATIVE, ColumnRoles

DATASET = "credit"
COLUMNS = ColumnRoles(label="default", time="application_date", entity="applicant_id")
VIEWS_REF = "tests.registry.credit:VIEWS"

APPLICATION = FeatureView(
    name="application",
    entity="application_id",
    timestamp="application_date",
    source=DATASET,
    description="What the application itself says.",
    features=(
        RowFeature(
            "debt_to_income",
            '"debt" / "income"',
            inputs=("debt", "income"),
            constraint=NON_NEGATIVE,
        ),
        RowFeature("income_k", '"income" / 1000.0', inputs=("income",), constraint=NON_NEGATIVE),
    ),
)

APPLICANT_HISTORY = FeatureView(
    name="applicant_history",
    entity="applicant_id",
    timestamp="application_date",
    source=DATASET,
    description="The applicant's earlier applications, and defaults known a week later.",
    features=(
        Aggregation("applications_90d", "count", timedelta(days=90)),
        Aggregation(
            "known_defaults_90d",
            "sum",
            timedelta(days=90),
            column="default",
            delay=timedelta(days=7),
            fill_value=0.0,
            constraint=NON_NEGATIVE,
        ),
    ),
)

VIEWS = (APPLICATION, APPLICANT_HISTORY)
FEATURES = [name for view in VIEWS for name in view.feature_names]


def applications(n_days: int = 60, per_day: int = 250, seed: int = 3) -> pd.DataFrame:
    """Synthetic applications, sorted by time; default risk grows with debt to income."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    day = np.repeat(np.arange(n_days), per_day)
    seconds = rng.integers(8 * 3600, 20 * 3600, n)
    when = pd.Timestamp("2021-01-01") + pd.to_timedelta(day * 86_400 + seconds, unit="s")
    income = np.round(rng.lognormal(10.5, 0.4, n), 2)
    debt = np.round(income * rng.uniform(0.0, 1.2, n), 2)
    risk = 1 / (1 + np.exp(-(-3.5 + 4.0 * debt / income)))
    frame = pd.DataFrame(
        {
            "application_id": np.arange(n, dtype=np.int64),
            "application_date": when,
            "applicant_id": rng.integers(0, 3_000, n).astype(np.int64),
            "income": income,
            "debt": debt,
            "default": (rng.random(n) < risk).astype(np.int64),
        }
    )
    frame = frame.sort_values("application_date", kind="mergesort").reset_index(drop=True)
    frame["application_id"] = np.arange(n, dtype=np.int64)
    return frame
