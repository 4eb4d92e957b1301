"""The optimization report: per transform, parity, size and speed; what was registered or why not.

One :class:`TransformReport` per transform tried, gathered in an :class:`OptimizeResult`
with the original's own size and speed. Written as Markdown and JSON
(:meth:`OptimizeResult.write`) and, per transform, as a section of the new version's card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from shipyard.integrity import write_atomically
from shipyard.optimize.measure import Parity, Timing


class Outcome(StrEnum):
    """What became of a transform."""

    REGISTERED = "registered"
    REFUSED = "refused"
    """Beyond its tolerance (parity or accuracy budget): not registered."""
    MISSED_TARGET = "missed target"
    """Within tolerance but slower than ``--target-latency-ms``: not registered."""
    SKIPPED = "skipped"
    """Not tried: an earlier transform met the latency target."""


@dataclass
class TransformReport:
    """What one transform produced and how it compares with the original."""

    transform: str
    outcome: Outcome
    reason: str
    tolerance: str
    version: int | None = None
    run_id: str | None = None
    size_bytes: int | None = None
    validation: Parity | None = None
    """Parity on the validation reviews (what the accuracy budget is checked on)."""
    test: Parity | None = None
    """Parity on the test reviews (the reported change)."""
    timings: list[Timing] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def timing(self, threads: int) -> Timing | None:
        """The timing at ``threads`` threads, if measured."""
        return next((t for t in self.timings if t.threads == threads), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "transform": self.transform,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "tolerance": self.tolerance,
            "version": self.version,
            "run_id": self.run_id,
            "size_bytes": self.size_bytes,
            "validation": self.validation.to_dict() if self.validation else None,
            "test": self.test.to_dict() if self.test else None,
            "timings": [t.to_dict() for t in self.timings],
            "details": self.details,
        }

    def markdown(self, original: OriginalModel | None = None) -> str:
        """A Markdown section: outcome, parity, size and speed (against ``original``)."""
        lines = [f"### {self.transform}: {self.outcome.value}", "", self.reason, ""]
        lines.append(f"Tolerance: {self.tolerance}.")
        if self.details:
            lines.append("Details: " + ", ".join(f"{k} = {v}" for k, v in self.details.items()))
        lines.append("")
        rows = []
        for label, found in (("test", self.test), ("validation", self.validation)):
            if found is not None:
                rows.append(
                    f"| {label} ({found.rows} reviews) | {found.max_abs_diff:.2e} | "
                    f"{found.flipped_share:.2%} | {found.accuracy:.3f} | "
                    f"{signed(found.accuracy_change)} | {signed(found.roc_auc_change)} |"
                )
        if rows:
            lines += [
                "| reviews | max abs Δ probability | decisions flipped | accuracy | "
                "Δ accuracy [95% CI] | Δ ROC AUC [95% CI] |",
                "|---|---|---|---|---|---|",
                *rows,
                "",
            ]
        if self.size_bytes is not None or self.timings:
            lines += _speed_table(self, original)
        return "\n".join(lines).rstrip() + "\n"


@dataclass
class OriginalModel:
    """The registered version being optimized, measured the same way (eager PyTorch)."""

    name: str
    version: int
    framework: str
    size_bytes: int
    timings: list[Timing] = field(default_factory=list)

    def timing(self, threads: int) -> Timing | None:
        """The timing at ``threads`` threads, if measured."""
        return next((t for t in self.timings if t.threads == threads), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form."""
        return {
            "name": self.name,
            "version": self.version,
            "framework": self.framework,
            "size_bytes": self.size_bytes,
            "timings": [t.to_dict() for t in self.timings],
        }


@dataclass
class OptimizeResult:
    """Every transform tried on one version, the original's measurements, and the choice.

    ``chosen`` is the transform that met ``target_latency_ms`` (one-review p50 latency at one
    thread) within the accuracy budget, when a target was given.
    """

    original: OriginalModel
    reports: list[TransformReport]
    accuracy_budget: float
    target_latency_ms: float | None = None
    chosen: str | None = None

    @property
    def registered(self) -> list[TransformReport]:
        """The transforms that produced a registered version."""
        return [r for r in self.reports if r.outcome is Outcome.REGISTERED]

    def report(self, transform: str) -> TransformReport:
        """The report of ``transform``; KeyError if it was not asked for."""
        for found in self.reports:
            if found.transform == transform:
                return found
        raise KeyError(transform)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (``report.json``)."""
        return {
            "original": self.original.to_dict(),
            "accuracy_budget": self.accuracy_budget,
            "target_latency_ms": self.target_latency_ms,
            "chosen": self.chosen,
            "transforms": [r.to_dict() for r in self.reports],
        }

    def summary(self) -> str:
        """One line per transform: outcome, version, p50 latency at one thread."""
        lines = []
        for r in self.reports:
            where = f" as v{r.version}" if r.version is not None else ""
            one = r.timing(1)
            speed = f", p50 {one.p50_ms:.2f} ms at 1 thread" if one else ""
            lines.append(f"{r.transform}: {r.outcome.value}{where}{speed}: {r.reason}")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The whole report in Markdown (``report.md``)."""
        o = self.original
        head = [
            f"# Optimization of {o.name} v{o.version} ({o.framework})",
            "",
            f"Accuracy budget: a drop of at most {self.accuracy_budget:.3f} in validation "
            "accuracy. Latency: one review per call; throughput: batches of 32 reviews; "
            "in-process, at the thread counts shown.",
        ]
        if self.target_latency_ms is not None:
            verdict = (
                f"**{self.chosen}** is the first to meet it"
                if self.chosen
                else "no transform met it within the budget"
            )
            head += [
                "",
                f"Target: one-review p50 latency at 1 thread ≤ {self.target_latency_ms:g} ms; "
                f"{verdict}.",
            ]
        head += ["", "## Original", "", *_speed_table(None, o), "## Transforms", ""]
        body = [r.markdown(o) for r in self.reports]
        return "\n".join(head) + "\n" + "\n".join(body)

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.json`` into ``folder`` (atomically); their paths."""
        md, js = folder / "report.md", folder / "report.json"
        write_atomically(md, self.markdown().encode())
        write_atomically(js, json.dumps(self.to_dict(), indent=2).encode())
        return md, js


def signed(found: Any) -> str:
    """An interval as an estimate with its bounds, each with its sign: +0.004 [-0.010, +0.018]."""
    return f"{found.estimate:+.3f} [{found.low:+.3f}, {found.high:+.3f}]"


def _speed_table(report: TransformReport | None, original: OriginalModel | None) -> list[str]:
    """Rows of size and speed: the transform's (when given) beside the original's."""
    subject: TransformReport | OriginalModel | None = report if report is not None else original
    if subject is None:
        return []
    lines = [
        "| threads | p50 latency (ms) | p99 latency (ms) | throughput (reviews/s) | "
        "speed-up (batches) |",
        "|---|---|---|---|---|",
    ]
    for t in subject.timings:
        base = original.timing(t.threads) if original is not None and report is not None else None
        gain = f"{t.reviews_per_s / base.reviews_per_s:.1f}×" if base else "—"
        lines.append(
            f"| {t.threads} | {t.p50_ms:.2f} | {t.p99_ms:.2f} | {t.reviews_per_s:,.0f} | {gain} |"
        )
    size = subject.size_bytes
    if size is not None:
        ratio = ""
        if report is not None and original is not None and original.size_bytes:
            ratio = f" ({size / original.size_bytes:.0%} of the original's)"
        lines.insert(0, f"Size on disk: {size / 1e6:.1f} MB{ratio}.")
        lines.insert(1, "")
    return [*lines, ""]


def markdown_html(text: str) -> str:
    """HTML of the report's own Markdown (headings, paragraphs, pipe tables; text escaped)."""
    import html

    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *body = table
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in body
            )
            out.append(f"<table><tr>{cells}</tr>{rows}</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    flush()
    return "".join(out)
