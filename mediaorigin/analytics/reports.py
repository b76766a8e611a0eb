"""Reports on one media item: `performance` (how well it played) and `engagement` (who
watched what), as JSON, CSV (one table per type) or PDF with charts (reportlab).

The PDF, of either type, has the type's summary table and three charts drawn with reportlab's
own graphics (no matplotlib): views per day, the quality distribution and the engagement
heatmap. Rendering is synchronous CPU work: callers run it
on a thread (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.piecharts import Pie
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.tables import LongTable

from .queries import Day, iso_now

TYPES = {
    "performance": ("playback", "quality", "performance", "audience", "bandwidth", "daily"),
    "engagement": ("playback", "engagement", "viewers", "daily"),
}
FORMATS = ("json", "csv", "pdf")
PERFORMANCE_COLUMNS = ("date", "views", "uniqueViewers", "playtime", "averageViewDuration",
                       "completions", "completion", "buffering", "bufferingTime",
                       "rebufferingRatio", "startup", "errors", "bandwidth", "bytesServed",
                       "peakConcurrent")
ENGAGEMENT_COLUMNS = ("start", "end", "watched", "rewatched")
_PALETTE = [colors.HexColor(c) for c in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                         "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")]


def report_json(kind: str, title: str, analytics: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "title": title, "generatedAt": iso_now(), **analytics}


def report_csv(kind: str, analytics: dict[str, Any], days: list[Day]) -> str:
    """performance: one row per day; engagement: one row per heatmap bucket."""
    out = io.StringIO()
    if kind == "performance":
        writer = csv.DictWriter(out, PERFORMANCE_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        for day in days:
            writer.writerow(day.row())
    else:
        writer = csv.DictWriter(out, ENGAGEMENT_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        for bucket in analytics["engagement"]["heatmap"]:
            writer.writerow(bucket)
    return out.getvalue()


def report_pdf(kind: str, title: str, analytics: dict[str, Any], days: list[Day]) -> bytes:
    styles = getSampleStyleSheet()
    period = analytics["period"]
    story: list[Flowable] = [
        Paragraph(f"{kind.capitalize()} report: {_escape(title)}", styles["Title"]),
        Paragraph(f"Media {_escape(analytics['mediaId'])}, {period['from']} to {period['to']} "
                  f"(UTC), generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
                  styles["Normal"]),
        Spacer(1, 0.4 * cm),
        _table(_summary(kind, analytics)),
        Spacer(1, 0.6 * cm),
        KeepTogether([Paragraph("Views per day", styles["Heading2"]),
                      _bars([d.date.strftime("%m-%d") for d in days], [[d.views for d in days]],
                            ["views"])]),
    ]
    if "quality" in analytics:
        distribution = analytics["quality"]["distribution"]
        story.append(KeepTogether([
            Paragraph("Quality distribution (seconds watched)", styles["Heading2"]),
            _pie(distribution) if distribution else
            Paragraph("Nothing watched in this period.", styles["Normal"])]))
    if "engagement" in analytics:
        heatmap = analytics["engagement"]["heatmap"]
        story.append(KeepTogether([
            Paragraph("Engagement heatmap (sessions per 10 s of the media)",
                      styles["Heading2"]),
            _bars([f"{b['start']}s" for b in heatmap],
                  [[b["watched"] for b in heatmap], [b["rewatched"] for b in heatmap]],
                  ["watched", "re-watched"]) if heatmap else
            Paragraph("No heatmap (a live stream, or nothing watched).", styles["Normal"])]))
    if kind == "engagement" and analytics.get("viewers"):
        story += [Paragraph("Viewers", styles["Heading2"]), _table(
            [["user", "watched (s)", "furthest (s)", "completion"]] +
            [[v["user"], v["watched"], v["furthest"],
              "" if v["completion"] is None else f"{v['completion']:.0%}"]
             for v in analytics["viewers"]], long=True)]
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, title=f"{kind} report: {title}",
                            author="mediaorigin", leftMargin=2 * cm, rightMargin=2 * cm)
    doc.build(story)
    return buf.getvalue()


def _summary(kind: str, a: dict[str, Any]) -> list[list[Any]]:
    p = a["playback"]
    rows: list[list[Any]] = [
        ["views", p["views"]], ["unique viewers", p["uniqueViewers"]],
        ["total playtime (s)", p["duration"]],
        ["average view duration (s)", p["averageViewDuration"]],
        ["completion", "" if p["completion"] is None else f"{p['completion']:.1%}"],
    ]
    if kind == "performance":
        perf, q, aud = a["performance"], a["quality"], a["audience"]
        rows += [
            ["average quality", q["average"] or ""], ["quality switches", q["switches"]],
            ["rebuffering events", perf["buffering"]],
            ["rebuffering ratio", f"{perf['rebufferingRatio']:.2%}"],
            ["average startup (s)", perf["startup"]], ["errors", perf["errors"]],
            ["average bandwidth (kbit/s)", a["bandwidth"]["average"]],
            ["bytes served", a["bandwidth"]["bytesServed"]],
        ]
        if aud["peakConcurrent"] is not None:
            rows.append(["peak concurrent viewers", aud["peakConcurrent"]])
        if aud["geographic"]:
            rows.append(["countries", ", ".join(f"{k} {v}" for k, v in
                                                list(aud["geographic"].items())[:8])])
        if aud["devices"]:
            rows.append(["devices", ", ".join(f"{k} {v}" for k, v in aud["devices"].items())])
    else:
        rows.append(["viewers with progress", len(a.get("viewers", []))])
    return [["metric", "value"], *rows]


def _table(rows: list[list[Any]], long: bool = False) -> Table:
    table = (LongTable if long else Table)([[str(c) for c in r] for r in rows], hAlign="LEFT",
                                           repeatRows=1)
    table.setStyle(TableStyle([
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7")),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
        ("FONTSIZE", (0, 0), (-1, -1), 9),
    ]))
    return table


def _bars(labels: list[str], series: list[list[int]], names: list[str]) -> Drawing:
    width, height = 16 * cm, 6 * cm
    drawing = Drawing(width, height)
    chart = VerticalBarChart()
    chart.x, chart.y = 1.2 * cm, 1.2 * cm
    chart.width, chart.height = width - 2 * cm, height - 2 * cm
    chart.data = [tuple(s) or (0,) for s in series]
    chart.valueAxis.valueMin = 0
    top = max((v for s in series for v in s), default=0)
    step = max(1, -(-top // 5))
    chart.valueAxis.valueStep = step
    chart.valueAxis.valueMax = max(step * -(-top // step), 1)  # a tick at the top
    step = max(1, len(labels) // 15)  # at most ~15 labels under the bars
    chart.categoryAxis.categoryNames = [lb if i % step == 0 else ""
                                        for i, lb in enumerate(labels)] or [""]
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.angle = 45 if len(labels) > 8 else 0
    chart.categoryAxis.labels.boxAnchor = "ne" if len(labels) > 8 else "n"
    for i in range(len(series)):
        chart.bars[i].fillColor = _PALETTE[i % len(_PALETTE)]
    drawing.add(chart)
    if len(names) > 1:
        legend = Legend()
        legend.alignment = "right"  # swatch, then name
        legend.boxAnchor = "nw"
        legend.x, legend.y = chart.x + chart.width - 3 * cm, height - 0.1 * cm
        legend.columnMaximum = 1
        legend.deltax = 2.2 * cm
        legend.dx = legend.dy = 6
        legend.fontSize = 7
        legend.colorNamePairs = [(_PALETTE[i], n) for i, n in enumerate(names)]
        drawing.add(legend)
    return drawing


def _pie(distribution: dict[str, float]) -> Drawing:
    drawing = Drawing(16 * cm, 6 * cm)
    pie = Pie()
    pie.x, pie.y, pie.width, pie.height = 1.5 * cm, 0.5 * cm, 4.5 * cm, 4.5 * cm
    items = list(distribution.items())
    total = sum(v for _, v in items) or 1
    pie.data = [v for _, v in items]
    pie.labels = [f"{k} {v / total:.0%}" for k, v in items]
    pie.slices.strokeWidth = 0.5
    for i in range(len(items)):
        pie.slices[i].fillColor = _PALETTE[i % len(_PALETTE)]
    drawing.add(pie)
    drawing.add(String(8 * cm, 3 * cm, f"{total:.0f} s watched in all", fontSize=9))
    return drawing


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
