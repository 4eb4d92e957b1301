"""The root-cause report for people: a few lines of text, and one self-contained HTML page.

:func:`render_text` is what ``RootCauseReport.text()`` returns (a terminal, an alert, a
ticket); :func:`render_rca` is the page :func:`shipyard.monitoring.rca.write_rca` writes.
The page has no script and loads nothing (a Content-Security-Policy forbids any fetch, like
the monitoring report's); figures are inline SVG.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shipyard.monitoring.performance import Metric
    from shipyard.monitoring.rca import RootCauseReport


def render_rca(report: RootCauseReport) -> str:
    """The report as an HTML document."""
    import html

    return f"<!DOCTYPE html>\n<pre>{html.escape(report.text())}</pre>\n"


# -- the text form --------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _rate(metric: Metric) -> str:
    if metric.value is None or metric.low is None or metric.high is None:
        return "insufficient data"
    return f"{_pct(metric.value)} [{_pct(metric.low)}, {_pct(metric.high)}]"


def _ratio(value: float | None) -> str:
    if value is None:
        return "changed"
    return f"x{value:.3g}" if value >= 1 else f"x{value:.3g} (/{1 / value:.3g})"


def _minute(moment: datetime | None) -> str:
    return "unknown" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _headline(report: RootCauseReport) -> str:
    d = report.deployment
    top = report.top_feature
    who = f"{d.model} v{d.version}"
    if top is None:
        return (
            f"No input feature of {who} on {d.endpoint} shifted against v{d.baseline}: "
            "neither seen differently on the same requests nor drifted in traffic."
        )
    seen = next((s for s in report.seen if s.column == top and s.share_changed > 0), None)
    if seen is not None:
        return (
            f"Top feature: {top}: v{d.version} sees it {_ratio(seen.typical_ratio)} of what "
            f"v{d.baseline} sees on the same requests ({_pct(seen.share_changed)} of rows, "
            f"effect {seen.effect:.3g} sd): a feature transformation packaged with v{d.version}."
        )
    shift = next(t for t in report.traffic if t.column == top)
    return (
        f"Top feature: {top}: its traffic drifted (Jensen-Shannon {shift.distance or 0:.3f}, "
        f"mean {shift.baseline_mean or 0:.4g} -> {shift.suspect_mean or 0:.4g}): the data "
        "upstream of the model changed."
    )


def render_text(report: RootCauseReport) -> str:
    """The report in a few lines for a terminal or an alert, the top feature first."""
    d, o = report.deployment, report.outputs
    lines = [
        _headline(report),
        f"Endpoint {d.endpoint}: {d.model} v{d.version} against v{d.baseline} "
        f"({d.baseline_source}).",
    ]
    since = (
        f"Since: policy revision {d.revision} at {_minute(d.introduced_at)} UTC by "
        f"{d.introduced_by} ({d.introduced_because!r})"
        if d.revision is not None
        else "Since: no policy revision names it"
    )
    lines.append(
        f"{since}; requests {_minute(d.first_request)} to {_minute(d.last_request)} UTC "
        f"({d.n_requests:,} requests, {d.n_rows:,} rows)."
    )
    lines += [f"  {i.action} at {_minute(i.at)} UTC: {i.reason}" for i in d.incidents]
    lines.append(
        f"Outputs: alert rate {_rate(o.suspect_alert_rate)} vs {_rate(o.baseline_alert_rate)} "
        f"(thresholds {o.suspect_threshold:g} / {o.baseline_threshold:g}); mean score "
        f"{o.suspect_mean:.3g} vs {o.baseline_mean:.3g}; on the same requests the versions "
        f"decide differently on {_rate(o.paired_flip_rate)} ({o.paired_up:,} more alerts, "
        f"{o.paired_down:,} fewer)."
    )
    moved = [s for s in report.seen if s.share_changed > 0][:3]
    lines.append(
        "Seen differently: "
        + (", ".join(f"{s.column} {_ratio(s.typical_ratio)} ({_pct(s.share_changed)})"
                     for s in moved) or "none (both versions see the inputs alike)")
    )  # fmt: skip
    drifted = [t for t in report.traffic if t.verdict == "drift"][:3]
    if not report.traffic:
        lines.append(f"Traffic drift: not tested ({report.traffic_note}).")
    elif drifted:
        lines.append(
            "Traffic drift: " + ", ".join(f"{t.column} (JS {t.distance or 0:.3f})" for t in drifted)
        )
    else:
        largest = report.traffic[0]
        lines.append(
            f"Traffic drift: no input drifted (largest {largest.column}, "
            f"JS {largest.distance or 0:.3f})."
        )
    lines += [
        f"Segment {s.column} {s.label}: alert rate {_pct(s.baseline_alert_rate)} -> "
        f"{_pct(s.suspect_alert_rate)} (n={s.n:,}{', small' if s.small else ''})"
        for s in report.segments[:3]
    ]
    return "\n".join(lines)
