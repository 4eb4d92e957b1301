"""The days a retraining run reads, as of a date: training, label delay, evaluation.

With the fraud protocol's label delay, the labels known as of ``now`` end ``delay_days`` + 1
days before it; the evaluation window is the newest ``eval_days`` of them and the training
window the champion's number of days ending one delay before the evaluation starts, so a
challenger is compared as it would have been deployed. :func:`labelled_window` refuses a
window without labels, naming its days. The retraining pipeline's ``window`` step
(:mod:`shipyard.pipelines.retrain`) is a thin adapter over it.

Example::

    >>> from datetime import date
    >>> plan_window(date(2018, 7, 1), train_days=7)[2:]
    (datetime.date(2018, 6, 17), datetime.date(2018, 6, 23))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, invalid_parameter

if TYPE_CHECKING:
    from shipyard.data.catalog import Dataset
    from shipyard.registry.models import ModelVersion
    from shipyard.workspace import Workspace


@dataclass(frozen=True)
class RetrainWindow:
    """The days a retraining run reads, as of ``now``: training, delay, evaluation.

    ``last_labelled`` is the newest day whose labels are known (``now`` - delay - 1 day);
    the evaluation window is the ``eval_days`` ending there, the training window the
    champion's number of days ending ``delay_days`` + 1 days before the evaluation starts.
    """

    dataset: str
    version: int
    now: date
    delay_days: int
    train_start: date
    train_end: date
    eval_start: date
    eval_end: date

    @property
    def last_labelled(self) -> date:
        """The newest day whose labels are known as of ``now``."""
        return self.eval_end

    @property
    def train_days(self) -> int:
        """Length of the training window in days."""
        return (self.train_end - self.train_start).days + 1

    @property
    def eval_days(self) -> int:
        """Length of the evaluation window in days."""
        return (self.eval_end - self.eval_start).days + 1

    def split(self, columns: Any) -> Any:
        """The holdout split over these days (known-compromised entities removed)."""
        from shipyard.training.splits import HoldoutSplit

        return HoldoutSplit(
            self.train_start.isoformat(),
            delta_train=self.train_days,
            delta_delay=self.delay_days,
            delta_test=self.eval_days,
            columns=columns,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable (what the ``window`` step outputs)."""
        return {
            "dataset": self.dataset,
            "version": self.version,
            "now": self.now.isoformat(),
            "delay_days": self.delay_days,
            "train": [self.train_start.isoformat(), self.train_end.isoformat()],
            "evaluation": [self.eval_start.isoformat(), self.eval_end.isoformat()],
            "last_labelled": self.last_labelled.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainWindow:
        """Inverse of :meth:`to_dict`."""
        day = date.fromisoformat
        return cls(
            data["dataset"],
            int(data["version"]),
            day(data["now"]),
            int(data["delay_days"]),
            day(data["train"][0]),
            day(data["train"][1]),
            day(data["evaluation"][0]),
            day(data["evaluation"][1]),
        )

    def describe(self) -> str:
        """One line a person reads."""
        return (
            f"as of {self.now}, labels known up to {self.last_labelled} ({self.delay_days}-day "
            f"delay): challenger trains on {self.train_start}..{self.train_end}, both models "
            f"are compared on {self.eval_start}..{self.eval_end} of {self.dataset} v{self.version}"
        )


def plan_window(
    now: date, *, train_days: int, delay_days: int = 7, eval_days: int = 7
) -> tuple[date, date, date, date]:
    """(train start, train end, evaluation start, evaluation end) as of ``now``.

    >>> plan_window(date(2018, 7, 1), train_days=7)
    (datetime.date(2018, 6, 3), datetime.date(2018, 6, 9), datetime.date(2018, 6, 17), datetime.date(2018, 6, 23))
    """  # noqa: E501
    owner = "retraining window"
    for name, value, low in (
        ("train_days", train_days, 1),
        ("delay_days", delay_days, 0),
        ("eval_days", eval_days, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise invalid_parameter(name, owner, f"an int >= {low} (days)", value)
    eval_end = now - timedelta(days=delay_days + 1)
    eval_start = eval_end - timedelta(days=eval_days - 1)
    train_end = eval_start - timedelta(days=delay_days + 1)
    return train_end - timedelta(days=train_days - 1), train_end, eval_start, eval_end


def labelled_window(
    workspace: Workspace,
    *,
    model: str,
    dataset: str,
    now: date,
    version: int | None = None,
    delay_days: int = 7,
    eval_days: int = 7,
    train_days: int | None = None,
) -> RetrainWindow:
    """The latest labelled window of ``dataset`` (its newest version unless ``version``) as
    of ``now``; DataValidationError naming the days when a window holds no labels."""
    from shipyard.data.catalog import get_dataset
    from shipyard.registry.models import ModelRegistry

    champion = ModelRegistry(workspace).get(model, "champion")
    days = train_days if train_days is not None else champion_train_days(champion)
    data = get_dataset(workspace, dataset, version)
    start, end, eval_start, eval_end = plan_window(
        now, train_days=days, delay_days=delay_days, eval_days=eval_days
    )
    window = RetrainWindow(
        data.name, data.version, now, delay_days, start, end, eval_start, eval_end
    )
    label = champion.lineage.columns.label
    for part, first, last in (("training", start, end), ("evaluation", eval_start, eval_end)):
        rows, positives = count_labels(data, label, first, last)
        if rows == 0 or positives == 0:
            what = "no rows" if rows == 0 else f"{rows:,} rows and no positive label"
            raise DataValidationError(
                f"The retraining {part} window {first}..{last} of data set {data.name} "
                f"v{data.version} holds {what} in {label!r} ({window.describe()}; the data "
                f"set covers {_span(data)}). Retrain later, once labels of those days are "
                "in the data set."
            )
    return window


def champion_train_days(champion: ModelVersion) -> int:
    """How many days the champion trained on (its lineage's training window)."""
    window = champion.lineage.train_window
    if window is None:
        raise DataValidationError(
            f"{champion.name} v{champion.version} records no training window in its lineage, "
            "so the retraining cannot tell how many days to train on; pass train_days."
        )
    first, last = (date.fromisoformat(d[:10]) for d in window)
    return (last - first).days + 1


def count_labels(dataset: Dataset, label: str, first: date, last: date) -> tuple[int, int]:
    """(labelled rows, positive rows) of ``dataset`` on days ``first``..``last``."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    files = [
        str(p) for p in dataset.partition_files() if first <= date.fromisoformat(p.stem) <= last
    ]
    if not files:
        return 0, 0
    column = pads.dataset(files, format="parquet").to_table(columns=[label])[label]
    rows = len(column) - column.null_count
    return rows, int(pc.sum(column).as_py() or 0)


def _span(dataset: Dataset) -> str:
    first, last = dataset.time_min, dataset.time_max
    if first is None or last is None:
        return "no days"
    return f"{first.date()}..{last.date()}"
