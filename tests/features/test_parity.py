"""The parity replay: the online path equals offline retrieval, and the check can fail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from shipyard.data.catalog import Dataset
from shipyard.features import parity as parity_module
from shipyard.features.definitions import Aggregation, FeatureView
from shipyard.features.fraud import BASELINE_VIEWS, CUSTOMER_SPENDING, TERMINAL_RISK
from shipyard.features.online import RedisOnlineStore
from shipyard.features.parity import parity
from shipyard.features.streaming import StreamingView
from shipyard.workspace import Workspace
from tests.features.test_online import redis_server  # noqa: F401  (a fixture)

START, END = "2018-05-01", "2018-05-08"  # 7 days of the small data set (70 days from April 1)


@pytest.fixture(params=["sqlite", "redis"])
def redis_env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """None for SQLite; for Redis a running server's URL, set as SHIPYARD_REDIS_URL."""
    if request.param == "sqlite":
        yield None
        return
    url = str(request.getfixturevalue("redis_server"))
    monkeypatch.setenv("SHIPYARD_REDIS_URL", url)
    yield url


def _reopen(ws: Workspace) -> Workspace:
    return Workspace.open(ws.root)  # settings re-read with SHIPYARD_* applied


def test_replay_equals_offline_on_both_stores(
    small_workspace: tuple[Workspace, Dataset], redis_env: str | None
) -> None:
    ws = _reopen(small_workspace[0])
    try:
        report = parity(
            ws, BASELINE_VIEWS, start=START, end=END, store="redis" if redis_env else "sqlite"
        )
    finally:
        ws.close()
    assert report.ok, report.describe()
    assert report.views == ["transaction", "customer_spending", "terminal_risk"]
    assert report.events_compared > 2_000
    assert report.rows_equal == report.events_compared
    assert report.mismatches == {} and report.examples == {}
    assert report.features_compared == 15
    assert report.events_replayed > report.events_compared  # the warm-up was replayed too
    assert report.events_per_s > 0
    text = report.describe()
    assert "OK" in text and "terminal_risk" in text and "not covered" not in text
    if redis_env:
        import redis

        # the fresh key space was dropped: nothing of the replay is left in Redis
        assert redis.Redis.from_url(redis_env).keys("shipyard:online:state:*parity*") == []


def test_a_given_store_is_used_under_a_fresh_key_space(
    small_workspace: tuple[Workspace, Dataset], request: pytest.FixtureRequest
) -> None:
    import redis

    ws, _ = small_workspace
    url = str(request.getfixturevalue("redis_server"))
    store = RedisOnlineStore(url)
    live = {"1": b"live state"}
    store.put_many(CUSTOMER_SPENDING, live)
    try:
        report = parity(ws, [CUSTOMER_SPENDING], start=START, end=END, store=store)
        assert report.ok, report.describe()
        assert store.get(CUSTOMER_SPENDING, "1") == b"live state"  # live state untouched
        views = redis.Redis.from_url(url).hkeys(f"{RedisOnlineStore.PREFIX}:views")
        assert views == [CUSTOMER_SPENDING.name.encode()]  # the replay's key space dropped
    finally:
        store.drop_view(CUSTOMER_SPENDING.name)
        store.close()


def test_a_delayed_view_is_replayed_with_a_warm_up_of_delay_plus_window(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    ws, dataset = small_workspace
    report = parity(ws, [TERMINAL_RISK], start=START, end=END, lateness=timedelta(0))
    assert report.ok, report.describe()
    assert report.views == ["terminal_risk"] and report.features_compared == 6
    times = dataset.read(columns=["TX_DATETIME"])["TX_DATETIME"]
    begin, end = pd.Timestamp(START), pd.Timestamp(END)
    warm = ((times >= begin - pd.Timedelta(days=7 + 30)) & (times < begin)).sum()
    compared = ((times >= begin) & (times <= end)).sum()
    assert report.events_compared == compared
    assert report.events_replayed == warm + compared


def test_nothing_in_range_compares_nothing_and_is_not_ok(
    small_workspace: tuple[Workspace, Dataset],
) -> None:
    report = parity(small_workspace[0], [TERMINAL_RISK], start="2030-01-01", end="2030-01-08")
    assert report.events_compared == 0
    assert not report.ok
    assert "parity is not shown" in report.describe()


def _wrong_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The online replay gets a 2-day window where the offline store materialized 1 day."""

    def streaming(view: FeatureView, store: Any, **kwargs: Any) -> StreamingView:
        features = tuple(
            replace(f, window=timedelta(days=2))
            if isinstance(f, Aggregation) and f.name.endswith("_1DAY_WINDOW")
            else f
            for f in view.features
        )
        return StreamingView(replace(view, features=features), store, **kwargs)

    monkeypatch.setattr("shipyard.features.streaming.StreamingView", streaming)


def test_a_wrong_delay_fails_per_terminal_feature(
    small_workspace: tuple[Workspace, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The online replay gets a 6-day delay where the offline store materialized 7 days."""

    def streaming(view: FeatureView, store: Any, **kwargs: Any) -> StreamingView:
        features = tuple(
            replace(f, delay=timedelta(days=6)) if isinstance(f, Aggregation) and f.delay else f
            for f in view.features
        )
        return StreamingView(replace(view, features=features), store, **kwargs)

    monkeypatch.setattr("shipyard.features.streaming.StreamingView", streaming)
    report = parity(small_workspace[0], BASELINE_VIEWS, start=START, end=END)
    assert not report.ok
    assert set(report.mismatches) == set(TERMINAL_RISK.feature_names)
    for feature in report.mismatches:
        assert all(ex.view == "terminal_risk" for ex in report.examples[feature])
    assert 0 < report.rows_equal < report.events_compared
    text = report.describe()
    assert "FAILED" in text and "MISMATCH TERMINAL_ID_NB_TX_7DAY_WINDOW" in text


def test_a_wrong_definition_produces_mismatches_with_examples(
    small_workspace: tuple[Workspace, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    _wrong_window(monkeypatch)
    report = parity(small_workspace[0], BASELINE_VIEWS, start=START, end=END)
    assert not report.ok
    assert set(report.mismatches) == {  # the 1-day windows of both windowed views
        "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
        "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
        "TERMINAL_ID_NB_TX_1DAY_WINDOW",
        "TERMINAL_ID_RISK_1DAY_WINDOW",
    }
    assert 0 < report.rows_equal < report.events_compared
    for feature, count in report.mismatches.items():
        examples = report.examples[feature]
        assert len(examples) == min(count, parity_module.MAX_EXAMPLES)
        for ex in examples:
            assert ex.view == ("customer_spending" if "CUSTOMER" in feature else "terminal_risk")
            assert ex.online != ex.offline
    counts = report.examples["CUSTOMER_ID_NB_TX_1DAY_WINDOW"]
    assert all(ex.online > ex.offline for ex in counts)  # a longer window counts more
    text = report.describe()
    assert "FAILED" in text and "MISMATCH CUSTOMER_ID_NB_TX_1DAY_WINDOW" in text


def test_counts_are_exact_and_amounts_within_the_tolerance() -> None:
    equal = parity_module._equal
    assert equal(3, 3.0, exact=True, tolerance=1e-9)
    assert not equal(3, 3.0000000001, exact=True, tolerance=1e-9)
    assert equal(10.0, 10.0 + 1e-10, exact=False, tolerance=1e-9)
    assert not equal(10.0, 10.0 + 1e-8, exact=False, tolerance=1e-9)
    assert equal(None, float("nan"), exact=False, tolerance=1e-9)
    assert not equal(None, 0.0, exact=False, tolerance=1e-9)


def _cli(ws: Workspace, *args: str) -> Any:
    from shipyard.cli.main import cli

    return CliRunner().invoke(
        cli,
        ["--workspace", str(ws.root), "features", "parity", *args],
        env={"COLUMNS": "200"},  # a wide console: rich does not shorten the feature names
        catch_exceptions=False,
    )


def test_cli_exit_codes(
    small_workspace: tuple[Workspace, Dataset],
    redis_env: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws, _ = small_workspace
    store = "redis" if redis_env else "sqlite"
    done = _cli(ws, "--from", START, "--to", END, "--store", store)
    assert done.exit_code == 0, done.output
    assert "OK" in done.output and "rows equal (100.00%)" in done.output
    assert "terminal_risk" in done.output and "15 features" in done.output

    _wrong_window(monkeypatch)
    failed = _cli(ws, "--from", START, "--to", END, "--store", store)
    assert failed.exit_code == 1, failed.output
    assert "FAILED" in failed.output
    assert "CUSTOMER_ID_NB_TX_1DAY_WINDOW" in failed.output and "Mismatches" in failed.output


def test_cli_with_nothing_to_compare_fails(small_workspace: tuple[Workspace, Dataset]) -> None:
    ws, _ = small_workspace
    done = _cli(ws, "--from", "2030-01-01", "--to", "2030-01-08")
    assert done.exit_code == 1, done.output
    assert "No event was compared" in done.output
