"""Alert rules on stored points: streaks, resolution, acknowledgement and a real webhook."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shipyard.errors import ParameterError
from shipyard.monitoring.alerts import (
    AlertRule,
    AlertStatus,
    acknowledge,
    add_rule,
    evaluate_rules,
    list_alerts,
    list_rules,
    remove_rule,
)
from shipyard.monitoring.points import Point, store_points
from shipyard.workspace import Workspace

DAY0 = datetime(2026, 11, 15)
AMOUNT = "drift.distance.TX_AMOUNT"


def store(
    ws: Workspace,
    values: Sequence[float | None],
    *,
    metric: str = AMOUNT,
    group: str = "fraud v3",
    first: int = 0,
    skip: Sequence[int] = (),
) -> None:
    """Daily points of one series, window ``first + i`` holding ``values[i]``."""
    store_points(
        ws,
        [
            Point(
                "fraud",
                group,
                metric,
                DAY0 + timedelta(days=first + i),
                DAY0 + timedelta(days=first + i + 1),
                value,
            )
            for i, value in enumerate(values)
            if first + i not in skip
        ],
    )


def rule(**changes: Any) -> AlertRule:
    values: dict[str, Any] = {
        "name": "amount-drift",
        "endpoint": "fraud",
        "metric": AMOUNT,
        "op": ">",
        "threshold": 0.1,
        "windows": 3,
    }
    values.update(changes)
    return AlertRule(**values)


# -- a real receiver on 127.0.0.1 -------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    answer: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def events(self) -> list[tuple[str, int]]:
        return [(body["event"], body["id"]) for body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(json.loads(body))
            state.headers.append(dict(self.headers))
            self.send_response(state.answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/shipyard"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/down"


# -- streaks ---------------------------------------------------------------------------------


def test_n_consecutive_breaches_raise_exactly_one_alert(workspace: Workspace) -> None:
    add_rule(workspace, rule())
    store(workspace, [0.05, 0.2, 0.3, 0.31])

    raised = evaluate_rules(workspace, "fraud")

    assert len(raised) == 1
    alert = raised[0]
    assert (alert.rule, alert.group, alert.metric) == ("amount-drift", "fraud v3", AMOUNT)
    assert alert.status is AlertStatus.OPEN
    assert [b.value for b in alert.breaches] == [0.2, 0.3, 0.31]
    assert alert.first_window_start == DAY0 + timedelta(days=1)
    assert alert.last_window_end == DAY0 + timedelta(days=4)
    assert alert.delivery is None  # the rule has no webhook
    assert alert.message == (
        "fraud v3: drift.distance.TX_AMOUNT > 0.1 for 3 consecutive windows "
        "(latest 0.31, 2026-11-16 .. 2026-11-19)"
    )
    assert json.loads(json.dumps(alert.to_dict()))["status"] == "open"
    assert list_alerts(workspace, "fraud") == raised


def test_n_minus_one_breaches_raise_nothing(workspace: Workspace) -> None:
    add_rule(workspace, rule())
    store(workspace, [0.05, 0.2, 0.3])
    assert evaluate_rules(workspace, "fraud") == []
    assert list_alerts(workspace, status=None) == []


def test_a_missing_window_breaks_the_streak(workspace: Workspace) -> None:
    add_rule(workspace, rule())
    store(workspace, [0.2, 0.3, 0.4, 0.5], skip=[2])
    assert evaluate_rules(workspace, "fraud") == []

    store(workspace, [0.45], first=2)  # the window arrives: 4 consecutive breaches
    (alert,) = evaluate_rules(workspace, "fraud")
    assert [b.value for b in alert.breaches] == [0.2, 0.3, 0.45, 0.5]


@pytest.mark.parametrize("values", [[0.2, None, 0.3, 0.4], [0.2, 0.3, 0.4, None]])
def test_insufficient_data_never_breaches(workspace: Workspace, values: list[float | None]) -> None:
    add_rule(workspace, rule())
    store(workspace, values)
    assert evaluate_rules(workspace, "fraud") == []


@pytest.mark.parametrize(
    ("op", "threshold", "raises"),
    [(">", 0.3, False), (">=", 0.3, True), ("<", 0.3, False), ("<=", 0.3, True), ("<", 0.31, True)],
)
def test_each_comparison(workspace: Workspace, op: str, threshold: float, raises: bool) -> None:
    add_rule(workspace, rule(op=op, threshold=threshold, windows=2))
    store(workspace, [0.3, 0.3])
    assert len(evaluate_rules(workspace, "fraud")) == int(raises)


def test_evaluating_again_changes_nothing(workspace: Workspace, receiver: Receiver) -> None:
    add_rule(workspace, rule(webhook=receiver.url))
    store(workspace, [0.2, 0.3, 0.4])
    first = evaluate_rules(workspace, "fraud")
    again = evaluate_rules(workspace, "fraud")
    assert again == first
    assert list_alerts(workspace, status=None) == first
    assert len(receiver.received) == 1


def test_alert_follows_its_series_until_resolved(workspace: Workspace, receiver: Receiver) -> None:
    add_rule(workspace, rule(webhook=receiver.url))
    store(workspace, [0.2, 0.3, 0.4])
    (raised,) = evaluate_rules(workspace, "fraud")

    store(workspace, [0.5], first=3)  # still breaching: the same alert, updated
    (updated,) = evaluate_rules(workspace, "fraud")
    assert updated.id == raised.id
    assert updated.latest == 0.5
    assert updated.last_window_end == DAY0 + timedelta(days=4)
    assert len(updated.breaches) == 4
    assert "for 4 consecutive windows (latest 0.5," in updated.message

    store(workspace, [0.05], first=4)  # back under: resolved
    assert evaluate_rules(workspace, "fraud") == []
    assert list_alerts(workspace, "fraud") == []
    (resolved,) = list_alerts(workspace, "fraud", status="resolved")
    assert resolved.id == raised.id and resolved.resolved_at is not None
    assert list_alerts(workspace, status="all") == list_alerts(workspace, status=None)
    assert list_alerts(workspace, status="all") == [resolved]
    with pytest.raises(ParameterError, match=r"'status' parameter of list_alerts.*'closed'"):
        list_alerts(workspace, status="closed")
    assert receiver.events() == [("raised", raised.id), ("resolved", raised.id)]

    store(workspace, [0.2, 0.2, 0.2], first=5)  # breaching again: a new alert
    (again,) = evaluate_rules(workspace, "fraud")
    assert again.id != raised.id
    assert again.first_window_start == DAY0 + timedelta(days=5)


def test_a_replaced_rule_applies_at_the_next_evaluation(workspace: Workspace) -> None:
    add_rule(workspace, rule())
    store(workspace, [0.2, 0.3, 0.4])
    (alert,) = evaluate_rules(workspace, "fraud")
    with pytest.raises(ParameterError, match=r"'name'.*replace=True.*'amount-drift'"):
        add_rule(workspace, rule(threshold=0.5))

    add_rule(workspace, rule(threshold=0.5), replace=True)
    assert [r.threshold for r in list_rules(workspace, "fraud")] == [0.5]
    assert evaluate_rules(workspace, "fraud") == []
    assert list_alerts(workspace, status="resolved")[0].id == alert.id


def test_disabled_and_removed_rules(workspace: Workspace) -> None:
    store(workspace, [0.2, 0.3, 0.4])
    add_rule(workspace, rule(enabled=False))
    assert evaluate_rules(workspace, "fraud") == []

    add_rule(workspace, rule(), replace=True)
    (alert,) = evaluate_rules(workspace, "fraud")
    assert remove_rule(workspace, "fraud", "amount-drift").name == "amount-drift"
    assert list_rules(workspace) == []
    (closed,) = list_alerts(workspace, status=None)
    assert (closed.id, closed.status) == (alert.id, AlertStatus.RESOLVED)
    assert closed.note == "rule removed"
    with pytest.raises(ParameterError, match=r"'name' parameter of remove_rule.*known: none"):
        remove_rule(workspace, "fraud", "amount-drift")


# -- acknowledgement -------------------------------------------------------------------------


def test_acknowledge(workspace: Workspace) -> None:
    add_rule(workspace, rule())
    store(workspace, [0.2, 0.3, 0.4])
    (alert,) = evaluate_rules(workspace, "fraud")

    seen = acknowledge(workspace, alert.id, actor="alice", note="new merchant; retraining")
    assert seen.status is AlertStatus.ACKNOWLEDGED
    assert (seen.acknowledged_by, seen.note) == ("alice", "new merchant; retraining")
    assert seen.acknowledged_at is not None
    assert list_alerts(workspace, "fraud") == [seen]  # still active by default

    store(workspace, [0.6], first=3)  # still breaching: stays acknowledged, no new alert
    (still,) = evaluate_rules(workspace, "fraud")
    assert (still.id, still.status, still.latest) == (alert.id, AlertStatus.ACKNOWLEDGED, 0.6)

    store(workspace, [0.01], first=4)
    evaluate_rules(workspace, "fraud")
    with pytest.raises(ParameterError, match=rf"'alert_id'.*alert {alert.id} was resolved"):
        acknowledge(workspace, alert.id)
    with pytest.raises(ParameterError, match=r"'alert_id'.*a stored alert.*Got 999"):
        acknowledge(workspace, 999)


# -- which series a rule watches -------------------------------------------------------------


def test_a_prefix_watches_each_column_separately(workspace: Workspace) -> None:
    add_rule(workspace, rule(metric="drift.distance.*"))
    store(workspace, [0.2, 0.3, 0.4])
    store(workspace, [0.01, 0.3, 0.4], metric="drift.distance.TX_HOUR")
    store(workspace, [0.5, 0.5, 0.5], metric="drift.p_value.TX_AMOUNT")
    (alert,) = evaluate_rules(workspace, "fraud")
    assert alert.metric == AMOUNT

    store(workspace, [0.2, 0.3, 0.4], metric="drift.distance.TX_HOUR")
    alerts = evaluate_rules(workspace, "fraud")
    assert sorted(a.metric for a in alerts) == [AMOUNT, "drift.distance.TX_HOUR"]


def test_a_prefix_is_text_not_a_pattern(workspace: Workspace) -> None:
    # '_' is a wildcard of SQL LIKE: 'drift.p_value.*' must not watch 'drift.pXvalue.A'
    add_rule(workspace, rule(metric="drift.p_value.*", op="<", threshold=0.05, windows=1))
    store(workspace, [0.01], metric="drift.pXvalue.A")
    assert evaluate_rules(workspace, "fraud") == []


def test_group_filter(workspace: Workspace) -> None:
    store(workspace, [0.2, 0.3, 0.4], group="fraud v3")
    store(workspace, [0.2, 0.3, 0.4], group="fraud v4")
    add_rule(workspace, rule(group="fraud v4"))
    assert [a.group for a in evaluate_rules(workspace, "fraud")] == ["fraud v4"]

    add_rule(workspace, rule(name="any-group"))
    alerts = evaluate_rules(workspace, "fraud")
    assert sorted((a.rule, a.group) for a in alerts) == [
        ("amount-drift", "fraud v4"),
        ("any-group", "fraud v3"),
        ("any-group", "fraud v4"),
    ]
    assert evaluate_rules(workspace, "other endpoint") == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"op": "=>"}, r"'op' parameter of AlertRule must be one of '>', '>=', '<', '<='"),
        ({"windows": 0}, r"'windows' parameter of AlertRule must be an int in \[1, 1000\]"),
        ({"windows": 2.0}, r"'windows' parameter"),
        ({"threshold": float("nan")}, r"'threshold' parameter of AlertRule must be a finite"),
        ({"threshold": float("inf")}, r"'threshold'.*Got inf"),
        ({"threshold": "0.1"}, r"'threshold'.*Got '0.1'"),
        ({"webhook": "ftp://example.com/x"}, r"'webhook'.*http:// or https://"),
        ({"webhook": "127.0.0.1:9000"}, r"'webhook'"),
        ({"metric": "drift.*.TX_AMOUNT"}, r"'metric'.*prefix ending in '\*'"),
        ({"metric": "*"}, r"'metric'"),
        ({"name": " "}, r"'name'"),
        ({"group": ""}, r"'group'"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        rule(**changes)


# -- the webhook ------------------------------------------------------------------------------


def test_webhook_receives_raised_and_resolved_once_each(
    workspace: Workspace, receiver: Receiver
) -> None:
    settings = workspace.settings.model_copy(update={"monitor_webhook_token": "s3cret"})
    ws = Workspace(workspace.root, settings)
    try:
        add_rule(ws, rule(webhook=receiver.url))
        store(ws, [0.2, 0.3, 0.4])
        (alert,) = evaluate_rules(ws, "fraud")
        evaluate_rules(ws, "fraud")
        store(ws, [0.0], first=3)
        evaluate_rules(ws, "fraud")
        evaluate_rules(ws, "fraud")
    finally:
        ws.close()

    assert receiver.events() == [("raised", alert.id), ("resolved", alert.id)]
    raised, resolved = receiver.received
    assert raised["message"] == alert.message
    assert raised["status"] == "open" and resolved["status"] == "resolved"
    assert [b["value"] for b in raised["breaches"]] == [0.2, 0.3, 0.4]
    assert all(h["Authorization"] == "Bearer s3cret" for h in receiver.headers)
    assert all(h["Content-Type"] == "application/json" for h in receiver.headers)
    (stored,) = list_alerts(workspace, status=None)
    assert stored.delivery == "delivered (HTTP 200)"


def test_no_token_no_authorization_header(workspace: Workspace, receiver: Receiver) -> None:
    add_rule(workspace, rule(webhook=receiver.url, windows=1))
    store(workspace, [0.2])
    evaluate_rules(workspace, "fraud")
    assert len(receiver.headers) == 1 and "Authorization" not in receiver.headers[0]


def test_a_failing_receiver_is_recorded_not_raised(
    workspace: Workspace, receiver: Receiver
) -> None:
    receiver.answer = 500
    add_rule(workspace, rule(webhook=receiver.url))
    store(workspace, [0.2, 0.3, 0.4])
    (alert,) = evaluate_rules(workspace, "fraud")
    assert alert.delivery == "failed after 3 tries: HTTP 500"
    assert len(receiver.received) == 3  # each try reached it
    assert list_alerts(workspace) == [alert]  # stored all the same


def test_a_receiver_that_is_down_is_recorded_not_raised(workspace: Workspace) -> None:
    add_rule(workspace, rule(webhook=closed_port_url()))
    store(workspace, [0.2, 0.3, 0.4])
    (alert,) = evaluate_rules(workspace, "fraud")
    assert alert.status is AlertStatus.OPEN
    assert alert.delivery is not None
    assert alert.delivery.startswith("failed after 3 tries: ")
    assert "refused" in alert.delivery.lower()


def test_a_receiver_refusing_the_request_is_not_retried(
    workspace: Workspace, receiver: Receiver
) -> None:
    receiver.answer = 403
    add_rule(workspace, rule(webhook=receiver.url, windows=1))
    store(workspace, [0.2])
    (alert,) = evaluate_rules(workspace, "fraud")
    assert alert.delivery == "refused (HTTP 403)"
    assert len(receiver.received) == 1


def test_post_false_posts_nothing(workspace: Workspace, receiver: Receiver) -> None:
    add_rule(workspace, rule(webhook=receiver.url, windows=1))
    store(workspace, [0.2])
    (alert,) = evaluate_rules(workspace, "fraud", post=False)
    assert receiver.received == []
    assert alert.delivery == "not posted (evaluated with post=False)"


def test_a_rule_narrowed_to_another_group_resolves_its_alert(
    workspace: Workspace, receiver: Receiver
) -> None:
    store(workspace, [0.2, 0.3, 0.4], group="fraud v3")
    add_rule(workspace, rule(webhook=receiver.url))
    (alert,) = evaluate_rules(workspace, "fraud")

    add_rule(workspace, rule(webhook=receiver.url, group="fraud v4"), replace=True)
    assert evaluate_rules(workspace, "fraud") == []
    (resolved,) = list_alerts(workspace, status="resolved")
    assert resolved.id == alert.id
    assert resolved.note == "rule no longer watches this series"
    assert receiver.events() == [("raised", alert.id), ("resolved", alert.id)]


def test_a_failing_receiver_costs_its_tries_once_per_evaluation(
    workspace: Workspace, receiver: Receiver
) -> None:
    receiver.answer = 503
    add_rule(workspace, rule(metric="drift.distance.*", webhook=receiver.url, windows=1))
    store(workspace, [0.2])
    store(workspace, [0.3], metric="drift.distance.TX_HOUR")
    first, second = evaluate_rules(workspace, "fraud")
    assert len(receiver.received) == 3
    assert first.delivery == "failed after 3 tries: HTTP 503"
    assert second.delivery == (
        f"not posted: the webhook failed after 3 tries: HTTP 503 for alert {first.id} "
        "in this evaluation"
    )


def test_a_receiver_answering_garbage_is_recorded_not_raised(workspace: Workspace) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_garbage() -> None:
            for _ in range(3):
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"not http at all\r\n\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        add_rule(workspace, rule(webhook=f"http://127.0.0.1:{port}/", windows=1))
        store(workspace, [0.2])
        (alert,) = evaluate_rules(workspace, "fraud")
        thread.join(timeout=30)
    assert alert.delivery is not None and alert.delivery.startswith("failed after 3 tries: ")


def test_removing_a_rule_keeps_a_persons_note(workspace: Workspace) -> None:
    add_rule(workspace, rule(windows=1))
    store(workspace, [0.2])
    (alert,) = evaluate_rules(workspace, "fraud")
    acknowledge(workspace, alert.id, actor="alice", note="expected: new merchant")
    remove_rule(workspace, "fraud", "amount-drift")
    (closed,) = list_alerts(workspace, status="resolved")
    assert (closed.note, closed.acknowledged_by) == ("expected: new merchant", "alice")


def test_concurrent_evaluations_raise_and_resolve_once(
    workspace: Workspace, receiver: Receiver
) -> None:
    add_rule(workspace, rule(webhook=receiver.url))
    store(workspace, [0.2, 0.3, 0.4])

    def evaluate_together() -> None:
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def one() -> None:
            ws = Workspace.open(workspace.root)  # its own engine, as another process has
            try:
                start.wait()
                evaluate_rules(ws, "fraud")
            except BaseException as exc:
                errors.append(exc)
            finally:
                ws.close()

        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    evaluate_together()
    (alert,) = list_alerts(workspace, status=None)
    store(workspace, [0.0], first=3)
    evaluate_together()
    assert receiver.events() == [("raised", alert.id), ("resolved", alert.id)]
    assert [a.status for a in list_alerts(workspace, status=None)] == [AlertStatus.RESOLVED]
