"""A traffic-mix drift: a segment of the traffic, defined by the model's inputs alone, grows.

:func:`shift_mix` takes the replayed rows (the model's inputs, the label, the time) and, in
the drifted span only, adds copies of the segment's rows of that span, drawn with
replacement (seeded), until the segment makes ``share`` of the span's rows. Every row keeps
its own inputs, label and time, so the fraud rate *given the inputs* is what it was: a pure
covariate shift, the one drift that confidence-based performance estimation (CBPE) is built
to follow, since the model's calibration ``P(fraud | score)`` still holds.

The default segment, :data:`SMALL_RISKY_TERMINALS`, is the transactions at small terminals
(at most 6 transactions in the last 7 days) with some fraud known in the last week
(``TERMINAL_ID_RISK_7DAY_WINDOW > 0``). It is where the fraud champion is least sure: in
its evaluation week 36 % of those rows score between 0.05 and 0.8 against 4 % of all rows,
and a quarter of them are fraud. The story: a season fills small shops and market stalls
(a festival, the holidays), some of whose card readers were recently skimmed; their share
of the traffic grows from 3 % to 30 %, and the rate of fraud among transactions that look
alike is unchanged.

Example::

    shifted, source = shift_mix(frame, MixDrift(0.3, 0, start=date(2018, 6, 24)))
    assert shifted.equals(frame.iloc[source].reset_index(drop=True))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, invalid_parameter

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

SegmentRule = tuple[str, str, float]
"""``(column, operator, value)``; the operator is one of ``>``, ``>=``, ``<``, ``<=``, ``==``."""
SMALL_RISKY_TERMINALS: tuple[SegmentRule, ...] = (
    ("TERMINAL_ID_RISK_7DAY_WINDOW", ">", 0.0),
    ("TERMINAL_ID_NB_TX_7DAY_WINDOW", "<=", 6.0),
)
"""Small terminals (at most 6 transactions in 7 days) with some fraud known in the last week."""
_OPERATORS = (">", ">=", "<", "<=", "==")


@dataclass(frozen=True)
class MixDrift:
    """What the drifted week changes: the ``segment`` (rows meeting every rule, inputs only)
    grows to ``share`` of the rows from ``start`` (inclusive) to ``end`` (exclusive), by
    copies of its own rows drawn with ``seed``; no row's inputs or label change."""

    share: float = 0.3
    seed: int = 0
    segment: tuple[SegmentRule, ...] = SMALL_RISKY_TERMINALS
    start: date | None = None
    end: date | None = None

    def check(self) -> None:
        """Raise ParameterError naming the field that is out of range."""
        owner = "MixDrift"
        if not isinstance(self.share, int | float) or not 0 < self.share < 1:
            raise invalid_parameter("share", owner, "a float in (0, 1)", self.share)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise invalid_parameter("seed", owner, "an int", self.seed)
        expected = f"a non-empty tuple of (column, operator in {_OPERATORS}, number)"
        if not isinstance(self.segment, tuple) or not self.segment:
            raise invalid_parameter("segment", owner, expected, self.segment)
        for rule in self.segment:
            if (
                not isinstance(rule, tuple)
                or len(rule) != 3
                or not isinstance(rule[0], str)
                or rule[1] not in _OPERATORS
                or not isinstance(rule[2], int | float)
            ):
                raise invalid_parameter("segment", owner, expected, rule)
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise invalid_parameter("end", owner, f"a date after start ({self.start})", self.end)

    def describe(self) -> str:
        """The segment in words: ``COLUMN > 0 and COLUMN <= 6``."""
        return " and ".join(f"{c} {op} {v:g}" for c, op, v in self.segment)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (what the scenario's result records)."""
        return {
            "kind": "mix",
            "segment": self.describe(),
            "share": self.share,
            "seed": self.seed,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
        }


def in_segment(frame: pd.DataFrame, segment: tuple[SegmentRule, ...]) -> NDArray[np.bool_]:
    """Whether each row of ``frame`` meets every rule of ``segment``."""
    import numpy as np

    missing = [c for c, _, _ in segment if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"the segment needs column(s) {missing}; the rows have {list(frame.columns)}"
        )
    hit = np.ones(len(frame), dtype=bool)
    for column, op, value in segment:
        values = frame[column].to_numpy(dtype=np.float64)
        if op == ">":
            hit &= values > value
        elif op == ">=":
            hit &= values >= value
        elif op == "<":
            hit &= values < value
        elif op == "<=":
            hit &= values <= value
        else:
            hit &= values == value
    return hit


def shift_mix(
    frame: pd.DataFrame, drift: MixDrift, *, time_column: str = "TX_DATETIME"
) -> tuple[pd.DataFrame, NDArray[np.int64]]:
    """The rows with the drifted span's mix shifted, and each one's position in ``frame``.

    Rows outside ``start <= time < end`` are kept as they are; in the span, every row is
    kept and ``round((share * n - s) / (1 - share))`` copies of its ``s`` segment rows (of
    ``n``) are added, drawn with replacement with ``seed``, so that the segment makes
    ``share`` of the span. The result is in time order (copies after their original);
    ``result.equals(frame.iloc[source].reset_index(drop=True))``.
    """
    import numpy as np
    import pandas as pd

    drift.check()
    if time_column not in frame.columns:
        raise DataValidationError(
            f"shift_mix needs the time column {time_column!r}; the rows have {list(frame.columns)}"
        )
    times = frame[time_column]
    span = np.ones(len(frame), dtype=bool)
    if drift.start is not None:
        span &= (times >= pd.Timestamp(drift.start)).to_numpy()
    if drift.end is not None:
        span &= (times < pd.Timestamp(drift.end)).to_numpy()
    segment = np.flatnonzero(span & in_segment(frame, drift.segment))
    n, s = int(span.sum()), len(segment)
    if s == 0:
        raise DataValidationError(
            f"no row of the drifted span meets the segment ({drift.describe()}), so it cannot grow"
        )
    if s >= drift.share * n:
        raise invalid_parameter(
            "share", "MixDrift", f"more than the segment's share of the span ({s / n:.3f})",
            drift.share,
        )  # fmt: skip
    extra = round((drift.share * n - s) / (1 - drift.share))
    rng = np.random.default_rng(drift.seed)
    copies = np.sort(rng.choice(segment, size=extra, replace=True))
    source = np.concatenate([np.arange(len(frame)), copies])
    order = np.argsort(times.to_numpy()[source], kind="stable")
    source = source[order].astype(np.int64)
    return frame.iloc[source].reset_index(drop=True), source
