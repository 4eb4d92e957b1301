"""A request's event time (a replay's own clock) reaches the prediction log, or is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from shipyard.errors import RequestError
from shipyard.monitoring.logstore import query
from shipyard.serving.codec import event_time
from tests.serving.conftest import Server, v2_body

JUNE_1 = datetime(2018, 6, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (b"2018-06-01T00:00:00", JUNE_1),  # naive text is UTC
        (b"2018-06-01T02:00:00+02:00", JUNE_1),
        (b"2018-06-01", JUNE_1),
        (str(JUNE_1).encode(), JUNE_1),
        ("2018-06-01 01:30:00Z", JUNE_1 + 5400),
        (int(JUNE_1), JUNE_1),
        (JUNE_1 + 0.25, JUNE_1 + 0.25),
    ],
)
def test_event_time_reads_iso_text_and_epoch_seconds(given: Any, seconds: float) -> None:
    assert event_time(given) == seconds


@pytest.mark.parametrize("given", [b"yesterday", "", "nan", float("inf"), True, [1], None])
def test_an_unreadable_event_time_is_a_422_naming_the_field(given: Any) -> None:
    with pytest.raises(RequestError) as refused:
        event_time(given)
    assert refused.value.status == 422
    message = refused.value.message
    assert "'event_time'" in message and "ISO 8601" in message and "epoch seconds" in message
    assert repr(given.decode() if isinstance(given, bytes) else given) in message


def _logged(server: Server, prefix: str) -> dict[str, float | None]:
    frame = query(
        server.workspace,
        "fraud",
        f"SELECT request_id, event_time FROM predictions WHERE request_id LIKE '{prefix}%'",
    )
    return {
        r: (None if pd.isna(t) else float(t))
        for r, t in zip(frame["request_id"], frame["event_time"], strict=True)
    }


def _v2(rows: pd.DataFrame, request_id: str, **parameters: Any) -> dict[str, Any]:
    return v2_body(rows.head(3).to_numpy(dtype=float), request_id, **parameters)


def test_the_header_or_the_v2_parameter_is_logged_as_epoch_seconds(
    server: Server, rows: pd.DataFrame
) -> None:
    path = "/v2/models/fraud/infer"
    status, _, body = server.post_json(path, _v2(rows, "evt-param", event_time="2018-06-01"))
    assert status == 200, body
    status, _, body = server.post_json(
        path, _v2(rows, "evt-header"), {"X-Event-Time": "2018-06-01T03:00:00"}
    )
    assert status == 200, body
    status, _, body = server.post_json(  # the body's parameter wins over the header
        path, _v2(rows, "evt-both", event_time=JUNE_1 + 60), {"X-Event-Time": "1"}
    )
    assert status == 200, body
    status, _, body = server.post_json(
        "/invocations",
        {"inputs": rows.head(2).to_numpy().tolist()},
        {"X-Request-Id": "evt-mlflow", "X-Event-Time": str(JUNE_1 + 7200)},
    )
    assert status == 200, body
    status, _, body = server.post_json(path, _v2(rows, "evt-absent"))
    assert status == 200, body
    assert _logged(server, "evt-") == {
        "evt-param": JUNE_1,
        "evt-header": JUNE_1 + 3 * 3600,
        "evt-both": JUNE_1 + 60,
        "evt-mlflow": JUNE_1 + 7200,
        "evt-absent": None,
    }


def test_a_bad_event_time_is_refused_with_a_422_and_nothing_is_logged(
    server: Server, rows: pd.DataFrame
) -> None:
    status, _, body = server.post_json(
        "/invocations",
        {"inputs": rows.head(1).to_numpy().tolist()},
        {"X-Request-Id": "bad-evt-header", "X-Event-Time": "last tuesday"},
    )
    assert status == 422
    assert "'event_time'" in body["error"] and "'last tuesday'" in body["error"]
    status, _, body = server.post_json(
        "/v2/models/fraud/infer", _v2(rows, "bad-evt-param", event_time={"day": 1})
    )
    assert status == 422
    assert "'event_time'" in body["error"] and "ISO 8601" in body["error"], json.dumps(body)
    assert _logged(server, "bad-evt-") == {}
