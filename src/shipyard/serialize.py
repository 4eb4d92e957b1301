"""Results as JSON-ready data: the one conversion every ``to_dict`` of a result shares.

Example::

    >>> from datetime import date
    >>> jsonable({"day": date(2018, 7, 1), "window": (1, 2), "auc": float("nan")})
    {'day': '2018-07-01', 'window': [1, 2], 'auc': None}
"""

from __future__ import annotations

import math
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` with dates and times as ISO text, paths as text, enums as their value, tuples
    and arrays as lists, NumPy scalars as Python numbers and NaN or infinity as None (JSON
    holds none of them), recursively through dicts (keys as text) and lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if getattr(value, "ndim", None) is not None and hasattr(value, "tolist"):
        return jsonable(value.tolist())  # a NumPy array or scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
