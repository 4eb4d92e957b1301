"""The HTML monitoring report: what an on-call engineer reads, self-contained and escaped."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.monitoring import DatasetDriftTest, DatasetProfile
from shipyard.monitoring.html import render_report, write_report
from shipyard.monitoring.points import Point
from shipyard.monitoring.run import GroupWindow, MonitorRun

START = datetime(2026, 11, 20)
DAY = timedelta(days=1)
ENDPOINT = "fraud"


def data(rng: np.random.Generator, n: int, shift: float = 0.0, drifted: str = "amount") -> dict:
    """``drifted`` moves by ``shift``; ``age`` and ``merchant`` keep their distribution."""
    merchants = np.array(["grocery", "travel", "online", "fuel"])
    return {
        drifted: rng.normal(shift, 1.0, n),
        "age": rng.normal(40.0, 10.0, n),
        "merchant": merchants[rng.integers(0, 4, n)],
    }


def window_points(group: str, i: int, report: Any, n: int, labelled: bool = True) -> list[Point]:
    """The points a run stores for one window: volume, drift, performance."""
    start, end = START + i * DAY, START + (i + 1) * DAY

    def point(
        metric: str, value: float | None, low: float | None = None, high: float | None = None
    ):
        return Point(ENDPOINT, group, metric, start, end, value, low, high, n)

    verdict = {"drift": 1.0, "no drift": 0.0}.get(report.verdict.value)
    points = [
        point("records", float(n)),
        point("prediction.mean", 0.1 + 0.01 * i if n else None),
        point("alert_rate", 0.02 if n else None, 0.01, 0.03),
        point("drift.verdict", verdict),
        point("drift.columns_drifted", float(len(report.drifted))),
    ]
    for column in report.columns:
        distance = column.distance.statistic
        points.append(
            point(f"drift.distance.{column.column}", None if distance != distance else distance)
        )
        points.append(point(f"drift.p_value.{column.column}", column.adjusted_p_value))
    if n and labelled:
        points += [
            point("estimated.auc", 0.90 - 0.02 * i, 0.87 - 0.02 * i, 0.93 - 0.02 * i),
            point("realized.auc", 0.91 - 0.05 * i, 0.86 - 0.05 * i, 0.96 - 0.05 * i),
            point("labelled", 0.8),
        ]
    return points


def build_run(
    *,
    drifted: str = "amount",
    endpoint: str = ENDPOINT,
    empty_last: bool = False,
    labelled: bool = True,
    n_windows: int = 3,
) -> MonitorRun:
    """A run of ``n_windows`` daily windows of one group; ``drifted`` shifts in the last one."""
    rng = np.random.default_rng(7)
    reference = DatasetProfile.from_reference(data(rng, 5_000, drifted=drifted))
    windows, points = [], []
    for i in range(n_windows):
        last = i == n_windows - 1
        n = 0 if (empty_last and last) else 2_000
        current = reference.empty()
        if n:
            current.update(data(rng, n, shift=1.0 if last else 0.0, drifted=drifted))
        report = DatasetDriftTest().compare(reference, current)
        start = START + i * DAY
        windows.append(GroupWindow("v1", start, start + DAY, n, report, reference, current))
        points += window_points("v1", i, report, n, labelled)
    points = [replace(p, endpoint=endpoint) for p in points]
    return MonitorRun(
        endpoint=endpoint,
        run_id="r1",
        start=START,
        end=START + n_windows * DAY,
        window=DAY,
        threshold=0.5,
        groups=("v1",),
        points=tuple(points),
        windows=tuple(windows),
    )


def alert(status: str, message: str, windows: Sequence[int], metric: str = "drift.verdict") -> dict:
    """An alert as ``Alert.to_dict()`` writes it."""
    breaches = [
        {
            "window_start": (START + i * DAY).isoformat(),
            "window_end": (START + (i + 1) * DAY).isoformat(),
            "value": 1.0,
        }
        for i in windows
    ]
    return {
        "id": len(message),
        "rule": f"rule-{metric}",
        "endpoint": ENDPOINT,
        "group": "v1",
        "metric": metric,
        "op": ">=",
        "threshold": 1.0,
        "windows": 1,
        "status": status,
        "message": message,
        "latest": 1.0,
        "breaches": breaches,
        "first_window_start": breaches[0]["window_start"],
        "last_window_end": breaches[-1]["window_end"],
        "raised_at": "2026-11-23T00:05:00",
        "resolved_at": None,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "note": "",
    }


BLOCKS = {"p", "div", "td", "th", "tr", "li", "h1", "h2", "h3", "figcaption", "text", "tspan"}


class Page(HTMLParser):
    """The parts of a page the checks read: tags with attributes, and the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._style = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in BLOCKS:
            self.text.append(" ")
        self._style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._style = False

    def handle_data(self, data: str) -> None:
        if not self._style:
            self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def words(self) -> str:
        return " ".join("".join(self.text).split())

    def figure_labels(self) -> list[str]:
        return [str(a.get("aria-label")) for a in self.named("svg")]


@pytest.fixture(scope="module")
def drift_run() -> MonitorRun:
    return build_run()


@pytest.fixture(scope="module")
def drift_page(drift_run: MonitorRun) -> str:
    alerts = [
        alert("resolved", "v1: alert_rate >= 1 for 1 window (old)", [0], metric="alert_rate"),
        alert("open", "v1: drift.verdict >= 1 for 1 window (latest 1, 2026-11-22)", [2]),
    ]
    return render_report(drift_run, alerts=alerts)


def test_the_report_names_the_drifted_column_and_overlays_its_distribution(
    drift_run: MonitorRun, drift_page: str
) -> None:
    page = Page(drift_page)
    assert drift_run.windows[-1].drift.drifted == ["amount"]
    banner = page.words.split("Alerts", 2)[1]  # between the nav link and the heading
    assert "v1: drift — 1 of 3 columns drifted in the window 2026-11-22 → 2026-11-23" in banner
    assert "(2,000 rows): amount." in banner
    # the key numbers of the same window, under the verdict
    assert (
        "Latest window: mean score 0.12, alert rate 2.0%, estimated auc 0.86, realized auc 0.81."
    ) in banner
    assert "Distribution of amount" in page.figure_labels()
    # only drifted columns get an overlay
    assert "Distribution of age" not in page.figure_labels()
    assert "Distribution of merchant" not in page.figure_labels()
    # the overlay's caption gives the missing share and the evidence behind the verdict
    assert "amount (numeric), window 2026-11-22 → 2026-11-23" in page.words
    assert "missing 0.0% → 0.0%" in page.words
    # the caption gives the shift itself: amount's mean moved by 1 (from about 0)
    found = re.search(r"amount \(numeric\).*?; mean (-?[\d.]+) → (-?[\d.]+)\)", page.words)
    assert found is not None
    before, after = (float(x) for x in found.groups())
    assert abs(before) < 0.1 and abs(after - 1.0) < 0.1
    assert "jensen-shannon distance" in page.words


def test_every_figure_has_a_title_axis_labels_and_a_caption(drift_page: str) -> None:
    page = Page(drift_page)
    labels = page.figure_labels()
    assert {
        "Alert timeline",
        "Drift over time, v1",
        "Distribution of amount",
        "Performance, v1",
        "Traffic, v1",
    } <= set(labels)
    assert len(page.named("figcaption")) == len(labels)
    for figure in drift_page.split("<figure")[1:]:
        svg = figure.split("</svg>")[0]
        assert "window (UTC)" in svg or "share of rows" in svg  # an axis label
        assert "<figcaption>" in figure.split("</figure>")[0]


def test_the_page_loads_nothing_from_outside(drift_page: str) -> None:
    page = Page(drift_page)
    assert page.named("script") == []
    assert page.named("link") == []
    assert page.named("iframe") == []
    assert all(str(a.get("src", "")).startswith("data:") for a in page.named("img"))
    for _, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("href", "xlink:href", "src") and value is not None:
                assert value.startswith(("#", "data:")), (name, value)
    assert "http://" not in drift_page
    assert "https://" not in drift_page
    references = drift_page.split("url(")[1:]
    assert all(ref.startswith("#") for ref in references)
    assert "default-src 'none'" in drift_page


def test_user_text_is_escaped_in_tables_banners_and_figures() -> None:
    hostile = "<script>alert(1)</script>"
    run = build_run(drifted=hostile, endpoint="fraud<b>&co")
    assert run.windows[-1].drift.drifted == [hostile]
    text = render_report(run)
    page = Page(text)
    assert page.named("script") == []
    assert page.named("b") == []
    assert hostile not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "fraud&lt;b&gt;&amp;co" in text
    # the parsed page reads the name as the user wrote it, in the banner and the figures
    assert (
        f"1 of 3 columns drifted in the window 2026-11-22 → 2026-11-23 (2,000 rows): {hostile}"
        in page.words
    )
    assert f"Distribution of {hostile}" in page.figure_labels()


def test_a_dollar_in_a_column_name_is_text_not_math() -> None:
    text = render_report(build_run(drifted="amount $ usd $"))
    assert "amount $ usd $: reference vs this window" in Page(text).words


def test_an_empty_window_reads_insufficient_data_never_zero() -> None:
    run = build_run(empty_last=True)
    latest = run.windows[-1]
    assert latest.n_records == 0
    assert all(c.verdict.value == "insufficient data" for c in latest.drift.columns)
    text = render_report(run)
    page = Page(text)
    # the drift and traffic plots shade the empty window and say why in their legends
    # (the drift figure's verdict strip names "insufficient data" in its legend anyway)
    for label, legends in (("Drift over time, v1", 2), ("Traffic, v1", 1)):
        svg = text.split(f'aria-label="{label}"')[1].split("</svg>")[0]
        assert svg.count(">insufficient data<") >= legends
    words = page.words
    assert "INSUFFICIENT DATA" in words.upper()
    assert "no predictions were logged in the window 2026-11-22 → 2026-11-23 (0 rows)" in words
    assert "Latest window:" not in words  # no numbers where there were no predictions
    assert "mean score 0" not in words
    # the columns table says so for each column instead of a distance of 0
    table = words.split("Columns in the latest window")[1]
    for column, kind in (("amount", "numeric"), ("age", "numeric"), ("merchant", "categorical")):
        row = f"{column} {kind} chi-square insufficient data jensen-shannon insufficient data 0.05"
        assert f"{row} insufficient data" in table
    assert "No column drifted in the latest window" in words
    # the performance of earlier windows is still drawn; the empty window is a gap
    assert "Performance, v1" in page.figure_labels()


def test_a_run_with_no_data_at_all_renders_in_words() -> None:
    run = MonitorRun(
        endpoint=ENDPOINT,
        run_id="r0",
        start=START,
        end=START + DAY,
        window=DAY,
        threshold=None,
        groups=(),
        points=(),
    )
    page = Page(render_report(run, alerts=[]))
    assert "Insufficient data: this run found no predictions in its span" in page.words
    assert "No alert is open" in page.words
    assert page.figure_labels() == []


def test_a_run_without_traffic_still_shows_the_stored_windows(drift_run: MonitorRun) -> None:
    """Traffic stopped: the run is empty, and the history is what the engineer needs."""
    later = START + 10 * DAY
    empty = MonitorRun(ENDPOINT, "r2", later, later + DAY, DAY, 0.5, (), ())
    open_alert = alert("open", "v1: records < 100 for 1 window", [2], metric="records")
    page = Page(render_report(empty, history=list(drift_run.points), alerts=[open_alert]))
    assert "v1: insufficient data — this run found no predictions of this group in its span" in (
        page.words
    )
    assert "1 open alert." in page.words
    assert {"Drift over time, v1", "Traffic, v1", "Performance, v1"} <= set(page.figure_labels())


def test_all_insufficient_metrics_of_a_group_are_said_not_drawn() -> None:
    run = build_run(labelled=False)
    blank = tuple(replace(p, value=None, low=None, high=None) for p in run.points)
    page = Page(render_report(replace(run, points=blank)))
    words = page.words
    assert "Insufficient data: no window of this group has a column distance." in words
    assert "Insufficient data: no window has estimated or realized performance" in words
    assert "Drift over time, v1" not in page.figure_labels()
    assert "Performance, v1" not in page.figure_labels()


def test_realized_vs_estimated_is_drawn_when_both_series_exist(drift_page: str) -> None:
    page = Page(drift_page)
    assert "Performance, v1" in page.figure_labels()
    svg = drift_page.split('aria-label="Performance, v1"')[1].split("</svg>")[0]
    for legend in ("realized", "estimated", "realized interval", "estimated interval"):
        assert f">{legend}<" in svg
    assert ">auc<" in svg
    assert ">share of predictions labelled<" in svg


def test_the_alert_table_lists_open_alerts_first_with_their_message(drift_page: str) -> None:
    words = Page(drift_page).words
    alerts = words.split("Alerts", 2)[2]  # after the nav link and the heading
    open_at = alerts.index("open rule-drift.verdict v1 drift.verdict v1: drift.verdict >= 1")
    assert alerts.index("resolved rule-alert_rate") > open_at
    assert "2026-11-22" in alerts[open_at:]  # since
    assert "1 (>= 1)" in alerts[open_at:]  # latest value against the rule
    banner = words.split("Alerts", 2)[1]
    assert "1 open alert." in banner
    assert "Alert timeline" in Page(drift_page).figure_labels()


def test_alerts_of_the_run_are_read_and_old_resolved_ones_summarized(
    drift_run: MonitorRun,
) -> None:
    from shipyard.monitoring.alerts import Alert, AlertOp, AlertStatus, Breach

    def real(id: int, status: AlertStatus, day: int) -> Alert:
        start = START + day * DAY
        return Alert(
            id=id,
            rule="drift",
            endpoint=ENDPOINT,
            group="v1",
            metric="drift.verdict",
            op=AlertOp.GE,
            threshold=1.0,
            windows=1,
            status=status,
            breaches=(Breach(start, start + DAY, 1.0),),
            first_window_start=start,
            last_window_end=start + DAY,
            raised_at=start + DAY,
            updated_at=start + DAY,
        )

    current = real(2, AlertStatus.OPEN, 2)
    long_ago = real(1, AlertStatus.RESOLVED, -30)
    words = Page(render_report(replace(drift_run, alerts=(current, long_ago)))).words
    assert f"open drift v1 drift.verdict {current.message}" in words
    assert "1 resolved alert whose windows all ended before this report's first window" in words
    assert "2026-10-21" not in words  # the old alert's window is not in the table


def test_history_extends_the_time_plots_and_the_runs_points_win(drift_run: MonitorRun) -> None:
    earlier = [
        replace(p, window_start=p.window_start - 3 * DAY, window_end=p.window_end - 3 * DAY)
        for p in drift_run.points
    ]
    other = [
        replace(
            p,
            endpoint="another",
            window_start=p.window_start - 30 * DAY,
            window_end=p.window_end - 30 * DAY,
        )
        for p in drift_run.points
    ]
    page = Page(render_report(drift_run, history=[*earlier, *other], alerts=[]))
    assert "6 windows, 2026-11-17 → 2026-11-23 (this run and stored history)" in page.words
    # the same windows again in history change nothing: the run's points replace them
    again = Page(render_report(drift_run, history=list(drift_run.points), alerts=[]))
    assert "3 windows, 2026-11-20 → 2026-11-23" in again.words


def test_write_report_writes_one_complete_file(drift_run: MonitorRun, tmp_path: Path) -> None:
    path = write_report(drift_run, tmp_path / "reports" / "fraud.html", alerts=[])
    assert path == tmp_path / "reports" / "fraud.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert text.rstrip().endswith("</html>")
    assert [p.name for p in path.parent.iterdir()] == ["fraud.html"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # like any file the user makes


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"run": "fraud"}, "run"),
        ({"history": [{"metric": "records"}]}, "history"),
        ({"alerts": ["open"]}, "alerts"),
        ({"alerts": "open"}, "alerts"),
    ],
)
def test_bad_input_names_the_field(
    drift_run: MonitorRun, kwargs: Mapping[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"run": drift_run, **kwargs}
    run = arguments.pop("run")
    with pytest.raises(ParameterError, match=f"'{field}' parameter of render_report"):
        render_report(run, **arguments)


BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium on this machine")
def test_a_headless_browser_shows_the_verdict_and_figures(drift_page: str, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(drift_page, encoding="utf-8")
    dom = subprocess.run(
        [str(BROWSER), "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    page = Page(dom)
    assert "1 of 3 columns drifted" in page.words
    assert "Distribution of amount" in page.figure_labels()


def test_a_month_of_35_columns_stays_small_enough_to_attach() -> None:
    """35 columns (four drifting) over 30 daily windows: one page under 2 MB."""
    rng = np.random.default_rng(11)

    def day(n: int, shift: float) -> dict:
        columns = {f"x{i}": rng.normal(shift if i < 3 else 0.0, 1.0, n) for i in range(30)}
        for i in range(5):
            columns[f"c{i}"] = rng.choice(list("abcdefgh") + ([] if i else ["z"] * 4), n)
        return columns

    reference = DatasetProfile.from_reference(day(5_000, 0.0))
    windows, points = [], []
    for i in range(30):
        current = reference.empty().update(day(1_000, 0.02 * i))
        report = DatasetDriftTest().compare(reference, current)
        start = START + i * DAY
        windows.append(GroupWindow("v1", start, start + DAY, 1_000, report, reference, current))
        points += window_points("v1", i, report, 1_000)
    run = MonitorRun(
        ENDPOINT, "r", START, START + 30 * DAY, DAY, 0.5, ("v1",), tuple(points), tuple(windows)
    )
    text = render_report(run, alerts=[alert("open", "drift", [28, 29])])
    assert len(windows[-1].drift.drifted) >= 3
    assert len(text.encode("utf-8")) < 2_000_000
