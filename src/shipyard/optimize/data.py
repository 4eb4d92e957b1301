"""The labelled reviews an optimization is judged on: the original version's own data set.

The version's lineage names the data set (name, version, content hash) and the label; the
reviews carry a ``split`` column (``train`` / ``validation`` / ``test``, as the NLP solution
stores them). Validation reviews calibrate static quantization and decide the accuracy
budget; test reviews give the reported change; training reviews teach a distilled student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import DataValidationError, IntegrityError
from shipyard.types import text_columns

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from shipyard.registry.models import ModelVersion
    from shipyard.workspace import Workspace

SPLIT_COLUMN = "split"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Reviews:
    """Texts and binary labels of one split."""

    texts: list[str]
    labels: NDArray[np.int64]

    def head(self, n: int) -> Reviews:
        """The first ``n`` reviews."""
        return Reviews(self.texts[:n], self.labels[:n])

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class ReviewSplits:
    """The train, validation and test reviews of a version's data set."""

    train: Reviews
    validation: Reviews
    test: Reviews


def review_splits(workspace: Workspace, version: ModelVersion) -> ReviewSplits:
    """The reviews of ``version``'s data set by split, checked against its lineage's hash."""
    import numpy as np

    from shipyard.data.catalog import get_dataset

    lineage = version.lineage
    dataset = get_dataset(workspace, lineage.dataset, lineage.dataset_version)
    if dataset.content_hash != lineage.dataset_hash:
        raise IntegrityError(
            f"Data set {dataset.name} v{dataset.version} hashes to {dataset.content_hash[:12]} "
            f"but {version.name} v{version.version} was trained on {lineage.dataset_hash[:12]}."
        )
    text = (text_columns(version.input_schema) or ["text"])[0]
    label = lineage.columns.label
    needed = [text, label, SPLIT_COLUMN]
    missing = [c for c in needed if c not in dataset.columns]
    if missing:
        raise DataValidationError(
            f"Data set {dataset.name} v{dataset.version} lacks column(s) {missing}: optimizing "
            f"{version.name} needs the text ({text!r}), the label ({label!r}) and a "
            f"{SPLIT_COLUMN!r} column of {'/'.join(SPLITS)}; its columns are "
            f"{', '.join(dataset.columns)}."
        )
    frame = dataset.read(needed)
    parts: dict[str, Reviews] = {}
    for split in SPLITS:
        rows: Any = frame[frame[SPLIT_COLUMN] == split]
        parts[split] = Reviews(
            [str(t) for t in rows[text]], np.asarray(rows[label], dtype=np.int64)
        )
    empty = [s for s in ("validation", "test") if not len(parts[s])]
    if empty:
        found = sorted(frame[SPLIT_COLUMN].astype(str).unique())
        raise DataValidationError(
            f"Data set {dataset.name} v{dataset.version} has no {' or '.join(empty)} reviews "
            f"in its {SPLIT_COLUMN!r} column (found {found}); the accuracy budget is checked on "
            "validation reviews and the change reported on test reviews."
        )
    return ReviewSplits(parts["train"], parts["validation"], parts["test"])
