from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shipyard.errors import ParameterError
from shipyard.times import epoch_seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (86_400, 86_400.0),
        (1.5, 1.5),
        (datetime(1970, 1, 2), 86_400.0),  # naive means UTC
        (datetime(1970, 1, 2, 1, tzinfo=timezone(timedelta(hours=1))), 86_400.0),
        ("1970-01-02", 86_400.0),
        ("1970-01-02T00:00:00+00:00", 86_400.0),
    ],
)
def test_every_accepted_form_reads_as_epoch_seconds(value: object, expected: float | None) -> None:
    assert epoch_seconds(value, "start", "run_monitor") == expected


@pytest.mark.parametrize(
    "value", ["yesterday", math.nan, math.inf, True, [1], datetime.now(UTC).date()]
)
def test_anything_else_is_refused_naming_the_parameter_and_owner(value: object) -> None:
    with pytest.raises(ParameterError, match="'since' parameter of root_cause must be epoch"):
        epoch_seconds(value, "since", "root_cause")
