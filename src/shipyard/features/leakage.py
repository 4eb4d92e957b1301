"""The leakage audit: features must not know what was unknown when the row happened.

Three checks, from the cheapest to the most direct (``FRAUD_PROTOCOL.md``, "Leakage traps"):

* :func:`check_views` reads the definitions only. A feature that aggregates the label with a
  delay shorter than the label delay (a terminal risk over ``(t - n, t]`` includes the
  transaction's own label), a row feature or derived feature that reads the label at all, and
  any feature that reads a forbidden column (a column the simulator writes that nobody could
  observe, such as ``TX_FRAUD_SCENARIO``) is a violation. A derived feature inherits what the
  features it combines read; a row feature's SQL is parsed by DuckDB so that a column it
  mentions without declaring it counts too.
* :func:`audit_point_in_time` computes the views with the offline store's own SQL
  (:func:`~shipyard.features.offline.view_sql`) twice, over the whole data set and over a
  copy where every row after day D is dropped and every label later than D - delay is
  zeroed, and compares every feature of every row of the days up to D exactly (NaN equals
  NaN). This catches what no definition shows: SQL that reads later rows (``lead()``, a
  window over the whole table), sums whose rounding depends on later rows.
* :func:`audit_scores` trains one configuration on the same training window of both
  versions and compares the scores of the days up to D: what the issue's acceptance asks.
  :func:`point_in_time` computes both versions once for the audit and the frames it needs.

Example::

    report = check_views(EXTENDED_VIEWS, label="TX_FRAUD", label_delay=timedelta(days=7),
                         forbidden=FRAUD_FORBIDDEN)
    audit = audit_point_in_time(ws, dataset, EXTENDED_VIEWS, "2018-07-31",
                                label="TX_FRAUD", time="TX_DATETIME")
    audit.require()  # LeakageError naming every leaking feature
"""

from __future__ import annotations

import json
import time as clock
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from shipyard.errors import FeatureDefinitionError, LeakageError, invalid_parameter
from shipyard.features.definitions import Aggregation, Feature, FeatureView, RowFeature
from shipyard.features.offline import OfflineStore, _literal, _q, view_sql

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.training.trainers import ModelConfig
    from shipyard.workspace import Workspace

FRAUD_LABEL = "TX_FRAUD"
FRAUD_TIME = "TX_DATETIME"
FRAUD_LABEL_DELAY = timedelta(days=7)
FRAUD_FORBIDDEN: Mapping[str, str] = {
    "TX_FRAUD_SCENARIO": (
        "the generator's record of which fraud scenario it applied (0 for a genuine "
        "transaction): the label in disguise, and a bank never learns it even later"
    ),
    "mean_amount": (
        "the customer's true mean amount, a parameter the generator draws (customers side "
        "table): a bank can only estimate it from the card's history"
    ),
    "std_amount": "the customer's true amount spread, a generator parameter (see mean_amount)",
    "mean_nb_tx_per_day": (
        "the customer's true transaction rate, a generator parameter (see mean_amount)"
    ),
    "nb_terminals": (
        "how many terminals lie within the generator's radius of the customer: simulator "
        "geometry, not a fact about the card"
    ),
}
"""Columns of the simulated fraud data no feature may read, with the reason.

Every other column the simulator writes is observable: TRANSACTION_ID, TX_DATETIME,
CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT (what was charged, fraudulent multiples included),
TX_TIME_SECONDS and TX_TIME_DAYS (the time since the simulation's start), and the customer
and terminal locations of the side tables (an address, a merchant's location). TX_FRAUD is
the label: readable only through an aggregation delayed by at least the label delay. The
compromise draws (which terminals and cards are compromised each day) use public seeds,
``random_state=day``: they are never columns, so no definition can name them, but a feature
that re-draws them (a hard-coded list of terminals, a join with a table built from the draws)
is foreknowledge of the simulator; neither check below can recognise a literal list, so
reviews must.
"""


@dataclass(frozen=True)
class LeakageRules:
    """What a data set's audit needs: its label, time column, label delay, forbidden columns."""

    label: str
    time: str
    label_delay: timedelta
    forbidden: Mapping[str, str]


FRAUD_RULES = LeakageRules(FRAUD_LABEL, FRAUD_TIME, FRAUD_LABEL_DELAY, FRAUD_FORBIDDEN)
KNOWN_RULES: dict[str, LeakageRules] = {"fraud": FRAUD_RULES}
"""The rules of the data sets Shipyard simulates, by data set name (what the CLI audits with)."""

_ROW = "__shipyard_audit_row"
_FULL = "__audit_full"
_CUT = "__audit_truncated"


class Rule(Enum):
    """Why a feature's read is a leak."""

    LABEL_UNDELAYED = "label read with a delay shorter than the label delay"
    LABEL_IN_ROW = "label read row by row (a row or derived feature)"
    FORBIDDEN = "forbidden column"


@dataclass(frozen=True)
class Violation:
    """One leak a definition shows: which feature of which view reads which column, and why."""

    view: str
    feature: str
    column: str
    rule: Rule
    detail: str

    def __str__(self) -> str:
        return f"{self.view}.{self.feature} reads {self.column!r}: {self.detail}"


@dataclass(frozen=True)
class StaticReport:
    """What :func:`check_views` found: every violation, and how many features it read."""

    violations: tuple[Violation, ...]
    features_checked: int

    @property
    def ok(self) -> bool:
        """True when no feature leaks by its definition."""
        return not self.violations

    @property
    def leaking_features(self) -> list[str]:
        """Names of the features with a violation, in definition order, each once."""
        return list(dict.fromkeys(v.feature for v in self.violations))

    def require(self) -> None:
        """Raise LeakageError listing every violation, if there is one."""
        if self.violations:
            lines = "\n".join(f"  - {v}" for v in self.violations)
            raise LeakageError(
                f"{len(self.violations)} leak(s) in the feature definitions:\n{lines}"
            )


@dataclass(frozen=True)
class _Read:
    column: str
    delay: timedelta
    row: bool
    """Read row by row (a row feature, or a derived feature's source column)."""
    via: tuple[str, ...] = ()
    """The features it came through (a derived feature's inputs)."""


def check_views(
    views: Sequence[FeatureView],
    *,
    label: str,
    label_delay: timedelta,
    forbidden: Mapping[str, str] | Iterable[str] = (),
) -> StaticReport:
    """Check feature definitions for label reads without the delay and forbidden columns.

    ``forbidden`` is a set of column names, or ``{column: reason}`` (as
    :data:`FRAUD_FORBIDDEN`). Column names compare case-insensitively, as DuckDB's do.
    """
    if not isinstance(label_delay, timedelta) or label_delay < timedelta(0):
        raise invalid_parameter("label_delay", "check_views", "a timedelta >= 0", label_delay)
    reasons = (
        {k.lower(): v for k, v in forbidden.items()}
        if isinstance(forbidden, Mapping)
        else {str(c).lower(): "forbidden" for c in forbidden}
    )
    violations: list[Violation] = []
    checked = 0
    for view in views:
        if not isinstance(view, FeatureView):
            raise invalid_parameter("views", "check_views", "FeatureView objects", view)
        reads: dict[str, list[_Read]] = {}
        for feature in view.features:
            checked += 1
            reads[feature.name] = _reads(view, feature, reads)
            for read in reads[feature.name]:
                violation = _judge(view, feature, read, label, label_delay, reasons)
                if violation is not None:
                    violations.append(violation)
    return StaticReport(tuple(dict.fromkeys(violations)), checked)


def require_clean_views(
    views: Sequence[FeatureView],
    *,
    label: str,
    label_delay: timedelta,
    forbidden: Mapping[str, str] | Iterable[str] = (),
) -> None:
    """Raise LeakageError if :func:`check_views` finds any violation."""
    check_views(views, label=label, label_delay=label_delay, forbidden=forbidden).require()


def _reads(view: FeatureView, feature: Feature, earlier: dict[str, list[_Read]]) -> list[_Read]:
    zero = timedelta(0)
    if isinstance(feature, RowFeature):
        columns = dict.fromkeys([*feature.inputs, *expression_columns(feature.expression)])
        return [_Read(c, zero, row=True) for c in columns]
    if isinstance(feature, Aggregation):
        # the entity partitions and the timestamp orders the window: both are read at t
        found = [_Read(view.entity, zero, row=False), _Read(view.timestamp, zero, row=False)]
        if feature.column is not None:
            found.append(_Read(feature.column, feature.delay, row=False))
        return found
    found = []
    for name in feature.inputs:
        if name in earlier:
            found += [replace(r, via=(name, *r.via)) for r in earlier[name]]
        else:
            found.append(_Read(name, zero, row=True))
    return found


def _judge(
    view: FeatureView,
    feature: Feature,
    read: _Read,
    label: str,
    label_delay: timedelta,
    forbidden: Mapping[str, str],
) -> Violation | None:
    through = f" (through {' -> '.join(read.via)})" if read.via else ""
    column = read.column.lower()
    if column in forbidden:
        detail = f"forbidden: {forbidden[column]}{through}"
        return Violation(view.name, feature.name, read.column, Rule.FORBIDDEN, detail)
    if column != label.lower():
        return None
    if read.row:
        kind = type(feature).__name__
        detail = f"a {kind} reads the label of its own row, unknown when the row happens{through}"
        return Violation(view.name, feature.name, read.column, Rule.LABEL_IN_ROW, detail)
    if read.delay < label_delay:
        detail = (
            f"the label is aggregated with a delay of {_days(read.delay)}, shorter than the "
            f"label delay of {_days(label_delay)}: labels not yet known are read{through}"
        )
        return Violation(view.name, feature.name, read.column, Rule.LABEL_UNDELAYED, detail)
    return None


def _days(value: timedelta) -> str:
    return f"{value.total_seconds() / 86_400:g} day(s)"


def expression_columns(expression: str) -> list[str]:
    """The columns a DuckDB SQL expression mentions, as DuckDB's parser reads it (in order).

    An expression DuckDB cannot parse mentions nothing here; computing it fails anyway.
    """
    import duckdb

    con = duckdb.connect(config={"threads": 1})
    try:
        text = con.execute("SELECT json_serialize_sql(?)", [f"SELECT {expression}"]).fetchall()
    finally:
        con.close()
    tree = json.loads(text[0][0])
    if tree.get("error"):
        return []
    return list(dict.fromkeys(_column_refs(tree.get("statements", []))))


def _column_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("class") == "COLUMN_REF" and node.get("column_names"):
            yield str(node["column_names"][-1])
        for value in node.values():
            yield from _column_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _column_refs(value)


# -- the point-in-time audit ---------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """A feature whose values on days <= D change when the future is dropped and late labels
    are zeroed: how many rows, and the first of them (by time)."""

    view: str
    feature: str
    rows: int
    entity: Any
    time: datetime
    full: Any
    truncated: Any


@dataclass(frozen=True)
class AuditReport:
    """What :func:`audit_point_in_time` compared and found."""

    dataset: str
    dataset_version: int
    day: date
    delay_days: int
    rows_compared: int
    rows_dropped: int
    """Rows after ``day`` (the future the truncated copy lacks)."""
    labels_zeroed: int
    """Positive labels later than ``day - delay_days`` the truncated copy sets to 0."""
    features: tuple[tuple[str, str], ...]
    """(view, feature) of every feature compared, in definition order."""
    mismatches: tuple[Mismatch, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every compared feature is unchanged."""
        return not self.mismatches

    @property
    def conclusive(self) -> bool:
        """Whether the audit could fail: rows were compared, dropped, and labels zeroed."""
        return self.rows_compared > 0 and self.rows_dropped > 0 and self.labels_zeroed > 0

    @property
    def leaking_features(self) -> list[str]:
        """Names of the features that changed, in definition order."""
        return [m.feature for m in self.mismatches]

    def require(self) -> None:
        """Raise LeakageError naming every feature that changed."""
        if self.mismatches:
            lines = "\n".join(
                f"  - {m.view}.{m.feature}: {m.rows:,} row(s), first {m.entity} at {m.time}: "
                f"{m.full!r} with the full data, {m.truncated!r} without the future"
                for m in self.mismatches
            )
            raise LeakageError(
                f"{len(self.mismatches)} feature(s) of days <= {self.day} change when rows "
                f"after it are dropped and labels after {self.day - timedelta(self.delay_days)}"
                f" are zeroed:\n{lines}"
            )


def audit_point_in_time(
    workspace: Workspace,
    dataset: Dataset,
    views: Sequence[FeatureView],
    day: date | str,
    *,
    label: str,
    time: str,
    delay_days: int = 7,
) -> AuditReport:
    """Compare the views' features of days <= ``day`` with and without what was unknown then.

    The views are computed with the offline store's SQL over ``dataset`` and over a copy
    where rows after ``day`` are dropped and ``label`` is zeroed on days after
    ``day - delay_days`` (by the date of ``time``); every feature of every row of days <=
    ``day`` must be identical (NaN equals NaN).
    """
    started = clock.perf_counter()
    with point_in_time(workspace, dataset, views, day, label, time, delay_days) as computed:
        return computed.report(seconds_before=clock.perf_counter() - started)


def point_in_time_frames(
    workspace: Workspace,
    dataset: Dataset,
    views: Sequence[FeatureView],
    day: date | str,
    *,
    label: str,
    time: str,
    delay_days: int = 7,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of days <= ``day`` with their features, from the full and the truncated data.

    Both frames hold the source columns (the truncated one with its late labels zeroed) and
    every feature of ``views``, row for row in the same order: what :func:`audit_scores`
    trains and scores on.
    """
    with point_in_time(workspace, dataset, views, day, label, time, delay_days) as computed:
        return computed.frames()


@dataclass
class PointInTime:
    """The views computed over the full and the truncated data, in one DuckDB connection.

    :func:`point_in_time` opens it; :meth:`report` and :meth:`frames` read the same
    computation (what :func:`audit_point_in_time` and :func:`point_in_time_frames` do).
    """

    con: duckdb.DuckDBPyConnection
    dataset: Dataset
    views: Sequence[FeatureView]
    day: date
    label: str
    time: str
    delay_days: int
    columns: list[str]
    """The source data set's columns."""

    def report(self, seconds_before: float = 0.0) -> AuditReport:
        """Compare every feature of days <= day; ``seconds_before`` is the computing time."""
        started = clock.perf_counter()
        when = f"CAST({_q(self.time)} AS DATE)"
        counts = self.con.execute(
            f"SELECT count(*) FILTER (WHERE {when} > ?), count(*) FILTER (WHERE {when} <= ? "
            f"AND {when} > ? AND {_q(self.label)} <> 0) FROM {_FULL}",
            [self.day, self.day, self.day - timedelta(days=self.delay_days)],
        ).fetchall()[0]
        mismatches: list[Mismatch] = []
        compared = 0
        for i, view in enumerate(self.views):
            compared = max(compared, self._compare_count(i))
            mismatches += self._mismatches(i, view)
        return AuditReport(
            dataset=self.dataset.name,
            dataset_version=self.dataset.version,
            day=self.day,
            delay_days=self.delay_days,
            rows_compared=compared,
            rows_dropped=int(counts[0]),
            labels_zeroed=int(counts[1]),
            features=tuple((v.name, n) for v in self.views for n in v.feature_names),
            mismatches=tuple(mismatches),
            seconds=seconds_before + clock.perf_counter() - started,
        )

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The rows of days <= day with their features: (full data, truncated data)."""
        return self._frame(_FULL), self._frame(_CUT)

    def _compare_count(self, i: int) -> int:
        row = self.con.execute(
            f"SELECT count(*), count(a.{_q(_ROW)}), count(b.{_q(_ROW)}) FROM f{i}_full a "
            f"FULL JOIN f{i}_cut b USING ({_q(_ROW)})"
        ).fetchall()[0]
        if row[1] != row[0] or row[2] != row[0]:  # the truncation must keep these rows
            raise LeakageError(
                f"The truncated data lacks {row[0] - row[2]} row(s) of days <= {self.day} "
                f"(or has {row[0] - row[1]} more): the audit compares nothing reliably."
            )
        return int(row[0])

    def _mismatches(self, i: int, view: FeatureView) -> list[Mismatch]:
        differs = {n: f"a.{_q(n)} IS DISTINCT FROM b.{_q(n)}" for n in view.feature_names}
        counts = ", ".join(f"count(*) FILTER (WHERE {c})" for c in differs.values())
        join = f"FROM f{i}_full a JOIN f{i}_cut b USING ({_q(_ROW)})"
        totals = self.con.execute(f"SELECT {counts} {join}").fetchall()[0]
        found = []
        for (name, condition), rows in zip(differs.items(), totals, strict=True):
            if not rows:
                continue
            first = self.con.execute(
                f"SELECT a.{_q(view.entity)}, a.{_q(view.timestamp)}, a.{_q(name)}, b.{_q(name)} "
                f"{join} WHERE {condition} ORDER BY a.{_q(view.timestamp)}, {_q(_ROW)} LIMIT 1"
            ).fetchall()[0]
            found.append(Mismatch(view.name, name, int(rows), *first))
        return found

    def _frame(self, source: str) -> pd.DataFrame:
        suffix = "full" if source == _FULL else "cut"
        # a feature named like a source column replaces it, as in a training frame
        named = {n for view in self.views for n in view.feature_names}
        replaced = ", ".join(_q(c) for c in self.columns if c in named)
        selects = [f"s.* EXCLUDE ({replaced})" if replaced else "s.*"]
        joins = []
        for i, view in enumerate(self.views):
            selects += [f"f{i}.{_q(n)}" for n in view.feature_names]
            joins.append(f"JOIN f{i}_{suffix} f{i} USING ({_q(_ROW)})")
        sql = (
            f"SELECT {', '.join(selects)} FROM {source} s {' '.join(joins)} "
            f"WHERE CAST(s.{_q(self.time)} AS DATE) <= ? ORDER BY s.{_q(_ROW)}"
        )
        frame = self.con.execute(sql, [self.day]).df()
        return frame.drop(columns=[_ROW]).reset_index(drop=True)


@contextmanager
def point_in_time(
    workspace: Workspace,
    dataset: Dataset,
    views: Sequence[FeatureView],
    day: date | str,
    label: str,
    time: str,
    delay_days: int = 7,
) -> Iterator[PointInTime]:
    """Compute ``views`` over ``dataset`` and over its copy without what was unknown on
    ``day`` (rows after it dropped, ``label`` zeroed after ``day - delay_days``).

    Use it to read the audit and the frames from one computation::

        with point_in_time(ws, dataset, views, "2018-08-31", "TX_FRAUD", "TX_DATETIME") as pit:
            report, (full, truncated) = pit.report(), pit.frames()
    """
    import duckdb

    owner = "audit_point_in_time"
    first = _as_date(day, owner)
    if not isinstance(delay_days, int) or isinstance(delay_days, bool) or delay_days < 0:
        raise invalid_parameter("delay_days", owner, "an int >= 0 (days)", delay_days)
    if not views:
        raise invalid_parameter("views", owner, "at least one FeatureView", views)
    for column, role in ((label, "label"), (time, "time")):
        if column not in dataset.columns:
            raise invalid_parameter(
                role,
                owner,
                f"a column of data set {dataset.name} v{dataset.version} "
                f"({', '.join(dataset.columns)})",
                column,
            )
    for view in views:
        if view.source != dataset.name:
            raise FeatureDefinitionError(
                f"FeatureView {view.name!r} reads data set {view.source!r}, not "
                f"{dataset.name!r}: audit the views of one data set at a time."
            )
        view.check_columns(dataset.columns, where=f"data set {dataset.name} v{dataset.version}")
    dataset.verify()
    files = ", ".join(_literal(str(p)) for p in dataset.partition_files())
    con = OfflineStore(workspace).connect()
    try:
        con.execute(
            f"CREATE TABLE {_FULL} AS SELECT *, row_number() OVER (ORDER BY {_q(time)}) "
            f"AS {_q(_ROW)} FROM read_parquet([{files}])"
        )
        kind = dict(
            con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {_FULL})").fetchall()
        )
        when = f"CAST({_q(time)} AS DATE)"
        con.execute(
            f"CREATE TABLE {_CUT} AS SELECT * REPLACE (CAST(CASE WHEN {when} > ? THEN 0 "
            f"ELSE {_q(label)} END AS {kind[label]}) AS {_q(label)}) FROM {_FULL} "
            f"WHERE {when} <= ?",
            [first - timedelta(days=delay_days), first],
        )
        row = RowFeature(_ROW, _q(_ROW), inputs=(_ROW,))
        for i, view in enumerate(views):
            # one more row feature carries the row's identity through the view's own SQL
            tagged = replace(view, features=(*view.features, row))
            for source, suffix in ((_FULL, "full"), (_CUT, "cut")):
                sql = view_sql(tagged, source)
                try:
                    con.execute(
                        f"CREATE TABLE f{i}_{suffix} AS SELECT * FROM ({sql}) "
                        f"WHERE CAST({_q(view.timestamp)} AS DATE) <= ?",
                        [first],
                    )
                except duckdb.Error as exc:
                    raise FeatureDefinitionError(
                        f"Computing feature view {view.name!r} over data set {dataset.name} "
                        f"v{dataset.version} failed in DuckDB: {exc}"
                    ) from None
        yield PointInTime(con, dataset, views, first, label, time, delay_days, list(kind))
    finally:
        con.close()


def _as_date(value: date | str, owner: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise invalid_parameter("day", owner, "a date such as '2018-07-31'", value) from None


# -- the model-score audit -----------------------------------------------------------------


@dataclass(frozen=True)
class ScoreAudit:
    """What :func:`audit_scores` compared: scores of days <= D from both versions."""

    day: date
    train: tuple[date, date]
    rows_scored: int
    rows_different: int
    max_abs_difference: float
    first: dict[str, Any] | None
    """The first row (by time) whose score differs: its key columns and both scores."""

    @property
    def ok(self) -> bool:
        """True when every score is identical."""
        return self.rows_different == 0

    def describe_first(self) -> str:
        """The first differing row in words ('' when none differs)."""
        if self.first is None:
            return ""
        keys = ", ".join(
            f"{k} {v}" for k, v in self.first.items() if k not in ("full", "truncated")
        )
        return (
            f"{keys}: {self.first['full']:.6g} with the full data, "
            f"{self.first['truncated']:.6g} without the future"
        )

    def require(self) -> None:
        """Raise LeakageError when a score differs."""
        if not self.ok:
            raise LeakageError(
                f"{self.rows_different:,} of {self.rows_scored:,} scores of days <= {self.day} "
                f"change when the future is dropped and late labels are zeroed (largest "
                f"difference {self.max_abs_difference:.3g}; first: {self.describe_first()})."
            )


def audit_scores(
    full: pd.DataFrame,
    truncated: pd.DataFrame,
    features: Sequence[str],
    config: ModelConfig,
    *,
    train_start: date | str,
    train_end: date | str,
    day: date | str,
    label: str,
    time: str,
    delay_days: int = 7,
    keys: Sequence[str] = (),
) -> ScoreAudit:
    """Train ``config`` on days ``train_start..train_end`` of each frame; compare the scores.

    ``full`` and ``truncated`` are :func:`point_in_time_frames` (the same rows, in the same
    order). Each model learns from its own frame's labels, so the training window must end
    at or before ``day - delay_days``: later labels are unknown on ``day``, and a model
    trained on them differs for that reason alone. The configuration must be seeded (every
    Shipyard model type is by default). ``keys`` name the columns shown for a differing row.
    """
    import numpy as np

    from shipyard.training.evaluation import check_features

    owner = "audit_scores"
    first_day, last_day = _as_date(train_start, owner), _as_date(train_end, owner)
    audited = _as_date(day, owner)
    known = audited - timedelta(days=delay_days)
    if last_day > known:
        raise invalid_parameter(
            "train_end",
            owner,
            f"a date at or before day - delay_days = {known} (later labels are unknown on "
            f"{audited}, so the two models would differ by construction)",
            last_day.isoformat(),
        )
    if first_day > last_day:
        raise invalid_parameter("train_start", owner, f"a date <= {last_day}", first_day)
    if len(full) != len(truncated):
        raise invalid_parameter(
            "truncated", owner, f"the {len(full):,} rows of full, in its order", len(truncated)
        )
    scores = []
    for frame in (full, truncated):
        check_features(frame, [*features, time], label)
        days = frame[time].to_numpy().astype("datetime64[D]")
        train = (days >= np.datetime64(first_day)) & (days <= np.datetime64(last_day))
        scored = days <= np.datetime64(audited)
        model = config.fit(frame.loc[train, list(features)], frame.loc[train, label].to_numpy())
        scores.append(np.asarray(model.predict_proba(frame.loc[scored, list(features)])))
    a, b = scores
    different = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    first = None
    if different.any():
        position = int(np.flatnonzero(different)[0])
        row = full.loc[full[time].to_numpy().astype("datetime64[D]") <= np.datetime64(audited)]
        columns = [*keys, time] if keys else [time]
        first = {c: row[c].iloc[position] for c in columns}
        first.update(full=float(a[position]), truncated=float(b[position]))
    gap = np.abs(a - b)[different]
    return ScoreAudit(
        day=audited,
        train=(first_day, last_day),
        rows_scored=len(a),
        rows_different=int(different.sum()),
        max_abs_difference=float(np.nanmax(gap)) if gap.size and not np.isnan(gap).all() else 0.0,
        first=first,
    )
