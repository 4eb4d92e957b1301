from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path

import numpy as np

from shipyard.serialize import jsonable


class Color(Enum):
    RED = "red"


def test_results_become_json_that_reads_back_the_same() -> None:
    value = {
        "day": date(2018, 7, 1),
        "at": datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
        "path": Path("/tmp/x"),
        "color": Color.RED,
        "window": (1, (2, 3)),
        3: np.float64(0.25),
        "counts": np.array([1, 2]),
        "n": np.int64(7),
        "missing": [math.nan, math.inf, 1.5],
    }
    out = jsonable(value)
    assert out == {
        "day": "2018-07-01",
        "at": "2026-11-27T10:00:00+00:00",
        "path": "/tmp/x",
        "color": "red",
        "window": [1, [2, 3]],
        "3": 0.25,
        "counts": [1, 2],
        "n": 7,
        "missing": [None, None, 1.5],
    }
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert type(out["n"]) is int and type(out["3"]) is float
