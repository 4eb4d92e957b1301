"""Split strategies for time-ordered data: holdout with a delay, and prequential folds.

Both follow the *Fraud Detection Handbook* (chapter 5.2): a training window of
``delta_train`` days, then ``delta_delay`` days whose labels are not yet known (unused), then
``delta_test`` test days. Prequential validation repeats this ``n_folds`` times, each fold
shifted ``delta_test`` days further into the past. Never a random K-fold on time-ordered data.

``train_days`` lengthens (or shortens) the training window without moving anything else: a
fold then trains on the ``train_days`` days that end on the protocol's last training day, and
its delay, its test rows and the known-compromised entities stay exactly those of the
``delta_train`` protocol (so models trained on 7 or 28 days are compared on the same rows).

``columns`` names the frame's time, entity and label columns (a solution supplies them:
see :class:`~shipyard.types.ColumnRoles`). With ``remove_known_compromised`` (the handbook
protocol), each test day drops the entities already known to be positive: a positive label
in the training window, or on any day up to test day - delay - 1.

Example::

    roles = ColumnRoles(label="default", time="application_date", entity="applicant_id")
    split = PrequentialSplit("2018-08-15", n_folds=4, columns=roles)
    for fold in split.split(frame):
        model.fit(frame.iloc[fold.train] ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, invalid_parameter
from shipyard.types import ColumnRoles

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray


@dataclass(frozen=True)
class Fold:
    """One train/test split: row positions into the frame, and the dates they cover."""

    index: int
    train: NDArray[np.int64]
    test: NDArray[np.int64]
    train_start: date
    train_end: date
    """Last training day (inclusive)."""
    test_start: date
    test_end: date
    """Last test day (inclusive)."""

    def describe(self) -> dict[str, Any]:
        """Dates and sizes, for logging."""
        return {
            "fold": self.index,
            "train": f"{self.train_start}..{self.train_end}",
            "test": f"{self.test_start}..{self.test_end}",
            "n_train": len(self.train),
            "n_test": len(self.test),
        }


class HoldoutSplit:
    """Train window, delay (labels not yet known), test window; one fold.

    ``columns`` says which columns of the frame are the time, the entity and the label.
    ``train_days`` (None: ``delta_train``) is how many days the model trains on, ending on
    the protocol's last training day; the test rows and the known-compromised entities stay
    those of the ``delta_train`` protocol.
    """

    def __init__(
        self,
        start_date_training: str,
        delta_train: int = 7,
        delta_delay: int = 7,
        delta_test: int = 7,
        remove_known_compromised: bool = True,
        *,
        columns: ColumnRoles,
        train_days: int | None = None,
    ) -> None:
        self.start_date_training = start_date_training
        self.delta_train = delta_train
        self.delta_delay = delta_delay
        self.delta_test = delta_test
        self.remove_known_compromised = remove_known_compromised
        self.columns = columns
        self.train_days = train_days

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (what a training run logs)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def describe(self) -> dict[str, Any]:
        """The parameters as JSON-serializable values (the column roles as a dict)."""
        return {**self.get_params(), "columns": self.columns.to_dict()}

    def _roles(self) -> ColumnRoles:
        if not isinstance(self.columns, ColumnRoles):
            raise invalid_parameter(
                "columns", type(self).__name__, "a ColumnRoles(label, time, entity)", self.columns
            )
        return self.columns

    def _validate(self) -> date:
        owner = type(self).__name__
        for name in ("delta_train", "delta_delay", "delta_test"):
            value = getattr(self, name)
            low = 0 if name == "delta_delay" else 1
            if not isinstance(value, int) or value < low:
                raise invalid_parameter(name, owner, f"an int >= {low} (days)", value)
        days = self.train_days
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
            raise invalid_parameter(
                "train_days", owner, "an int >= 1 (days) or None (delta_train)", days
            )
        try:
            return date.fromisoformat(self.start_date_training)
        except (TypeError, ValueError):
            raise invalid_parameter(
                "start_date_training",
                owner,
                "an ISO date such as '2018-07-25'",
                self.start_date_training,
            ) from None

    def split(self, frame: pd.DataFrame) -> list[Fold]:
        """Return the single fold (see :meth:`fold`)."""
        return [self.fold(frame, self._validate(), 0)]

    def fold(self, frame: pd.DataFrame, start: date, index: int) -> Fold:
        """Build the fold whose protocol training window starts on ``start``."""
        import numpy as np

        roles = self._roles()
        for column in roles.names:
            if column not in frame.columns:
                raise DataValidationError(
                    f"{type(self).__name__} needs column {column!r}; the frame has "
                    f"{', '.join(map(str, frame.columns))}."
                )
        days = frame[roles.time].to_numpy().astype("datetime64[D]")
        first = np.datetime64(start, "D")
        offset = (days - first).astype(np.int64)
        train_days = self.delta_train if self.train_days is None else self.train_days
        train_start = start + timedelta(days=self.delta_train - train_days)
        if self.train_days is not None and (
            len(days) == 0 or days.min() > np.datetime64(train_start, "D")
        ):
            earliest = "no rows" if len(days) == 0 else f"rows from {days.min()}"
            raise DataValidationError(
                f"Fold {index} of {type(self).__name__} trains on {train_days} days from "
                f"{train_start}, but the frame has {earliest}; load it from {train_start} on."
            )
        train = np.flatnonzero(
            (offset >= self.delta_train - train_days) & (offset < self.delta_train)
        )
        labels = frame[roles.label].to_numpy()
        entities = frame[roles.entity].to_numpy()
        # the entities known to be compromised come from the protocol's own training window,
        # whatever the model trains on, so that every train_days sees the same test rows
        protocol_rows = np.flatnonzero((offset >= 0) & (offset < self.delta_train))
        known = set(entities[protocol_rows][labels[protocol_rows] == 1].tolist())
        test_parts = []
        for day in range(self.delta_test):
            on_day = np.flatnonzero(offset == self.delta_train + self.delta_delay + day)
            if self.remove_known_compromised:
                # positives revealed on the day that has just left the delay period
                revealed = np.flatnonzero(offset == self.delta_train + day - 1)
                known |= set(entities[revealed][labels[revealed] == 1].tolist())
                on_day = on_day[~np.isin(entities[on_day], list(known))]
            test_parts.append(on_day)
        test = np.concatenate(test_parts) if test_parts else np.array([], dtype=np.int64)
        test_start = start + timedelta(days=self.delta_train + self.delta_delay)
        return Fold(
            index=index,
            train=train.astype(np.int64),
            test=test.astype(np.int64),
            train_start=train_start,
            train_end=start + timedelta(days=self.delta_train - 1),
            test_start=test_start,
            test_end=test_start + timedelta(days=self.delta_test - 1),
        )


class PrequentialSplit(HoldoutSplit):
    """``n_folds`` holdout splits, fold k starting ``k * delta_test`` days before fold 0."""

    def __init__(
        self,
        start_date_training: str,
        n_folds: int = 4,
        delta_train: int = 7,
        delta_delay: int = 7,
        delta_test: int = 7,
        remove_known_compromised: bool = True,
        *,
        columns: ColumnRoles,
        train_days: int | None = None,
    ) -> None:
        super().__init__(
            start_date_training,
            delta_train,
            delta_delay,
            delta_test,
            remove_known_compromised,
            columns=columns,
            train_days=train_days,
        )
        self.n_folds = n_folds

    def split(self, frame: pd.DataFrame) -> list[Fold]:
        """Return the folds, most recent first."""
        start = self._validate()
        if not isinstance(self.n_folds, int) or self.n_folds < 1:
            raise invalid_parameter("n_folds", type(self).__name__, "an int >= 1", self.n_folds)
        return [
            self.fold(frame, start - timedelta(days=k * self.delta_test), k)
            for k in range(self.n_folds)
        ]

    def shifted(self, days: int) -> PrequentialSplit:
        """The same protocol with the training start moved by ``days`` (negative: earlier)."""
        start = self._validate() + timedelta(days=days)
        params = self.get_params()
        params["start_date_training"] = start.isoformat()
        return PrequentialSplit(**params)
