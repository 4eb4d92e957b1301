"""Where an optimization's outcome is recorded: a new registered version, an MLflow run.

A candidate within tolerance becomes a new version of the same model (framework
``onnx-text``, the original's lineage and input schema; the reason in the audit trail and
the card say what it came from: "optimized from v3 by dynamic-int8"), evaluated on the
test reviews, with its report as a card section. Every transform tried gets an MLflow run
in the experiment ``optimize-<model>`` with its parity, size and speed as metrics and the
report as an artifact; a refused one gets its run and nothing else.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.optimize.report import OriginalModel, TransformReport, markdown_html

if TYPE_CHECKING:
    from shipyard.optimize.data import ReviewSplits
    from shipyard.optimize.formats import OnnxTextModel
    from shipyard.optimize.runner import Settings
    from shipyard.registry.models import ModelRegistry, ModelVersion
    from shipyard.training.evaluation import Evaluation

CARD_TITLE = "Optimization"
SAMPLE_ROWS = 200


def experiment(name: str) -> str:
    """The MLflow experiment of ``name``'s optimization runs."""
    return f"optimize-{name}"


def register_candidate(
    registry: ModelRegistry,
    source: ModelVersion,
    candidate: OnnxTextModel,
    report: TransformReport,
    original: OriginalModel,
    splits: ReviewSplits,
    settings: Settings,
    actor: str | None,
) -> TransformReport:
    """Register ``candidate`` as a new version of ``source.name``; the report with its number."""
    import pandas as pd

    from shipyard.optimize.formats import OptimizedTextConfig
    from shipyard.registry.card import CardNotes, CardSection
    from shipyard.training.text import TrainedTextModel, evaluate_texts

    config = OptimizedTextConfig(
        source_version=source.version,
        source_model_type=source.model_type,
        transform=report.transform,
        sparsity=report.details.get("sparsity"),
        student_layers=report.details.get("student_layers"),
        max_tokens=candidate.max_tokens,
    )
    model = TrainedTextModel(config, candidate, source.input_schema)
    evaluation = evaluate_texts(  # through the model, so the evaluation knows its config
        model, splits.test.texts, splits.test.labels, n_boot=settings.n_boot
    )
    run_id = log_run(registry, source, report, evaluation)
    origin = f"optimized from v{source.version} by {report.transform}"
    text = f"{origin[0].upper()}{origin[1:]}.\n\n{report.markdown(original)}"
    differs = (
        f"Scores differ from v{source.version}'s by up to {report.test.max_abs_diff:.2e} on the "
        f"test reviews; {report.test.flipped_share:.1%} of its decisions at 0.5 flip."
        if report.test is not None
        else ""
    )
    notes = CardNotes(
        intended_use=f"The same use as {source.name} v{source.version}, {origin} for speed.",
        limitations=(
            *((differs,) if differs else ()),
            "Latency and throughput were measured in-process on the machine that optimized "
            "it; measure again on the serving hardware.",
        ),
        sections=(CardSection(CARD_TITLE, text, markdown_html(text)),),
        evaluation="Scored on the data set's test reviews.",
        interval="review bootstrap",
    )
    version = registry.register(
        source.name,
        model,
        lineage=source.lineage,
        evaluation=evaluation,
        run_id=run_id,
        sample=pd.DataFrame({"text": splits.test.texts[:SAMPLE_ROWS]}),
        notes=notes,
        actor=actor,
        reason=origin,
    )
    return log_report(registry, replace(report, version=version.version, run_id=run_id))


def log_refusal(
    registry: ModelRegistry, source: ModelVersion, report: TransformReport
) -> TransformReport:
    """Record a transform that was not registered in its own MLflow run."""
    return log_report(registry, replace(report, run_id=log_run(registry, source, report, None)))


def log_run(
    registry: ModelRegistry,
    source: ModelVersion,
    report: TransformReport,
    evaluation: Evaluation | None,
) -> str:
    """One MLflow run for one transform: its parameters, measurements and outcome."""
    from mlflow.entities import Metric, Param, RunTag

    from shipyard.registry.tracking import environment_tags

    params = {
        "source_version": source.version,
        "transform": report.transform,
        "tolerance": report.tolerance,
        **{f"detail.{k}": v for k, v in report.details.items()},
    }
    tags = {"shipyard.outcome": report.outcome.value, "shipyard.source": source.name}
    tracker = registry.tracker
    client = tracker.client
    run_name = f"{source.name} v{source.version} {report.transform}"
    run = client.create_run(tracker.experiment_id(experiment(source.name)), run_name=run_name)
    run_id = str(run.info.run_id)
    # the evaluation's plots go on the card (logged to this run by the registry), not twice
    found = {**metrics(report), **(evaluation.summary() if evaluation is not None else {})}
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in found.items()],
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in {**tags, **environment_tags()}.items()],
    )
    client.set_terminated(run_id)
    return run_id


def log_report(registry: ModelRegistry, report: TransformReport) -> TransformReport:
    """Attach the report (JSON, with the registered version if any) to its MLflow run."""
    if report.run_id is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"optimize-{report.transform}.json"
            path.write_text(json.dumps(report.to_dict(), indent=2))
            registry.tracker.client.log_artifact(report.run_id, str(path), "optimize")
    return report


def metrics(report: TransformReport) -> dict[str, float]:
    """The report's numbers as MLflow metrics (size, parity, latency and throughput per thread)."""
    found: dict[str, Any] = {}
    if report.size_bytes is not None:
        found["size_bytes"] = report.size_bytes
    for label, parity in (("test", report.test), ("validation", report.validation)):
        if parity is not None:
            found[f"{label}_max_abs_diff"] = parity.max_abs_diff
            found[f"{label}_flipped_share"] = parity.flipped_share
            found[f"{label}_accuracy_change"] = parity.accuracy_change.estimate
            found[f"{label}_roc_auc_change"] = parity.roc_auc_change.estimate
    for t in report.timings:
        found[f"p50_ms_{t.threads}t"] = t.p50_ms
        found[f"p99_ms_{t.threads}t"] = t.p99_ms
        found[f"reviews_per_s_{t.threads}t"] = t.reviews_per_s
    return {k: float(v) for k, v in found.items()}
