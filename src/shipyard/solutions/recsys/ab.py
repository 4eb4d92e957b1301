"""An A/B test of two ranking versions on a live endpoint, with clicks simulated from the
held-out interactions, decided by the experiments module's sequential test.

**Traffic.** :func:`run_ab` starts an experiment on the endpoint
(:func:`shipyard.experiments.lifecycle.start_experiment`, metric ``ctr``, sticky on the
user: every request carries the header named by ``sticky_key``, ``user: <id>``, so a user
stays in one arm on every worker), then replays the test period over real HTTP
(``POST /invocations``, MLflow ``dataframe_split`` with the recommender's five columns) to
the running ``shipyard serve``. Each evaluated user sends ``steps`` requests: at step ``j``
(``j = 0 .. steps-1``) the session is the user's previous test items ``t_1 .. t_j`` (the
last ``session_length``; step 0 has none) and the request is sent at the user's moment
(requests go in the order of the test interaction they precede, ``X-Event-Time`` set to
its time), as :mod:`~shipyard.solutions.recsys.replay` replays them offline.

**Clicks.** A list's items are *relevant* when they are among the user's remaining test
items ``t_{j+1} .. t_n``. ``click_model="position"`` (default): the user scans the list
top-down and examines rank ``r`` with probability ``1 / log2(r + 1)`` (1 at the top, 0.29 at
rank 10); an examined relevant item is clicked. ``click_model="any"``: a list with a
relevant item is clicked (deterministic). A list is labelled 1 when it got a click, else 0,
posted by request id through :func:`shipyard.monitoring.labels.ingest_labels`. The draws are
``seed``-ed per request (k uniforms per list, whatever the list holds): the same lists and
seed give the same clicks. Which users land in which arm depends on the experiment's salt,
fresh for every experiment (by design: see docs/experiments.md).

**Decision.** :func:`~shipyard.experiments.lifecycle.experiment_status` on the log joined
with the labels: the mSPRT on per-user CTR (clicked lists over labelled lists, the delta
method over users), its always-valid interval (tuned to be narrowest at the replay's users
per arm: ``planned_units``), and the plot of the confidence sequence
every ``look_every`` users (:func:`shipyard.experiments.plots.plot_experiment`).

**Measured** (2026-11-28, "all" variant, two workers, session weight 0 against 256 on the
same 64-factor ALS, up to 30 steps per user, position clicks, about 11,250 requests in 21 s
per run): over 8 runs with fresh salts, the first decision was "treatment better" in 7
(after 100 to 650 users) and none in 1; CTR about 0.25-0.30 against 0.31-0.37. With 10
steps per user (shorter sessions) it rarely decides: the paired offline replay
(:mod:`~shipyard.solutions.recsys.replay`) is the sharper instrument at 671 users.

Example::

    result = run_ab(ws, "recs", control=1, treatment=2, split=split,
                    url="http://127.0.0.1:8080", steps=2, plot="ab.png")
    print(result.describe())
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.errors import RequestError, invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.experiments.lifecycle import Experiment, ExperimentStatus
    from shipyard.experiments.plots import Look
    from shipyard.solutions.recsys.data import Split
    from shipyard.workspace import Workspace

__all__ = ["CLICK_MODELS", "ABResult", "ArmTally", "click", "run_ab"]

CLICK_MODELS = ("position", "any")
COLUMNS = ("user", "session", "k", "exclude_seen", "genre")
"""The recommender's input columns, in the order the request sends them."""


@dataclass(frozen=True)
class ArmTally:
    """What one arm answered and how its lists were clicked (the client's own count)."""

    version: int
    users: int
    lists: int
    clicks: int

    @property
    def ctr(self) -> float:
        """Clicked lists over lists (NaN with none)."""
        return self.clicks / self.lists if self.lists else math.nan


@dataclass(frozen=True)
class ABResult:
    """An A/B run: the traffic sent, the clicks, and the experiment's status after it."""

    experiment: Experiment
    status: ExperimentStatus
    """The experiment's status once every label was posted (its decision is the test's)."""
    arms: dict[str, ArmTally]
    """Per arm (``control``, ``treatment``), as the client counted the answers."""
    requests: pd.DataFrame
    """One row per request: ``request_id, user, step, time, version, arm, clicked``."""
    misrouted: int
    """Answers from the other arm's version (workers not yet on the experiment's policy)."""
    looks: tuple[Look, ...] = ()
    """The test every ``look_every`` users (the confidence sequence)."""
    plot: Path | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def first_decision(self) -> Look | None:
        """The first look whose test decided: where a sequential A/B stops. The always-valid
        guarantee covers acting at that look; the status on all the data (``status``) may
        read "no decision yet" again later as the evidence wanders (docs/experiments.md)."""
        from shipyard.experiments.sequential import BETTER, WORSE

        return next((look for look in self.looks if look.decision in (BETTER, WORSE)), None)

    def describe(self) -> str:
        """The arms' CTR with intervals, the effect's always-valid interval, the looks."""
        from shipyard.experiments.plots import Z95

        status, e = self.status, self.experiment
        lines = [
            f"A/B {e.name} on {e.endpoint}: v{e.control} (control) vs v{e.treatment} "
            f"(treatment), split {e.split[0]:g}/{e.split[1]:g} sticky on {e.sticky_key}; "
            f"{len(self.requests):,} requests in {self.seconds:.1f} s"
        ]
        for arm in ("control", "treatment"):
            stats, tally = status.primary.arms[arm], self.arms[arm]
            half = Z95 * math.sqrt(stats.variance / stats.n) if stats.n else math.nan
            lines.append(
                f"  {arm} v{tally.version}: {stats.n} users, {tally.lists} lists, "
                f"{tally.clicks} clicked: CTR {stats.mean:.4f} "
                f"[{stats.mean - half:.4f}, {stats.mean + half:.4f}]"
            )
        test = status.primary.test
        if test is not None:
            lines.append(
                f"  effect {test.effect:+.4f} [{test.low:+.4f}, {test.high:+.4f}] "
                f"(always-valid {1 - e.alpha:.0%}), p {test.p_value:.3g}"
            )
        lines.append(f"  decision on all the data: {status.decision}")
        first = self.first_decision
        lines.append(
            "  first decision: none (no look decided)"
            if first is None
            else f"  first decision: {first.decision} at {first.n_control}/{first.n_treatment} "
            f"users, effect {first.effect:+.4f} [{first.low:+.4f}, {first.high:+.4f}] (the "
            "sequential test stops there)"
        )
        lines += [
            f"  look at {look.n_control}/{look.n_treatment} users: {look.effect:+.4f} "
            f"[{look.low:+.4f}, {look.high:+.4f}] {look.decision}"
            for look in self.looks
        ]
        if self.plot is not None:
            lines.append(f"  plot: {self.plot}")
        lines += [f"  note: {n}" for n in (*self.notes, *status.notes)]
        return "\n".join(lines)


def click(
    listed: Sequence[str], relevant: set[str], draws: NDArray[np.float64], model: str
) -> bool:
    """Whether a list gets a click under ``model`` (module doc); ``draws`` are k uniforms.

    Example: ``click(["1", "2"], {"2"}, np.array([0.9, 0.5]), "position")`` is True
    (rank 2 is examined with probability 0.63 > 0.5).
    """
    for rank, item in enumerate(listed, start=1):
        if item not in relevant:
            continue
        if model == "any" or draws[rank - 1] < 1.0 / math.log2(rank + 1):
            return True
    return False


def run_ab(
    workspace: Workspace,
    endpoint: str,
    *,
    control: int,
    treatment: int,
    split: Split,
    url: str,
    name: str | None = None,
    weights: Sequence[float] = (50, 50),
    steps: int = 1,
    users: int | None = None,
    k: int = 10,
    session_length: int = 20,
    click_model: str = "position",
    seed: int = 0,
    sticky_key: str = "user",
    admin_token: str | None = None,
    look_every: int = 50,
    plot: str | Path | None = None,
    reason: str = "A/B of two ranking versions on the test period",
) -> ABResult:
    """Run an A/B test of ``control`` against ``treatment`` on ``endpoint`` (module doc).

    ``url`` is the running server (``http://127.0.0.1:8080``) serving ``endpoint``;
    ``admin_token`` lets the run wait until every worker serves the experiment's split
    (else answers from the old policy are counted as misrouted and left out). ``split``'s
    test period supplies users, sessions and clicks; ``users`` keeps the first N evaluated
    users. The experiment is left running: stop it with ``stop_experiment``.
    """
    from shipyard.experiments.lifecycle import experiment_status, start_experiment
    from shipyard.experiments.plots import looks, plot_experiment
    from shipyard.monitoring.labels import ingest_labels

    owner = "run_ab"
    _check(owner, steps, users, k, session_length, click_model, look_every, url)
    started = time.perf_counter()
    plan = _plan(split, steps, users, session_length)
    experiment = start_experiment(
        workspace,
        name or f"ab-{endpoint}-{int(time.time())}",
        endpoint,
        control=control,
        treatment=treatment,
        split=weights,
        metric="ctr",
        sticky_key=sticky_key,
        reason=reason,
        # the design knows its size: the mSPRT interval is tuned to the users per arm
        planned_units=max(2, round(plan["user"].nunique() * min(weights) / sum(weights))),
    )
    if admin_token is not None:
        _wait_for_revision(url, admin_token, experiment.revision)
    answered = _send(url, endpoint, plan, k, sticky_key, experiment.name)
    frame = _clicks(plan, answered, k, click_model, seed, experiment)
    ingest_labels(
        workspace, endpoint, frame[["request_id", "clicked"]], key="request_id", label="clicked"
    )
    status = experiment_status(workspace, experiment.name, stop_on_guardrail=False)
    from shipyard.experiments.metrics import experiment_data

    sequence = tuple(looks(experiment, experiment_data(workspace, experiment), look_every))
    picture = None
    if plot is not None:
        picture = plot_experiment(workspace, experiment.name, plot, every=look_every)
    return ABResult(
        experiment=status.experiment,
        status=status,
        arms=_tally(frame, experiment),
        requests=frame,
        misrouted=int((frame["version"] != frame["assigned"]).sum()),
        looks=sequence,
        plot=picture,
        seconds=time.perf_counter() - started,
        notes=_notes(frame, admin_token),
    )


def _check(
    owner: str,
    steps: int,
    users: int | None,
    k: int,
    session_length: int,
    click_model: str,
    look_every: int,
    url: str,
) -> None:
    for param, value in (
        ("steps", steps),
        ("k", k),
        ("session_length", session_length),
        ("look_every", look_every),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_parameter(param, owner, "an integer >= 1", value)
    if users is not None and (isinstance(users, bool) or not isinstance(users, int) or users < 2):
        raise invalid_parameter("users", owner, "None or an integer >= 2", users)
    if click_model not in CLICK_MODELS:
        raise invalid_parameter("click_model", owner, f"one of {list(CLICK_MODELS)}", click_model)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid_parameter("url", owner, "the server's http:// address", url)


def _plan(split: Split, steps: int, limit: int | None, length: int) -> pd.DataFrame:
    """One row per request: ``user`` (MovieLens id), ``step``, ``time``, ``session``,
    ``relevant`` (the remaining test items), in the order they are sent."""
    import numpy as np
    import pandas as pd

    test = split.held_out("test")
    evaluated = np.unique(test["user"].to_numpy())
    if limit is not None:
        evaluated = evaluated[:limit]
    rows: list[dict[str, object]] = []
    for user, group in test[test["user"].isin(evaluated)].groupby("user", sort=True):
        items = [str(i) for i in split.item_ids[group["item"].to_numpy()]]
        times = group["time"].to_numpy()
        rows.extend(
            {
                "user": str(split.user_ids[int(user)]),
                "step": j,
                "time": int(times[j]),
                "session": " ".join(items[max(0, j - length) : j]),
                "relevant": frozenset(items[j:]),
            }
            for j in range(min(steps, len(items)))
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values(["time", "user", "step"], kind="mergesort").reset_index(drop=True)


def _wait_for_revision(url: str, token: str, revision: int, deadline_s: float = 60.0) -> None:
    """Until 20 answers in a row from the admin route say every worker serves ``revision``."""
    deadline = time.monotonic() + deadline_s
    in_a_row = 0
    while in_a_row < 20:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the server at {url} did not switch to the experiment's policy revision "
                f"{revision} within {deadline_s:.0f} s"
            )
        request = urllib.request.Request(
            f"{url}/admin/traffic", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        if answer.get("revision") == revision:
            in_a_row += 1
        else:
            in_a_row = 0
            time.sleep(0.2)


def _send(
    url: str, endpoint: str, plan: pd.DataFrame, k: int, sticky_key: str, prefix: str
) -> list[tuple[str, int, list[str]]]:
    """POST every planned request on one kept-alive connection; (request id, answering
    version, listed item ids) each."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    out = []
    try:
        for i, row in enumerate(plan.itertuples(index=False)):
            request_id = f"{prefix}-{i}"
            body = {
                "dataframe_split": {
                    "columns": list(COLUMNS),
                    "data": [[row.user, row.session, str(k), "true", ""]],
                }
            }
            headers = {
                "Content-Type": "application/json",
                "X-Request-Id": request_id,
                "X-Event-Time": str(row.time),
                sticky_key: str(row.user),
            }
            connection.request("POST", f"{parts.path.rstrip('/')}/invocations",
                               json.dumps(body).encode(), headers)  # fmt: skip
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RequestError(
                    response.status,
                    f"{url}/invocations answered {response.status} to request {request_id} "
                    f"(endpoint {endpoint!r}, user {row.user}): {payload[:500]!r}",
                )
            answer = json.loads(payload)["predictions"][0]
            if isinstance(answer, str):  # a JSON value sent as text
                answer = json.loads(answer)
            version = int(response.headers["X-Model-Version"])
            out.append((request_id, version, [str(e["item"]) for e in answer["items"]]))
    finally:
        connection.close()
    return out


def _clicks(
    plan: pd.DataFrame,
    answered: list[tuple[str, int, list[str]]],
    k: int,
    model: str,
    seed: int,
    experiment: Experiment,
) -> pd.DataFrame:
    """The requests with their answers, assigned arm and simulated click (module doc)."""
    import numpy as np

    from shipyard.serving.policy import Router

    router = Router(experiment.policy())
    arm_of = {experiment.control: "control", experiment.treatment: "treatment"}
    clicked, versions, ids = [], [], []
    for i, (row, (request_id, version, listed)) in enumerate(
        zip(plan.itertuples(index=False), answered, strict=True)
    ):
        draws = np.random.default_rng([seed, i]).random(k)
        clicked.append(int(click(listed, set(row.relevant), draws, model)))
        versions.append(version)
        ids.append(request_id)
    frame = plan.drop(columns=["relevant"]).assign(request_id=ids, version=versions)
    assigned = [router.choose(u) for u in frame["user"]]
    return frame.assign(
        assigned=assigned,
        arm=[arm_of.get(v, "other") for v in versions],
        clicked=clicked,
    )


def _tally(frame: pd.DataFrame, experiment: Experiment) -> dict[str, ArmTally]:
    kept = frame[frame["version"] == frame["assigned"]]
    out = {}
    for arm, version in (("control", experiment.control), ("treatment", experiment.treatment)):
        part = kept[kept["version"] == version]
        out[arm] = ArmTally(
            version, int(part["user"].nunique()), len(part), int(part["clicked"].sum())
        )
    return out


def _notes(frame: pd.DataFrame, admin_token: str | None) -> tuple[str, ...]:
    misrouted = int((frame["version"] != frame["assigned"]).sum())
    if not misrouted:
        return ()
    why = "" if admin_token else " (pass admin_token to wait for every worker to switch)"
    return (f"{misrouted} answer(s) came from the other arm's version and are left out{why}",)
