"""Model cards in Markdown and HTML: intended use, lineage, metrics with intervals,
calibration, limitations. Written at registration, stored beside the model and in its MLflow
run (:func:`build_card` gathers its parts for the registry). The solution that registers a
model says what it is for (:class:`CardNotes`); the lineage says where it comes from."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.types import Lineage

if TYPE_CHECKING:
    import pandas as pd

    from shipyard.training.evaluation import Evaluation
    from shipyard.training.trainers import TrainedModel

PLOT_TITLES = {
    "roc": "ROC curve",
    "pr": "Precision-recall curve",
    "calibration": "Reliability curve",
    "importance": "Feature importance",
}
TEXT_EVALUATION = "Scored once on the held-out test texts the protocol names."
TEXT_LIMITATION = (
    "Measured on the test texts the protocol names; texts unlike them (another domain, "
    "language or length) may score worse. Monitor it and re-evaluate."
)
GENERIC_LIMITATIONS = (
    "Performance was measured out of time on the windows named above; it degrades as the "
    "data moves away from them. Monitor it and retrain.",
)


def embedded_figure(label: str, path: Path) -> str:
    """An HTML figure with the PNG at ``path`` embedded (a card is one self-contained file)."""
    data = base64.b64encode(path.read_bytes()).decode()
    alt = html.escape(label)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


@dataclass(frozen=True)
class CardSection:
    """A section a solution adds to the card (explanations, fairness ...): a title, its
    Markdown and its HTML (trusted: built by Shipyard, escaped where it shows user text).

    Example::

        CardSection("Fairness", "| group | TPR |\n|---|---|\n| a | 0.8 |", "<table>...</table>")
    """

    title: str
    markdown: str
    html: str


@dataclass(frozen=True)
class CardNotes:
    """What the registering solution says about a model: its intended use and limitations.

    Example::

        CardNotes(
            intended_use="Rank loan applications by default risk for manual review.",
            limitations=("Trained on German credit data from the 1970s.",),
        )
    """

    intended_use: str = (
        "Not stated at registration (pass CardNotes to ModelRegistry.register to say it)."
    )
    limitations: tuple[str, ...] = GENERIC_LIMITATIONS
    sections: tuple[CardSection, ...] = ()
    """Extra sections, shown after the plots in this order."""
    evaluation: str = (
        "The same configuration is trained and tested on every fold; this version is the "
        "model of the most recent fold."
    )
    """How the metrics below were measured, after the protocol (the solution's own words)."""
    interval: str = "day bootstrap"
    """How the 95% intervals were drawn (the metric table's header)."""


@dataclass
class ModelCard:
    """Everything a model card says; render with :meth:`markdown` or :meth:`html`."""

    name: str
    version: int
    model_type: str
    params: dict[str, Any]
    run_id: str
    lineage: Lineage
    features: list[str]
    metrics: list[tuple[str, str, str, str]]
    """(metric, mean ± std over folds, 95% CI, meaning)"""
    calibration: dict[str, Any]
    notes: CardNotes = field(default_factory=CardNotes)
    plots: dict[str, Path] = field(default_factory=dict)
    text_input: bool = False
    """The model reads raw text (its ``features`` are text columns), not numeric features."""
    evaluated: bool = True
    """False for a pretrained pipeline registered without an evaluation: no metrics to show."""
    json_output: str = ""
    """The output column of a model that answers one JSON value per row (the entity
    recognizer's ``entities``); empty for a classifier's probability."""

    NOT_EVALUATED: ClassVar[str] = (
        "Not evaluated here: pretrained pipeline, registered without a test evaluation."
    )

    def unevaluated(self) -> str:
        """The evaluation section of a version registered without an Evaluation: the
        solution's own words when it gave some (a recommender's protocol), else the
        pretrained pipeline's note."""
        if self.notes.evaluation != CardNotes.evaluation:
            return self.notes.evaluation
        return self.NOT_EVALUATED

    def uncalibrated(self) -> str:
        """The calibration section of a version registered without an Evaluation."""
        if self.json_output:
            return "Not applicable: the model answers a JSON value per row, not a probability."
        return self.NOT_EVALUATED

    @property
    def intended_use(self) -> str:
        """What the model is for (from the registering solution's notes)."""
        return self.notes.intended_use

    @property
    def limitations(self) -> list[str]:
        """Known limitations (from the registering solution's notes)."""
        return list(self.notes.limitations)

    def lineage_lines(self) -> list[str]:
        """The lineage as plain lines (data set, views, column roles, windows, protocol)."""
        ln = self.lineage
        roles = ln.columns
        views = ", ".join(f"{name} ({digest[:12]})" for name, digest in ln.view_hashes.items())
        train = " .. ".join(ln.train_window) if ln.train_window else "not recorded"
        gate = " .. ".join(ln.eval_window) if ln.eval_window else "not recorded"
        features = (
            f"Features: {ln.views}, definitions hash {ln.features_hash}; views: {views}"
            if ln.views
            else "Features: no feature views (the model reads its input columns as sent)"
        )
        windows = (
            f"Trained on: {train}; gate evaluation window: {gate}"
            if ln.train_window or ln.eval_window or not self.text_input
            else "Time windows: none recorded (the split is the protocol's)"
        )
        data = (
            f"Data set: {ln.dataset} v{ln.dataset_version}, content hash {ln.dataset_hash}"
            if ln.dataset
            else "Data set: none (a pretrained pipeline, not trained here)"
        )
        return [
            data,
            features,
            f"Columns: label {roles.label or 'none'}, time {roles.time or 'none'}, "
            f"entity {roles.entity or 'none'}",
            windows,
        ]

    def value_header(self) -> str:
        """The metric table's value column: a spread over folds, or one test set's value."""
        if self.metrics and not any("±" in value for _, value, _, _ in self.metrics):
            return "value on the test set"
        return "mean ± std over test folds"

    def input_line(self, quote: str = "") -> str:
        """What the model reads, in words (its features, or its text column), each name
        between ``quote`` marks."""
        names = ", ".join(f"{quote}{f}{quote}" for f in self.features)
        if self.text_input:
            kind = "raw text in column" if len(self.features) == 1 else "strings in columns"
            return f"{kind} {names}"
        return f"{len(self.features)} features ({names})"

    def output_line(self, quote: str = "") -> str:
        """What the model answers, in words (a probability, or a JSON value per row)."""
        if self.json_output:
            return f"one JSON value per row in column {quote}{self.json_output}{quote}"
        return f"probability that {quote}{self.lineage.columns.label}{quote} is 1"

    def markdown(self) -> str:
        """The card as Markdown."""
        rows = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.metrics)
        params = ", ".join(f"`{k}={v}`" for k, v in self.params.items())
        limits = "\n".join(f"- {item}" for item in self.limitations)
        calib = self.calibration
        plots = "\n".join(f"![{label}](plots/{path.name})" for label, path in self.plots.items())
        lineage = "\n".join(f"- {line}" for line in self.lineage_lines())
        evaluation, calibration = self.unevaluated(), self.uncalibrated()
        if self.evaluated:
            evaluation = f"""{self.notes.evaluation}

| metric | {self.value_header()} | 95% CI ({self.notes.interval}) | meaning |
|---|---|---|---|
{rows}"""
            calibration = f"""Brier score {calib.get("brier", float("nan")):.5f} (mean over folds); mean predicted probability
{calib.get("mean_predicted", float("nan")):.4f} against an observed rate of
{calib.get("observed_rate", float("nan")):.4f} on the test {"texts" if self.text_input else "windows"}. See the reliability
curve below."""
        return f"""# Model card — {self.name} v{self.version}

## Intended use
{self.intended_use}

## Model
- Type: **{self.model_type}**; parameters: {params}
- MLflow run: `{self.run_id}`
- Input: {self.input_line("`")}; output: {self.output_line("`")}

## Data and lineage
{lineage}

## Evaluation
Protocol: {self.lineage.protocol or "not recorded"}. {evaluation}

## Calibration
{calibration}

## Plots
{plots or "- none"}
{"".join(f"{chr(10)}## {x.title}{chr(10)}{x.markdown}{chr(10)}" for x in self.notes.sections)}
## Limitations
{limits}
"""

    def html(self) -> str:
        """The card as a standalone HTML page with the plots embedded."""
        esc = html.escape
        rows = "".join(
            f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td><td>{esc(d)}</td></tr>"
            for a, b, c, d in self.metrics
        )
        images = "".join(
            embedded_figure(label, path) for label, path in self.plots.items() if path.is_file()
        )
        params = ", ".join(f"<code>{esc(k)}={esc(str(v))}</code>" for k, v in self.params.items())
        limits = "".join(f"<li>{esc(item)}</li>" for item in self.limitations)
        calib = self.calibration
        lineage = "".join(f"<li>{esc(line)}</li>" for line in self.lineage_lines())
        evaluation, calibration = esc(self.unevaluated()) + "</p>", esc(self.uncalibrated())
        if self.evaluated:
            evaluation = (
                f"{esc(self.notes.evaluation)}</p><table><tr><th>metric</th>"
                f"<th>{esc(self.value_header())}</th><th>95% CI ({esc(self.notes.interval)})</th>"
                f"<th>meaning</th></tr>{rows}</table>"
            )
            calibration = (
                f"Brier score {calib.get('brier', float('nan')):.5f}; mean predicted probability "
                f"{calib.get('mean_predicted', float('nan')):.4f} against an observed rate of "
                f"{calib.get('observed_rate', float('nan')):.4f}."
            )
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Model card — {esc(self.name)} v{self.version}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
figure {{ display: inline-block; margin: .5rem; }} img {{ max-width: 28rem; }}
code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style></head><body>
<h1>Model card — {esc(self.name)} v{self.version}</h1>
<h2>Intended use</h2><p>{esc(self.intended_use)}</p>
<h2>Model</h2><ul><li>Type: <b>{esc(self.model_type)}</b>; parameters: {params}</li>
<li>MLflow run: <code>{esc(self.run_id)}</code></li>
<li>Input: {esc(self.input_line())}; output: {esc(self.output_line())}</li></ul>
<h2>Data and lineage</h2><ul>{lineage}</ul>
<h2>Evaluation</h2><p>Protocol: {esc(self.lineage.protocol or "not recorded")}. {evaluation}
<h2>Calibration</h2><p>{calibration}</p>
<h2>Plots</h2>{images or "<p>none</p>"}
{"".join(f"<h2>{esc(x.title)}</h2>{x.html}" for x in self.notes.sections)}
<h2>Limitations</h2><ul>{limits}</ul>
</body></html>
"""

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``model_card.md`` and ``model_card.html`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / "model_card.md"
        page = folder / "model_card.html"
        md.write_text(self.markdown(), encoding="utf-8")
        page.write_text(self.html(), encoding="utf-8")
        return md, page


def build_card(
    name: str,
    version: int,
    model: TrainedModel,
    lineage: Lineage,
    evaluation: Evaluation | None,
    run_id: str,
    notes: CardNotes | None,
    folder: Path,
    sample: pd.DataFrame,
) -> ModelCard:
    """The card of a version being registered, its plots written into ``folder / "plots"``.

    The card's global explanation (mean |SHAP|, dependence plots) explains ``sample``'s
    rows, unless the solution's notes already carry a section of that title or the model
    reads text (SHAP over one text column says nothing). Without an evaluation the card
    has no metrics, calibration or evaluation plots and says so. A text model registered
    without notes gets notes about test texts and a review bootstrap.
    """
    import dataclasses

    from shipyard.governance.explain import GLOBAL_EXPLANATION_TITLE, global_explanation
    from shipyard.registry.plots import evaluation_plots
    from shipyard.types import text_columns

    takes_text = bool(text_columns(model.input_schema))
    plots = (
        evaluation_plots(evaluation, folder / "plots", f"{name} v{version}")
        if evaluation is not None
        else []
    )
    if notes is None and takes_text:
        notes = CardNotes(
            limitations=(TEXT_LIMITATION,), evaluation=TEXT_EVALUATION, interval="review bootstrap"
        )
    notes = notes or CardNotes()
    if not takes_text and all(s.title != GLOBAL_EXPLANATION_TITLE for s in notes.sections):
        section = global_explanation(model, sample, folder / "plots", title=f"{name} v{version}")
        notes = dataclasses.replace(notes, sections=(section, *notes.sections))
    return ModelCard(
        name=name,
        version=version,
        model_type=model.config.model_type,
        params=model.config.get_params(),
        run_id=run_id,
        lineage=lineage,
        features=model.features,
        metrics=metric_rows(evaluation) if evaluation is not None else [],
        calibration=calibration_summary(evaluation) if evaluation is not None else {},
        notes=notes,
        plots={PLOT_TITLES.get(p.stem, p.stem): p for p in plots},
        text_input=takes_text,
        evaluated=evaluation is not None,
        json_output=next(iter(text_columns(model.output_schema)), ""),
    )


def metric_rows(evaluation: Evaluation) -> list[tuple[str, str, str, str]]:
    """Rows of the model card's metrics table."""
    meanings = {
        "roc_auc": "probability that a positive row scores above a negative one",
        "average_precision": "area under the precision-recall curve",
        "card_precision@100": "share of positive entities among the 100 riskiest a day",
        "brier": "mean squared error of the probabilities (lower is better)",
        "precision@100_per_day": "precision of the 100 riskiest rows a day",
        "recall@100_per_day": "share of positives caught by those 100 a day",
        "accuracy": "share of rows whose decision at probability 0.5 is right",
        "f1": "harmonic mean of precision and recall at probability 0.5",
    }
    rows = []
    for name in evaluation.folds[0].metrics:
        interval = evaluation.intervals.get(name)
        ci = f"[{interval.low:.3f}, {interval.high:.3f}]" if interval else "—"
        digits = 5 if name == "brier" else 3
        spread = f"{evaluation.mean(name):.{digits}f}"
        if len(evaluation.folds) > 1:  # one test set (texts) has no spread over folds
            spread += f" ± {evaluation.std(name):.{digits}f}"
        rows.append((name, spread, ci, meanings.get(name, "")))
    return rows


def calibration_summary(evaluation: Evaluation) -> dict[str, float]:
    """Brier score, mean predicted probability and observed rate over the test folds."""
    import numpy as np

    predicted = np.concatenate([r.scores for r in evaluation.folds])
    observed = np.concatenate([np.asarray(r.labels, dtype=float) for r in evaluation.folds])
    return {
        "brier": evaluation.mean("brier"),
        "mean_predicted": float(predicted.mean()),
        "observed_rate": float(observed.mean()),
    }
