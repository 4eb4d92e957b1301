"""Two language tasks built only from data that ships offline, for fine-tuning adapters and
evaluating prompts: ``sentiment`` and ``extraction``.

**sentiment.** Rotten Tomatoes review snippets (the NLP solution's reader,
:func:`shipyard.solutions.nlp.load_reviews`, and its split BY MOVIE: no movie in two
splits) answered as one word, ``positive`` (fresh) or ``negative`` (rotten). Score: exact
match of the completion's first word, lower-cased and stripped of punctuation.

**extraction.** One sentence about a card transaction, in one of several phrasings (a seeded
choice per transaction; dates and times written ISO-style, as words, or on a 12-hour clock),
to be turned into JSON ``{"customer_id": 1234, "terminal_id": 871, "amount": 57.2,
"datetime": "2018-04-03 14:22"}`` (:data:`EXTRACTION_SCHEMA`). The transactions come from
the fraud simulator (:class:`shipyard.data.fraud_simulator.FraudSimulator`, fast mode,
seed 0: 1,000 customers, 2,000 terminals, 3 days from 2018-04-03; about 5,700
transactions in under a second), split BY CUSTOMER: ``customer_id % 20`` below 14 train,
below 17 validation, else test. Score: exact match of the parsed JSON (amounts compared to
the cent); :meth:`Task.metrics` adds JSON validity and per-field accuracy.

Rows (:func:`load_task`) are plain dicts: the prompt variables (``text``), ``expected``
(the target completion) and a few identifying fields. :func:`write_eval_set` stores them in
the workspace catalog so a prompt version can link to its evaluation set.

Example::

    rows = load_task("extraction", "test", limit=100)
    task = get_task("extraction")
    task.score('{"customer_id": 3, ...}', rows[0])  # 1.0 or 0.0
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError, invalid_parameter

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.workspace import Workspace

Row = Mapping[str, Any]
Messages = list[dict[str, str]]

SPLITS = ("train", "validation", "test")
TASKS = ("sentiment", "extraction")

SENTIMENT_SYSTEM = (
    "You classify the sentiment of movie review snippets. "
    "Answer with one word: positive or negative."
)
SENTIMENT_LABELS = {1: "positive", 0: "negative"}

EXTRACTION_SYSTEM = (
    "Extract the card transaction from the sentence as JSON with the keys customer_id "
    '(integer), terminal_id (integer), amount (number, in dollars) and datetime ("YYYY-MM-DD '
    'HH:MM", 24-hour clock). Answer with the JSON object only.'
)
EXTRACTION_FIELDS = ("customer_id", "terminal_id", "amount", "datetime")
EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "integer", "minimum": 0},
        "terminal_id": {"type": "integer", "minimum": 0},
        "amount": {"type": "number", "minimum": 0},
        "datetime": {
            "type": "string",
            "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}$",
        },
    },
    "required": list(EXTRACTION_FIELDS),
    "additionalProperties": False,
}
"""The extraction answer's JSON schema (for structured output and validation)."""

EXTRACTION_SIMULATION = {
    "n_customers": 1_000,
    "n_terminals": 2_000,
    "n_days": 3,
    "start_date": "2018-04-03",
    "mode": "fast",
    "seed": 0,
}
"""The fraud simulator's settings for the extraction transactions (deterministic)."""

EXTRACTION_SPLIT_RULE = "customer_id % 20: < 14 train, < 17 validation, else test"

_PHRASINGS: tuple[Callable[[int, int, float, datetime], str], ...] = (
    lambda c, t, a, d: f"Card {c} paid ${a:.2f} at terminal {t} on {d:%Y-%m-%d} at {d:%H:%M}.",
    lambda c, t, a, d: (
        f"On {d:%B} {d.day}, {d.year} at {d:%H:%M}, customer {c} spent {a:.2f} USD at "
        f"terminal #{t}."
    ),
    lambda c, t, a, d: f"Terminal {t} charged card {c} ${a:.2f} ({d:%Y-%m-%d}, {_twelve_hour(d)}).",
    lambda c, t, a, d: (
        f"{d.day} {d:%b %Y} {d:%H:%M} - a ${a:.2f} purchase by customer {c} at terminal {t}."
    ),
    lambda c, t, a, d: (
        f"A payment of {a:.2f} dollars from card no. {c} went through terminal {t} at "
        f"{_twelve_hour(d)} on {d.day} {d:%B} {d.year}."
    ),
)
"""Ways to say one transaction (a seeded choice per transaction id)."""


def _twelve_hour(d: datetime) -> str:
    hour = d.hour % 12 or 12
    return f"{hour}:{d:%M} {'AM' if d.hour < 12 else 'PM'}"


@dataclass(frozen=True)
class Task:
    """A task: how to ask (``messages``), what to answer (``target``), how to score.

    ``variables`` are the row fields a prompt template uses; ``score(completion, row)`` is
    the task's headline metric in [0, 1] (``metric`` names it); ``metrics`` gives it with
    the task's other per-row metrics; ``schema`` is the answer's JSON schema, if any;
    ``max_tokens`` is enough tokens for any expected answer.
    """

    name: str
    system: str
    variables: tuple[str, ...]
    metric: str
    max_tokens: int
    score_row: Callable[[str, Row], dict[str, float]]
    schema: Mapping[str, Any] | None = None

    def messages(self, row: Row, examples: Sequence[Row] = ()) -> Messages:
        """The chat messages that ask ``row`` (after ``examples`` as few-shot turns)."""
        messages = [{"role": "system", "content": self.system}]
        for example in examples:
            messages.append({"role": "user", "content": str(example["text"])})
            messages.append({"role": "assistant", "content": self.target(example)})
        messages.append({"role": "user", "content": str(row["text"])})
        return messages

    def target(self, row: Row) -> str:
        """The completion a perfect model gives for ``row``."""
        return str(row["expected"])

    def metrics(self, completion: str, row: Row) -> dict[str, float]:
        """Every per-row metric of ``completion`` (the headline one under :attr:`metric`)."""
        return self.score_row(completion, row)

    def score(self, completion: str, row: Row) -> float:
        """The headline metric of ``completion`` for ``row`` (1.0 right, 0.0 wrong)."""
        return self.score_row(completion, row)[self.metric]


# --- sentiment -------------------------------------------------------------------------


def normalized_first_word(completion: str) -> str:
    """The completion's first word, lower-cased, without punctuation (``""`` if none)."""
    match = re.search(r"[^\W_]+", completion.strip().lower())
    return match.group(0) if match else ""


def _sentiment_metrics(completion: str, row: Row) -> dict[str, float]:
    answer = normalized_first_word(completion)
    return {
        "exact_match": float(answer == row["expected"]),
        "valid_label": float(answer in SENTIMENT_LABELS.values()),
    }


@functools.lru_cache(maxsize=1)
def _reviews_frame() -> pd.DataFrame:
    from shipyard.solutions.nlp import load_reviews

    return load_reviews().frame


def _sentiment_rows(split: str) -> pd.DataFrame:
    frame = _reviews_frame()
    rows = frame[frame["split"] == split]
    return rows.assign(expected=rows["label"].map(SENTIMENT_LABELS))[
        ["review_id", "movie_name", "text", "expected"]
    ].reset_index(drop=True)


# --- extraction ------------------------------------------------------------------------


def extraction_answer(customer_id: int, terminal_id: int, amount: float, when: datetime) -> str:
    """The expected JSON answer for one transaction (minutes, amount to the cent)."""
    record = {
        "customer_id": int(customer_id),
        "terminal_id": int(terminal_id),
        "amount": round(float(amount), 2),
        "datetime": when.strftime("%Y-%m-%d %H:%M"),
    }
    return json.dumps(record)


def extraction_sentence(
    customer_id: int, terminal_id: int, amount: float, when: datetime, phrasing: int
) -> str:
    """One transaction as a sentence in phrasing ``phrasing`` (0 to 4)."""
    say = _PHRASINGS[phrasing % len(_PHRASINGS)]
    return say(int(customer_id), int(terminal_id), float(amount), when)


def parse_json_answer(completion: str) -> dict[str, Any] | None:
    """The JSON object a completion holds (markdown fences allowed), or None if invalid."""
    text = completion.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _field_equal(name: str, got: Any, expected: Any) -> bool:
    if name in ("customer_id", "terminal_id"):
        return isinstance(got, int) and not isinstance(got, bool) and got == expected
    if name == "amount":
        number = isinstance(got, int | float) and not isinstance(got, bool)
        return number and round(float(got), 2) == round(float(expected), 2)
    return isinstance(got, str) and got.strip() == expected


def _extraction_metrics(completion: str, row: Row) -> dict[str, float]:
    expected = json.loads(str(row["expected"]))
    parsed = parse_json_answer(completion)
    if parsed is None:
        fields = dict.fromkeys(EXTRACTION_FIELDS, False)
    else:
        fields = {k: _field_equal(k, parsed.get(k), expected[k]) for k in EXTRACTION_FIELDS}
    exact = parsed is not None and all(fields.values()) and set(parsed) == set(expected)
    metrics = {
        "exact_match": float(exact),
        "json_valid": float(parsed is not None),
        "field_accuracy": sum(fields.values()) / len(fields),
    }
    metrics.update({f"{k}_correct": float(v) for k, v in fields.items()})
    return metrics


@functools.lru_cache(maxsize=1)
def _transactions() -> pd.DataFrame:
    from shipyard.data.fraud_simulator import FraudSimulator

    simulator = FraudSimulator(**EXTRACTION_SIMULATION)  # type: ignore[arg-type]
    table = simulator.simulate().transactions
    return table[["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT"]]


def _customer_split(customer_id: int) -> str:
    bucket = customer_id % 20
    return "train" if bucket < 14 else "validation" if bucket < 17 else "test"


def _extraction_rows(split: str) -> pd.DataFrame:
    import pandas as pd

    table = _transactions()
    rows = []
    for tx, when, customer, terminal, amount in table.itertuples(index=False):
        if _customer_split(int(customer)) != split:
            continue
        stamp = pd.Timestamp(when).to_pydatetime()
        phrasing = random.Random(int(tx)).randrange(len(_PHRASINGS))
        rows.append(
            {
                "transaction_id": int(tx),
                "phrasing": phrasing,
                "text": extraction_sentence(customer, terminal, amount, stamp, phrasing),
                "expected": extraction_answer(customer, terminal, amount, stamp),
            }
        )
    return pd.DataFrame(rows)


# --- the registry of tasks -------------------------------------------------------------

_TASKS = {
    "sentiment": Task(
        name="sentiment",
        system=SENTIMENT_SYSTEM,
        variables=("text",),
        metric="exact_match",
        max_tokens=3,
        score_row=_sentiment_metrics,
    ),
    "extraction": Task(
        name="extraction",
        system=EXTRACTION_SYSTEM,
        variables=("text",),
        metric="exact_match",
        max_tokens=64,  # answers are 51-53 tokens (SmolLM2 splits digits)
        score_row=_extraction_metrics,
        schema=EXTRACTION_SCHEMA,
    ),
}

_ROWS: dict[str, Callable[[str], pd.DataFrame]] = {
    "sentiment": _sentiment_rows,
    "extraction": _extraction_rows,
}


def get_task(name: str) -> Task:
    """The task called ``name`` (``sentiment`` or ``extraction``)."""
    if name not in _TASKS:
        raise invalid_parameter("task", "get_task", f"one of {list(TASKS)}", name)
    return _TASKS[name]


def task_frame(name: str, split: str, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The rows of one split as a DataFrame (a seeded sample of ``limit``, order kept)."""
    get_task(name)
    if split not in SPLITS:
        raise invalid_parameter("split", "load_task", f"one of {list(SPLITS)}", split)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise invalid_parameter("limit", "load_task", "None or an int >= 1", limit)
    rows = _ROWS[name](split)
    if limit is not None and len(rows) > limit:
        rows = rows.sample(limit, random_state=seed).sort_index().reset_index(drop=True)
    return rows


def load_task(
    name: str, split: str, limit: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """The rows of task ``name``'s ``split``: prompt variables, ``expected`` and ids.

    ``limit`` keeps a seeded sample of that many rows (the same rows for the same seed).
    """
    return [dict(r) for r in task_frame(name, split, limit, seed).to_dict(orient="records")]


def eval_set_name(task: str, split: str) -> str:
    """The catalog name :func:`write_eval_set` uses, e.g. ``llm-sentiment-test``."""
    return f"llm-{task}-{split}"


def write_eval_set(
    workspace: Workspace, task: str, split: str = "test", limit: int | None = 200
) -> str:
    """Store a split's rows as a catalog data set (no time column); returns its name.

    Writing the same rows again reuses the identical latest version.
    """
    from shipyard.data.catalog import write_dataset

    rows = task_frame(task, split, limit)
    name = eval_set_name(task, split)
    params = {"task": task, "split": split, "limit": limit, "generator": "shipyard.llm.tasks"}
    write_dataset(workspace, name, rows, time_column=None, params=params)
    return name


def check_rows(task: Task, rows: Sequence[Row]) -> None:
    """Refuse rows that lack the task's variables or ``expected`` (ParameterError)."""
    needed = (*task.variables, "expected")
    for i, row in enumerate(rows):
        missing = [k for k in needed if k not in row]
        if missing:
            raise ParameterError(
                f"row {i} of task {task.name!r} lacks {missing}; expected the fields {list(needed)}"
            )
