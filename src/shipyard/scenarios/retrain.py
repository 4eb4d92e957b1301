"""The fraud retraining replay: weeks of served traffic, weekly retraining, a new fraud pattern.

:func:`run_retrain_scenario` (``shipyard scenario retrain``) runs, in one workspace, on a
simulated clock:

1. **Data and a champion.** A small fast-mode fraud data set; one LightGBM on the baseline
   views trained, evaluated and promoted (the drift scenario's way).
2. **A new fraud pattern** from week :data:`PATTERN_WEEK`: written as a new version of the
   data set (:func:`add_night_bursts`): each day a few cards never seen compromised start a
   burst of small purchases at night on terminals all over the map, for a couple of nights.
   The champion's features see it (``TX_DURING_NIGHT``, the card's 1-day count and mean
   amount) but its training data never held such frauds, so it ranks them low.
3. **Each week**: the week's transactions are replayed through ``shipyard serve`` (the live
   traffic policy: champion, or a canary split), the labels known by the week's end (a
   7-day delay) are ingested, and the retraining pipeline runs as of the week's end. Its
   canary, when a challenger passed its gates, takes the next week's traffic.
4. **Every decision explained**: the week's champion, the challenger's metric against it
   with the paired bootstrap interval, the decision (kept, promoted, rolled back) and why.

Example::

    result = run_retrain_scenario(ws, out=Path("retrain"))
    print(result.table())
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, invalid_parameter

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.pipelines.runs import PipelineRun, StepRecord
    from shipyard.registry.models import ModelVersion
    from shipyard.scenarios.replay import LocalServer
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]

ENDPOINT = "fraud-retrain"
"""The scenario's endpoint."""
MODEL = "fraud"
WEEKS = 7
PATTERN_WEEK = 3
"""The first replayed week (1-based) holding the new fraud pattern."""
SCENARIO_SIMULATOR = {
    "n_customers": 1_000,
    "n_terminals": 2_000,
    "n_days": 112,
    "start_date": "2018-04-01",
    "mode": "fast",
}
"""42 days of history, the champion's protocol (3 weeks) and 7 replayed weeks, about 210,000
transactions."""
TRAINING_START = "2018-05-13"
"""The champion trains on 2018-05-13..19 and is evaluated on 05-27..06-02: the replay runs
from 2018-06-03."""
ROWS_PER_REQUEST = 5
"""Small requests, so that a 5 % canary step gets enough of them within a couple of days."""
PACE_S = 0.3
"""Pause after each simulated hour of traffic sent while a canary runs (its steps poll)."""


@dataclass(frozen=True)
class NightBursts:
    """The new pattern: from ``start``, ``cards_per_day`` cards a day start a burst of
    ``per_night`` (low, high) purchases of ``amount`` (low, high) between ``hours`` (from, to)
    on each of ``nights`` nights, on random terminals; labelled fraud (scenario 4)."""

    start: date
    cards_per_day: int = 2
    nights: int = 2
    per_night: tuple[int, int] = (3, 6)
    amount: tuple[float, float] = (20.0, 60.0)
    hours: tuple[float, float] = (1.0, 5.0)
    seed: int = 0

    def check(self) -> None:
        """Raise ParameterError naming the field that is out of range."""
        owner = "NightBursts"
        for name in ("cards_per_day", "nights"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise invalid_parameter(name, owner, "an int >= 1", value)
        low, high = self.per_night
        if not 1 <= low <= high:
            raise invalid_parameter(
                "per_night", owner, "(low, high) with 1 <= low <= high", self.per_night
            )
        if not 0 <= self.amount[0] < self.amount[1]:
            raise invalid_parameter(
                "amount", owner, "(low, high) with 0 <= low < high", self.amount
            )
        if not 0 <= self.hours[0] < self.hours[1] <= 24:
            raise invalid_parameter("hours", owner, "(from, to) within 0..24", self.hours)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (what the new data set version's params record)."""
        return {
            "kind": "night_bursts",
            "start": self.start.isoformat(),
            "cards_per_day": self.cards_per_day,
            "nights": self.nights,
            "per_night": list(self.per_night),
            "amount": list(self.amount),
            "hours": list(self.hours),
            "seed": self.seed,
        }


def add_night_bursts(
    transactions: pd.DataFrame, terminals: pd.DataFrame, pattern: NightBursts
) -> pd.DataFrame:
    """A copy of the fraud ``transactions`` with the pattern's frauds added, sorted by time.

    New rows get fresh ``TRANSACTION_ID`` s, ``TX_FRAUD`` = 1 and ``TX_FRAUD_SCENARIO`` = 4;
    existing rows are unchanged. Cards are drawn with ``seed`` among those with no fraud
    before ``start`` and never twice.
    """
    import numpy as np
    import pandas as pd

    pattern.check()
    needed = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT",
              "TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO"]  # fmt: skip
    missing = [c for c in needed if c not in transactions.columns]
    if missing:
        raise DataValidationError(f"add_night_bursts needs column(s) {missing}")
    rng = np.random.default_rng(pattern.seed)
    times = transactions["TX_DATETIME"]
    origin = (
        times.iloc[0] - pd.to_timedelta(transactions["TX_TIME_SECONDS"].iloc[0], "s")
    ).normalize()
    start = pd.Timestamp(pattern.start)
    last_day = times.iloc[-1].normalize()
    before = transactions[times < start]
    clean = np.setdiff1d(
        np.unique(transactions["CUSTOMER_ID"]),
        np.unique(before.loc[before["TX_FRAUD"] == 1, "CUSTOMER_ID"]),
    )
    terminal_ids = terminals["TERMINAL_ID"].to_numpy()
    rows = _burst_rows(rng.permutation(clean), terminal_ids, pattern, start, last_day, rng)
    added = pd.DataFrame(rows, columns=["TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"])
    added["TX_DATETIME"] = added["TX_DATETIME"].dt.floor("s").astype(times.dtype)
    seconds = (added["TX_DATETIME"] - origin).dt.total_seconds().astype(np.int64)
    added["TX_TIME_SECONDS"] = seconds.astype(transactions["TX_TIME_SECONDS"].dtype)
    added["TX_TIME_DAYS"] = (seconds // 86_400).astype(transactions["TX_TIME_DAYS"].dtype)
    added["TRANSACTION_ID"] = np.arange(len(added)) + int(transactions["TRANSACTION_ID"].max()) + 1
    added["TX_FRAUD"] = 1
    added["TX_FRAUD_SCENARIO"] = 4
    for column in ("CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID", "TX_FRAUD", "TX_FRAUD_SCENARIO"):
        added[column] = added[column].astype(transactions[column].dtype)
    merged = pd.concat([transactions, added[list(transactions.columns)]], ignore_index=True)
    return merged.sort_values("TX_DATETIME", kind="stable").reset_index(drop=True)


def _burst_rows(
    pool: Any, terminals: Any, pattern: NightBursts, start: Any, last_day: Any, rng: Any
) -> list[tuple[Any, ...]]:
    """(time, card, terminal, amount) of each fraud: ``cards_per_day`` new cards a day from
    ``pool``, each on ``nights`` nights from the day it is drawn."""
    import pandas as pd

    rows: list[tuple[Any, ...]] = []
    day, used = start, 0
    while day <= last_day and used + pattern.cards_per_day <= len(pool):
        for card in pool[used : used + pattern.cards_per_day]:
            for night in range(pattern.nights):
                moment = day + pd.Timedelta(days=night)
                if moment > last_day:
                    break
                n = int(rng.integers(pattern.per_night[0], pattern.per_night[1] + 1))
                for hour in sorted(rng.uniform(*pattern.hours, size=n)):
                    terminal = int(rng.choice(terminals))
                    amount = round(float(rng.uniform(*pattern.amount)), 2)
                    rows.append(
                        (moment + pd.to_timedelta(float(hour), "h"), card, terminal, amount)
                    )
        used += pattern.cards_per_day
        day += pd.Timedelta(days=1)
    return rows


def scenario_guardrails() -> list[Any]:
    """The endpoint's guardrails: the defaults' bounds, judged on the scenario's traffic.

    A 5 % canary step sees about 40 requests (200 rows) in a simulated day and a half, so
    the per-request rules (latency, errors) are judged on 40 requests, the others on 200
    rows, as by default.
    """
    from dataclasses import replace

    from shipyard.monitoring.guardrails import PER_REQUEST, default_guardrails

    return [
        replace(g, min_count=40) if g.metric in PER_REQUEST else g for g in default_guardrails()
    ]


def scenario_canary() -> Any:
    """The scenario's canary: 5 -> 25 -> 100 %, 40 requests (200 rows) a step, 60 s a step."""
    from shipyard.pipelines.retrain import CanarySettings

    return CanarySettings(
        steps=(5, 25, 100), min_requests=40, step_timeout_s=60.0, poll_s=0.5, retry_after_s=0.0
    )


@dataclass(frozen=True)
class WeekDecision:
    """One replayed week and the retraining run at its end."""

    week: int
    start: date
    end: date
    """Last day of the week (inclusive); the run's clock is the next day."""
    pattern: bool
    """Whether the week's traffic holds the new pattern."""
    rows: int
    """Transactions replayed in the week."""
    champion: int
    """The champion version when the run started."""
    run_id: str
    status: str
    decision: str
    """``kept``, ``promoted``, ``rolled back``, ``waiting`` or ``failed``."""
    metric: str | None = None
    champion_value: float | None = None
    challenger_value: float | None = None
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None
    version: int | None = None
    """The challenger's version when it was registered."""
    canary: str | None = None
    """The canary's outcome and steps, when one ran."""
    why: str = ""
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrainScenarioResult:
    """What the replay did and decided, week by week."""

    endpoint: str
    model: str
    dataset: str
    pattern: NightBursts
    pattern_version: int
    """The data set version that holds the pattern."""
    pattern_frauds: int
    replay_start: date
    weeks: tuple[WeekDecision, ...]
    champion_before: int
    champion_after: int
    rows: int
    labels: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def shown(self) -> bool:
        """Whether the replay showed what it is for: the champion kept every week before the
        pattern and a challenger promoted in a week with it."""
        before = [w for w in self.weeks if not w.pattern]
        after = [w for w in self.weeks if w.pattern]
        return all(w.decision == "kept" for w in before) and any(
            w.decision == "promoted" for w in after
        )

    @property
    def decisions(self) -> tuple[str, ...]:
        """The decision of each week's run, in order."""
        return tuple(w.decision for w in self.weeks)

    def table(self) -> str:
        """A text table: week, champion, challenger vs champion with its CI, decision, why."""
        metric = next((w.metric for w in self.weeks if w.metric), "average_precision")
        compared = f"challenger vs champion ({metric}, 95% CI)"
        lines = [f"week  days                     pattern  champion  {compared:<50} decision"]
        for w in self.weeks:
            if w.delta is None:
                versus = "-"
            else:
                versus = (
                    f"{w.challenger_value:.3f} vs {w.champion_value:.3f}: "
                    f"{w.delta:+.3f} [{w.delta_low:+.3f}, {w.delta_high:+.3f}]"
                )
            lines.append(
                f"{w.week:>4}  {w.start}..{w.end}   {'yes' if w.pattern else 'no':<7}  "
                f"v{w.champion:<8} {versus:<50} {w.decision}"
            )
            lines.append(f"      why: {w.why}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (dates as ISO text)."""
        from dataclasses import asdict

        from shipyard.serialize import jsonable

        data = asdict(self)
        data["pattern"] = self.pattern.to_dict()
        data["decisions"] = list(self.decisions)
        out: dict[str, Any] = jsonable(data)
        return out


def run_retrain_scenario(
    workspace: Workspace,
    *,
    out: Path,
    weeks: int = WEEKS,
    pattern_week: int = PATTERN_WEEK,
    endpoint: str = ENDPOINT,
    simulator: dict[str, Any] | None = None,
    n_boot: int = 1000,
    progress: ProgressCallback | None = None,
) -> RetrainScenarioResult:
    """Run the retraining replay end to end (see the module docstring) in a fresh workspace.

    ``weeks`` replayed weeks, the new pattern from week ``pattern_week``; ``simulator``
    overrides :data:`SCENARIO_SIMULATOR`. The server's log goes to ``out/serve.log``.
    """
    from shipyard.monitoring.guardrails import add_guardrail
    from shipyard.scenarios.replay import LocalServer

    _check_weeks(weeks, pattern_week)
    clock = time.perf_counter()
    dataset, champion = _champion(workspace, simulator, progress)
    replay_start = _replay_start(champion, dataset, weeks)
    pattern = NightBursts(start=replay_start + timedelta(weeks=pattern_week - 1))
    seconds = {"data and champion": round(time.perf_counter() - clock, 1)}
    out.mkdir(parents=True, exist_ok=True)
    for guardrail in scenario_guardrails():
        add_guardrail(workspace, endpoint, guardrail, actor="shipyard scenario retrain")
    state = _Replay(workspace, endpoint, champion, dataset.name, n_boot)
    target = f"{MODEL}@champion"
    with LocalServer(workspace, target, endpoint=endpoint, log=out / "serve.log") as server:
        state.traffic = _Traffic(workspace, endpoint, server, champion)
        state.traffic.add(state.week_frame(replay_start, dataset.version))
        for week in range(1, weeks + 1):
            start = replay_start + timedelta(weeks=week - 1)
            if week + 1 == pattern_week:  # the new version arrives with the pattern's week
                state.pattern_version = _pattern_version(workspace, dataset, pattern)
            state.run_week(week, start, pattern, weeks)
            if progress is not None:
                progress("Retraining replay (weeks)", week, weeks)
    seconds["replay and retraining"] = round(time.perf_counter() - clock, 1)
    return RetrainScenarioResult(
        endpoint=endpoint,
        model=MODEL,
        dataset=dataset.name,
        pattern=pattern,
        pattern_version=state.pattern_version,
        pattern_frauds=_pattern_frauds(workspace, dataset.name, state.pattern_version),
        replay_start=replay_start,
        weeks=tuple(state.decisions),
        champion_before=champion.version,
        champion_after=_champion_version(workspace),
        rows=state.traffic.sent_rows,
        labels=state.traffic.labelled,
        seconds=seconds,
    )


def _check_weeks(weeks: int, pattern_week: int) -> None:
    owner = "run_retrain_scenario"
    if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= 10:
        raise invalid_parameter("weeks", owner, "an int in [1, 10]", weeks)
    if isinstance(pattern_week, bool) or not isinstance(pattern_week, int):
        raise invalid_parameter("pattern_week", owner, f"an int in [2, {weeks}]", pattern_week)
    if not 2 <= pattern_week <= weeks:
        raise invalid_parameter("pattern_week", owner, f"an int in [2, {weeks}]", pattern_week)


def _champion(
    workspace: Workspace, simulator: dict[str, Any] | None, progress: ProgressCallback | None
) -> tuple[Dataset, ModelVersion]:
    """Simulate the data and promote one LightGBM to champion; refuse a used workspace."""
    from shipyard.data.fraud_simulator import FraudSimulator, simulate_fraud_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore
    from shipyard.registry.models import ModelRegistry
    from shipyard.solutions.fraud import FEATURES_REF, Protocol, train_suite

    registry = ModelRegistry(workspace)
    if registry.versions(MODEL):
        raise DataValidationError(
            f"The retraining scenario needs a workspace without a {MODEL!r} model (it trains "
            f"its own champion and replaces it); {workspace.root} has "
            f"{len(registry.versions(MODEL))} version(s). Run it in a new workspace: "
            "shipyard -w retrain-demo scenario retrain."
        )
    params = {**SCENARIO_SIMULATOR, **(simulator or {})}
    dataset = simulate_fraud_dataset(workspace, FraudSimulator(**params), progress=progress)
    OfflineStore(workspace).materialize(load_views(FEATURES_REF), dataset.version)
    report = train_suite(
        workspace,
        dataset,
        model_types=["lightgbm"],
        protocol=Protocol(start_date_training=TRAINING_START, n_folds=1),
        n_boot=0,
        gate_boot=200,
        promote=True,
        progress=progress,
    )
    if not report.promoted:
        raise DataValidationError(
            f"the scenario's champion was not promoted: {report.gate_message}"
        )
    return dataset, registry.get(MODEL, "champion")


def _replay_start(champion: ModelVersion, dataset: Dataset, weeks: int) -> date:
    window = champion.lineage.eval_window
    if window is None:
        raise DataValidationError(f"{MODEL} v{champion.version} records no evaluation window")
    start = date.fromisoformat(window[1][:10]) + timedelta(days=1)
    end = start + timedelta(weeks=weeks, days=-1)
    last = dataset.time_max.date() if dataset.time_max is not None else None
    if last is None or last < end:
        raise DataValidationError(
            f"The replay of {weeks} weeks needs data up to {end}; data set {dataset.name} "
            f"v{dataset.version} ends on {last}: simulate more days (n_days)."
        )
    return start


def _pattern_version(workspace: Workspace, dataset: Dataset, pattern: NightBursts) -> int:
    """The data set with the pattern, as a new version with the champion's views materialized."""
    import pandas as pd

    from shipyard.data.catalog import write_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore
    from shipyard.solutions.fraud import FEATURES_REF

    side = {t: pd.read_parquet(dataset.table_file(t)) for t in ("customers", "terminals")}
    table = add_night_bursts(dataset.read(), side["terminals"], pattern)
    version = write_dataset(
        workspace,
        dataset.name,
        table,
        time_column="TX_DATETIME",
        label_column="TX_FRAUD",
        side_tables=side,
        params={**dataset.params, "pattern": pattern.to_dict(), "derived_from": dataset.version},
    )
    OfflineStore(workspace).materialize(load_views(FEATURES_REF), version.version)
    return version.version


def _pattern_frauds(workspace: Workspace, name: str, version: int) -> int:
    from shipyard.data.catalog import get_dataset

    if not version:
        return 0
    frame = get_dataset(workspace, name, version).read(columns=["TX_FRAUD_SCENARIO"])
    return int((frame["TX_FRAUD_SCENARIO"] == 4).sum())


def _champion_version(workspace: Workspace) -> int:
    from shipyard.registry.models import ModelRegistry

    return ModelRegistry(workspace).get(MODEL, "champion").version


class _Traffic:
    """The replayed stream: week frames in time order, a cursor, the keys of what was sent."""

    def __init__(
        self, workspace: Workspace, endpoint: str, server: LocalServer, champion: ModelVersion
    ) -> None:
        self.workspace = workspace
        self.endpoint = endpoint
        self.server = server
        self.names = champion.input_schema.names
        self.roles = champion.lineage.columns
        self.frames: list[pd.DataFrame] = []
        self.sent: list[pd.DataFrame] = []
        self.cursor = 0
        self.labelled_until: date | None = None
        self.labelled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prefix = f"retrain-{uuid.uuid4().hex[:8]}"
        self._calls = 0

    @property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        if len(self.frames) > 1:
            self.frames = [pd.concat(self.frames, ignore_index=True)]
        return self.frames[0]

    @property
    def sent_rows(self) -> int:
        return self.cursor

    def add(self, frame: pd.DataFrame) -> None:
        """Append a later week's rows (in time order) to the stream."""
        self.frames.append(frame)

    def send_until(self, moment: pd.Timestamp, pace_s: float = 0.0) -> int:
        """Send every unsent row before ``moment``, an hour at a time; rows sent."""
        import numpy as np

        frame = self.frame
        times = frame[self.roles.time].to_numpy()
        stop = int(np.searchsorted(times, np.datetime64(moment), side="left"))
        sent = 0
        while self.cursor < stop and not (pace_s and self._stop.is_set()):
            hour = times[self.cursor].astype("datetime64[h]") + np.timedelta64(1, "h")
            end = min(stop, int(np.searchsorted(times, hour, side="left")) if pace_s else stop)
            sent += self._send(frame.iloc[self.cursor : end])
            if pace_s:
                time.sleep(pace_s)
        return sent

    def _send(self, rows: pd.DataFrame) -> int:
        from shipyard.scenarios.replay import replay

        self._calls += 1
        keys = replay(
            self.server,
            rows[self.names],
            rows[self.roles.time],
            prefix=f"{self._prefix}-{self._calls:05d}",
            rows_per_request=ROWS_PER_REQUEST,
        )
        self.sent.append(
            keys.assign(
                label=rows[self.roles.label].to_numpy(), time=rows[self.roles.time].to_numpy()
            )
        )
        self.cursor += len(rows)
        return len(rows)

    def pump(self, until: pd.Timestamp) -> None:
        """Start sending the stream up to ``until`` in the background, an hour per PACE_S."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.send_until, args=(until, PACE_S), name="retrain-traffic", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the background sending (after its current hour)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def ingest_labels(self, known_until: date) -> int:
        """Ingest the labels of sent rows of days up to ``known_until`` not ingested yet."""
        import numpy as np
        import pandas as pd

        from shipyard.monitoring.labels import ingest_labels

        if not self.sent:
            return 0
        sent = pd.concat(self.sent, ignore_index=True)
        self.sent = [sent]
        days = sent["time"].to_numpy().astype("datetime64[D]")
        take = days <= np.datetime64(known_until)
        if self.labelled_until is not None:
            take &= days > np.datetime64(self.labelled_until)
        self.labelled_until = known_until
        if not take.any():
            return 0
        ingest_labels(self.workspace, self.endpoint, sent.loc[take, ["request_id", "row", "label"]])
        self.labelled += int(take.sum())
        return int(take.sum())


class _Replay:
    """The weekly loop's state: the stream, the runs, the decisions."""

    def __init__(
        self,
        workspace: Workspace,
        endpoint: str,
        champion: ModelVersion,
        dataset: str,
        n_boot: int,
    ) -> None:
        self.workspace = workspace
        self.endpoint = endpoint
        self.champion = champion
        self.dataset = dataset
        self.n_boot = n_boot
        self.traffic: _Traffic
        self.pattern_version = 0
        self.decisions: list[WeekDecision] = []
        self.waiting: str | None = None
        """The run waiting for canary traffic, resumed at the next week's end."""
        self.pumped = 0

    def week_frame(self, start: date, version: int | None = None) -> pd.DataFrame:
        """The champion's inputs, time, label and entity over one week of the latest version."""
        from shipyard.data.catalog import get_dataset
        from shipyard.training.frames import Window, load_frame

        data = get_dataset(self.workspace, self.dataset, version)
        lineage = self.champion.lineage
        end = start + timedelta(days=6)
        window = Window(
            data.name, data.version, start.isoformat(), end.isoformat(), lineage.views,
            lineage.columns.names,
        )  # fmt: skip
        frame = load_frame(self.workspace, window)
        return frame.sort_values(lineage.columns.time, kind="stable").reset_index(drop=True)

    def run_week(self, week: int, start: date, pattern: NightBursts, weeks: int) -> None:
        """Replay what is left of the week, ingest the labels known by its end, retrain."""
        import pandas as pd

        now = start + timedelta(weeks=1)
        before = self.traffic.sent_rows
        self.traffic.send_until(pd.Timestamp(now))
        rows = self.traffic.sent_rows - before + self.pumped
        self.pumped = 0
        self.traffic.ingest_labels(now - timedelta(days=8))
        if week < weeks:
            self.traffic.add(self.week_frame(now))
        champion = _champion_version(self.workspace)
        run = self._retrain(now, pd.Timestamp(now + timedelta(weeks=1)))
        self.decisions.append(
            _week_decision(week, start, pattern.start <= start, rows, champion, run)
        )

    def _retrain(self, now: date, until: pd.Timestamp) -> PipelineRun:
        """Run (or resume) the retraining pipeline as of ``now``; its canary gets live traffic."""
        from shipyard.pipelines.retrain import retraining_pipeline
        from shipyard.pipelines.runs import StepStatus, get_run, resume_run, run_pipeline

        before = self.traffic.sent_rows

        def on_step(record: StepRecord) -> None:
            if record.name != "canary":
                return
            if record.status == StepStatus.RUNNING:
                self.traffic.pump(until)
            else:
                self.traffic.stop()

        try:
            if self.waiting is not None:
                waiting = get_run(self.workspace, self.waiting)
                clock = waiting.graph["steps"][0]["params"]["now"]
                pipeline = self._pipeline(clock, retraining_pipeline)
                run = resume_run(self.workspace, pipeline, self.waiting, on_step=on_step)
            else:
                pipeline = self._pipeline(now.isoformat(), retraining_pipeline)
                run = run_pipeline(
                    self.workspace,
                    pipeline,
                    trigger={"kind": "schedule", "every": "7D", "clock": now.isoformat()},
                    actor="shipyard scenario retrain",
                    on_step=on_step,
                )
        finally:
            self.traffic.stop()
        self.pumped = self.traffic.sent_rows - before  # the next week's, sent to the canary
        self.waiting = run.run_id if str(run.status) == "waiting" else None
        return run

    def _pipeline(self, clock: str, factory: Any) -> Any:
        return factory(
            self.endpoint,
            MODEL,
            self.dataset,
            now=clock,
            n_boot=self.n_boot,
            canary=scenario_canary().to_dict(),
        )


def _week_decision(
    week: int, start: date, pattern: bool, rows: int, champion: int, run: PipelineRun
) -> WeekDecision:
    """The week's row of the table, from the run's step outputs."""
    base: dict[str, Any] = {
        "week": week,
        "start": start,
        "end": start + timedelta(days=6),
        "pattern": pattern,
        "rows": rows,
        "champion": champion,
        "run_id": run.run_id,
        "status": str(run.status),
    }
    outputs = {n: dict(r.outputs) for n, r in run.steps.items() if r.outputs is not None}
    evaluation = outputs.get("evaluate", {})
    compared: dict[str, Any] = {
        "metric": evaluation.get("metric"),
        "champion_value": evaluation.get("champion"),
        "challenger_value": evaluation.get("challenger"),
        "delta": evaluation.get("delta"),
        "delta_low": evaluation.get("delta_low"),
        "delta_high": evaluation.get("delta_high"),
    }
    canary = outputs.get("canary", {})
    steps = ", ".join(f"{s['percent']:g}% {s['decision']}" for s in canary.get("steps", []))
    canary_text = f"{canary['outcome']} ({steps})" if canary.get("steps") else None
    if "decision" in outputs:
        decided = outputs["decision"]
        return WeekDecision(
            **base,
            **compared,
            decision=decided["decision"],
            version=outputs.get("register", {}).get("version"),
            canary=canary_text,
            why=_why(outputs),
            reasons=tuple(decided["reasons"]),
        )
    if str(run.status) == "waiting":
        why = (run.wait or {}).get("reason", "waiting")
        return WeekDecision(**base, **compared, decision="waiting", why=str(why))
    return WeekDecision(**base, **compared, decision="failed", why=str(run.error))


def _why(outputs: dict[str, dict[str, Any]]) -> str:
    """The one reason that decided the week: the failed gate, or the canary's outcome."""
    gates = outputs.get("gates", {})
    if not gates.get("passed", False):
        failed = [g for g in gates.get("gates", []) if not g["passed"]]
        return "; ".join(f"{g['gate']} gate: {g['reason']}" for g in failed) or gates.get(
            "reason", ""
        )
    return str(outputs.get("canary", {}).get("reason", gates.get("reason", "")))
