"""Who may call what: admin routes need a configured token; exposure is warned about."""

from __future__ import annotations

import pytest

from shipyard.errors import RequestError
from shipyard.serving.admin import authorize
from shipyard.serving.server import exposure_warning


def test_admin_routes_are_refused_when_no_admin_token_is_configured() -> None:
    with pytest.raises(RequestError) as caught:
        authorize({b"authorization": b"Bearer anything"}, None, admin=True)
    assert caught.value.status == 403
    assert "SHIPYARD_SERVING_ADMIN_TOKEN" in caught.value.message
    assert "serving_admin_token" in caught.value.message


def test_tokens_are_checked_and_prediction_routes_are_open_without_one() -> None:
    authorize({}, None)  # no prediction token configured: open
    authorize({b"authorization": b"Bearer s3cret"}, "s3cret", admin=True)
    for headers in ({}, {b"authorization": b"Bearer wrong"}, {b"authorization": b"s3cret"}):
        with pytest.raises(RequestError) as caught:
            authorize(headers, "s3cret", admin=True)
        assert caught.value.status == 401


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_warning_on_loopback(host: str) -> None:
    assert exposure_warning(host, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "serving.internal"])
def test_serving_beyond_loopback_without_a_prediction_token_is_warned_about(host: str) -> None:
    # nothing binds here: the check is a pure function of the host string
    warning = exposure_warning(host, None)
    assert warning is not None and "SHIPYARD_SERVING_PREDICT_TOKEN" in warning
    assert exposure_warning(host, "s3cret") is None
