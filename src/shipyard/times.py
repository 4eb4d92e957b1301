"""Moments as epoch seconds: the one reading of a time bound every module shares.

A bound may be ``None`` (unbounded), epoch seconds (an int or a finite float), a
``datetime`` (naive means UTC) or ISO 8601 text (``"2026-11-27"``, ``"2026-11-27T10:00"``;
naive means UTC). Anything else is refused naming the parameter and its owner.

Example::

    >>> epoch_seconds("1970-01-02", "start", "run_monitor")
    86400.0
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from shipyard.errors import invalid_parameter


def epoch_seconds(value: object, name: str, owner: str) -> float | None:
    """``value`` as epoch seconds (None stays None); ParameterError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise invalid_parameter(name, owner, _EXPECTED, value)
        return float(value)
    moment: object = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if not isinstance(moment, datetime):
        raise invalid_parameter(name, owner, _EXPECTED, value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


_EXPECTED = "epoch seconds, a datetime or ISO 8601 text (naive means UTC)"
