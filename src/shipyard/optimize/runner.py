"""``optimize``: transform a registered text classifier, measure, register or refuse.

For each transform asked for, in order: build the candidate, score the validation and test
reviews, compare with the original (exact transforms: max |Δ probability| ≤ 1e-4 on the
test reviews; lossy ones: validation accuracy may drop by at most ``accuracy_budget``), time
it at 1 and 2 threads, and register it as a new version of the same model (framework
``onnx-text``, the original's lineage, the report on its card and in an MLflow run) or
refuse it with the reason. With ``target_latency_ms`` the transforms are tried cheapest
first and the first that meets the target (one-review p50 latency at one thread) within the
budget is the one registered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError, invalid_parameter
from shipyard.optimize.measure import Parity, Timing, parity, timing
from shipyard.optimize.report import (
    OptimizeResult,
    OriginalModel,
    Outcome,
    TransformReport,
    signed,
)

if TYPE_CHECKING:
    from shipyard.optimize.data import ReviewSplits
    from shipyard.optimize.formats import OnnxTextModel
    from shipyard.registry.models import ModelRegistry, ModelVersion
    from shipyard.training.text import TextClassifier
    from shipyard.workspace import Workspace

TRANSFORMS = ("onnx", "dynamic-int8", "static-int8", "prune", "distill")
"""Every transform, in the order they run when several are asked for."""
TARGET_ORDER = ("onnx", "dynamic-int8", "static-int8", "distill")
"""What ``target_latency_ms`` tries, cheapest in accuracy first."""
EXACT = ("onnx",)
EXACT_TOLERANCE = 1e-4
OPTIMIZABLE = {"torch-text": TRANSFORMS}
"""Framework -> the transforms that apply to it."""
COMPILED_ELSEWHERE = ("lightgbm", "xgboost", "sklearn")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """How candidates are built and measured (defaults suit the NLP solution's reviews).

    ``calibration_rows`` validation reviews calibrate static int8; ``sparsity`` is pruning's
    share of zeroed encoder weights; the distilled student keeps ``student_layers`` of
    MiniLM's layers and trains ``distill_epochs`` epochs on the teacher's probabilities over
    at most ``distill_rows`` training reviews; ``requests`` single-review calls and
    ``batches`` batches of 32 are timed at each of ``threads``; ``n_boot`` bootstrap draws.
    """

    calibration_rows: int = 256
    sparsity: float = 0.5
    student_layers: int = 2
    distill_epochs: int = 4
    distill_rows: int = 20_000
    requests: int = 100
    batches: int = 8
    threads: tuple[int, ...] = (1, 2)
    n_boot: int = 500

    def __post_init__(self) -> None:
        for name in ("calibration_rows", "distill_epochs", "distill_rows", "requests", "batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise invalid_parameter(name, "Settings", "an int >= 1", value)
        if not self.threads or any(not isinstance(n, int) or n < 1 for n in self.threads):
            raise invalid_parameter("threads", "Settings", "thread counts >= 1", self.threads)
        if not 0.0 < self.sparsity < 1.0:
            raise invalid_parameter("sparsity", "Settings", "a float in (0, 1)", self.sparsity)


def optimize(
    workspace: Workspace,
    name: str,
    version: int | str,
    *,
    transforms: Sequence[str] | None = None,
    target_latency_ms: float | None = None,
    accuracy_budget: float = 0.01,
    settings: Settings | None = None,
    out: Path | None = None,
    progress: Progress | None = None,
    actor: str | None = None,
) -> OptimizeResult:
    """Optimize ``name`` at ``version`` (a torch-text classifier) with each of ``transforms``.

    Without ``transforms``: ONNX and dynamic int8, or with ``target_latency_ms`` the
    sequence onnx -> dynamic-int8 -> static-int8 -> distill (stopping at the first that
    meets the target). ``out`` receives ``report.md`` and ``report.json``.

    Example::

        result = optimize(ws, "sentiment", 3, transforms=["onnx", "dynamic-int8"])
        print(result.markdown())
    """
    from shipyard.optimize.data import review_splits
    from shipyard.registry.models import ModelRegistry

    settings = settings or Settings()
    say = progress or (lambda _: None)
    registry = ModelRegistry(workspace)
    source = registry.get(name, version)
    chosen = check_request(source, transforms, target_latency_ms, accuracy_budget)
    classifier = registry.load(name, source.version).model
    splits = review_splits(workspace, source)
    say(f"measuring {name} v{source.version} (eager PyTorch)")
    baseline = _Baseline.measure(source, classifier, splits, settings)
    reports: list[TransformReport] = []
    met: str | None = None
    job = _Job(
        registry,
        source,
        classifier,
        splits,
        baseline,
        settings,
        accuracy_budget,
        target_latency_ms,
        actor,
        say,
    )
    for transform in chosen:
        if met is not None:
            reports.append(_skipped(transform, met))
            continue
        report = _attempt(job, transform)
        reports.append(report)
        if target_latency_ms is not None and report.outcome is Outcome.REGISTERED:
            met = transform
    result = OptimizeResult(
        baseline.original, reports, accuracy_budget, target_latency_ms, chosen=met
    )
    if out is not None:
        result.write(out)
    return result


def check_request(
    source: ModelVersion,
    transforms: Sequence[str] | None,
    target_latency_ms: float | None,
    accuracy_budget: float,
) -> tuple[str, ...]:
    """The transforms to run, in order; ParameterError for a model or a request that can't."""
    owner = "optimize"
    if source.framework not in OPTIMIZABLE:
        applies = "; ".join(f"{f}: {', '.join(t)}" for f, t in OPTIMIZABLE.items())
        if source.framework in COMPILED_ELSEWHERE:
            why = (
                f"{source.name} v{source.version} is a {source.framework} tree model: tree "
                "models keep their compiled backend (ONNX Runtime or lleaves, chosen and "
                "parity-checked by serving/backends.py when `shipyard serve` prepares the "
                "version; its report says which)."
            )
        elif source.framework == "onnx-text":
            why = (
                f"{source.name} v{source.version} is already optimized (from "
                f"v{source.params.get('source_version')} by {source.params.get('transform')}); "
                "optimize the torch-text version it came from instead."
            )
        else:
            why = f"{source.name} v{source.version} ({source.framework}) cannot be optimized."
        raise ParameterError(f"{why} Transforms apply to: {applies}.")
    if transforms is not None and not transforms:
        raise invalid_parameter("transforms", owner, f"some of {', '.join(TRANSFORMS)}", "none")
    unknown = [t for t in transforms or () if t not in TRANSFORMS]
    if unknown:
        raise ParameterError(
            f"Unknown transform {unknown[0]!r}; known transforms: {', '.join(TRANSFORMS)}."
        )
    if target_latency_ms is not None and not target_latency_ms > 0:
        raise invalid_parameter("target_latency_ms", owner, "a positive number", target_latency_ms)
    if not -1.0 <= accuracy_budget <= 1.0:
        raise invalid_parameter("accuracy_budget", owner, "a float in [-1, 1]", accuracy_budget)
    if transforms is None:
        return TARGET_ORDER if target_latency_ms is not None else ("onnx", "dynamic-int8")
    order = TARGET_ORDER if target_latency_ms is not None else TRANSFORMS
    rank = {t: i for i, t in enumerate((*order, *TRANSFORMS))}
    return tuple(sorted(dict.fromkeys(transforms), key=rank.__getitem__))


@dataclass
class _Baseline:
    """The original's scores on the validation and test reviews, and its size and speed."""

    original: OriginalModel
    validation: Any
    test: Any

    @classmethod
    def measure(
        cls,
        source: ModelVersion,
        classifier: TextClassifier,
        splits: ReviewSplits,
        settings: Settings,
    ) -> _Baseline:
        timings = [
            _torch_timing(classifier, splits.test.texts, n, settings) for n in settings.threads
        ]
        with _torch_threads(max(settings.threads)):
            validation = classifier.predict_proba(splits.validation.texts)
            test = classifier.predict_proba(splits.test.texts)
        size = source.native_path.stat().st_size
        original = OriginalModel(source.name, source.version, source.framework, size, timings)
        return cls(original, validation, test)


@dataclass(frozen=True)
class _Job:
    """What every transform of one ``optimize`` call shares."""

    registry: ModelRegistry
    source: ModelVersion
    classifier: TextClassifier
    splits: ReviewSplits
    baseline: _Baseline
    settings: Settings
    accuracy_budget: float
    target_latency_ms: float | None
    actor: str | None
    say: Progress


def _attempt(job: _Job, transform: str) -> TransformReport:
    """Build one candidate, judge and measure it, register it or say why not."""
    from shipyard.optimize.registration import log_refusal, register_candidate

    splits, settings, baseline = job.splits, job.settings, job.baseline
    job.say(f"{transform}: building")
    candidate, details = _build(job.classifier, transform, splits, settings, job.say)
    job.say(f"{transform}: scoring {len(splits.validation)} + {len(splits.test)} reviews")
    # scored on one intra-op thread, as registry.load gives it to serving workers
    validation = parity(
        splits.validation.labels,
        baseline.validation,
        candidate.predict_proba(splits.validation.texts),
        n_boot=settings.n_boot,
    )
    test = parity(
        splits.test.labels,
        baseline.test,
        candidate.predict_proba(splits.test.texts),
        n_boot=settings.n_boot,
    )
    job.say(f"{transform}: timing at {', '.join(map(str, settings.threads))} thread(s)")
    report = TransformReport(
        transform=transform,
        outcome=Outcome.REFUSED,
        reason="",
        tolerance=_tolerance(transform, job.accuracy_budget),
        size_bytes=candidate.size_bytes,
        validation=validation,
        test=test,
        timings=[
            timing(
                candidate.with_threads(n).predict_proba,
                splits.test.texts,
                threads=n,
                requests=settings.requests,
                batches=settings.batches,
            )
            for n in settings.threads
        ],
        details=details,
    )
    report = _judge(report, validation, test, job.accuracy_budget, job.target_latency_ms)
    if report.outcome is Outcome.REGISTERED:
        job.say(f"{transform}: registering")
        return register_candidate(
            job.registry,
            job.source,
            candidate,
            report,
            baseline.original,
            splits,
            settings,
            job.actor,
        )
    return log_refusal(job.registry, job.source, report)


def _build(
    classifier: TextClassifier,
    transform: str,
    splits: ReviewSplits,
    settings: Settings,
    say: Progress,
) -> tuple[OnnxTextModel, dict[str, Any]]:
    """The candidate ONNX text model of ``transform`` and what the report should say of it."""
    from shipyard.optimize import transforms as t
    from shipyard.optimize.formats import OnnxTextModel

    details: dict[str, Any] = {}
    if transform == "onnx":
        data = t.export_onnx(classifier)
    elif transform == "dynamic-int8":
        data = t.dynamic_int8(classifier)
    elif transform == "static-int8":
        calibration = splits.validation.texts[: settings.calibration_rows]
        details["calibration_reviews"] = len(calibration)
        data = t.static_int8(classifier, calibration)
    elif transform == "prune":
        pruned = t.prune(classifier, settings.sparsity)
        details["sparsity"] = round(t.zero_share(pruned), 4)
        data = t.export_onnx(pruned)
    else:
        from shipyard.optimize.distill import distill

        texts = splits.train.texts[: settings.distill_rows]
        student = distill(
            classifier,
            texts,
            layers=settings.student_layers,
            epochs=settings.distill_epochs,
            progress=say,
        )
        details.update(
            student_layers=settings.student_layers,
            distill_reviews=len(texts),
            epochs=settings.distill_epochs,
        )
        data = t.dynamic_int8(student)
    return OnnxTextModel.from_bytes(data), details


def _tolerance(transform: str, accuracy_budget: float) -> str:
    if transform in EXACT:
        return f"max |Δ probability| ≤ {EXACT_TOLERANCE:g} on the test reviews (exact)"
    return f"validation accuracy drop ≤ {accuracy_budget:.3f} (lossy)"


def _judge(
    report: TransformReport,
    validation: Parity,
    test: Parity,
    accuracy_budget: float,
    target_latency_ms: float | None,
) -> TransformReport:
    """Set the outcome: refused beyond tolerance, missed target if too slow, else registered."""
    if report.transform in EXACT:
        if test.max_abs_diff > EXACT_TOLERANCE:
            return replace(
                report,
                reason=f"Refused: max |Δ probability| {test.max_abs_diff:.2e} on the test "
                f"reviews exceeds {EXACT_TOLERANCE:g}.",
            )
    else:
        drop = -validation.accuracy_change.estimate
        if drop > accuracy_budget:
            return replace(
                report,
                reason=f"Refused: validation accuracy dropped by {drop:.3f} "
                f"({signed(validation.accuracy_change)}), beyond the budget of "
                f"{accuracy_budget:.3f}.",
            )
    one = report.timing(1) or report.timings[0]
    if target_latency_ms is not None and one.p50_ms > target_latency_ms:
        return replace(
            report,
            outcome=Outcome.MISSED_TARGET,
            reason=f"Not registered: p50 latency {one.p50_ms:.2f} ms at {one.threads} thread(s) "
            f"misses the target of {target_latency_ms:g} ms (parity within tolerance).",
        )
    within = (
        f"max |Δ probability| {test.max_abs_diff:.2e}"
        if report.transform in EXACT
        else f"validation accuracy change {signed(validation.accuracy_change)}"
    )
    met = "" if target_latency_ms is None else f"; meets the {target_latency_ms:g} ms target"
    return replace(report, outcome=Outcome.REGISTERED, reason=f"Within tolerance: {within}{met}.")


def _skipped(transform: str, met: str) -> TransformReport:
    return TransformReport(
        transform=transform,
        outcome=Outcome.SKIPPED,
        reason=f"Skipped: {met} already met the latency target.",
        tolerance="not tried",
    )


class _torch_threads:  # noqa: N801  (used as a context manager, like torch's own)
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.before = 0

    def __enter__(self) -> None:
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.before)


def _torch_timing(
    classifier: TextClassifier, texts: Sequence[str], threads: int, settings: Settings
) -> Timing:
    with _torch_threads(threads):
        return timing(
            classifier.predict_proba,
            texts,
            threads=threads,
            requests=settings.requests,
            batches=settings.batches,
        )
