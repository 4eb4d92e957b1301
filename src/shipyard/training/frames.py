"""Training frames: a data set's rows in a time window with their point-in-time features.

A :class:`Window` names the rows (data set version, first and last day) and the feature
views; the columns it keeps beside the features come from the model's
:class:`~shipyard.types.Lineage` (its label, time and entity), so this module knows no
solution's column names.

Example::

    window = Window.of(lineage, "2018-08-15", "2018-08-21")
    frame = load_frame(ws, window)   # label, time, entity, view keys and every feature
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.features.definitions import FeatureView
    from shipyard.types import Lineage
    from shipyard.workspace import Workspace


@dataclass(frozen=True)
class Window:
    """Rows of ``dataset`` v``version`` with ``start <= day <= end``, features from ``views``.

    ``columns`` are the data set columns the frame keeps beside the features (a lineage's
    label, time and entity: build the window with :meth:`of`); ``None`` keeps every column
    of the data set that is not also a feature name. The views' entity keys and timestamps
    are always read, since the point-in-time join needs them.
    """

    dataset: str
    version: int
    start: str
    end: str
    views: str
    """Feature views as ``module:attribute`` (recorded so that the frame can be rebuilt)."""
    columns: tuple[str, ...] | None = None

    @classmethod
    def of(cls, lineage: Lineage, start: str, end: str) -> Window:
        """The window of ``lineage``'s data set version and views, keeping its column roles."""
        return cls(
            lineage.dataset,
            lineage.dataset_version,
            str(start),
            str(end),
            lineage.views,
            lineage.columns.names,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "dataset": self.dataset,
            "version": self.version,
            "start": self.start,
            "end": self.end,
            "views": self.views,
            "columns": None if self.columns is None else list(self.columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        """Inverse of :meth:`to_dict`."""
        columns = data.get("columns")
        return cls(
            data["dataset"],
            int(data["version"]),
            data["start"],
            data["end"],
            data["views"],
            None if columns is None else tuple(columns),
        )


def frame_columns(window: Window, dataset: Dataset, views: list[FeatureView]) -> list[str]:
    """The data set columns a frame of ``window`` reads: its columns plus the views' join keys."""
    features = {name for view in views for name in view.feature_names}
    if window.columns is None:
        kept = [c for c in dataset.columns if c not in features]
    else:
        kept = list(window.columns)
    keys = [c for view in views for c in (view.entity, view.timestamp)]
    return list(dict.fromkeys([*kept, *keys]))


def load_frame(workspace: Workspace, window: Window) -> pd.DataFrame:
    """The window's rows with their features, point-in-time correct, in time order.

    The features are those materialized for the window's data set version; a version whose
    features were never materialized is an error (materialize it first).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from shipyard.data.catalog import get_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore

    dataset = get_dataset(workspace, window.dataset, window.version)
    dataset.verify()
    views = load_views(window.views)
    first = date.fromisoformat(window.start)
    last = date.fromisoformat(window.end)
    files = [
        str(p) for p in dataset.partition_files() if first <= date.fromisoformat(p.stem) <= last
    ]
    columns = frame_columns(window, dataset, views)
    table = pads.dataset(files, format="parquet").to_table(columns=columns)
    if table.num_rows and dataset.time_column in columns:
        table = table.filter(pc.is_valid(table[dataset.time_column]))
    store = OfflineStore(workspace)
    return store.get_historical_features(table, views, dataset_version=window.version).to_pandas()
