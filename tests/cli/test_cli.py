"""The command line, run as users run it: a real process, a real workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from shipyard.data.catalog import get_dataset
from shipyard.workspace import Workspace


def shipyard(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    environ.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "shipyard.cli.main", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_init_simulate_materialize_and_get(tmp_path: Path) -> None:
    done = shipyard("init", "proj", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Created workspace" in done.stdout
    project = tmp_path / "proj"
    done = shipyard(
        "data",
        "simulate",
        "--mode",
        "fast",
        "--customers",
        "80",
        "--terminals",
        "150",
        "--days",
        "20",
        cwd=project,
    )
    assert done.returncode == 0, done.stderr
    assert "Registered fraud v1 (fast mode)" in done.stdout
    dataset = get_dataset(Workspace.open(project), "fraud")
    assert f"{dataset.n_rows:,} transactions" in done.stdout
    assert "20 daily partitions" in done.stdout

    again = shipyard(
        "data",
        "simulate",
        "--mode",
        "fast",
        "--customers",
        "80",
        "--terminals",
        "150",
        "--days",
        "20",
        cwd=project,
    )
    assert "Unchanged, already registered as fraud v1" in again.stdout

    listed = shipyard("data", "list", cwd=project)
    assert "fraud" in listed.stdout and f"{dataset.n_rows:,}" in listed.stdout
    assert shipyard("data", "verify", "fraud", cwd=project).returncode == 0

    done = shipyard("features", "materialize", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "customer_spending" in done.stdout and "terminal_risk" in done.stdout

    events = dataset.read(["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"]).head(50)
    events.to_parquet(project / "events.parquet", index=False)
    done = shipyard(
        "features", "get", "--events", "events.parquet", "--out", "out.parquet", cwd=project
    )
    assert done.returncode == 0, done.stderr
    out = pd.read_parquet(project / "out.parquet")
    assert len(out) == 50
    assert "TERMINAL_ID_RISK_7DAY_WINDOW" in out.columns


def test_errors_are_one_clear_line_with_status_2(tmp_path: Path) -> None:
    done = shipyard("data", "list", cwd=tmp_path)
    assert done.returncode == 2
    assert "Error: No Shipyard workspace" in done.stderr
    assert "Traceback" not in done.stderr

    shipyard("init", ".", cwd=tmp_path)
    again = shipyard("init", ".", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr

    unknown = shipyard("data", "show", "nothing", cwd=tmp_path)
    assert unknown.returncode == 2 and "No data set 'nothing'" in unknown.stderr

    bad = shipyard("data", "simulate", "--days", "0", cwd=tmp_path)
    assert bad.returncode == 2
    assert "'n_days' parameter of FraudSimulator must be an int >= 1. Got 0" in bad.stderr

    typo = shipyard("info", cwd=tmp_path, env={"SHIPYARD_ARTIFACT_ROOTS": "x"})
    assert typo.returncode == 2 and "Did you mean 'artifact_root'" in typo.stderr


def test_corrupt_partition_is_reported_by_verify(tmp_path: Path) -> None:
    shipyard("init", ".", cwd=tmp_path)
    shipyard(
        "data",
        "simulate",
        "--mode",
        "fast",
        "--customers",
        "30",
        "--terminals",
        "60",
        "--days",
        "5",
        cwd=tmp_path,
    )
    dataset = get_dataset(Workspace.open(tmp_path), "fraud")
    (dataset.path / dataset.partitions[2].file).write_bytes(b"not parquet")
    done = shipyard("data", "verify", "fraud", cwd=tmp_path)
    assert done.returncode == 2
    assert dataset.partitions[2].file in done.stderr and "corrupt" in done.stderr


def test_help_and_import_stay_light(tmp_path: Path) -> None:
    done = shipyard("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert all(name in done.stdout for name in ("init", "data", "features", "quickstart"))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, shipyard, shipyard.cli.main; "
            "heavy = {'pandas', 'numpy', 'duckdb', 'pyarrow', 'sqlalchemy', 'pydantic'}; "
            "heavy &= set(sys.modules); "
            "print(sorted(heavy))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_info_hides_tokens(tmp_path: Path) -> None:
    shipyard("init", ".", cwd=tmp_path)
    secret = "s3cr3t-admin-token-value"
    shown = shipyard("info", cwd=tmp_path, env={"SHIPYARD_SERVING_ADMIN_TOKEN": secret})
    assert shown.returncode == 0, shown.stderr
    assert secret not in shown.stdout
    assert "serving_admin_token" in shown.stdout and "(set, hidden)" in shown.stdout


def test_info_hides_passwords_in_urls(tmp_path: Path) -> None:
    shipyard("init", ".", cwd=tmp_path)
    shown = shipyard("info", cwd=tmp_path, env={"SHIPYARD_REDIS_URL": "redis://:pa55w0rd@h:1/0"})
    assert shown.returncode == 0, shown.stderr
    assert "pa55w0rd" not in shown.stdout and "redis://:***@h:1/0" in shown.stdout
