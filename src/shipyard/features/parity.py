"""Train/serve parity: replay a time range through the online path, compare with offline.

:func:`parity` builds a *fresh* online state (a temporary SQLite store, or the given store
under a fresh key space that is dropped afterwards), warms it by replaying the source
history of the retention before ``start`` (:attr:`StreamingView.retention_us
<shipyard.features.streaming.StreamingView.retention_us>`: delay + longest window +
lateness), then replays the events of ``[start, end]`` through
:class:`~shipyard.features.streaming.StreamingView` and compares every assembled vector with
the offline point-in-time retrieval
(:meth:`~shipyard.features.offline.OfflineStore.get_historical_features`) of the same
events. Nulls equal only nulls; the values of :func:`exact_features` must be identical
(row features, counts, min, max, and every aggregation of exact ``decimals`` units: the
online path repeats DuckDB's arithmetic bit for bit; a derived feature of exact inputs),
every other value (a sum or mean of doubles, whose rounding depends on the order DuckDB adds
them in) within ``tolerance``.

Every view is covered, delayed (label-based) ones included: the source events carry their
labels, as the events :func:`~shipyard.features.materialize_online.materialize_online` feeds
a delayed view's online state with, and a delayed window ends at ``t - delay``, so the
features of an event read at its own time are those serving reads at ``t``.

Example::

    report = parity(ws, BASELINE_VIEWS, start="2018-05-01", end="2018-05-08")
    print(report.describe())
    assert report.ok
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shipyard.errors import DataValidationError, FeatureDefinitionError
from shipyard.features.definitions import Aggregation, Derived, FeatureView

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.features.online import OnlineStore
    from shipyard.features.streaming import StreamingView
    from shipyard.workspace import Workspace

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class MismatchExample:
    """One row where the online and offline values of a feature differ."""

    view: str
    entity: Any
    time: Any
    online: Any
    offline: Any


@dataclass
class ParityReport:
    """The result of a parity replay."""

    start: Any
    end: Any
    store: str
    views: list[str] = field(default_factory=list)
    """The views replayed and compared."""
    events_compared: int = 0
    rows_equal: int = 0
    events_replayed: int = 0
    """Events applied through the streaming path (warm-up and compared range, all views)."""
    mismatches: dict[str, int] = field(default_factory=dict)
    """Feature name -> number of rows where online and offline differ (mismatching only)."""
    examples: dict[str, list[MismatchExample]] = field(default_factory=dict)
    features_compared: int = 0
    seconds: float = 0.0
    replay_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when events were compared and every compared row is equal."""
        return self.events_compared > 0 and self.rows_equal == self.events_compared

    @property
    def events_per_s(self) -> float:
        """Compared events per second of the whole run (warm-up and offline side included)."""
        return self.events_compared / self.seconds if self.seconds > 0 else 0.0

    @property
    def replay_events_per_s(self) -> float:
        """Events applied per second of streaming replay alone."""
        return self.events_replayed / self.replay_seconds if self.replay_seconds > 0 else 0.0

    def describe(self) -> str:
        """A plain-text account of the run."""
        share = 100.0 * self.rows_equal / self.events_compared if self.events_compared else 0.0
        lines = [
            f"Parity replay {self.start} .. {self.end} on {self.store}: "
            + ("OK" if self.ok else "FAILED"),
            f"  views replayed: {', '.join(self.views) or '(none)'}",
            f"  events compared: {self.events_compared:,}; rows equal: {self.rows_equal:,} "
            f"({share:.2f}%); features compared: {self.features_compared}",
            f"  {self.seconds:.2f} s, {self.events_per_s:,.0f} events/s "
            f"(streaming replay: {self.events_replayed:,} events, "
            f"{self.replay_events_per_s:,.0f} events/s)",
        ]
        if self.events_compared == 0:
            lines.append("  no event was compared: parity is not shown")
        for feature, count in self.mismatches.items():
            lines.append(f"  MISMATCH {feature}: {count:,} row(s)")
            lines.extend(
                f"    {ex.view} entity={ex.entity} time={ex.time} "
                f"online={ex.online!r} offline={ex.offline!r}"
                for ex in self.examples.get(feature, [])
            )
        return "\n".join(lines)


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _equal(online: Any, offline: Any, *, exact: bool, tolerance: float) -> bool:
    if _is_null(online) or _is_null(offline):
        return _is_null(online) and _is_null(offline)
    try:
        a, b = float(online), float(offline)
    except (TypeError, ValueError):
        return bool(online == offline)
    if exact:
        return a == b
    return math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance) or a == b


def exact_features(view: FeatureView) -> set[str]:
    """The features of ``view`` whose online value must equal the offline one exactly.

    All but a sum or mean of a column without ``decimals`` (DuckDB adds doubles in an order
    of its own) and a derived feature reading one of those.
    """
    exact: set[str] = set()
    for feature in view.features:
        if isinstance(feature, Aggregation):
            inexact = feature.function in ("sum", "mean") and feature.decimals is None
            if not inexact or feature.column is None:
                exact.add(feature.name)
        elif isinstance(feature, Derived):
            own = set(view.feature_names)
            if all(name in exact or name not in own for name in feature.inputs):
                exact.add(feature.name)
        else:
            exact.add(feature.name)
    return exact


def _plain(value: Any) -> Any:
    if _is_null(value):
        return None
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _open_store(
    workspace: Workspace, store: str | OnlineStore, folder: Path
) -> tuple[OnlineStore, str, bool]:
    """(store, its description, whether parity owns it and must close it)."""
    from shipyard.features.online import RedisOnlineStore, SQLiteOnlineStore

    if store == "sqlite":
        return SQLiteOnlineStore(folder / "online.db"), "sqlite (temporary)", True
    if store == "redis":
        redis_store = RedisOnlineStore(workspace.settings.redis_url)
        return redis_store, f"redis ({workspace.settings.redis_url})", True
    if isinstance(store, str):
        raise FeatureDefinitionError(
            f"The 'store' parameter of parity must be 'sqlite', 'redis' or an OnlineStore. "
            f"Got {store!r} instead."
        )
    return store, repr(store), False


def parity(
    workspace: Workspace,
    views: list[FeatureView] | tuple[FeatureView, ...],
    *,
    start: Any,
    end: Any,
    dataset_version: int | None = None,
    store: Literal["sqlite", "redis"] | OnlineStore = "sqlite",
    tolerance: float = 1e-9,
    lateness: timedelta = timedelta(minutes=5),
    batch_rows: int = 10_000,
) -> ParityReport:
    """Replay the events of ``[start, end]`` online and compare them with offline retrieval.

    ``store`` is ``"sqlite"`` (a temporary file, deleted afterwards), ``"redis"`` (the
    workspace's ``redis_url``) or an :class:`OnlineStore`; on Redis or a given store the
    replay writes under fresh view names (``<view>__parity_<token>``) that are dropped at
    the end, so no live state is read or changed.
    """
    import pandas as pd

    from shipyard.features.offline import OfflineStore
    from shipyard.features.streaming import StreamingView

    begin, finish = pd.Timestamp(start), pd.Timestamp(end)
    if finish < begin:
        raise DataValidationError(f"parity: end {finish} is before start {begin}.")
    started = time.perf_counter()
    report = ParityReport(start=begin, end=finish, store="")
    tmp_root = workspace.artifact_root / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="parity-", dir=tmp_root))
    online_store, report.store, owned = _open_store(workspace, store, folder)
    token = uuid.uuid4().hex[:12]
    failing: dict[str, set[int]] = {}
    sizes: dict[str, int] = {}
    replayed_views: list[FeatureView] = []
    offline = OfflineStore(workspace)
    try:
        for view in views:
            fresh = replace(view, name=f"{view.name}__parity_{token}")
            stream = StreamingView(fresh, online_store, lateness=lateness)
            source_key, warm, events = _events(
                workspace, view, begin, finish, dataset_version, stream.retention_us
            )
            sizes[source_key] = len(events)
            if events.empty:
                continue
            replayed_views.append(fresh)
            t0 = time.perf_counter()
            online = _replay_online(stream, warm, events, batch_rows)
            report.replay_seconds += time.perf_counter() - t0
            report.events_replayed += len(warm) + len(events)
            keys = events[[view.entity, view.timestamp]].reset_index(drop=True)
            want = offline.get_historical_features(
                keys, [view], dataset_version=dataset_version
            ).to_pandas()
            report.views.append(view.name)
            _compare(
                report,
                view,
                online.reset_index(drop=True),
                want,
                tolerance,
                failing.setdefault(source_key, set()),
            )
    finally:
        if store != "sqlite":  # a shared store: drop the fresh key space
            for fresh in replayed_views:
                online_store.drop_view(fresh.name)
        if owned:
            online_store.close()
        shutil.rmtree(folder, ignore_errors=True)
    # an event counts once per source data set, equal only if equal in every view
    report.events_compared = sum(sizes[key] for key in failing)
    report.rows_equal = report.events_compared - sum(len(rows) for rows in failing.values())
    report.seconds = time.perf_counter() - started
    return report


def _events(
    workspace: Workspace,
    view: FeatureView,
    begin: pd.Timestamp,
    finish: pd.Timestamp,
    dataset_version: int | None,
    retention_us: int,
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The source data set's key, the warm-up history before ``begin`` and the compared events.

    The warm-up covers the view's retention (delay + longest window + lateness): every event
    a window of a compared event can reach.
    """
    import pandas as pd

    from shipyard.data.catalog import get_dataset
    from shipyard.features.materialize_online import event_columns

    dataset = get_dataset(workspace, view.source, dataset_version)
    warm_from = begin - pd.Timedelta(microseconds=retention_us)
    history = dataset.read(columns=event_columns(view))
    ts = pd.to_datetime(history[view.timestamp])
    warm = history[(ts >= warm_from) & (ts < begin)]
    events = history[(ts >= begin) & (ts <= finish)]
    return f"{dataset.name}:v{dataset.version}", warm, events


def _replay_online(
    stream: StreamingView, warm: pd.DataFrame, events: pd.DataFrame, batch_rows: int
) -> pd.DataFrame:
    """Warm ``stream`` up, replay ``events`` in time order; their online features, same order."""
    import pandas as pd

    from shipyard.features.streaming import replay

    for _ in replay(stream, warm, batch_rows=batch_rows):
        pass
    ordered = events.sort_values(stream.view.timestamp, kind="stable")
    parts = [r.features for r in replay(stream, ordered, batch_rows=batch_rows)]
    online = pd.concat(parts, ignore_index=True)
    online.index = ordered.index
    return online.loc[events.index]


def _compare(
    report: ParityReport,
    view: FeatureView,
    online: pd.DataFrame,
    offline: pd.DataFrame,
    tolerance: float,
    failing: set[int],
) -> None:
    if len(online) != len(offline):
        raise DataValidationError(
            f"parity: view {view.name!r} has {len(online)} online rows but {len(offline)} "
            "offline rows for the same events."
        )
    entities = offline[view.entity].tolist()
    times = offline[view.timestamp].tolist()
    exact_names = exact_features(view)
    for feature in view.features:
        exact = feature.name in exact_names
        report.features_compared += 1
        got, want = online[feature.name].tolist(), offline[feature.name].tolist()
        bad = [
            i
            for i, (a, b) in enumerate(zip(got, want, strict=True))
            if not _equal(a, b, exact=exact, tolerance=tolerance)
        ]
        if not bad:
            continue
        failing.update(bad)
        report.mismatches[feature.name] = report.mismatches.get(feature.name, 0) + len(bad)
        examples = report.examples.setdefault(feature.name, [])
        for i in bad[: MAX_EXAMPLES - len(examples)]:
            examples.append(
                MismatchExample(
                    view.name, _plain(entities[i]), times[i], _plain(got[i]), _plain(want[i])
                )
            )
