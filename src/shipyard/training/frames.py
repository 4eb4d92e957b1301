"""Training frames: a data set's rows in a time window with their point-in-time features."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.workspace import Workspace

KEY_COLUMNS = ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME", "TX_FRAUD"]


@dataclass(frozen=True)
class Window:
    """Rows of ``dataset`` v``version`` with ``start <= day <= end``, features from ``views``."""

    dataset: str
    version: int
    start: str
    end: str
    views: str
    """Feature views as ``module:attribute`` (recorded so that the frame can be rebuilt)."""
    columns: tuple[str, ...] = tuple(KEY_COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        data = asdict(self)
        data["columns"] = list(self.columns)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "columns": tuple(data["columns"])})


def load_frame(workspace: Workspace, window: Window) -> pd.DataFrame:
    """The window's rows with their features, point-in-time correct, in time order."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from shipyard.data.catalog import get_dataset
    from shipyard.features.definitions import load_views
    from shipyard.features.offline import OfflineStore

    dataset = get_dataset(workspace, window.dataset, window.version)
    dataset.verify()
    first = date.fromisoformat(window.start)
    last = date.fromisoformat(window.end)
    files = [
        str(p) for p in dataset.partition_files() if first <= date.fromisoformat(p.stem) <= last
    ]
    table = pads.dataset(files, format="parquet").to_table(columns=list(window.columns))
    table = table.filter(pc.is_valid(table["TX_DATETIME"])) if table.num_rows else table
    views = load_views(window.views)
    return OfflineStore(workspace).get_historical_features(table, views).to_pandas()
