"""The leakage audit: honest views pass, planted leaks fail with the leaking feature named."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner

from shipyard.cli.main import cli
from shipyard.data.catalog import Dataset
from shipyard.errors import (
    DataValidationError,
    FeatureDefinitionError,
    LeakageError,
    ParameterError,
    ShipyardError,
)
from shipyard.features.definitions import (
    Aggregation,
    Derived,
    FeatureView,
    RowFeature,
    load_views,
)
from shipyard.features.fraud import (
    BASELINE_FEATURES,
    BASELINE_VIEWS,
    EXTENDED_VIEWS,
    FEATURE_SETS,
    TERMINAL_RISK,
)
from shipyard.features.leakage import (
    FRAUD_FORBIDDEN,
    FRAUD_RULES,
    Rule,
    ScoreAudit,
    audit_point_in_time,
    audit_scores,
    check_views,
    expression_columns,
    point_in_time_frames,
    require_clean_views,
)
from shipyard.training.trainers import make_config
from shipyard.workspace import Workspace

DAY = date(2018, 5, 10)  # day 39 of the small data set's 70: 30-day windows and delays reach back
WEEK = timedelta(days=7)
MONTH = timedelta(days=30)
RISKS = [f"TERMINAL_ID_RISK_{n}DAY_WINDOW" for n in (1, 7, 30)]


def _delayed(view: FeatureView, delay: timedelta) -> FeatureView:
    features = [f for f in view.features if isinstance(f, Aggregation)]
    assert len(features) == len(view.features)
    return replace(view, features=tuple(replace(f, delay=delay) for f in features))


UNDELAYED_RISK = (*BASELINE_VIEWS[:2], _delayed(TERMINAL_RISK, timedelta(0)))
"""The handbook's trap: terminal risk over (t - n, t] includes the transaction's own label."""
SIX_DAY_RISK = (*BASELINE_VIEWS[:2], _delayed(TERMINAL_RISK, timedelta(days=6)))
OWN_LABEL = FeatureView(
    "own_label",
    "TRANSACTION_ID",
    "TX_DATETIME",
    "fraud",
    (
        RowFeature("TX_AMOUNT_AGAIN", '"TX_AMOUNT"', inputs=("TX_AMOUNT",)),
        RowFeature("IS_FRAUD", '"TX_FRAUD"', inputs=("TX_FRAUD",)),
    ),
)
SCENARIO = FeatureView(
    "scenario",
    "TERMINAL_ID",
    "TX_DATETIME",
    "fraud",
    (
        Aggregation("TERMINAL_NB_TX_7DAY", "count", WEEK, delay=WEEK),
        # delayed like terminal risk, and still forbidden: nobody ever observes the scenario
        Aggregation("TERMINAL_SCENARIO_7DAY", "max", WEEK, column="TX_FRAUD_SCENARIO", delay=WEEK),
    ),
)
NEXT_AMOUNT = FeatureView(
    "next_amount",
    "TRANSACTION_ID",
    "TX_DATETIME",
    "fraud",
    (
        RowFeature("TX_AMOUNT_AGAIN", '"TX_AMOUNT"', inputs=("TX_AMOUNT",)),
        # declares only observable inputs, yet reads the card's next transaction
        RowFeature(
            "NEXT_AMOUNT",
            'lead("TX_AMOUNT") OVER (PARTITION BY "CUSTOMER_ID" ORDER BY "TX_DATETIME")',
            inputs=("TX_AMOUNT", "CUSTOMER_ID", "TX_DATETIME"),
        ),
    ),
)

FLOAT_SUMS = FeatureView(
    "float_sums",
    "CUSTOMER_ID",
    "TX_DATETIME",
    "fraud",
    (
        Aggregation("AVG_AMOUNT_30DAY_EXACT", "mean", MONTH, column="TX_AMOUNT", decimals=2),
        # the protocol's rounding trap: DuckDB's window sum of DOUBLEs rounds differently
        # when later rows exist, so the value of a past row depends on the future
        Aggregation("AVG_AMOUNT_30DAY_FLOAT", "mean", MONTH, column="TX_AMOUNT"),
    ),
)

NEW_PRIMITIVES = FeatureView(
    "new_primitives",
    "TERMINAL_ID",
    "TX_DATETIME",
    "fraud",
    (
        Aggregation("NB_TX_7D", "count", WEEK, delay=WEEK),
        Aggregation("NB_FRAUD_7D", "sum", WEEK, column="TX_FRAUD", delay=WEEK, decimals=0),
        Derived("RISK_7D", "ratio", ("NB_FRAUD_7D", "NB_TX_7D")),
        # the terminal's frauds before the transaction: past-only is not delayed
        Aggregation("PAST_FRAUDS_7D", "sum", WEEK, column="TX_FRAUD", past_only=True, decimals=0),
        Derived("PAST_RISK_7D", "ratio", ("PAST_FRAUDS_7D", "NB_TX_7D")),
    ),
)


def _static(views: tuple[FeatureView, ...] | list[FeatureView]) -> list[str]:
    report = check_views(views, label="TX_FRAUD", label_delay=WEEK, forbidden=FRAUD_FORBIDDEN)
    return report.leaking_features


def _dynamic(ws: Workspace, dataset: Dataset, views: tuple[FeatureView, ...]) -> list[str]:
    report = audit_point_in_time(ws, dataset, views, DAY, label="TX_FRAUD", time="TX_DATETIME")
    assert report.conclusive, "the audit must be able to fail"
    return report.leaking_features


def test_the_extended_views_pass_both_checks(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, dataset = small_workspace
    assert _static(EXTENDED_VIEWS) == []
    report = audit_point_in_time(
        ws, dataset, EXTENDED_VIEWS, DAY, label="TX_FRAUD", time="TX_DATETIME"
    )
    assert report.conclusive
    assert len(report.features) == sum(len(v.features) for v in EXTENDED_VIEWS)
    assert report.mismatches == ()


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_every_feature_set_of_the_fraud_solution_has_clean_definitions(name: str) -> None:
    """A view added to a feature set that reads labels without the delay fails here."""
    views = load_views(FEATURE_SETS[name])
    check_views(views, label="TX_FRAUD", label_delay=WEEK, forbidden=FRAUD_FORBIDDEN).require()


def test_the_baseline_views_pass_both_checks(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, dataset = small_workspace
    assert check_views(
        BASELINE_VIEWS, label="TX_FRAUD", label_delay=WEEK, forbidden=FRAUD_FORBIDDEN
    ).ok
    report = audit_point_in_time(
        ws, dataset, BASELINE_VIEWS, "2018-05-10", label="TX_FRAUD", time="TX_DATETIME"
    )
    history = dataset.read(["TX_TIME_DAYS", "TX_FRAUD"])
    day = 39
    assert report.rows_compared == int((history["TX_TIME_DAYS"] <= day).sum())
    assert report.rows_dropped == int((history["TX_TIME_DAYS"] > day).sum())
    late = history["TX_TIME_DAYS"].between(day - 6, day)
    assert report.labels_zeroed == int(history.loc[late, "TX_FRAUD"].sum()) > 0
    assert [f for _, f in report.features] == list(BASELINE_FEATURES)
    assert report.ok and report.mismatches == ()
    report.require()


@pytest.mark.parametrize(
    ("views", "static", "dynamic"),
    [
        pytest.param(UNDELAYED_RISK, RISKS, RISKS, id="terminal-risk-without-delay"),
        pytest.param(SIX_DAY_RISK, RISKS, RISKS, id="six-day-delay"),
        pytest.param((OWN_LABEL,), ["IS_FRAUD"], ["IS_FRAUD"], id="row-feature-reads-label"),
        # the truncated copy zeroes the label only: the scenario column is for the static check
        pytest.param((SCENARIO,), ["TERMINAL_SCENARIO_7DAY"], [], id="forbidden-column"),
        # no definition shows it: only the point-in-time audit sees the future
        pytest.param((NEXT_AMOUNT,), [], ["NEXT_AMOUNT"], id="sql-reads-the-next-row"),
        pytest.param((FLOAT_SUMS,), [], ["AVG_AMOUNT_30DAY_FLOAT"], id="float-rounding"),
        pytest.param(
            (NEW_PRIMITIVES,),
            ["PAST_FRAUDS_7D", "PAST_RISK_7D"],
            ["PAST_FRAUDS_7D", "PAST_RISK_7D"],
            id="past-only-label-and-its-derived-ratio",
        ),
    ],
)
def test_planted_leaks_are_caught_and_the_leaking_features_named(
    small_workspace: tuple[Workspace, Dataset],
    views: tuple[FeatureView, ...],
    static: list[str],
    dynamic: list[str],
) -> None:
    ws, dataset = small_workspace
    assert _static(views) == static
    assert _dynamic(ws, dataset, views) == dynamic


def test_the_audit_computes_what_the_offline_store_serves_for_training(
    small_workspace: tuple[Workspace, Dataset], small_frame: pd.DataFrame
) -> None:
    ws, dataset = small_workspace
    full, _ = point_in_time_frames(
        ws, dataset, BASELINE_VIEWS, DAY, label="TX_FRAUD", time="TX_DATETIME"
    )
    assert not full.columns.duplicated().any()
    stored = small_frame[small_frame["TX_DATETIME"] < pd.Timestamp(DAY + timedelta(days=1))]
    stored = stored.sort_values("TRANSACTION_ID").reset_index(drop=True)
    mine = full.sort_values("TRANSACTION_ID").reset_index(drop=True)
    columns = ["TRANSACTION_ID", *BASELINE_FEATURES]
    pd.testing.assert_frame_equal(
        mine[columns], stored[columns], check_dtype=False, check_exact=True
    )


def test_a_mismatch_names_its_first_changed_row(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = small_workspace
    report = audit_point_in_time(
        ws, dataset, SIX_DAY_RISK, DAY, label="TX_FRAUD", time="TX_DATETIME"
    )
    first = report.mismatches[0]
    # with a 6-day delay only rows of day D reach a zeroed label (day D - 6)
    assert first.time.date() == DAY
    history = dataset.read()
    own = history[history["TERMINAL_ID"] == first.entity]
    lag = first.time - own["TX_DATETIME"]
    window = own[(lag >= timedelta(days=6)) & (lag < timedelta(days=7))]
    assert first.full == pytest.approx(window["TX_FRAUD"].mean())
    assert first.truncated < first.full
    with pytest.raises(LeakageError, match=rf"terminal_risk.{RISKS[0]}: \d+ row\(s\), first"):
        report.require()


def test_a_derived_feature_inherits_what_its_inputs_read() -> None:
    view = FeatureView(
        "terminal",
        "TERMINAL_ID",
        "TX_DATETIME",
        "fraud",
        (
            Aggregation("NB_TX_7D", "count", WEEK, delay=WEEK),
            Aggregation("NB_FRAUD_7D", "sum", WEEK, column="TX_FRAUD", delay=WEEK, decimals=0),
            Aggregation("NB_FRAUD_NOW", "sum", WEEK, column="TX_FRAUD", decimals=0),
            Derived("RISK_7D", "ratio", ("NB_FRAUD_7D", "NB_TX_7D")),  # honest: delayed inputs
            Derived("RISK_NOW", "ratio", ("NB_FRAUD_NOW", "NB_TX_7D")),
            Derived("AMOUNT_PER_FRAUD", "ratio", ("TX_AMOUNT", "TX_FRAUD")),
        ),
    )
    report = check_views([view], label="TX_FRAUD", label_delay=WEEK)
    assert report.leaking_features == ["NB_FRAUD_NOW", "RISK_NOW", "AMOUNT_PER_FRAUD"]
    inherited = next(v for v in report.violations if v.feature == "RISK_NOW")
    assert (inherited.rule, inherited.column) == (Rule.LABEL_UNDELAYED, "TX_FRAUD")
    assert "through NB_FRAUD_NOW" in inherited.detail
    direct = next(v for v in report.violations if v.feature == "AMOUNT_PER_FRAUD")
    assert direct.rule is Rule.LABEL_IN_ROW


def test_past_only_windows_over_the_label_leak() -> None:
    view = FeatureView(
        "customer",
        "CUSTOMER_ID",
        "TX_DATETIME",
        "fraud",
        (Aggregation("PAST_FRAUDS", "sum", WEEK, column="TX_FRAUD", past_only=True, decimals=0),),
    )
    assert _static([view]) == ["PAST_FRAUDS"]


def test_columns_an_expression_mentions_count_even_undeclared() -> None:
    sneaky = FeatureView(
        "sneaky",
        "TRANSACTION_ID",
        "TX_DATETIME",
        "fraud",
        (RowFeature("DOUBLED", '"TX_AMOUNT" * (1 + tx_fraud)', inputs=("TX_AMOUNT",)),),
    )
    assert expression_columns('"TX_AMOUNT" * (1 + tx_fraud)') == ["TX_AMOUNT", "tx_fraud"]
    assert _static([sneaky]) == ["DOUBLED"]


def test_an_entity_that_is_a_forbidden_column_leaks() -> None:
    view = FeatureView(
        "by_scenario",
        "TX_FRAUD_SCENARIO",
        "TX_DATETIME",
        "fraud",
        (Aggregation("NB_TX_1D", "count", timedelta(days=1)),),
    )
    report = check_views([view], label="TX_FRAUD", label_delay=WEEK, forbidden=FRAUD_FORBIDDEN)
    assert [(v.feature, v.column, v.rule) for v in report.violations] == [
        ("NB_TX_1D", "TX_FRAUD_SCENARIO", Rule.FORBIDDEN)
    ]


def test_require_clean_views_raises_a_leakage_error_naming_each_leak() -> None:
    require_clean_views(
        BASELINE_VIEWS, label="TX_FRAUD", label_delay=WEEK, forbidden=FRAUD_FORBIDDEN
    )
    with pytest.raises(LeakageError) as caught:
        require_clean_views(UNDELAYED_RISK, label="TX_FRAUD", label_delay=WEEK)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ShipyardError)
    message = str(caught.value)
    assert message.startswith("3 leak(s)")
    assert all(f"terminal_risk.{name} reads 'TX_FRAUD'" in message for name in RISKS)
    assert "delay of 0 day(s), shorter than the label delay of 7 day(s)" in message


def test_the_fraud_rules_forbid_the_simulators_internal_columns() -> None:
    from shipyard.data.fraud_simulator import TRANSACTION_COLUMNS

    assert FRAUD_RULES.label == "TX_FRAUD" and FRAUD_RULES.label_delay == WEEK
    written = [c for c in TRANSACTION_COLUMNS if c in FRAUD_FORBIDDEN]
    assert written == ["TX_FRAUD_SCENARIO"]
    assert {"mean_amount", "std_amount", "mean_nb_tx_per_day"} <= set(FRAUD_FORBIDDEN)


def test_bad_arguments_are_named(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, dataset = small_workspace
    with pytest.raises(ParameterError, match=r"'day' parameter .* Got '10/05/2018'"):
        audit_point_in_time(
            ws, dataset, BASELINE_VIEWS, "10/05/2018", label="TX_FRAUD", time="TX_DATETIME"
        )
    with pytest.raises(ParameterError, match=r"'label' parameter .* Got 'FRAUD'"):
        audit_point_in_time(ws, dataset, BASELINE_VIEWS, DAY, label="FRAUD", time="TX_DATETIME")
    other = replace(TERMINAL_RISK, source="credit")
    with pytest.raises(FeatureDefinitionError, match="reads data set 'credit', not 'fraud'"):
        audit_point_in_time(ws, dataset, [other], DAY, label="TX_FRAUD", time="TX_DATETIME")
    broken = FeatureView(
        "broken", "TRANSACTION_ID", "TX_DATETIME", "fraud",
        (RowFeature("BAD", 'no_such_function("TX_AMOUNT")', inputs=("TX_AMOUNT",)),),
    )  # fmt: skip
    with pytest.raises(FeatureDefinitionError, match="view 'broken' over data set fraud v1"):
        audit_point_in_time(ws, dataset, [broken], DAY, label="TX_FRAUD", time="TX_DATETIME")
    with pytest.raises(ParameterError, match="'label_delay' parameter"):
        check_views(BASELINE_VIEWS, label="TX_FRAUD", label_delay=7)  # type: ignore[arg-type]


def _score_audit(ws: Workspace, dataset: Dataset, views: tuple[FeatureView, ...]) -> ScoreAudit:
    full, truncated = point_in_time_frames(
        ws, dataset, views, DAY, label="TX_FRAUD", time="TX_DATETIME"
    )
    assert len(full) == len(truncated) > 0
    assert truncated["TX_FRAUD"].sum() < full["TX_FRAUD"].sum()  # late labels zeroed
    return audit_scores(
        full,
        truncated,
        [n for v in views for n in v.feature_names],
        make_config(
            "xgboost", n_estimators=30, n_jobs=1
        ),  # missing values (empty past windows) allowed
        train_start=DAY - timedelta(days=13),
        train_end=DAY - WEEK,
        day=DAY,
        label="TX_FRAUD",
        time="TX_DATETIME",
        keys=["TRANSACTION_ID"],
    )


def test_model_scores_are_unchanged_for_honest_features_and_change_for_a_leak(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = small_workspace
    for views in (BASELINE_VIEWS, EXTENDED_VIEWS):
        honest = _score_audit(ws, dataset, views)
        assert honest.ok and honest.rows_scored > 0
        honest.require()
    leaky = _score_audit(ws, dataset, UNDELAYED_RISK)
    assert not leaky.ok
    assert leaky.first is not None and leaky.first["TX_DATETIME"].date() > DAY - WEEK
    with pytest.raises(LeakageError, match=r"scores of days <= 2018-05-10 change"):
        leaky.require()


def test_a_score_audit_without_a_feature_or_on_labels_unknown_on_the_day_is_refused(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    frame = pd.DataFrame({"TX_DATETIME": [pd.Timestamp(DAY)], "TX_FRAUD": [0], "X": [1.0]})
    with pytest.raises(DataValidationError, match="Feature 'Y' is not in the training data"):
        audit_scores(
            frame,
            frame,
            ["Y"],
            make_config("logistic_regression"),
            train_start=DAY - timedelta(days=10),
            train_end=DAY - WEEK,
            day=DAY,
            label="TX_FRAUD",
            time="TX_DATETIME",
        )
    with pytest.raises(ParameterError, match=r"'train_end' parameter .* at or before day - delay"):
        audit_scores(
            frame,
            frame,
            ["X"],
            make_config("logistic_regression"),
            train_start=DAY - timedelta(days=10),
            train_end=DAY - timedelta(days=3),
            day=DAY,
            label="TX_FRAUD",
            time="TX_DATETIME",
        )


def _audit_cli(ws: Workspace, views: str, *options: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        ["--workspace", str(ws.root), "features", "audit", "--views", views, *options],
        env={"COLUMNS": "250"},
    )
    return result.exit_code, result.output


def test_the_audit_command_exits_1_on_a_leak_and_names_it(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, _ = small_workspace
    code, output = _audit_cli(ws, "shipyard.features.fraud:BASELINE_VIEWS", "--day", "2018-05-10")
    assert code == 0, output
    assert "Definitions of shipyard.features.fraud:BASELINE_VIEWS: OK" in output
    assert "day 2018-05-10: OK" in output
    # each day is audited on its own
    code, output = _audit_cli(
        ws, "tests.features.test_leakage:SIX_DAY_RISK", "--day", "2018-05-10", "--day",
        "2018-05-20",
    )  # fmt: skip
    assert code == 1, output
    assert "day 2018-05-20: LEAKS" in output
    assert "Leaks in the definitions" in output
    for name in RISKS:
        assert output.count(name) == 3  # in the definitions, then once per day
    assert "day 2018-05-10: LEAKS" in output


def test_the_audit_command_compares_model_scores_on_request(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, _ = small_workspace
    options = ("--day", "2018-05-10", "--model", "logistic_regression")
    code, output = _audit_cli(ws, "shipyard.features.fraud:BASELINE_VIEWS", *options)
    assert code == 0, output
    assert "Scores of logistic_regression trained on 2018-04-27 .. 2018-05-03: OK" in output
    # the float-rounding leak changes features by one unit in the last place: scores too
    code, output = _audit_cli(ws, "tests.features.test_leakage:FLOAT_SUMS", *options)
    assert code == 1, output
    assert "Scores of logistic_regression trained on 2018-04-27 .. 2018-05-03: LEAKS" in output


def test_the_audit_command_needs_a_label_for_a_data_set_it_does_not_know(
    workspace: Workspace,
) -> None:
    from shipyard.data.catalog import write_dataset

    frame = pd.DataFrame(
        {"ts": pd.date_range("2024-01-01", periods=4, freq="D"), "user": 1, "y": [0, 1, 0, 1]}
    )
    write_dataset(workspace, "events", frame, time_column="ts")
    code, output = _audit_cli(
        workspace, "shipyard.features.fraud:BASELINE_VIEWS", "--dataset", "events", "--day",
        "2024-01-02",
    )  # fmt: skip
    assert code == 2
    assert "Data set 'events' has no known label: give --label." in output
