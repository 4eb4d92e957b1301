"""The monitoring report: one self-contained HTML file an on-call engineer opens from disk.

``render_report(run, history=load_points(ws, endpoint), alerts=...)`` returns the page as
text and ``write_report(run, "report.html", ...)`` writes it atomically; ``shipyard monitor
report ENDPOINT --out report.html`` does both. The page has no script and loads nothing:
every figure is inline SVG (its text stays text: searchable and selectable), the style is
inline, and a Content-Security-Policy forbids any fetch, so it opens the same from a
laptop, an e-mail attachment or an air-gapped machine: double-click it, or ``xdg-open
report.html`` (``open`` on macOS). A month of daily windows over 35 columns is under 1 MB.

What it shows, in the order an on-call engineer reads it:

1. **Summary**: the endpoint, the run's span and window length, the windows shown, when
   it was generated, and per group (model version or arm) a banner with the latest
   window's verdict in words (drift, no drift or insufficient data), the columns that
   drifted, the open alerts, and that window's mean score, alert rate and performance.
2. **Alerts**: a table (status, rule, group, metric, message, since, latest value against
   the rule), open ones first, and an alert timeline: windows on the x axis, one row per
   rule and series, breaching windows coloured by the alert's status. Resolved alerts
   whose windows all ended before the page's first window are counted, not listed.
3. **Drift over time**, per group: the distance of the drifted columns (or the most
   distant ones) per window, with the effect-size floor as a dashed line, and a strip
   with the data set's verdict and the number of drifted columns per window.
4. **Distributions** of each drifted column in the latest window: the reference's and the
   window's share of rows per bin (numeric columns: bins labelled by their edges;
   categorical columns: the most frequent categories), the missing (and unseen) share,
   and in the caption the mean's shift, the distance and the corrected p-value.
5. **Performance**: realized (from joined labels) against estimated (CBPE, no labels)
   per metric and window, with their intervals as bands, and the share labelled.
6. **Traffic**: records logged per window, mean score and alert rate.
7. **Columns**: the latest window's table per column: test, corrected p-value, distance,
   floor, verdict and rows tested.

Each figure has a title, axis labels and a caption saying how to read it. A window with
too little data for a quantity is a gap in its line, shaded grey, and "insufficient data"
in text and tables: never a 0. ``history`` (stored points of earlier runs) extends the time
plots of the run's groups beyond its span; where both have a point, the run's wins.
"""

from __future__ import annotations

import html
import io
import itertools
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shipyard.errors import invalid_parameter
from shipyard.monitoring.drift import Verdict
from shipyard.monitoring.points import Point
from shipyard.monitoring.profiles import CategoricalProfile, NumericProfile
from shipyard.monitoring.report import ColumnDrift
from shipyard.monitoring.run import GroupWindow, MonitorRun

MAX_DRIFT_LINES = 8
"""Columns drawn in one drift-over-time figure (drifted ones first, then the most distant)."""
MAX_OVERLAYS = 12
"""Distribution overlays per group; further drifted columns are named in the text."""
MAX_CATEGORIES = 15
"""Categories drawn in one overlay; the rest are summed into one "other" bar."""

_OWNER = "render_report"
_STATUS_ORDER = {"open": 0, "acknowledged": 1, "resolved": 2}
_STATUS_COLOUR = {"open": "#c62828", "acknowledged": "#ef6c00", "resolved": "#757575"}
_VERDICT_COLOUR = {
    Verdict.DRIFT: "#c62828",
    Verdict.NO_DRIFT: "#2e7d32",
    Verdict.INSUFFICIENT_DATA: "#9e9e9e",
}
_PERFORMANCE_ORDER = (
    "roc_auc",
    "auc",
    "average_precision",
    "ap",
    "precision",
    "recall",
    "false_positive_rate",
    "fpr",
)
_REFERENCE_COLOUR = "#5c6bc0"
_CURRENT_COLOUR = "#ef6c00"
_GAP_COLOUR = "#e0e0e0"

_Window = tuple[datetime, datetime]


def render_report(
    run: MonitorRun,
    *,
    history: Sequence[Point] = (),
    alerts: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The report of ``run`` as one HTML document (see the module docstring for its parts).

    ``history``: stored points of earlier windows (``load_points(ws, endpoint)``), merged
    with the run's (the run's point wins for the same group, metric and window).
    ``alerts``: ``Alert.to_dict()`` mappings; None takes ``run.alerts``.
    """
    if not isinstance(run, MonitorRun):
        raise invalid_parameter("run", _OWNER, "a MonitorRun", run)
    if isinstance(history, str | bytes) or not isinstance(history, Sequence):
        raise invalid_parameter("history", _OWNER, "a sequence of Point", history)
    for point in history:
        if not isinstance(point, Point):
            raise invalid_parameter("history", _OWNER, "a sequence of Point", point)
    if alerts is None:
        alerts = [a.to_dict() for a in run.alerts]
    elif isinstance(alerts, str | bytes) or not isinstance(alerts, Sequence):
        raise invalid_parameter("alerts", _OWNER, "a sequence of Alert.to_dict() mappings", alerts)
    for alert in alerts:
        if not isinstance(alert, Mapping):
            raise invalid_parameter(
                "alerts", _OWNER, "a sequence of Alert.to_dict() mappings", alert
            )
    return _Report(run, history, [_AlertRow.of(a) for a in alerts]).render()


def write_report(
    run: MonitorRun,
    path: str | Path,
    *,
    history: Sequence[Point] = (),
    alerts: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write :func:`render_report` to ``path`` atomically (a reader never sees half a file),
    readable by others like any file the user creates (mode 0644 under a 022 umask)."""
    import os

    from shipyard.integrity import write_atomically

    target = Path(path)
    text = render_report(run, history=history, alerts=alerts)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, text.encode("utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    target.chmod(0o666 & ~umask)
    return target


# --------------------------------------------------------------------------------------
# text


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "insufficient data"
    if 1_000 <= abs(value) < 1e9:
        return f"{value:,.0f}"  # 1,020 reads better than 1.02e+03
    return f"{value:.{digits}g}"


def _p_value(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "insufficient data"
    if value == 0:
        return "< 1e-300"  # below the smallest double: the test is beyond doubt
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment.hour == moment.minute == moment.second == moment.microsecond == 0:
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M")


def _span(start: datetime, end: datetime) -> str:
    return f"{_when(start)} → {_when(end)}"


def _duration(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} s"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _moment(value: Any) -> datetime | None:
    """A datetime from an alert field (datetime or ISO text), naive UTC; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------------------
# alerts


@dataclass(frozen=True)
class _AlertRow:
    """The fields of one ``Alert.to_dict()`` the report shows."""

    rule: str
    group: str
    metric: str
    status: str
    message: str
    op: str
    threshold: float | None
    breaches: tuple[tuple[datetime, datetime, float | None], ...]
    """(window start, window end, value) of each breaching window, oldest first."""
    since: datetime | None
    raised_at: datetime | None
    resolved_at: datetime | None
    acknowledged_by: str

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> _AlertRow:
        breaches = []
        # ``breaches`` in shipyard.monitoring.alerts; ``values`` in its first draft.
        for item in data.get("breaches") or data.get("values") or ():
            if not isinstance(item, Mapping):
                continue
            start, end = _moment(item.get("window_start")), _moment(item.get("window_end"))
            if start is not None and end is not None:
                breaches.append((start, end, _float(item.get("value"))))
        breaches.sort(key=lambda b: b[0])
        first = breaches[0][0] if breaches else None
        since = _moment(data.get("first_window_start")) or first
        return cls(
            rule=str(data.get("rule") or data.get("id") or "alert"),
            group=str(data.get("group") or ""),
            metric=str(data.get("metric") or ""),
            status=str(data.get("status") or "open"),
            message=str(data.get("message") or ""),
            op=str(data.get("op") or ""),
            threshold=_float(data.get("threshold")),
            breaches=tuple(breaches),
            since=since,
            raised_at=_moment(data.get("raised_at")),
            resolved_at=_moment(data.get("resolved_at")),
            acknowledged_by=str(data.get("acknowledged_by") or ""),
        )

    @property
    def series(self) -> str:
        return " · ".join(x for x in (self.rule, self.group, self.metric) if x)

    @property
    def latest_value(self) -> str:
        if not self.breaches:
            return "—"
        text = _number(self.breaches[-1][2])
        if self.op and self.threshold is not None:
            text += f" ({self.op} {_number(self.threshold)})"
        return text


# --------------------------------------------------------------------------------------
# figures


class _Figures:
    """Matplotlib figures rendered as inline SVG, text kept as text, ids unique per figure.

    Figures are made without pyplot: no global backend is switched and none is left open.
    """

    def __init__(self) -> None:
        self.count = 0

    def new(self, rows: int = 1, cols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
        from matplotlib.figure import Figure

        figsize = kwargs.pop("figsize", None)
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(rows, cols, **kwargs)

    def svg(self, fig: Any, label: str) -> str:
        import matplotlib as mpl

        self.count += 1
        buffer = io.StringIO()
        # A salt per figure keeps the ids of clip paths and markers unique on the page.
        mpl.rcParams["svg.hashsalt"] = f"shipyard-figure-{self.count}"
        fig.savefig(
            buffer,
            format="svg",
            bbox_inches="tight",
            metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
        )
        text = buffer.getvalue()
        text = text[text.index("<svg") :]
        # Inline SVG in HTML needs no namespace declarations, and the page names no URL.
        text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text, count=3)
        text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
        return text.replace("<svg", f'<svg role="img" aria-label="{_e(label)}"', 1)


def _style_axes(ax: Any, windows: Sequence[_Window] | None) -> None:
    """Light grid, no top/right frame; a date axis over ``windows`` unless None.

    A few windows get one tick per window boundary, so each tick is where a window starts.
    """
    ax.grid(True, color="#eeeeee", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if windows is None:
        return
    mdates = _dates()
    edges = sorted({start for start, _ in windows} | {end for _, end in windows})
    if edges:
        first, last = float(mdates.date2num(edges[0])), float(mdates.date2num(edges[-1]))
        margin = 0.02 * (last - first)
        ax.set_xlim(first - margin, last + margin)
    if 2 <= len(edges) <= 8:
        from matplotlib.ticker import FixedLocator

        locator = FixedLocator([float(mdates.date2num(edge)) for edge in edges])
    else:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _dates() -> Any:
    """``matplotlib.dates`` (typed Any: its functions carry no annotations)."""
    import matplotlib.dates

    return matplotlib.dates


def _x(windows: Sequence[_Window]) -> list[float]:
    """Window midpoints as matplotlib date numbers."""
    mdates = _dates()
    return [float(mdates.date2num(a + (b - a) / 2)) for a, b in windows]


def _bar(window: _Window) -> tuple[float, float]:
    """A window as (start, width) in matplotlib date numbers."""
    mdates = _dates()
    start, end = (float(mdates.date2num(t)) for t in window)
    return start, end - start


def _shade_gaps(ax: Any, windows: Sequence[_Window], empty: Sequence[bool]) -> bool:
    """Shade the windows with no value; True if any was shaded (for the legend)."""
    shaded = False
    for window, gap in zip(windows, empty, strict=True):
        if gap:
            start, width = _bar(window)
            ax.axvspan(
                start,
                start + width,
                color=_GAP_COLOUR,
                zorder=0,
                label=None if shaded else "insufficient data",
            )
            shaded = True
    return shaded


def _figure_html(svg: str, caption: str, anchor: str = "") -> str:
    id_attr = f' id="{_e(anchor)}"' if anchor else ""
    return f"<figure{id_attr}>{svg}<figcaption>{caption}</figcaption></figure>"


# --------------------------------------------------------------------------------------
# the report


class _Report:
    def __init__(self, run: MonitorRun, history: Sequence[Point], alerts: list[_AlertRow]):
        self.run = run
        merged: dict[tuple[str, str, datetime, datetime], Point] = {}
        for point in itertools.chain(history, run.points):
            if point.endpoint == run.endpoint:
                merged[(point.group, point.metric, point.window_start, point.window_end)] = point
        self.points = merged
        newest_first = sorted(alerts, key=lambda a: a.raised_at or datetime.min, reverse=True)
        self.all_alerts = sorted(newest_first, key=lambda a: _STATUS_ORDER.get(a.status, 3))
        shown = self.all_windows()
        since = shown[0][0] if shown else None
        # An active alert always shows; a resolved one while its windows are on the page.
        self.alerts = [
            a
            for a in self.all_alerts
            if a.status != "resolved"
            or since is None
            or not a.breaches
            or a.breaches[-1][1] > since
        ]
        groups = list(run.groups)
        for point in run.points:
            if point.group not in groups:
                groups.append(point.group)
        for window in run.windows:
            if window.group not in groups:
                groups.append(window.group)
        if not groups:
            # No traffic in the run's span: the stored windows are all there is to show.
            groups = sorted({key[0] for key in self.points})
        self.groups = groups
        self.figures = _Figures()

    # ---- data access

    def windows(self, group: str) -> list[_Window]:
        return sorted({(k[2], k[3]) for k in self.points if k[0] == group})

    def all_windows(self) -> list[_Window]:
        return sorted({(k[2], k[3]) for k in self.points})

    def values(self, group: str, metric: str, windows: Sequence[_Window]) -> list[Point | None]:
        return [self.points.get((group, metric, a, b)) for a, b in windows]

    def metrics(self, group: str, prefix: str) -> list[str]:
        return sorted(
            {k[1][len(prefix) :] for k in self.points if k[0] == group and k[1].startswith(prefix)}
        )

    # ---- page

    def render(self) -> str:
        import matplotlib as mpl

        settings: Any = {
            "svg.fonttype": "none",  # text stays text: searchable, selectable, small
            "text.parse_math": False,  # a "$" in a column name is a dollar, not TeX
            "font.size": 9,
        }
        with mpl.rc_context(settings), warnings.catch_warnings():
            # Layout advice about tick spacing is no reason to fail a report.
            for message in ("AutoDateLocator was unable", "Tight layout not applied"):
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            return self.page()

    def page(self) -> str:
        run = self.run
        title = f"Monitoring report — {run.endpoint}"
        sections = [
            self.summary(),
            self.alerts_section(),
            self.drift_section(),
            self.distributions_section(),
            self.performance_section(),
            self.traffic_section(),
            self.columns_section(),
        ]
        nav = " · ".join(
            f'<a href="#{anchor}">{name}</a>'
            for anchor, name in (
                ("alerts", "Alerts"),
                ("drift", "Drift over time"),
                ("distributions", "Distributions"),
                ("performance", "Performance"),
                ("traffic", "Traffic"),
                ("columns", "Columns"),
            )
        )
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; img-src data:\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><nav>{nav}</nav></header>"
            f"<main>{''.join(sections)}</main>"
            f"<footer>{_FOOTER}</footer></body></html>\n"
        )

    # ---- 1. summary

    def summary(self) -> str:
        run = self.run
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        windows = self.all_windows()
        windows_text = (
            f"{len(windows)} windows, {_span(windows[0][0], windows[-1][1])} "
            "(this run and stored history)"
            if windows
            else "none"
        )
        facts = [
            ("Endpoint", _e(run.endpoint)),
            ("This run", f"{_span(run.start, run.end)} (UTC), windows of {_duration(run.window)}"),
            ("Windows shown", windows_text),
            ("Groups", _e(", ".join(self.groups)) or "none"),
            ("Serving threshold", _thresholds(run)),
            ("Run id", _e(run.run_id)),
            ("Generated", generated),
        ]
        rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
        n_open = sum(a.status == "open" for a in self.alerts)
        banners = [self.banner(group) for group in self.groups] or [
            '<div class="banner insufficient"><strong>Insufficient data:</strong> '
            "this run found no predictions in its span, so nothing could be tested. "
            f"{_plural(n_open, 'open alert')}.</div>"
        ]
        return (
            '<section id="summary"><h2>Summary</h2>'
            f'<table class="facts">{rows}</table>{"".join(banners)}</section>'
        )

    def banner(self, group: str) -> str:
        latest = self.run.latest(group)
        open_alerts = [a for a in self.alerts if a.group == group and a.status == "open"]
        acknowledged = [a for a in self.alerts if a.group == group and a.status == "acknowledged"]
        alert_text = (
            f"{_plural(len(open_alerts), 'open alert')}"
            + (f", {len(acknowledged)} acknowledged" if acknowledged else "")
            + "."
        )
        name = f"<strong>{_e(group)}</strong>"
        if latest is None:
            verdict = Verdict.INSUFFICIENT_DATA
            text = "this run found no predictions of this group in its span."
        else:
            report = latest.drift
            verdict = report.verdict
            where = (
                f"in the window {_span(latest.window_start, latest.window_end)} "
                f"({_plural(report.n_current, 'row')})"
            )
            n_columns = len(report.columns)
            untested = [c for c in report.columns if c.verdict is Verdict.INSUFFICIENT_DATA]
            if verdict is Verdict.DRIFT:
                drifted = self.ranked_drifted(latest)
                named = ", ".join(_e(c.column) for c in drifted[:10])
                more = f" and {len(drifted) - 10} more" if len(drifted) > 10 else ""
                text = f"{len(drifted)} of {n_columns} columns drifted {where}: {named}{more}."
            elif verdict is Verdict.NO_DRIFT:
                text = f"none of {n_columns} columns drifted {where}."
            elif latest.n_records == 0:
                text = f"no predictions were logged {where}."
            else:
                text = (
                    f"{len(untested)} of {n_columns} columns had too few rows to test {where}, "
                    "and none of the others drifted."
                )
        css = {
            Verdict.DRIFT: "drift",
            Verdict.NO_DRIFT: "ok",
            Verdict.INSUFFICIENT_DATA: "insufficient",
        }[verdict]
        numbers = self.headline(group, latest)
        return (
            f'<div class="banner {css}">{name}: <span class="verdict">{_e(verdict.value)}</span>'
            f" — {text} {alert_text}"
            + (f'<div class="numbers">{numbers}</div>' if numbers else "")
            + "</div>"
        )

    def headline(self, group: str, latest: GroupWindow | None) -> str:
        """The latest window's score, alert rate and first performance metric, in words."""
        if latest is not None and latest.n_records == 0:
            return ""  # the verdict already says no predictions were logged
        windows = self.windows(group)
        if latest is not None:
            windows = [w for w in windows if w == (latest.window_start, latest.window_end)]
        if not windows:
            return ""
        window = windows[-1:]
        parts = []
        for metric, label, percent in (
            ("prediction.mean", "mean score", False),
            ("alert_rate", "alert rate", True),
        ):
            point = self.values(group, metric, window)[0]
            if point is not None:
                value = point.value
                shown = _number(value) if not percent or value is None else f"{value:.1%}"
                parts.append(f"{label} {shown}")
        names = self.performance_names(group)
        if names:
            name = names[0]
            for kind in ("estimated", "realized"):
                found = self.values(group, f"{kind}.{name}", window)[0]
                parts.append(f"{kind} {_e(name)} {_number(found.value if found else None)}")
        return ("Latest window: " + ", ".join(parts) + ".") if parts else ""

    @staticmethod
    def ranked_drifted(window: GroupWindow) -> list[ColumnDrift]:
        drifted = [c for c in window.drift.columns if c.verdict is Verdict.DRIFT]
        return sorted(drifted, key=lambda c: -_finite_or(c.distance.statistic, -1.0))

    # ---- 2. alerts

    def alerts_section(self) -> str:
        head = '<section id="alerts"><h2>Alerts</h2>'
        if not self.alerts:
            return head + "<p>No alert is open, acknowledged or was raised.</p></section>"
        rows = []
        older = len(self.all_alerts) - len(self.alerts)
        if older:
            head += (
                f"<p>{_plural(older, 'resolved alert')} whose windows all ended before this "
                "report's first window are not shown.</p>"
            )
        for a in self.alerts:
            status = _e(a.status)
            who = f" by {_e(a.acknowledged_by)}" if a.acknowledged_by else ""
            if a.resolved_at is not None:
                who += f" on {_when(a.resolved_at)}"
            rows.append(
                f'<tr><td><span class="status {status}">{status}</span>{who}</td>'
                f"<td>{_e(a.rule)}</td><td>{_e(a.group)}</td><td>{_e(a.metric)}</td>"
                f"<td>{_e(a.message)}</td><td>{_when(a.since)}</td>"
                f"<td>{_e(a.latest_value)}</td><td>{_when(a.raised_at)}</td></tr>"
            )
        table = (
            "<table><thead><tr><th>Status</th><th>Rule</th><th>Group</th><th>Metric</th>"
            "<th>Message</th><th>Since (window)</th><th>Latest value (rule)</th>"
            f"<th>Raised at (UTC)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
        return head + table + self.alert_timeline() + "</section>"

    def alert_timeline(self) -> str:
        from matplotlib.patches import Patch

        series: dict[str, list[_AlertRow]] = {}
        for a in self.alerts:
            series.setdefault(a.series, []).append(a)
        names = list(series)
        fig, ax = self.figures.new(figsize=(9.5, 1.4 + 0.45 * len(names)))
        for row, name in enumerate(names):
            first = series[name][0]
            evaluated = [
                w
                for w, p in zip(
                    self.windows(first.group),
                    self.values(first.group, first.metric, self.windows(first.group)),
                    strict=True,
                )
                if p is not None
            ]
            if evaluated:
                ax.broken_barh([_bar(w) for w in evaluated], (row - 0.12, 0.24), color="#cfd8dc")
            for a in series[name]:
                bars = [_bar((start, end)) for start, end, _ in a.breaches]
                if bars:
                    colour = _STATUS_COLOUR.get(a.status, "#000000")
                    ax.broken_barh(bars, (row - 0.35, 0.7), color=colour)
        _style_axes(ax, self.all_windows())
        ax.set_yticks(range(len(names)), [_short(n, 48) for n in names], fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlabel("window (UTC)")
        ax.set_ylabel("rule · group · metric")
        ax.set_title("Alert timeline: breaching windows per rule")
        handles = [
            Patch(color=colour, label=f"breached, alert {status}")
            for status, colour in _STATUS_COLOUR.items()
        ] + [Patch(color="#cfd8dc", label="evaluated, within the rule")]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        caption = (
            "One row per alert rule and series; a coloured bar is a window that breached the "
            "rule (red: alert open, orange: acknowledged, grey: resolved), a thin bar a window "
            "where the metric was evaluated and stayed within it. No bar: no value (insufficient "
            "data or not computed)."
        )
        return _figure_html(self.figures.svg(fig, "Alert timeline"), caption)

    # ---- 3. drift over time

    def drift_section(self) -> str:
        parts = ['<section id="drift"><h2>Drift over time</h2>']
        parts.extend(f"<h3>{_e(group)}</h3>{self.drift_over_time(group)}" for group in self.groups)
        if not self.groups:
            parts.append("<p>Insufficient data: no window has a drift report.</p>")
        return "".join(parts) + "</section>"

    def drift_over_time(self, group: str) -> str:
        import numpy as np
        from matplotlib.patches import Patch

        windows = self.windows(group)
        columns = self.metrics(group, "drift.distance.")
        distances = {
            c: _array(
                [p.value if p else None for p in self.values(group, f"drift.distance.{c}", windows)]
            )
            for c in columns
        }
        if not any(np.isfinite(y).any() for y in distances.values()):
            return "<p>Insufficient data: no window of this group has a column distance.</p>"
        latest = self.run.latest(group)
        drifted = [c.column for c in self.ranked_drifted(latest)] if latest else []
        drifted = [c for c in drifted if c in distances]

        def peak(column: str) -> float:
            y = distances[column]
            return float(np.nanmax(y)) if np.isfinite(y).any() else -1.0

        others = sorted((c for c in columns if c not in drifted), key=lambda c: -peak(c))
        shown = (drifted + others)[:MAX_DRIFT_LINES]
        fig, (ax, strip) = self.figures.new(
            2, 1, sharex=True, figsize=(9.5, 4.8), gridspec_kw={"height_ratios": [5, 1]}
        )
        x = _x(windows)
        for column in shown:
            y = distances[column]
            style = "-" if column in drifted else ":"
            suffix = " (drifted)" if column in drifted else ""
            ax.plot(x, y, style, marker="o", ms=3, lw=1.4, label=_short(column, 32) + suffix)
        floors = sorted(
            {c.distance.threshold for c in latest.drift.columns if c.column in shown}
            if latest
            else set()
        )
        for floor in floors:
            ax.axhline(floor, color="black", ls="--", lw=1, label=f"effect-size floor {floor:g}")
        drawn = np.vstack([distances[c] for c in shown])
        _shade_gaps(ax, windows, (~np.isfinite(drawn).any(axis=0)).tolist())
        distance_name = (
            latest.drift.columns[0].distance.test if latest and latest.drift.columns else "distance"
        )
        ax.set_ylabel(f"{distance_name} distance")
        ax.set_title(f"Drift over time — {_short(group, 40)}: distance to the reference per window")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        _style_axes(ax, windows)
        verdicts = self.values(group, "drift.verdict", windows)
        counts = self.values(group, "drift.columns_drifted", windows)
        for window, point, count in zip(windows, verdicts, counts, strict=True):
            if point is None:
                continue
            verdict = _verdict_of(point.value)
            start, width = _bar(window)
            strip.broken_barh([(start, width)], (0, 1), color=_VERDICT_COLOUR[verdict])
            if verdict is Verdict.DRIFT and count and count.value and len(windows) <= 40:
                strip.text(
                    start + width / 2, 0.5, f"{count.value:.0f}", ha="center", va="center",
                    fontsize=7, color="white",
                )  # fmt: skip
        strip.set_yticks([])
        strip.set_ylabel("data set\nverdict", rotation=0, ha="right", va="center", fontsize=8)
        strip.set_xlabel("window (UTC)")
        strip.legend(
            handles=[Patch(color=c, label=v.value) for v, c in _VERDICT_COLOUR.items()],
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.2),
        )
        _style_axes(strip, windows)
        strip.grid(False)
        hidden = len(columns) - len(shown)
        caption = (
            "Each line is one column's distance between its reference and the window: higher "
            "means more different. A column drifts when it is above the dashed effect-size "
            "floor and its corrected test is significant; solid lines drifted in the latest "
            "window, dotted ones are the most distant of the rest. The strip below is the data "
            "set's verdict per window, with the number of columns that drifted. Grey: "
            "insufficient data, drawn as a gap, never as 0."
            + (f" The other {hidden} columns are in the columns table." if hidden > 0 else "")
        )
        return _figure_html(self.figures.svg(fig, f"Drift over time, {group}"), _e(caption))

    # ---- 4. distributions

    def distributions_section(self) -> str:
        parts = ['<section id="distributions"><h2>Distributions of drifted columns</h2>']
        for group in self.groups:
            parts.append(f"<h3>{_e(group)}</h3>")
            latest = self.run.latest(group)
            if latest is None:
                parts.append("<p>Insufficient data: this run has no window for this group.</p>")
                continue
            drifted = self.ranked_drifted(latest)
            window = _span(latest.window_start, latest.window_end)
            if not drifted:
                parts.append(
                    f"<p>No column drifted in the latest window ({window}); overlays are drawn "
                    "for drifted columns only.</p>"
                )
                continue
            figures = [self.overlay(latest, column) for column in drifted[:MAX_OVERLAYS]]
            parts.append(f'<div class="grid">{"".join(figures)}</div>')
            if len(drifted) > MAX_OVERLAYS:
                rest = ", ".join(_e(c.column) for c in drifted[MAX_OVERLAYS:])
                parts.append(f"<p>Also drifted (see the columns table): {rest}.</p>")
        if not self.groups:
            parts.append("<p>Insufficient data: no window has a drift report.</p>")
        return "".join(parts) + "</section>"

    def overlay(self, window: GroupWindow, drift: ColumnDrift) -> str:
        import numpy as np

        column = drift.column
        reference = window.reference.columns[column]
        current = window.current.columns[column]
        labels, ref_counts, cur_counts = _buckets(reference, current)
        ref_share = ref_counts / max(int(ref_counts.sum()), 1)
        cur_share = cur_counts / max(int(cur_counts.sum()), 1)
        fig, ax = self.figures.new(figsize=(6.2, 3.6))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, ref_share, 0.4, color=_REFERENCE_COLOUR, label="reference")
        ax.bar(x + 0.2, cur_share, 0.4, color=_CURRENT_COLOUR, label="this window")
        ax.set_xticks(x, labels, rotation=55, ha="right", rotation_mode="anchor", fontsize=7)
        _style_axes(ax, None)
        numeric = isinstance(reference, NumericProfile)
        ax.set_xlabel("bin (value range)" if numeric else "category")
        ax.set_ylabel("share of rows")
        ax.set_title(f"{_short(column, 36)}: reference vs this window", fontsize=10)
        ax.legend(fontsize=7)
        shares = f"missing {_share(reference, 'missing')} → {_share(current, 'missing')}"
        if isinstance(reference, NumericProfile) and isinstance(current, NumericProfile):
            after = _number(current.mean) if current.count else "insufficient data"
            shares += f"; mean {_number(reference.mean)} → {after}"
        else:
            shares += f", unseen {_share(reference, 'unseen')} → {_share(current, 'unseen')}"
        caption = (
            f"<strong>{_e(column)}</strong> ({drift.kind.value}), window "
            f"{_span(window.window_start, window.window_end)}: share of rows per "
            f"{'bin' if numeric else 'category'}, reference (blue) against this window "
            f"(orange); the last bars are the missing{'' if numeric else ' and unseen'} share "
            f"({shares}). "
            f"{_e(drift.distance.test)} distance {_number(drift.distance.statistic)} "
            f"(floor {drift.distance.threshold:g}), corrected p {_p_value(drift.adjusted_p_value)}."
        )
        return _figure_html(self.figures.svg(fig, f"Distribution of {column}"), caption)

    # ---- 5. performance

    def performance_section(self) -> str:
        parts = ['<section id="performance"><h2>Performance: realized vs estimated</h2>']
        parts.extend(f"<h3>{_e(group)}</h3>{self.performance(group)}" for group in self.groups)
        if not self.groups:
            parts.append("<p>Insufficient data: no window has predictions.</p>")
        return "".join(parts) + "</section>"

    def performance_names(self, group: str) -> list[str]:
        """The performance metrics of ``group`` (estimated or realized), the usual ones first."""
        names = set(self.metrics(group, "estimated.")) | set(self.metrics(group, "realized."))
        last = len(_PERFORMANCE_ORDER)
        return sorted(
            names,
            key=lambda m: (_PERFORMANCE_ORDER.index(m) if m in _PERFORMANCE_ORDER else last, m),
        )

    def performance(self, group: str) -> str:
        import numpy as np

        windows = self.windows(group)
        names = self.performance_names(group)
        labelled = self.values(group, "labelled", windows)
        has_labelled = any(p is not None for p in labelled)
        if not names and not has_labelled:
            return (
                "<p>Insufficient data: no window has estimated or realized performance "
                "(estimation needs a serving threshold; realized performance needs labels).</p>"
            )
        panels = [*names, "labelled"] if has_labelled else names
        cols = 2 if len(panels) > 1 else 1
        rows = math.ceil(len(panels) / cols)
        fig, axes = self.figures.new(
            rows, cols, sharex=True, figsize=(9.5, 0.6 + 2.4 * rows), squeeze=False
        )
        x = np.array(_x(windows))
        for ax, name in zip(axes.flat, panels, strict=False):
            if name == "labelled":
                y = _array([p.value if p else None for p in labelled])
                ax.plot(x, y, "-o", ms=3, color="#455a64", label="share labelled")
                _shade_gaps(ax, windows, [not math.isfinite(v) for v in y])
                ax.set_ylim(0, 1.05)
                ax.set_title("share of predictions labelled", fontsize=9)
            else:
                empty = [True] * len(windows)
                for kind, style, colour in (
                    ("realized", "-", "#1565c0"),
                    ("estimated", "--", "#ef6c00"),
                ):
                    points = self.values(group, f"{kind}.{name}", windows)
                    y = _array([p.value if p else None for p in points])
                    if not np.isfinite(y).any():
                        continue
                    low = _array([p.low if p else None for p in points])
                    high = _array([p.high if p else None for p in points])
                    band = np.isfinite(low) & np.isfinite(high)
                    ax.plot(x, y, style, marker="o", ms=3, color=colour, label=kind)
                    if band.any():
                        ax.fill_between(
                            x,
                            np.where(band, low, np.nan),
                            np.where(band, high, np.nan),
                            color=colour,
                            alpha=0.18,
                            lw=0,
                            label=f"{kind} interval",
                        )
                    empty = [e and not math.isfinite(v) for e, v in zip(empty, y, strict=True)]
                _shade_gaps(ax, windows, empty)
                ax.set_title(name, fontsize=9)
            ax.set_ylabel("share" if name == "labelled" else "value")
            _style_axes(ax, windows)
        legend: dict[str, Any] = {}
        for ax in axes.flat[: len(panels)]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for column in range(cols):
            # The lowest visible panel of each column carries the dates.
            last = max(row for row in range(rows) if row * cols + column < len(panels))
            axes[last, column].tick_params(labelbottom=True)
            axes[last, column].set_xlabel("window (UTC)")
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="lower center",
            ncol=min(len(legend), 6),
            fontsize=7,
            bbox_to_anchor=(0.5, -0.04),
        )
        fig.suptitle(f"Performance of {_short(group, 40)}: realized (labels) vs estimated (CBPE)")
        fig.tight_layout()
        caption = (
            "Per metric and window: solid blue is realized from joined labels, dashed orange "
            "the CBPE estimate computed without labels; bands are their intervals. A large gap "
            "between them means the model's scores are no longer calibrated to the data. "
            "Grey windows have insufficient data (too few predictions, or no labels yet)."
        )
        return _figure_html(self.figures.svg(fig, f"Performance, {group}"), _e(caption))

    # ---- 6. traffic

    def traffic_section(self) -> str:
        parts = ['<section id="traffic"><h2>Traffic: volume, mean score, alert rate</h2>']
        parts.extend(f"<h3>{_e(group)}</h3>{self.traffic(group)}" for group in self.groups)
        if not self.groups:
            parts.append("<p>Insufficient data: no window has predictions.</p>")
        return "".join(parts) + "</section>"

    def traffic(self, group: str) -> str:
        import numpy as np

        windows = self.windows(group)
        records = self.values(group, "records", windows)
        if not windows or all(p is None for p in records):
            return "<p>Insufficient data: no window of this group has a record count.</p>"
        fig, axes = self.figures.new(3, 1, sharex=True, figsize=(9.5, 5.6))
        x = np.array(_x(windows))
        counts = _array([p.value if p else None for p in records])
        # a window without a count gets no bar (a count of 0 gets a bar of 0)
        bars = [(_bar(w), n) for w, n in zip(windows, counts, strict=True) if math.isfinite(n)]
        axes[0].bar(
            [start + width * 0.05 for (start, width), _ in bars],
            [n for _, n in bars],
            [width * 0.9 for (_, width), _ in bars],
            align="edge",
            color="#78909c",
        )
        axes[0].set_ylabel("records logged")
        axes[0].set_title(f"Traffic of {_short(group, 40)} per window", fontsize=10)
        for ax, metric, label in (
            (axes[1], "prediction.mean", "mean score"),
            (axes[2], "alert_rate", "alert rate"),
        ):
            points = self.values(group, metric, windows)
            y = _array([p.value if p else None for p in points])
            ax.plot(x, y, "-o", ms=3, color="#1565c0", label=label)
            low = _array([p.low if p else None for p in points])
            high = _array([p.high if p else None for p in points])
            if (np.isfinite(low) & np.isfinite(high)).any():
                band = np.isfinite(low) & np.isfinite(high) & np.isfinite(y)
                ax.fill_between(
                    x,
                    np.where(band, low, np.nan),
                    np.where(band, high, np.nan),
                    color="#1565c0",
                    alpha=0.18,
                    lw=0,
                    label="interval",
                )
            shaded = _shade_gaps(ax, windows, [not math.isfinite(v) for v in y])
            ax.set_ylabel(label)
            if shaded or metric == "alert_rate":
                ax.legend(fontsize=6, loc="upper left")
        if self.run.threshold is None and not self.run.thresholds:
            axes[2].set_title("alert rate: no serving threshold set", fontsize=8)
        for ax in axes:
            _style_axes(ax, windows)
        axes[2].set_xlabel("window (UTC)")
        caption = (
            "Top: records logged per window. Middle: mean score. Bottom: share of scores at "
            "or above the serving threshold. A sudden change in volume or score often comes "
            "before drift shows; grey windows have insufficient data for the quantity."
        )
        return _figure_html(self.figures.svg(fig, f"Traffic, {group}"), _e(caption))

    # ---- 7. columns

    def columns_section(self) -> str:
        parts = ['<section id="columns"><h2>Columns in the latest window</h2>']
        for group in self.groups:
            latest = self.run.latest(group)
            parts.append(f"<h3>{_e(group)}</h3>")
            if latest is None:
                parts.append("<p>Insufficient data: this run has no window for this group.</p>")
                continue
            parts.append(self.columns_table(latest))
        if not self.groups:
            parts.append("<p>Insufficient data: no window has a drift report.</p>")
        return "".join(parts) + "</section>"

    def columns_table(self, window: GroupWindow) -> str:
        report = window.drift
        order = {Verdict.DRIFT: 0, Verdict.INSUFFICIENT_DATA: 1, Verdict.NO_DRIFT: 2}
        columns = sorted(
            report.columns,
            key=lambda c: (order[c.verdict], -_finite_or(c.distance.statistic, -1.0), c.column),
        )
        rows = []
        for c in columns:
            css = {"drift": "drift", "no drift": "ok"}.get(c.verdict.value, "insufficient")
            rows.append(
                f"<tr><td>{_e(c.column)}</td><td>{c.kind.value}</td><td>{_e(c.test.test)}</td>"
                f'<td class="num">{_p_value(c.adjusted_p_value)}</td>'
                f"<td>{_e(c.distance.test)}</td>"
                f'<td class="num">{_number(c.distance.statistic)}</td>'
                f'<td class="num">{c.distance.threshold:g}</td>'
                f'<td><span class="status {css}">{_e(c.verdict.value)}</span></td>'
                f'<td class="num">{c.test.n_current:,}</td></tr>'
            )
        head = (
            f"<p>Window {_span(window.window_start, window.window_end)}: "
            f"{_plural(report.n_current, 'row')} against {report.n_reference:,} reference rows; "
            f"p-values corrected across columns ({_e(report.correction.value)}) at "
            f"alpha {report.alpha:g}. A column drifts when its corrected p is at most alpha and "
            "its distance reaches the floor.</p>"
        )
        return (
            head + "<table><thead><tr><th>Column</th><th>Kind</th><th>Test</th>"
            "<th>Corrected p</th><th>Distance</th><th>Value</th><th>Floor</th>"
            f"<th>Verdict</th><th>Rows tested</th></tr></thead><tbody>{''.join(rows)}"
            "</tbody></table>"
        )


def _verdict_of(value: float | None) -> Verdict:
    if value is None or not math.isfinite(value):
        return Verdict.INSUFFICIENT_DATA
    return Verdict.DRIFT if value >= 0.5 else Verdict.NO_DRIFT


def _finite_or(value: float | None, default: float) -> float:
    return value if value is not None and math.isfinite(value) else default


def _array(values: Sequence[float | None]) -> Any:
    import numpy as np

    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _share(profile: NumericProfile | CategoricalProfile, bucket: str) -> str:
    """The share of a profile's rows in its missing or unseen bucket, as a percentage."""
    if profile.n_rows == 0:
        return "insufficient data"
    return f"{getattr(profile, bucket) / profile.n_rows:.1%}"


def _edge(value: float) -> str:
    return f"{value:.3g}"


def _buckets(
    reference: NumericProfile | CategoricalProfile, current: NumericProfile | CategoricalProfile
) -> tuple[list[str], Any, Any]:
    """Labels and counts of the reference's and the window's buckets, as drawn."""
    import numpy as np

    ref = reference.histogram()
    cur = current.histogram()
    if isinstance(reference, NumericProfile):
        edges = [_edge(e) for e in reference.edges]
        if edges:
            inner = [f"[{a}, {b})" for a, b in itertools.pairwise(edges)]
            labels = [f"< {edges[0]}", *inner, f"≥ {edges[-1]}", "missing"]
        else:
            labels = ["all values", "missing"]
        return labels, ref.counts.astype(float), cur.counts.astype(float)
    n_categories = len(reference.categories)
    ref_counts = ref.counts.astype(float)
    cur_counts = cur.counts.astype(float)
    if n_categories <= MAX_CATEGORIES:
        return list(ref.labels), ref_counts, cur_counts
    ref_share = ref_counts[:n_categories] / max(ref_counts.sum(), 1.0)
    cur_share = cur_counts[:n_categories] / max(cur_counts.sum(), 1.0)
    top = sorted(np.argsort(-np.maximum(ref_share, cur_share))[:MAX_CATEGORIES].tolist())
    rest = [i for i in range(n_categories) if i not in set(top)]
    labels = [_short(ref.labels[i], 24) for i in top]
    labels += [f"other ({len(rest)} categories)", *ref.labels[n_categories:]]

    def pick(counts: Any) -> Any:
        return np.concatenate([counts[top], [counts[rest].sum()], counts[n_categories:]])

    return labels, pick(ref_counts), pick(cur_counts)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212121;
margin:0 auto;max-width:1100px;padding:0 16px 40px}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;border-bottom:2px solid #eceff1;
padding-bottom:4px;margin-top:32px}h3{font-size:15px;margin:18px 0 6px}
nav a{color:#1565c0;text-decoration:none}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #eceff1;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f5f7f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.facts th{font-weight:600;color:#546e7a}
.banner{border-left:6px solid;padding:8px 12px;margin:8px 0;border-radius:3px}
.banner.drift{border-color:#c62828;background:#ffebee}
.banner.ok{border-color:#2e7d32;background:#e8f5e9}
.banner.insufficient{border-color:#9e9e9e;background:#f5f5f5}
.numbers{font-size:13px;color:#37474f;margin-top:2px}
.verdict{font-weight:700;text-transform:uppercase;margin-right:4px}
.status{font-weight:600;padding:1px 6px;border-radius:3px;font-size:12px;white-space:nowrap}
.status.open,.status.drift{background:#ffcdd2;color:#b71c1c}
.status.acknowledged{background:#ffe0b2;color:#e65100}
.status.resolved,.status.insufficient{background:#eeeeee;color:#424242}
.status.ok{background:#c8e6c9;color:#1b5e20}
@media print{figure,.banner,tr{break-inside:avoid}nav{display:none}}
figure{margin:12px 0}figure svg{max-width:100%;height:auto}
figcaption{font-size:12.5px;color:#455a64;max-width:900px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:8px}
footer{margin-top:40px;font-size:12px;color:#607d8b}
"""

_FOOTER = (
    "Generated by Shipyard (<code>shipyard monitor report</code>). A column drifts when its "
    "significance test is significant after the correction across columns and its distance "
    "reaches the effect-size floor; the data set drifts when any column does. "
    "\u201cInsufficient data\u201d means too few rows to test, never \u201cno drift\u201d. "
    "Times are UTC; a window is [start, end)."
)


def _thresholds(run: MonitorRun) -> str:
    """The run's serving threshold, or each group's when they were measured at their own."""
    if run.threshold is not None:
        return _number(run.threshold)
    if not run.thresholds:
        return "not set"
    return ", ".join(f"{_e(g)}: {_number(t)}" for g, t in run.thresholds.items())
