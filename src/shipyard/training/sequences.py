"""Lag columns: each row's view of its entity's previous transactions, for sequence models.

:func:`add_sequence_columns` gives every row the values of some columns for its entity's
``length`` most recent transactions *strictly before* the row's instant, with the time gap to
each and a presence mask::

    SEQ_1_AMOUNT, SEQ_1_GAP_SECONDS, SEQ_1_PRESENT,   # the most recent earlier one
    SEQ_2_AMOUNT, SEQ_2_GAP_SECONDS, SEQ_2_PRESENT,   # the one before it ...

A missing step (the entity has fewer earlier transactions) has NaN values and gap and
``PRESENT`` 0. Transactions of the same entity at the same instant never see each other;
earlier transactions tied at one instant count in frame order (the later row is the more
recent). :func:`sequence_layout` recognises these columns in a feature list, which is how
:class:`~shipyard.training.neural.SequenceConfig` finds its sequence input.

This is an offline construction from the whole table. A served sequence model needs the
entity's recent events at request time; the streaming state keeps them, but no feature view
exposes them yet, so sequence models are evaluated offline only for now.

Example::

    roles = lineage.columns  # entity and time columns come from the model's lineage
    frame = add_sequence_columns(frame, roles.entity, roles.time, ["AMOUNT"], 5)
    features = BASE + sequence_columns(["AMOUNT"], 5)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, TrainingError, invalid_parameter

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

PREFIX = "SEQ_"
GAP = "GAP_SECONDS"
PRESENT = "PRESENT"
_NAME = re.compile(r"^SEQ_([1-9][0-9]*)_(.+)$")


def sequence_columns(columns: Sequence[str], length: int) -> list[str]:
    """The names :func:`add_sequence_columns` adds, most recent step first."""
    return [
        f"{PREFIX}{i}_{name}" for i in range(1, length + 1) for name in (*columns, GAP, PRESENT)
    ]


def add_sequence_columns(
    frame: pd.DataFrame, entity: str, time: str, columns: Sequence[str], length: int
) -> pd.DataFrame:
    """``frame`` with the lag columns of its entity's ``length`` previous transactions.

    Point in time: only transactions strictly before a row's instant are used. Rows keep
    their order and index; ``frame`` itself is not modified. Vectorized (one sort, then
    array indexing), so a table of millions of rows takes seconds.
    """
    import numpy as np
    import pandas as pd

    owner = "add_sequence_columns"
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise invalid_parameter("length", owner, "an int >= 1", length)
    columns = list(columns)
    if not columns:
        raise invalid_parameter("columns", owner, "a non-empty list of column names", columns)
    for name in (entity, time, *columns):
        if name not in frame.columns:
            raise DataValidationError(
                f"Column {name!r} is not in the frame; it has {', '.join(map(str, frame.columns))}."
            )
    for name in columns:
        if name in (GAP, PRESENT):
            raise invalid_parameter("columns", owner, f"names other than {GAP} and {PRESENT}", name)
        if not pd.api.types.is_numeric_dtype(frame[name]):
            raise DataValidationError(
                f"Column {name!r} must be numeric to enter a sequence; it is {frame[name].dtype}."
            )
    added = sequence_columns(columns, length)
    clash = [c for c in added if c in frame.columns]
    if clash:
        raise DataValidationError(f"The frame already has lag column {clash[0]!r}.")
    instants = frame[time]
    if not pd.api.types.is_datetime64_any_dtype(instants):
        raise DataValidationError(
            f"Column {time!r} must hold datetimes to order transactions; it is {instants.dtype}."
        )
    if instants.isna().any():
        raise DataValidationError(f"Column {time!r} has missing instants; every row needs one.")
    if isinstance(instants.dtype, pd.DatetimeTZDtype):
        instants = instants.dt.tz_convert(None)
    ns = instants.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    codes, _ = pd.factorize(frame[entity])  # -1: no entity, hence no history

    order = np.lexsort((ns, codes))  # stable: ties keep frame order
    e, t = codes[order], ns[order]
    position = np.arange(len(frame))
    new_entity = np.ones(len(frame), dtype=bool)
    new_entity[1:] = e[1:] != e[:-1]
    new_instant = new_entity.copy()
    new_instant[1:] |= t[1:] != t[:-1]
    entity_start = np.maximum.accumulate(np.where(new_entity, position, 0))
    instant_start = np.maximum.accumulate(np.where(new_instant, position, 0))
    values = {name: frame[name].to_numpy(dtype=np.float64)[order] for name in columns}

    out: dict[str, NDArray[Any]] = {}

    def restore(sorted_values: NDArray[Any]) -> NDArray[Any]:
        original = np.empty_like(sorted_values)
        original[order] = sorted_values
        return original

    for i in range(1, length + 1):
        earlier = instant_start - i
        present = (earlier >= entity_start) & (e >= 0)
        at = np.where(present, earlier, 0)
        for name in columns:
            out[f"{PREFIX}{i}_{name}"] = restore(np.where(present, values[name][at], np.nan))
        gap = np.where(present, (t - t[at]) / 1e9, np.nan)
        out[f"{PREFIX}{i}_{GAP}"] = restore(gap)
        out[f"{PREFIX}{i}_{PRESENT}"] = restore(present.astype(np.float64))
    return pd.concat([frame, pd.DataFrame(out, index=frame.index)], axis=1)


@dataclass(frozen=True)
class SequenceLayout:
    """Where the lag columns sit in a feature list: per step, per channel, a column index."""

    channels: tuple[str, ...]
    steps: tuple[tuple[int, ...], ...]  # steps[0] is the most recent step
    tabular: tuple[int, ...]  # every other column: the current row's features


def sequence_layout(features: Sequence[str]) -> SequenceLayout:
    """Recognise the ``SEQ_{i}_{channel}`` columns of ``features`` (the rest are tabular).

    Every step from 1 to the largest must carry the same channels; TrainingError names the
    first column missing otherwise, and says how to build them when there are none.
    """
    found: dict[int, dict[str, int]] = {}
    tabular = []
    channels: list[str] = []
    for index, name in enumerate(features):
        match = _NAME.match(name)
        if match is None:
            tabular.append(index)
            continue
        step, channel = int(match.group(1)), match.group(2)
        found.setdefault(step, {})[channel] = index
        if channel not in channels:
            channels.append(channel)
    if not found:
        raise TrainingError(
            "A sequence model needs lag columns named SEQ_{i}_{column}; none are among the "
            "features. Build them with shipyard.training.sequences.add_sequence_columns."
        )
    steps = []
    for step in range(1, max(found) + 1):
        have = found.get(step, {})
        for channel in channels:
            if channel not in have:
                raise TrainingError(
                    f"Lag column {PREFIX}{step}_{channel} is missing: every step from 1 to "
                    f"{max(found)} needs the channels {', '.join(channels)}."
                )
        steps.append(tuple(have[c] for c in channels))
    return SequenceLayout(tuple(channels), tuple(steps), tuple(tabular))
