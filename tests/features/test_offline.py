from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from shipyard.data.catalog import Dataset, write_dataset
from shipyard.data.fraud_simulator import FraudSimulator
from shipyard.engines import LocalEngine
from shipyard.errors import (
    CorruptDataError,
    DataValidationError,
    FeatureDefinitionError,
    FeatureNotFoundError,
    ParameterError,
)
from shipyard.features.definitions import Aggregation, FeatureView, RowFeature, load_views
from shipyard.features.fraud import (
    BASELINE_FEATURES,
    BASELINE_VIEWS,
    BASELINE_VIEWS_REF,
    CUSTOMER_SPENDING,
    FEATURE_SETS,
)
from shipyard.features.offline import OfflineStore, look_back, partition_chunks
from shipyard.tables import feature_materializations
from shipyard.workspace import Workspace
from tests.conftest import SMALL
from tests.features.oracle import baseline_features

EVENT_COLUMNS = ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"]


def _compare_with_oracle(ws: Workspace, dataset: Dataset, n: int, seed: int) -> None:
    history = dataset.read()
    events = history.sample(n=n, random_state=seed)[EVENT_COLUMNS]
    got = OfflineStore(ws).get_historical_features(events, BASELINE_VIEWS).to_pandas()
    expected = baseline_features(history, events)
    assert got["TRANSACTION_ID"].tolist() == events["TRANSACTION_ID"].tolist()
    for name in BASELINE_FEATURES:
        np.testing.assert_allclose(
            got[name].to_numpy(dtype=float),
            expected[name].to_numpy(dtype=float),
            rtol=1e-12,
            err_msg=name,
        )


def test_every_feature_equals_the_straightforward_pandas_definition(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = small_workspace
    _compare_with_oracle(ws, dataset, n=600, seed=1)


@pytest.mark.slow
def test_spot_check_on_the_published_data_set(
    reference_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = reference_workspace
    _compare_with_oracle(ws, dataset, n=150, seed=2)


def test_features_are_point_in_time_correct(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    """FRAUD_PROTOCOL.md: features of days <= D do not change when (a) every later
    transaction is dropped and (b) labels later than D - 7 are zeroed."""
    ws, dataset = small_workspace
    history = dataset.read()
    D = 35
    cut = history[history["TX_TIME_DAYS"] <= D].copy()
    cut.loc[cut["TX_TIME_DAYS"] > D - 7, "TX_FRAUD"] = 0
    assert cut["TX_FRAUD"].sum() < history.loc[history["TX_TIME_DAYS"] <= D, "TX_FRAUD"].sum()
    other = Workspace.init(tmp_path / "cut")
    write_dataset(other, "fraud", cut, time_column="TX_DATETIME")
    OfflineStore(other).materialize(BASELINE_VIEWS)
    events = cut[EVENT_COLUMNS]
    before = OfflineStore(ws).get_historical_features(events, BASELINE_VIEWS).to_pandas()
    after = OfflineStore(other).get_historical_features(events, BASELINE_VIEWS).to_pandas()
    pd.testing.assert_frame_equal(before, after, check_exact=True)


def test_retrieval_between_transactions_takes_the_latest_value_at_or_before(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = small_workspace
    history = dataset.read()
    customer = history["CUSTOMER_ID"].value_counts().index[0]
    own = history[history["CUSTOMER_ID"] == customer].reset_index(drop=True)
    events = pd.DataFrame(
        {
            "CUSTOMER_ID": [customer, customer, customer],
            "TX_DATETIME": [
                own["TX_DATETIME"].iloc[0] - pd.Timedelta(seconds=1),  # before any history
                own["TX_DATETIME"].iloc[5],  # exactly at a transaction: it is included
                own["TX_DATETIME"].iloc[5] + pd.Timedelta(seconds=1),
            ],
        }
    )
    got = OfflineStore(ws).get_historical_features(events, [CUSTOMER_SPENDING]).to_pandas()
    assert pd.isna(got["CUSTOMER_ID_NB_TX_30DAY_WINDOW"].iloc[0])
    at_sixth = int((own["TX_DATETIME"] <= own["TX_DATETIME"].iloc[5]).sum())
    assert got["CUSTOMER_ID_NB_TX_30DAY_WINDOW"].iloc[1] == at_sixth
    assert got["CUSTOMER_ID_NB_TX_30DAY_WINDOW"].iloc[2] == at_sixth


def test_rows_of_one_entity_at_one_instant_give_every_retrieval_the_same_values(
    workspace: Workspace,
) -> None:
    """Two transactions of a customer in the same second: their window counts are equal but
    a row-level feature (the amount) differs; an ASOF join picked either, from run to run."""
    at = pd.Timestamp("2026-01-05 10:00:00")
    history = pd.DataFrame(
        {
            "TRANSACTION_ID": [1, 2, 3, 4],
            "CUSTOMER_ID": [7, 7, 7, 8],
            "TX_DATETIME": [at - pd.Timedelta(days=1), at, at, at],
            "TX_AMOUNT": [5.0, 30.0, 12.0, 1.0],
        }
    )
    write_dataset(workspace, "ties", history, time_column="TX_DATETIME")
    view = FeatureView(
        name="ties_view",
        entity="CUSTOMER_ID",
        timestamp="TX_DATETIME",
        source="ties",
        features=(
            RowFeature("AMOUNT", "TX_AMOUNT", ("TX_AMOUNT",)),
            Aggregation("NB_TX_7DAY", "count", timedelta(days=7)),
        ),
    )
    store = OfflineStore(workspace)
    store.materialize([view])
    events = pd.DataFrame({"CUSTOMER_ID": [7, 7, 8], "TX_DATETIME": [at, at, at]})
    seen = {
        tuple(store.get_historical_features(events, [view]).to_pandas()["AMOUNT"])
        for _ in range(20)
    }
    assert seen == {(30.0, 30.0, 1.0)}  # always the greatest of the tied rows
    counts = store.get_historical_features(events, [view]).to_pandas()["NB_TX_7DAY"]
    assert list(counts) == [3, 3, 1]  # the window holds both rows of the instant


def test_events_keep_their_order_and_columns_from_pandas_or_parquet(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, dataset = small_workspace
    events = dataset.read(EVENT_COLUMNS).sample(frac=1.0, random_state=3).head(5000)
    events["request"] = np.arange(len(events))
    path = tmp_path / "events.parquet"
    events.to_parquet(path, index=False)
    store = OfflineStore(ws)
    from_frame = store.get_historical_features(events, BASELINE_VIEWS).to_pandas()
    from_file = store.get_historical_features(path, BASELINE_VIEWS).to_pandas()
    assert from_frame["request"].tolist() == list(range(5000))
    assert list(from_frame.columns) == [*EVENT_COLUMNS, "request", *BASELINE_FEATURES]
    pd.testing.assert_frame_equal(from_frame, from_file, check_dtype=False)


def test_results_stream_in_bounded_batches(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, dataset = small_workspace
    events = dataset.read(EVENT_COLUMNS)
    result = OfflineStore(ws).get_historical_features(events, BASELINE_VIEWS)
    sizes = [batch.num_rows for batch in result.batches(batch_size=2048)]
    assert len(sizes) > 2
    assert max(sizes) <= 2048
    assert sum(sizes) == len(events)


def test_result_can_be_written_to_parquet(
    small_workspace: tuple[Workspace, Dataset], tmp_path: Path
) -> None:
    ws, dataset = small_workspace
    events = dataset.read(EVENT_COLUMNS).head(100)
    out = (
        OfflineStore(ws)
        .get_historical_features(events, BASELINE_VIEWS)
        .to_parquet(tmp_path / "o.parquet")
    )
    frame = pd.read_parquet(out)
    assert frame["TRANSACTION_ID"].tolist() == events["TRANSACTION_ID"].tolist()
    assert set(BASELINE_FEATURES) <= set(frame.columns)


def test_null_timestamps_in_events_are_named(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, dataset = small_workspace
    events = dataset.read(EVENT_COLUMNS).head(10)
    events.loc[events.index[4], "TX_DATETIME"] = pd.NaT
    with pytest.raises(
        DataValidationError, match=r"'TX_DATETIME' has 1 null value\(s\), the first at row 4"
    ):
        OfflineStore(ws).get_historical_features(events, BASELINE_VIEWS)


def test_missing_entity_column_in_events_is_named(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = small_workspace
    events = dataset.read(["CUSTOMER_ID", "TX_DATETIME"]).head(10)
    with pytest.raises(DataValidationError, match="events need a column 'TRANSACTION_ID'"):
        OfflineStore(ws).get_historical_features(events, BASELINE_VIEWS)


def test_non_timestamp_event_time_is_refused(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, _ = small_workspace
    events = pd.DataFrame({"CUSTOMER_ID": [1], "TX_DATETIME": ["yesterday"]})
    with pytest.raises(DataValidationError, match="must hold timestamps; it holds VARCHAR"):
        OfflineStore(ws).get_historical_features(events, [CUSTOMER_SPENDING])


def _small_fraud(ws: Workspace, seed: int = 0) -> Dataset:
    from shipyard.data.fraud_simulator import simulate_fraud_dataset

    return simulate_fraud_dataset(
        ws, FraudSimulator(n_customers=60, n_terminals=120, n_days=15, mode="fast", seed=seed)
    )


def _materializations(ws: Workspace) -> list[dict[str, object]]:
    with ws.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(feature_materializations)).mappings()]


def test_materialization_is_reused_until_the_definition_changes(workspace: Workspace) -> None:
    _small_fraud(workspace)
    store = OfflineStore(workspace)
    first = store.materialize([CUSTOMER_SPENDING])
    again = store.materialize([CUSTOMER_SPENDING])
    assert (first[0].reused, again[0].reused) == (False, True)
    assert again[0].path == first[0].path
    wider = replace(
        CUSTOMER_SPENDING,
        features=(Aggregation("CUSTOMER_ID_NB_TX_2DAY_WINDOW", "count", timedelta(days=2)),),
    )
    changed = store.materialize([wider])
    assert not changed[0].reused
    assert changed[0].definition_hash != first[0].definition_hash
    assert len(_materializations(workspace)) == 2


def test_corrupt_partition_stops_materialization_and_stores_nothing(workspace: Workspace) -> None:
    dataset = _small_fraud(workspace)
    store = OfflineStore(workspace)
    store.materialize([CUSTOMER_SPENDING])
    history = dataset.read()
    before = _materializations(workspace)
    target = dataset.path / dataset.partitions[3].file
    target.write_bytes(target.read_bytes()[:-40])
    with pytest.raises(CorruptDataError, match=dataset.partitions[3].file):
        store.materialize(BASELINE_VIEWS, force=True)
    assert _materializations(workspace) == before
    # what was stored before is still served, value for value
    events = history[EVENT_COLUMNS]
    got = store.get_historical_features(events, [CUSTOMER_SPENDING]).to_pandas()
    expected = baseline_features(history, events)
    assert got["TRANSACTION_ID"].tolist() == events["TRANSACTION_ID"].tolist()
    for name in CUSTOMER_SPENDING.feature_names:
        np.testing.assert_allclose(
            got[name].to_numpy(dtype=float), expected[name].to_numpy(dtype=float), err_msg=name
        )


def test_a_view_naming_a_missing_column_fails_before_computing(workspace: Workspace) -> None:
    _small_fraud(workspace)
    broken = FeatureView(
        name="broken",
        entity="CUSTOMER_ID",
        timestamp="TX_DATETIME",
        source="fraud",
        features=(Aggregation("AVG_TIP", "mean", timedelta(days=1), column="TX_TIP"),),
    )
    with pytest.raises(FeatureDefinitionError, match=r"feature 'AVG_TIP' needs column 'TX_TIP'"):
        OfflineStore(workspace).materialize([broken])
    assert _materializations(workspace) == []


def test_retrieval_of_an_unmaterialized_view_says_what_to_run(workspace: Workspace) -> None:
    _small_fraud(workspace)
    frame = pd.DataFrame({"CUSTOMER_ID": [1], "TX_DATETIME": [pd.Timestamp("2018-04-20")]})
    with pytest.raises(FeatureNotFoundError, match="shipyard features materialize"):
        OfflineStore(workspace).get_historical_features(frame, [CUSTOMER_SPENDING])


def test_tampered_feature_file_is_refused(workspace: Workspace) -> None:
    _small_fraud(workspace)
    stored = OfflineStore(workspace).materialize([CUSTOMER_SPENDING])[0]
    stored.path.write_bytes(stored.path.read_bytes() + b"x")
    frame = pd.DataFrame({"CUSTOMER_ID": [1], "TX_DATETIME": [pd.Timestamp("2018-04-20")]})
    with pytest.raises(CorruptDataError, match="materialize again"):
        OfflineStore(workspace).get_historical_features(frame, [CUSTOMER_SPENDING])
    with workspace.engine.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(feature_materializations)).scalar() == 1
        )


def test_small_fixture_is_what_the_tests_assume(small_workspace: tuple[Workspace, Dataset]) -> None:
    _, dataset = small_workspace
    assert dataset.params["n_days"] == SMALL["n_days"]
    assert dataset.n_positives and dataset.n_positives > 50


def test_an_event_column_named_like_a_feature_is_refused(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = small_workspace
    events = dataset.read([*EVENT_COLUMNS, "TX_AMOUNT"]).head(10)
    with pytest.raises(FeatureDefinitionError, match=r"'TX_AMOUNT'.*rename or drop"):
        OfflineStore(ws).get_historical_features(events, BASELINE_VIEWS)


def _two_versions(ws: Workspace) -> tuple[Dataset, Dataset]:
    """Two versions of the data set 'fraud' with different content (another seed)."""
    old, new = _small_fraud(ws, seed=0), _small_fraud(ws, seed=5)
    assert (old.version, new.version) == (1, 2)
    assert old.content_hash != new.content_hash
    return old, new


def _assert_features_of(got: pd.DataFrame, history: pd.DataFrame, events: pd.DataFrame) -> None:
    expected = baseline_features(history, events)
    assert got["TRANSACTION_ID"].tolist() == events["TRANSACTION_ID"].tolist()
    for name in BASELINE_FEATURES[3:]:
        np.testing.assert_allclose(
            got[name].to_numpy(dtype=float),
            expected[name].to_numpy(dtype=float),
            rtol=1e-12,
            err_msg=name,
        )


def test_features_of_an_older_data_set_version_come_from_that_version(
    workspace: Workspace,
) -> None:
    """Issue 7, defect 4: v1's training frame never joins v2's features."""
    old, new = _two_versions(workspace)
    store = OfflineStore(workspace)
    store.materialize(BASELINE_VIEWS, dataset_version=1)
    store.materialize(BASELINE_VIEWS)  # the latest: v2, materialized last
    history = old.read()
    events = history[EVENT_COLUMNS]
    pinned = store.get_historical_features(events, BASELINE_VIEWS, dataset_version=1).to_pandas()
    _assert_features_of(pinned, history, events)
    # the same events joined to the latest version's features differ: the pin matters
    latest = store.get_historical_features(events, BASELINE_VIEWS).to_pandas()
    assert not latest[list(BASELINE_FEATURES[3:])].equals(pinned[list(BASELINE_FEATURES[3:])])
    _assert_features_of(
        store.get_historical_features(new.read()[EVENT_COLUMNS], BASELINE_VIEWS).to_pandas(),
        new.read(),
        new.read()[EVENT_COLUMNS],
    )
    for view in BASELINE_VIEWS:
        assert store.materialization(view, 1).dataset_hash == old.content_hash
        assert store.materialization(view).dataset_hash == new.content_hash


def test_a_version_never_materialized_is_a_clear_error(workspace: Workspace) -> None:
    old, new = _two_versions(workspace)
    store = OfflineStore(workspace)
    store.materialize([CUSTOMER_SPENDING], dataset_version=1)
    events = old.read(EVENT_COLUMNS).head(5)
    # the latest version (v2) has no materialization: no silent fallback to v1's features
    with pytest.raises(
        FeatureNotFoundError,
        match=(
            rf"'customer_spending'.*data set fraud v2 \(the latest version, content "
            rf"{new.content_hash[:12]}\).*`shipyard features materialize --version 2`"
        ),
    ):
        store.get_historical_features(events, [CUSTOMER_SPENDING])
    with pytest.raises(FeatureNotFoundError, match=r"fraud v2 \(content"):
        store.materialization(CUSTOMER_SPENDING, dataset_version=2)
    stored = store.materialization(CUSTOMER_SPENDING, dataset_version=1)
    assert (stored.dataset_version, stored.dataset_hash) == (1, old.content_hash)


def test_training_frame_of_an_older_version_joins_that_versions_features(
    workspace: Workspace,
) -> None:
    from shipyard.training.frames import Window, load_frame

    old, _ = _two_versions(workspace)
    store = OfflineStore(workspace)
    store.materialize(BASELINE_VIEWS, dataset_version=1)
    store.materialize(BASELINE_VIEWS, dataset_version=2)
    window = Window(old.name, old.version, "2018-04-01", "2018-12-31", BASELINE_VIEWS_REF)
    frame = load_frame(workspace, window)
    history = old.read()
    _assert_features_of(frame, history, history[EVENT_COLUMNS])


def test_cli_materializes_and_gets_a_given_version(workspace: Workspace, tmp_path: Path) -> None:
    from tests.cli.test_cli import shipyard

    old, _ = _two_versions(workspace)
    events = old.read(EVENT_COLUMNS)
    events.to_parquet(tmp_path / "events.parquet", index=False)
    get = ("features", "get", "--events", "events.parquet", "--out", "out.parquet")
    root = ("--workspace", str(workspace.root))
    missing = shipyard(*root, *get, "--version", "1", cwd=tmp_path)
    assert missing.returncode == 2
    assert "`shipyard features materialize --version 1`" in " ".join(missing.stderr.split())
    done = shipyard(*root, "features", "materialize", "--version", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fraud v1" in done.stdout
    done = shipyard(*root, *get, "--version", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_features_of(pd.read_parquet(tmp_path / "out.parquet"), old.read(), events)


# -- materialization in partition chunks through an engine ---------------------------------


def _stored(store: OfflineStore, view: FeatureView) -> pa.Table:
    return pq.read_table(store.materialization(view).path)


@pytest.mark.parametrize("per_task", [1, 4])
def test_partition_chunks_store_what_the_single_query_stores(
    workspace: Workspace, per_task: int
) -> None:
    _small_fraud(workspace)
    store = OfflineStore(workspace)
    views = list({v.name: v for v in load_views(FEATURE_SETS["extended"])}.values())
    singles = store.materialize(views)
    expected = {view.name: _stored(store, view) for view in views}
    chunked = store.materialize(
        views, force=True, engine=LocalEngine(2), partitions_per_task=per_task
    )
    for view, single, again in zip(views, singles, chunked, strict=True):
        assert _stored(store, view).equals(expected[view.name]), view.name
        assert (again.path, again.n_rows, again.sha256) == (
            single.path,
            single.n_rows,
            single.sha256,
        )
    assert len(_materializations(workspace)) == len(views)  # one catalog row per view, as before


def test_stored_features_are_in_time_order(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, _ = small_workspace
    table = _stored(OfflineStore(ws), CUSTOMER_SPENDING).to_pandas()
    assert table["TX_DATETIME"].is_monotonic_increasing


def test_a_chunk_reads_the_look_back_its_longest_window_needs(workspace: Workspace) -> None:
    dataset = _small_fraud(workspace)
    chunks = partition_chunks(CUSTOMER_SPENDING, dataset, partitions_per_task=2)
    assert chunks is not None and len(chunks) == 8  # 15 days, 2 a task
    reach = look_back(CUSTOMER_SPENDING)
    assert reach == timedelta(days=30)
    last = chunks[-1]
    days = [date.fromisoformat(Path(f).stem) for f in last.files]
    assert days[0] == max(chunks[0].first_day, last.first_day - reach - timedelta(days=1))
    assert (last.start is not None, last.end) == (True, None)  # keeps its own days, open-ended
    assert (chunks[0].start, chunks[0].end is not None) == (None, True)


def test_a_view_whose_values_depend_on_the_split_runs_as_one_query(workspace: Workspace) -> None:
    dataset = _small_fraud(workspace)
    floating = replace(
        CUSTOMER_SPENDING,
        name="customer_float_mean",
        features=(Aggregation("AVG_AMOUNT_2D", "mean", timedelta(days=2), column="TX_AMOUNT"),),
    )
    assert partition_chunks(floating, dataset, partitions_per_task=1) is None
    store = OfflineStore(workspace)
    store.materialize([floating])
    expected = _stored(store, floating)
    store.materialize([floating], force=True, engine=LocalEngine(), partitions_per_task=1)
    assert _stored(store, floating).equals(expected)


def test_partitions_per_task_must_be_a_positive_int(workspace: Workspace) -> None:
    _small_fraud(workspace)
    with pytest.raises(ParameterError, match="'partitions_per_task' parameter"):
        OfflineStore(workspace).materialize([CUSTOMER_SPENDING], partitions_per_task=0)
