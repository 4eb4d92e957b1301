"""The offline tasks: sentiment split by movie, extraction sentences that carry exactly their
JSON, the scores, and evaluation sets in the catalog."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from shipyard.data.catalog import get_dataset
from shipyard.errors import ParameterError
from shipyard.llm.tasks import (
    EXTRACTION_SCHEMA,
    SPLITS,
    get_task,
    load_task,
    normalized_first_word,
    write_eval_set,
)
from shipyard.workspace import Workspace

MONTHS = {"Apr": 4, "April": 4}


def test_sentiment_splits_are_disjoint_by_movie_and_labelled_as_words() -> None:
    movies = {split: {r["movie_name"] for r in load_task("sentiment", split)} for split in SPLITS}
    assert movies["train"] and movies["validation"] and movies["test"]
    assert not movies["train"] & movies["validation"]
    assert not movies["train"] & movies["test"]
    assert not movies["validation"] & movies["test"]
    rows = load_task("sentiment", "validation")
    assert {r["expected"] for r in rows} == {"positive", "negative"}
    assert all(r["text"].strip() for r in rows)


def test_limit_is_a_seeded_sample_and_bad_arguments_are_named() -> None:
    first = load_task("sentiment", "test", limit=20)
    assert len(first) == 20
    assert first == load_task("sentiment", "test", limit=20)
    assert first != load_task("sentiment", "test", limit=20, seed=1)
    with pytest.raises(ParameterError, match="split"):
        load_task("sentiment", "dev")
    with pytest.raises(ParameterError, match="task"):
        load_task("translation", "test")
    with pytest.raises(ParameterError, match="limit"):
        load_task("sentiment", "test", limit=0)


def _read_sentence(text: str) -> dict[str, object]:
    """An independent reader of the five phrasings (what a perfect extractor answers)."""
    numbers = {
        "customer_id": r"(?:[Cc]ard(?: no\.)?|customer) (\d+)",
        "terminal_id": r"[Tt]erminal #?(\d+)",
    }
    found: dict[str, object] = {k: int(re.search(p, text).group(1)) for k, p in numbers.items()}  # type: ignore[union-attr]
    amount = re.search(r"\$(\d+\.\d\d)|(\d+\.\d\d) (?:USD|dollars)", text)
    assert amount is not None, text
    found["amount"] = float(amount.group(1) or amount.group(2))
    iso = re.search(r"(\d{4})-(\d\d)-(\d\d)", text)
    if iso:
        year, month, day = (int(g) for g in iso.groups())
    else:
        words = re.search(r"(\d{1,2}) (Apr|April) (\d{4})|(April) (\d{1,2}), (\d{4})", text)
        assert words is not None, text
        if words.group(1):
            day, month, year = int(words.group(1)), MONTHS[words.group(2)], int(words.group(3))
        else:
            month, day, year = MONTHS[words.group(4)], int(words.group(5)), int(words.group(6))
    clock = re.search(r"(\d{1,2}):(\d\d)(?! ?\d)( [AP]M)?", text.replace(f"{year}-", ""))
    assert clock is not None, text
    hour, minute = int(clock.group(1)), int(clock.group(2))
    if clock.group(3):
        hour = hour % 12 + (12 if clock.group(3) == " PM" else 0)
    found["datetime"] = datetime(year, month, day, hour, minute).strftime("%Y-%m-%d %H:%M")
    return found


def test_extraction_sentences_carry_exactly_their_json() -> None:
    rows = load_task("extraction", "test")
    assert len(rows) > 500
    assert len({r["phrasing"] for r in rows}) == 5
    for row in rows:
        assert _read_sentence(row["text"]) == json.loads(row["expected"]), row["text"]
    expected = json.loads(rows[0]["expected"])
    assert set(expected) == set(EXTRACTION_SCHEMA["required"])
    customers = {
        split: {json.loads(r["expected"])["customer_id"] for r in load_task("extraction", split)}
        for split in SPLITS
    }
    assert not customers["train"] & customers["test"]
    assert not customers["validation"] & customers["test"]


def test_extraction_scores_exact_match_validity_and_fields() -> None:
    task = get_task("extraction")
    row = load_task("extraction", "test", limit=1)[0]
    right = json.loads(row["expected"])
    assert task.score(row["expected"], row) == 1.0
    fenced = "```json\n" + json.dumps(right, indent=2) + "\n```"
    assert task.score(fenced, row) == 1.0
    wrong_amount = json.dumps({**right, "amount": right["amount"] + 1})
    metrics = task.metrics(wrong_amount, row)
    assert metrics["exact_match"] == 0.0
    assert metrics["json_valid"] == 1.0
    assert metrics["field_accuracy"] == 0.75
    assert metrics["amount_correct"] == 0.0
    as_text = json.dumps({**right, "customer_id": str(right["customer_id"])})
    assert task.metrics(as_text, row)["customer_id_correct"] == 0.0
    broken = task.metrics(row["expected"][:-1], row)
    assert broken == {**broken, "exact_match": 0.0, "json_valid": 0.0, "field_accuracy": 0.0}
    assert task.score(json.dumps({**right, "note": "x"}), row) == 0.0


def test_sentiment_scores_the_first_word() -> None:
    task = get_task("sentiment")
    row = {"text": "A triumph.", "expected": "positive"}
    assert task.score("Positive.", row) == 1.0
    assert task.score(" positive - the reviewer loved it", row) == 1.0
    assert task.score("negative", row) == 0.0
    assert task.score("The review is positive", row) == 0.0
    assert normalized_first_word("  ...NEGATIVE!") == "negative"
    messages = task.messages(row, examples=[{"text": "Dull.", "expected": "negative"}])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "negative"
    assert messages[-1]["content"] == "A triumph."


def test_write_eval_set_stores_the_rows_in_the_catalog(workspace: Workspace) -> None:
    name = write_eval_set(workspace, "extraction", "test", limit=30)
    dataset = get_dataset(workspace, name)
    frame = dataset.read()
    assert len(frame) == 30
    assert frame.to_dict(orient="records") == load_task("extraction", "test", limit=30)
    assert write_eval_set(workspace, "extraction", "test", limit=30) == name
    assert get_dataset(workspace, name).version == dataset.version
