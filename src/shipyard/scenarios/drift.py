"""The fraud drift scenario: serve the champion, replay three weeks, drift the third, catch it.

:func:`run_drift_scenario` (``shipyard scenario drift``) runs, in one workspace:

1. **A champion.** The workspace's ``fraud@champion``; without one, a small fast-mode fraud
   data set is simulated and one LightGBM is trained, evaluated and promoted (about a minute).
2. **The replay span**: the three weeks after the champion's evaluation window.
3. **The drifted traffic**, one of two kinds. :class:`AmountDrift` (the default): a drifted
   data set version, the data set copied and in the third week the amounts (``TX_AMOUNT``)
   of a seeded random 25 % of customers multiplied by 3, labels unchanged; written as a new
   version of the data set (its params record the drift), the champion's feature views
   materialized for it, and the champion's inputs read point-in-time.
   :class:`~shipyard.scenarios.mix.MixDrift`: the champion's inputs read from the data set
   itself, and in the third week a segment defined by inputs alone grows to 30 % of the
   rows by copies of its own rows with their labels (a pure covariate shift).
4. **Serving for real**: ``shipyard serve`` on a free 127.0.0.1 port; the three weeks sent
   in time order, one request per simulated hour with ``X-Event-Time``.
5. **Late labels**: weeks 1-2 first, then the third week's.
6. **Monitoring** after each label batch: weekly windows aligned to the replay (the
   reference is a week, so a daily window differs from it every weekend through
   ``TX_DURING_WEEKEND`` alone), drift with an effect-size floor of 0.1, CBPE-estimated and
   realized performance, alert rules; daily windows (not stored) date the drift's onset.
   The HTML report is written to ``out/report.html``.

Why this drift is realistic: a segment of cardholders starts spending several times more
(a price rise, a holiday season, a merchant category newly served by card) while fraud
stays what it was. The model learned that large amounts are fraud (the simulator's first
scenario labels every amount over 220 as fraud), so it scores these honest, larger
transactions as risky: its alert rate rises, its precision falls, and nothing in the
labels moved. It is the drift a monitor must catch before the labels arrive weeks later.

What it shows about estimation without labels: CBPE assumes the model's probabilities stay
calibrated, and this drift breaks exactly that (large amounts stop meaning fraud), so the
*estimated* AUC rises while the realized one falls; the drift report and the alert rate
catch it before the labels do. A new wave of compromised terminals (labels change, inputs
do not, until the delayed terminal-risk features see it) moves neither the inputs nor the
estimate in its first week: see docs/scenarios.md for both measured. The mix drift, where
the model stays calibrated and the traffic moves to rows it is less sure of, is the one
whose *estimated* precision falls before the labels arrive (:mod:`shipyard.scenarios.mix`).

Example::

    result = run_drift_scenario(ws, out=Path("drift-report"))
    print(result.first_drift_day, result.drifted_columns, result.report)
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, invalid_parameter
from shipyard.serialize import jsonable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.data.catalog import Dataset
    from shipyard.monitoring.run import MonitorRun
    from shipyard.registry.models import ModelVersion
    from shipyard.scenarios.mix import MixDrift
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]

ENDPOINT = "fraud-drift"
"""The scenario's endpoint: its prediction log and labels are replaced by each run."""
REPLAY_WEEKS = 3
DRIFT_WEEK = 3
"""The replayed week whose amounts are drifted (1-based)."""
SCENARIO_SIMULATOR = {
    "n_customers": 1_000,
    "n_terminals": 2_000,
    "n_days": 95,
    "start_date": "2018-04-01",
    "mode": "fast",
}
"""The data simulated when the workspace has no champion: 95 days cover 49 days of history
and the training protocol, then the three replayed weeks (about 200,000 transactions)."""
WINDOW = "7D"
"""Monitoring window: the reference profile is one week of traffic."""
DRIFT_FLOOR = 0.1
"""Jensen-Shannon floor of a drifting column (default 0.05): about a quarter standard
deviation. Below it, the slow natural drift of the 30-day aggregates over two weeks."""
THRESHOLD = 0.5
"""The serving decision threshold: precision, recall and alert rate are measured at it."""
RULE_MARGIN = 0.05
SCENARIO_TRAINING_START = "2018-05-20"
"""Training start of the scenario's own champion: its evaluation window is 2018-06-03 to
2018-06-09, so the replay runs from 2018-06-10 to 2018-06-30."""


@dataclass(frozen=True)
class AmountDrift:
    """What the drifted version changes: ``TX_AMOUNT`` x ``factor`` for a seeded ``share`` of
    customers from ``start`` (inclusive) to ``end`` (exclusive); labels are left as they were."""

    share: float = 0.25
    factor: float = 3.0
    seed: int = 0
    start: date | None = None
    end: date | None = None

    def check(self) -> None:
        """Raise ParameterError naming the field that is out of range."""
        owner = "AmountDrift"
        if not isinstance(self.share, int | float) or not 0 < self.share <= 1:
            raise invalid_parameter("share", owner, "a float in (0, 1]", self.share)
        if not isinstance(self.factor, int | float) or not self.factor > 0:
            raise invalid_parameter("factor", owner, "a float > 0", self.factor)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise invalid_parameter("seed", owner, "an int", self.seed)
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise invalid_parameter("end", owner, f"a date after start ({self.start})", self.end)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (what the drifted version's params record)."""
        return {
            "kind": "amount",
            "column": "TX_AMOUNT",
            "share": self.share,
            "factor": self.factor,
            "seed": self.seed,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
        }


def drift_amounts(
    transactions: pd.DataFrame,
    drift: AmountDrift,
    *,
    time_column: str = "TX_DATETIME",
    entity: str = "CUSTOMER_ID",
    amount: str = "TX_AMOUNT",
) -> tuple[pd.DataFrame, NDArray[np.int64]]:
    """A copy of ``transactions`` with ``drift`` applied, and the drifted customers (sorted).

    The segment is ``round(share * customers)`` customers drawn without replacement with
    ``seed`` from every customer of the table; only their rows with ``start <= day < end``
    change, and only in ``amount``.
    """
    import numpy as np
    import pandas as pd

    drift.check()
    missing = [c for c in (time_column, entity, amount) if c not in transactions.columns]
    if missing:
        raise DataValidationError(
            f"drift_amounts needs column(s) {missing}; the table has {list(transactions.columns)}"
        )
    customers = np.unique(transactions[entity].to_numpy())
    size = round(drift.share * len(customers))
    rng = np.random.default_rng(drift.seed)
    segment = np.sort(rng.choice(customers, size=size, replace=False)).astype(np.int64)
    hit = transactions[entity].isin(segment).to_numpy().copy()
    times = transactions[time_column]
    if drift.start is not None:
        hit &= (times >= pd.Timestamp(drift.start)).to_numpy()
    if drift.end is not None:
        hit &= (times < pd.Timestamp(drift.end)).to_numpy()
    drifted = transactions.copy()
    values = drifted[amount].to_numpy(dtype=np.float64, copy=True)
    values[hit] = values[hit] * drift.factor
    drifted[amount] = values
    return drifted, segment


@dataclass(frozen=True)
class ScenarioWindow:
    """One monitoring window of the replay: its drift and its performance."""

    start: date
    end: date
    """Last day of the window (inclusive)."""
    rows: int
    drifted_columns: tuple[str, ...]
    estimated: dict[str, float | None]
    """CBPE (no labels): ``roc_auc``, ``precision``, ``recall``."""
    estimated_interval: dict[str, tuple[float | None, float | None]]
    """Where the realized value should fall if the model stays calibrated (95 %, the
    estimate's sampling error), per estimated metric: ``(low, high)``."""
    realized: dict[str, float | None]
    """From the labels joined by the end: ``roc_auc``, ``average_precision``, ``precision``."""
    realized_before_labels: dict[str, float | None]
    """The same at the first run, before the drifted week's labels arrived."""
    alert_rate: float | None


@dataclass(frozen=True)
class DriftScenarioResult:
    """What the scenario did and found: the numbers a user reads and a test checks."""

    endpoint: str
    model: str
    version: int
    dataset: str
    reference_version: int
    drifted_version: int
    """The version replayed: the drifted copy (amounts), or the data set's own (mix: only
    the traffic's mix changes, no row does)."""
    replay_start: date
    drift_start: date
    replay_end: date
    """Last replayed day (inclusive)."""
    segment_size: int
    """Customers whose amounts were drifted (amounts), or the drifted week's rows of the
    segment once it grew (mix)."""
    drift: AmountDrift | MixDrift
    requests: int
    rows: int
    labels_before: int
    """Labels ingested for weeks 1-2 (before the first monitoring run)."""
    labels_after: int
    """Labels of the drifted week, ingested before the second run."""
    reference: dict[str, float]
    """The champion on its evaluation window: ``roc_auc``, ``precision``, ``alert_rate``."""
    windows: tuple[ScenarioWindow, ...]
    first_drift_day: date | None
    """First day whose daily window has a drifting column that no day before the drift had."""
    onset_columns: tuple[str, ...]
    """Those columns, on that day."""
    background_columns: tuple[str, ...]
    """Columns that drifted in daily windows before the drift (seasonality, slow drift)."""
    alerts_before_labels: tuple[str, ...]
    """Alerts open after the first run: ``rule: message``."""
    alerts: tuple[str, ...]
    """Alerts open after the second run (labels of the drifted week joined)."""
    report: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def drifted_windows(self) -> tuple[ScenarioWindow, ...]:
        """The windows whose data drifted."""
        return tuple(w for w in self.windows if w.drifted_columns)

    @property
    def false_alarm_windows(self) -> tuple[ScenarioWindow, ...]:
        """Windows before the drift whose data drifted (false alarms)."""
        return tuple(w for w in self.drifted_windows if w.end < self.drift_start)

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        """Columns drifting in the windows of the drifted week."""
        found: dict[str, None] = {}
        for w in self.windows:
            if w.start >= self.drift_start:
                found.update(dict.fromkeys(w.drifted_columns))
        return tuple(found)

    @property
    def caught(self) -> bool:
        """Whether monitoring found the drift in the drifted week and none before it."""
        return bool(self.drifted_columns) and not self.false_alarm_windows

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (dates as ISO text), with the derived findings."""
        from dataclasses import asdict

        data = asdict(self)
        data.update(
            drift=self.drift.to_dict(),
            report=str(self.report),
            drifted_columns=list(self.drifted_columns),
            false_alarm_windows=[w.start.isoformat() for w in self.false_alarm_windows],
            caught=self.caught,
        )
        out: dict[str, Any] = jsonable(data)
        return out

    def before(self) -> ScenarioWindow:
        """The last window before the drift."""
        return [w for w in self.windows if w.end < self.drift_start][-1]

    def during(self) -> ScenarioWindow:
        """The first window of the drifted week."""
        return next(w for w in self.windows if w.start >= self.drift_start)


def run_drift_scenario(
    workspace: Workspace,
    *,
    out: Path,
    progress: ProgressCallback | None = None,
    endpoint: str = ENDPOINT,
    drift: AmountDrift | MixDrift | None = None,
    rows_per_request: int = 200,
    simulator: dict[str, Any] | None = None,
) -> DriftScenarioResult:
    """Run the fraud drift scenario end to end (see the module docstring); report under ``out``.

    ``drift``: :class:`AmountDrift` (default) multiplies the amounts of a share of customers,
    :class:`~shipyard.scenarios.mix.MixDrift` grows a segment of the traffic; its dates are
    set to those of the drifted week. ``simulator`` overrides :data:`SCENARIO_SIMULATOR`
    when a champion must be trained.
    The endpoint's earlier prediction log, labels, monitoring points and alert rules are
    deleted first (its earlier alerts are resolved).
    """
    from dataclasses import replace

    drift = drift or AmountDrift()
    drift.check()
    if not isinstance(rows_per_request, int) or rows_per_request < 1:
        raise invalid_parameter(
            "rows_per_request", "run_drift_scenario", "an int >= 1", rows_per_request
        )
    clock = _Clock(progress)
    champion, dataset = fraud_champion(workspace, simulator, progress)
    clock.lap("champion")
    replay_start, drift_start, replay_end = _replay_span(champion, dataset)
    drift = replace(drift, start=drift_start, end=replay_end + timedelta(days=1))
    drifted, frame, segment_size = _drifted_frame(
        workspace, champion, dataset, drift, replay_start, replay_end, progress
    )
    clock.lap("drifted data")
    forget_endpoint(workspace, endpoint)
    out.mkdir(parents=True, exist_ok=True)
    keys = _serve_and_replay(workspace, champion, endpoint, frame, out, rows_per_request, progress)
    clock.lap("serving")
    reference = _reference_numbers(workspace, champion)
    _add_rules(workspace, endpoint, reference)
    times = frame[champion.lineage.columns.time]
    labels = keys.assign(label=frame[champion.lineage.columns.label].to_numpy())
    early = (times < _midnight(drift_start)).to_numpy()
    runs = _monitor_with_late_labels(
        workspace, endpoint, labels, early, replay_start, replay_end + timedelta(days=1)
    )
    clock.lap("monitoring")
    report = _write_report(workspace, endpoint, runs.second, out / "report.html")
    clock.lap("report")
    onset, onset_columns, background = _onset(runs.daily, drift_start)
    return DriftScenarioResult(
        endpoint=endpoint,
        model=champion.name,
        version=champion.version,
        dataset=dataset.name,
        reference_version=dataset.version,
        drifted_version=drifted.version,
        replay_start=replay_start,
        drift_start=drift_start,
        replay_end=replay_end,
        segment_size=segment_size,
        drift=drift,
        requests=int(keys["request_id"].nunique()),
        rows=len(keys),
        labels_before=int(early.sum()),
        labels_after=int((~early).sum()),
        reference=reference,
        windows=_windows(runs.first, runs.second, times),
        first_drift_day=onset,
        onset_columns=onset_columns,
        background_columns=background,
        alerts_before_labels=_alert_lines(runs.first),
        alerts=_alert_lines(runs.second),
        report=report,
        seconds=clock.laps,
    )


# -- steps ---------------------------------------------------------------------------------


def fraud_champion(
    workspace: Workspace, simulator: dict[str, Any] | None, progress: ProgressCallback | None
) -> tuple[ModelVersion, Dataset]:
    """The workspace's ``fraud@champion`` and its data set; without one, a small one is
    trained first (:func:`train_scenario_champion`, about a minute). Step 1 of the scenarios."""
    from shipyard.data.catalog import get_dataset
    from shipyard.errors import ModelNotFoundError
    from shipyard.registry.models import ModelRegistry
    from shipyard.solutions.fraud import MODEL_NAME

    registry = ModelRegistry(workspace)
    try:
        champion = registry.get(MODEL_NAME, "champion")
    except ModelNotFoundError:
        train_scenario_champion(workspace, simulator, progress)
        champion = registry.get(MODEL_NAME, "champion")
    lineage = champion.lineage
    return champion, get_dataset(workspace, lineage.dataset, lineage.dataset_version)


def train_scenario_champion(
    workspace: Workspace, simulator: dict[str, Any] | None, progress: ProgressCallback | None
) -> None:
    """Simulate the scenarios' data (fast mode, :data:`SCENARIO_SIMULATOR` updated by
    ``simulator``) and promote one LightGBM to ``fraud@champion``."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore
    from shipyard.solutions.fraud import FEATURES_REF, Protocol, train_suite

    params = {**SCENARIO_SIMULATOR, **(simulator or {})}
    dataset = simulate_fraud_dataset(workspace, FraudSimulator(**params), progress=progress)
    OfflineStore(workspace).materialize(
        load_views(FEATURES_REF), dataset.version, progress=progress
    )
    protocol = Protocol(start_date_training=SCENARIO_TRAINING_START, n_folds=1)
    report = train_suite(
        workspace,
        dataset,
        model_types=["lightgbm"],
        protocol=protocol,
        n_boot=0,
        gate_boot=200,
        promote=True,
        progress=progress,
    )
    if not report.promoted:
        raise DataValidationError(
            f"the scenario's model was not promoted to champion: {report.gate_message}"
        )


def _replay_span(champion: ModelVersion, dataset: Dataset) -> tuple[date, date, date]:
    """Step 2: (first replayed day, first drifted day, last replayed day)."""
    window = champion.lineage.eval_window
    if window is None:
        raise DataValidationError(
            f"{champion.name} v{champion.version} records no evaluation window in its "
            "lineage, so the scenario cannot tell which weeks come after it"
        )
    start = date.fromisoformat(window[1][:10]) + timedelta(days=1)
    end = start + timedelta(weeks=REPLAY_WEEKS, days=-1)
    last = dataset.time_max.date() if dataset.time_max is not None else None
    if last is None or last < end:
        raise DataValidationError(
            f"the replay needs data set {dataset.name} v{dataset.version} to cover the "
            f"{REPLAY_WEEKS} weeks after {champion.name} v{champion.version}'s evaluation "
            f"window ({start} to {end}); it ends on {last}. Run the scenario in a new "
            "workspace (shipyard init drift-demo && shipyard -w drift-demo scenario drift), "
            "where it trains its own champion on data that covers them."
        )
    return start, start + timedelta(weeks=DRIFT_WEEK - 1), end


def _drifted_frame(
    workspace: Workspace,
    champion: ModelVersion,
    dataset: Dataset,
    drift: AmountDrift | MixDrift,
    first: date,
    last: date,
    progress: ProgressCallback | None,
) -> tuple[Dataset, pd.DataFrame, int]:
    """Step 3: (the version replayed, the champion's rows to replay, the segment's size)."""
    if isinstance(drift, AmountDrift):
        drifted, customers = _drifted_version(workspace, dataset, drift, progress)
        return drifted, replay_frame(workspace, champion, drifted, first, last), len(customers)
    from shipyard.scenarios.mix import in_segment, shift_mix

    time_column = champion.lineage.columns.time
    frame, _ = shift_mix(
        replay_frame(workspace, champion, dataset, first, last), drift, time_column=time_column
    )
    week = (frame[time_column] >= _midnight(drift.start or first)).to_numpy()
    return dataset, frame, int((in_segment(frame, drift.segment) & week).sum())


def _drifted_version(
    workspace: Workspace, dataset: Dataset, drift: AmountDrift, progress: ProgressCallback | None
) -> tuple[Dataset, NDArray[np.int64]]:
    """Step 3: the drifted copy as a new version, with the champion's views materialized."""
    import pandas as pd

    from shipyard.data.catalog import write_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore
    from shipyard.solutions.fraud import FEATURES_REF

    transactions = dataset.read()
    if dataset.time_column is None:
        raise DataValidationError(f"data set {dataset.name} v{dataset.version} has no time column")
    drifted, segment = drift_amounts(transactions, drift, time_column=dataset.time_column)
    side = {}
    for table in ("customers", "terminals"):
        try:
            side[table] = pd.read_parquet(dataset.table_file(table))
        except KeyError:  # DatasetNotFoundError: a data set without that side table
            continue
    label = "TX_FRAUD" if "TX_FRAUD" in drifted.columns else None
    version = write_dataset(
        workspace,
        dataset.name,
        drifted,
        time_column=dataset.time_column,
        label_column=label,
        side_tables=side,
        params={**dataset.params, "drift": drift.to_dict(), "drifted_from": dataset.version},
        progress=progress,
    )
    OfflineStore(workspace).materialize(load_views(FEATURES_REF), version.version)
    return version, segment


def replay_frame(
    workspace: Workspace, champion: ModelVersion, drifted: Dataset, first: date, last: date
) -> pd.DataFrame:
    """The champion's inputs (point-in-time) from ``first`` to ``last`` (inclusive) of the data
    set version ``drifted``, in time order."""
    from shipyard.training.frames import Window, load_frame

    lineage = champion.lineage
    window = Window(
        drifted.name,
        drifted.version,
        first.isoformat(),
        last.isoformat(),
        lineage.views,
        lineage.columns.names,
    )
    frame = load_frame(workspace, window)
    return frame.sort_values(lineage.columns.time, kind="stable").reset_index(drop=True)


def forget_endpoint(workspace: Workspace, endpoint: str) -> None:
    """Delete what an earlier run left for the endpoint: prediction log, labels, stored points;
    remove its alert rules (which resolves their alerts). A rerun starts clean."""
    from sqlalchemy import delete

    from shipyard.monitoring.alerts import list_rules, remove_rule
    from shipyard.monitoring.labels import label_folder
    from shipyard.monitoring.logstore import parquet_folder
    from shipyard.serving.predlog import log_folder
    from shipyard.tables import monitor_points

    for rule in list_rules(workspace, endpoint):
        remove_rule(workspace, endpoint, rule.name)
    with workspace.engine.begin() as con:
        con.execute(delete(monitor_points).where(monitor_points.c.endpoint == endpoint))

    for folder in (
        log_folder(workspace, endpoint),
        parquet_folder(workspace, endpoint),
        label_folder(workspace, endpoint),
    ):
        shutil.rmtree(folder, ignore_errors=True)


def _serve_and_replay(
    workspace: Workspace,
    champion: ModelVersion,
    endpoint: str,
    frame: pd.DataFrame,
    out: Path,
    rows_per_request: int,
    progress: ProgressCallback | None,
) -> pd.DataFrame:
    """Step 4: serve the champion for real and replay the frame; (request_id, row) per row."""
    from shipyard.scenarios.replay import LocalServer, replay

    names = champion.input_schema.names
    target = f"{champion.name}@{champion.version}"
    with LocalServer(workspace, target, endpoint=endpoint, log=out / "serve.log") as server:
        return replay(
            server,
            frame[names],
            frame[champion.lineage.columns.time],
            prefix=f"drift-{uuid.uuid4().hex[:8]}",
            rows_per_request=rows_per_request,
            progress=progress,
        )


def _reference_numbers(workspace: Workspace, champion: ModelVersion) -> dict[str, float]:
    """The champion on its evaluation window: ROC AUC, precision and alert rate at THRESHOLD."""
    import numpy as np

    from shipyard.monitoring.reference import load_reference_scores
    from shipyard.training.metrics import roc_auc

    scores, labels = load_reference_scores(workspace, champion.name, champion.version)
    flagged = scores >= THRESHOLD
    precision = float(labels[flagged].mean()) if flagged.any() else float("nan")
    return {
        "roc_auc": float(roc_auc(labels, scores)),
        "precision": precision,
        "alert_rate": float(np.mean(flagged)),
    }


def _add_rules(workspace: Workspace, endpoint: str, reference: dict[str, float]) -> None:
    """The scenario's alert rules, relative to the champion's reference numbers."""
    from shipyard.monitoring.alerts import AlertRule, add_rule

    auc = reference["roc_auc"] - RULE_MARGIN
    precision = reference["precision"] / 2  # weekly precision moves by 0.1 unaided
    rate = 2 * reference["alert_rate"]
    rules = [
        AlertRule("data-drift", endpoint, "drift.verdict", ">=", 1.0,
                  description="some input or the score drifted from the reference week"),
        AlertRule("estimated-auc-drop", endpoint, "estimated.roc_auc", "<", round(auc, 4),
                  description="CBPE-estimated ROC AUC 0.05 under the reference's"),
        AlertRule("estimated-precision-drop", endpoint, "estimated.precision", "<",
                  round(reference["precision"] - RULE_MARGIN, 4),
                  description="CBPE-estimated precision 0.05 under the reference's"),
        AlertRule("alert-rate-up", endpoint, "alert_rate", ">", round(rate, 4),
                  description="twice the reference's share of scores over the threshold"),
        AlertRule("realized-precision-drop", endpoint, "realized.precision", "<",
                  round(precision, 4), description="precision under half the reference's"),
    ]  # fmt: skip
    for rule in rules:
        add_rule(workspace, rule, replace=True, actor="shipyard scenario drift")


@dataclass(frozen=True)
class _Runs:
    first: MonitorRun
    """Weekly, with the labels of the weeks before the drift."""
    second: MonitorRun
    """Weekly, with every label."""
    daily: MonitorRun
    """Daily, every label, not stored: dates the onset."""


def _monitor_with_late_labels(
    workspace: Workspace,
    endpoint: str,
    labels: pd.DataFrame,
    early: NDArray[np.bool_],
    start: date,
    end: date,
) -> _Runs:
    """Step 5 and 6: the early rows' labels, a run; the others' labels, a run; a daily run."""
    from shipyard.monitoring.labels import ingest_labels

    columns = ["request_id", "row", "label"]
    ingest_labels(workspace, endpoint, labels.loc[early, columns])  # weeks 1-2: late
    first = _monitor(workspace, endpoint, start, end, WINDOW, store=True)
    ingest_labels(workspace, endpoint, labels.loc[~early, columns])  # the drifted week's
    second = _monitor(workspace, endpoint, start, end, WINDOW, store=True)
    daily = _monitor(workspace, endpoint, start, end, "1D", store=False)
    return _Runs(first, second, daily)


def _monitor(
    workspace: Workspace, endpoint: str, start: date, end: date, window: str, *, store: bool
) -> MonitorRun:
    """One monitoring run over the replay with the scenario's drift floor."""
    from shipyard.monitoring.drift import JensenShannonDistance
    from shipyard.monitoring.report import DatasetDriftTest
    from shipyard.monitoring.run import run_monitor

    test = DatasetDriftTest(
        numeric_distance=JensenShannonDistance(floor=DRIFT_FLOOR),
        categorical_distance=JensenShannonDistance(floor=DRIFT_FLOOR),
    )
    return run_monitor(
        workspace,
        endpoint,
        start=start.isoformat(),
        end=end.isoformat(),
        window=window,
        threshold=THRESHOLD,
        time="event",
        test=test,
        store=store,
        evaluate_alerts=store,
        post=False,
    )


def _write_report(workspace: Workspace, endpoint: str, run: MonitorRun, path: Path) -> Path:
    from shipyard.monitoring.html import write_report
    from shipyard.monitoring.points import load_points

    return write_report(run, path, history=load_points(workspace, endpoint))


_ESTIMATED = ("roc_auc", "precision", "recall")
_REALIZED = ("roc_auc", "average_precision", "precision")


def _windows(
    first: MonitorRun, second: MonitorRun, times: pd.Series[pd.Timestamp]
) -> tuple[ScenarioWindow, ...]:
    """The scenario's view of each window of the second run (and the first's realized)."""
    import numpy as np

    def values(run: MonitorRun, prefix: str, names: tuple[str, ...], start: Any) -> dict[str, Any]:
        found = {p.metric: p.value for p in run.points if p.window_start == start}
        return {n: found.get(f"{prefix}.{n}") for n in names}

    def intervals(start: Any) -> dict[str, tuple[float | None, float | None]]:
        found = {p.metric: (p.low, p.high) for p in second.points if p.window_start == start}
        return {n: found.get(f"estimated.{n}", (None, None)) for n in _ESTIMATED}

    moments = times.to_numpy()
    out = []
    for window in sorted(second.windows, key=lambda w: w.window_start):
        start = window.window_start
        rows = int(
            np.sum((moments >= np.datetime64(start)) & (moments < np.datetime64(window.window_end)))
        )
        rate = {p.metric: p.value for p in second.points if p.window_start == start}
        out.append(
            ScenarioWindow(
                start=start.date(),
                end=(window.window_end - timedelta(days=1)).date(),
                rows=rows,
                drifted_columns=tuple(window.drift.drifted),
                estimated=values(second, "estimated", _ESTIMATED, start),
                estimated_interval=intervals(start),
                realized=values(second, "realized", _REALIZED, start),
                realized_before_labels=values(first, "realized", _REALIZED, start),
                alert_rate=rate.get("alert_rate"),
            )
        )
    return tuple(out)


def _onset(
    daily: MonitorRun, drift_start: date
) -> tuple[date | None, tuple[str, ...], tuple[str, ...]]:
    """(first day with a column drifting that no earlier day had, those columns, the
    columns that drifted on days before the drift)."""
    days = sorted(daily.windows, key=lambda w: w.window_start)
    background: dict[str, None] = {}
    for w in days:
        if w.window_start.date() < drift_start:
            background.update(dict.fromkeys(w.drift.drifted))
    for w in days:
        if w.window_start.date() >= drift_start:
            new = tuple(c for c in w.drift.drifted if c not in background)
            if new:
                return w.window_start.date(), new, tuple(background)
    return None, (), tuple(background)


def _alert_lines(run: MonitorRun) -> tuple[str, ...]:
    return tuple(f"{a.rule}: {a.message}" for a in run.alerts if str(a.status) != "resolved")


def _midnight(day: date) -> pd.Timestamp:
    import pandas as pd

    return pd.Timestamp(day)


class _Clock:
    """Seconds per step, and the steps done as progress."""

    STEPS = 5

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}
        self.progress = progress

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self.last, 3)
        self.last = now
        if self.progress is not None:
            self.progress("Drift scenario (steps)", len(self.laps), self.STEPS)
