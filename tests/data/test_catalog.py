from __future__ import annotations

import pandas as pd
import pytest

from shipyard.data.catalog import get_dataset, list_datasets, write_dataset
from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
from shipyard.errors import CorruptDataError, DatasetNotFoundError, DataValidationError
from shipyard.workspace import Workspace


def _frame(n_days: int = 3) -> pd.DataFrame:
    times = pd.date_range("2024-01-01", periods=n_days * 4, freq="6h")
    return pd.DataFrame(
        {"ts": times, "value": range(len(times)), "label": [0, 1] * (len(times) // 2)}
    )


def test_write_partitions_by_day_and_registers_the_version(workspace: Workspace) -> None:
    ds = write_dataset(workspace, "events", _frame(), time_column="ts", label_column="label")
    assert (ds.version, ds.n_rows, ds.n_positives, ds.created) == (1, 12, 6, True)
    assert [p.file for p in ds.partitions] == [
        "partitions/2024-01-01.parquet",
        "partitions/2024-01-02.parquet",
        "partitions/2024-01-03.parquet",
    ]
    assert all(p.rows == 4 for p in ds.partitions)
    assert str(ds.time_min) == "2024-01-01 00:00:00"
    assert str(ds.time_max) == "2024-01-03 18:00:00"
    assert {"name": "ts", "type": "timestamp[us]"} in ds.schema
    again = get_dataset(workspace, "events")
    assert again.content_hash == ds.content_hash
    pd.testing.assert_frame_equal(again.read(), _frame(), check_dtype=False)


def test_identical_content_reuses_the_version_and_new_content_adds_one(
    workspace: Workspace,
) -> None:
    first = write_dataset(workspace, "events", _frame(), time_column="ts")
    same = write_dataset(workspace, "events", _frame(), time_column="ts")
    assert (same.version, same.created) == (1, False)
    changed = _frame()
    changed.loc[3, "value"] = 99
    second = write_dataset(workspace, "events", changed, time_column="ts")
    assert second.version == 2
    assert second.content_hash != first.content_hash
    assert [d.version for d in list_datasets(workspace)] == [2, 1]
    assert get_dataset(workspace, "events", version=1).content_hash == first.content_hash


def test_corrupt_partition_is_named_and_the_registry_is_unchanged(workspace: Workspace) -> None:
    ds = write_dataset(workspace, "events", _frame(), time_column="ts")
    path = ds.path / ds.partitions[1].file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        CorruptDataError,
        match=r"Partition partitions/2024-01-02\.parquet of data set events v1 is corrupt",
    ):
        ds.verify()
    with pytest.raises(CorruptDataError):
        ds.read()
    assert get_dataset(workspace, "events").partitions == ds.partitions


def test_missing_partition_is_named(workspace: Workspace) -> None:
    ds = write_dataset(workspace, "events", _frame(), time_column="ts")
    (ds.path / ds.partitions[0].file).unlink()
    with pytest.raises(CorruptDataError, match=r"2024-01-01\.parquet.*missing"):
        ds.verify()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.assign(ts=f["ts"].where(f.index != 5)), "null timestamps"),
        (lambda f: f.iloc[::-1], "must be sorted"),
        (lambda f: f.rename(columns={"ts": "time"}), "time_column 'ts' is not a column"),
    ],
)
def test_bad_tables_are_refused_and_nothing_is_stored(
    workspace: Workspace, mutate: object, message: str
) -> None:
    with pytest.raises(DataValidationError, match=message):
        write_dataset(workspace, "events", mutate(_frame()), time_column="ts")  # type: ignore[operator]
    assert list_datasets(workspace) == []
    assert not (workspace.data_root / "events").exists() or not any(
        (workspace.data_root / "events").iterdir()
    )


def test_bad_name_is_refused(workspace: Workspace) -> None:
    with pytest.raises(DataValidationError, match="Data set names"):
        write_dataset(workspace, "../escape", _frame(), time_column="ts")


def test_unknown_data_set_is_a_key_error_listing_what_exists(workspace: Workspace) -> None:
    write_dataset(workspace, "events", _frame(), time_column="ts")
    with pytest.raises(KeyError, match="Registered: events") as caught:
        get_dataset(workspace, "fraud")
    assert isinstance(caught.value, DatasetNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="version 7"):
        get_dataset(workspace, "events", version=7)


def test_simulation_registers_tables_and_how_it_was_made(workspace: Workspace) -> None:
    sim = FraudSimulator(n_customers=40, n_terminals=80, n_days=10, mode="fast")
    ds = simulate_fraud_dataset(workspace, sim)
    assert ds.params["mode"] == "fast"
    assert ds.params["n_customers"] == 40
    assert ds.table_file("customers").is_file()
    assert pd.read_parquet(ds.table_file("terminals")).shape[0] == 80
    assert ds.columns[:3] == ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID"]
    with pytest.raises(DatasetNotFoundError):
        ds.table_file("merchants")
