"""Model cards in Markdown and HTML: intended use, data, metrics with intervals, calibration,
limitations. Written at registration, stored beside the model and in its MLflow run."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelCard:
    """Everything a model card says; render with :meth:`markdown` or :meth:`html`."""

    name: str
    version: int
    model_type: str
    params: dict[str, Any]
    run_id: str
    dataset: str
    dataset_version: int
    dataset_hash: str
    features_ref: str
    features_hash: str
    features: list[str]
    train_window: str
    eval_window: str
    protocol: str
    metrics: list[tuple[str, str, str, str]]
    """(metric, mean ± std over folds, 95% CI, meaning)"""
    calibration: dict[str, Any]
    intended_use: str = (
        "Rank card transactions by fraud risk so that investigators review the riskiest cards "
        "first (an alert budget of about 100 cards a day). Scores are probabilities estimated "
        "on recent labelled data; use them to rank, and recalibrate before reading them as "
        "absolute fraud rates."
    )
    limitations: list[str] = field(
        default_factory=lambda: [
            "Trained on simulated transactions (the Fraud Detection Handbook's generator); "
            "real fraud patterns differ and drift.",
            "Labels of the last 7 days before scoring are assumed unknown (delay period); "
            "terminal risk features use only labels older than 7 days.",
            "Metrics exclude cards already known to be compromised on each test day.",
            "Performance was measured out of time on the windows named above; it degrades as "
            "the data moves away from them. Monitor it and retrain.",
            "No fairness assessment: the data set has no protected attributes.",
        ]
    )
    plots: dict[str, Path] = field(default_factory=dict)

    def markdown(self) -> str:
        """The card as Markdown."""
        rows = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.metrics)
        params = ", ".join(f"`{k}={v}`" for k, v in self.params.items())
        limits = "\n".join(f"- {item}" for item in self.limitations)
        calib = self.calibration
        plots = "\n".join(f"![{label}](plots/{path.name})" for label, path in self.plots.items())
        return f"""# Model card — {self.name} v{self.version}

## Intended use
{self.intended_use}

## Model
- Type: **{self.model_type}**; parameters: {params}
- MLflow run: `{self.run_id}`
- Input: {len(self.features)} features ({", ".join(f"`{f}`" for f in self.features)}); output: fraud probability

## Data and lineage
- Data set: `{self.dataset}` v{self.dataset_version}, content hash `{self.dataset_hash}`
- Features: `{self.features_ref}`, definitions hash `{self.features_hash}`
- Trained on: {self.train_window}; gate evaluation window: {self.eval_window}

## Evaluation
Protocol: {self.protocol}. The same configuration is trained and tested on every fold;
this version is the model of the most recent fold.

| metric | mean ± std over test folds | 95% CI (day bootstrap) | meaning |
|---|---|---|---|
{rows}

## Calibration
Brier score {calib.get("brier", float("nan")):.5f} (mean over folds); mean predicted probability
{calib.get("mean_predicted", float("nan")):.4f} against an observed fraud rate of
{calib.get("observed_rate", float("nan")):.4f} on the test windows. See the reliability
curve below.

## Plots
{plots or "- none"}

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
            f'<figure><img alt="{esc(label)}" src="data:image/png;base64,'
            f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{esc(label)}</figcaption></figure>'
            for label, path in self.plots.items()
            if path.is_file()
        )
        params = ", ".join(f"<code>{esc(k)}={esc(str(v))}</code>" for k, v in self.params.items())
        limits = "".join(f"<li>{esc(item)}</li>" for item in self.limitations)
        calib = self.calibration
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
<li>Input: {len(self.features)} features ({esc(", ".join(self.features))}); output: fraud probability</li></ul>
<h2>Data and lineage</h2><ul>
<li>Data set: <code>{esc(self.dataset)}</code> v{self.dataset_version}, content hash <code>{esc(self.dataset_hash)}</code></li>
<li>Features: <code>{esc(self.features_ref)}</code>, definitions hash <code>{esc(self.features_hash)}</code></li>
<li>Trained on: {esc(self.train_window)}; gate evaluation window: {esc(self.eval_window)}</li></ul>
<h2>Evaluation</h2><p>Protocol: {esc(self.protocol)}. The same configuration is trained and
tested on every fold; this version is the model of the most recent fold.</p>
<table><tr><th>metric</th><th>mean ± std over test folds</th><th>95% CI (day bootstrap)</th><th>meaning</th></tr>{rows}</table>
<h2>Calibration</h2><p>Brier score {calib.get("brier", float("nan")):.5f}; mean predicted probability
{calib.get("mean_predicted", float("nan")):.4f} against an observed fraud rate of
{calib.get("observed_rate", float("nan")):.4f}.</p>
<h2>Plots</h2>{images or "<p>none</p>"}
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
