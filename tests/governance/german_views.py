"""Feature views over the German credit data set (``shipyard.data.credit``) for the tests
that train, register and promote mitigated variants. ``is_female`` is the sensitive
attribute as a 0/1 code: an input of the group-threshold variant only."""

from __future__ import annotations

from shipyard.features.definitions import FeatureView, RowFeature
from shipyard.types import NON_NEGATIVE, ColumnRoles

DATASET = "german_credit"
COLUMNS = ColumnRoles(label="bad_risk", time="application_date", entity="application_id")
VIEWS_REF = "tests.governance.german_views:VIEWS"

APPLICATION = FeatureView(
    name="german_application",
    entity="application_id",
    timestamp="application_date",
    source=DATASET,
    description="What a German credit application says (no sensitive attribute).",
    features=(
        RowFeature(
            "duration_months", 'CAST("duration_in_month" AS DOUBLE)', inputs=("duration_in_month",)
        ),
        RowFeature(
            "amount_k",
            '"credit_amount" / 1000.0',
            inputs=("credit_amount",),
            constraint=NON_NEGATIVE,
        ),
        RowFeature(
            "installment_rate",
            'CAST("installment_rate_in_percentage_of_disposable_income" AS DOUBLE)',
            inputs=("installment_rate_in_percentage_of_disposable_income",),
        ),
        RowFeature(
            "no_checking",
            "CASE WHEN \"status_of_existing_checking_account\" LIKE 'no checking%' "
            "THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            inputs=("status_of_existing_checking_account",),
        ),
        RowFeature(
            "overdrawn",
            "CASE WHEN \"status_of_existing_checking_account\" LIKE '... < 0%' "
            "THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            inputs=("status_of_existing_checking_account",),
        ),
        RowFeature(
            "critical_history",
            "CASE WHEN \"credit_history\" LIKE 'critical%' THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            inputs=("credit_history",),
        ),
    ),
)

SENSITIVE = FeatureView(
    name="german_sensitive",
    entity="application_id",
    timestamp="application_date",
    source=DATASET,
    description="The applicant's sex as a code, for the group-threshold variant only.",
    features=(
        RowFeature(
            "is_female",
            "CASE WHEN \"sex\" = 'female' THEN 1.0::DOUBLE ELSE 0.0::DOUBLE END",
            ("sex",),
        ),
    ),
)

VIEWS = (APPLICATION, SENSITIVE)
FEATURES = list(APPLICATION.feature_names)
