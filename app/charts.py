"""Altair charts in the page's language: d3 number and time locales, localized axis titles.

A chart is only built when there is something to draw; callers show "no data" otherwise, so an empty
chart never reaches the page.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import altair as alt
import pandas as pd

_NUMBER = {
    "es": {"decimal": ",", "thousands": ".", "grouping": [3], "currency": ["$ ", ""]},
    "en": {"decimal": ".", "thousands": ",", "grouping": [3], "currency": ["$", ""]},
}
_TIME = {
    "es": {
        "dateTime": "%A, %e de %B de %Y, %X",
        "date": "%d/%m/%Y",
        "time": "%H:%M:%S",
        "periods": ["AM", "PM"],
        "days": ["domingo", "lunes", "martes", "miércoles", "jueves", "viernes", "sábado"],
        "shortDays": ["dom", "lun", "mar", "mié", "jue", "vie", "sáb"],
        "months": [
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ],
        "shortMonths": ["ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic"],
    },
    "en": {
        "dateTime": "%x, %X",
        "date": "%Y-%m-%d",
        "time": "%H:%M:%S",
        "periods": ["AM", "PM"],
        "days": ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"],
        "shortDays": ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"],
        "months": [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
        "shortMonths": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
    },
}
_DAY_FORMAT = {"es": "%d/%m", "en": "%m-%d"}
_PALETTE = ["#1f4e79", "#c0504d", "#4f81bd", "#9bbb59", "#8064a2", "#f79646"]


def value_format(unit: str) -> str:
    """d3 format of an axis in a KPI unit (ratios as percentages)."""
    return {"ratio": ".1%", "ms": ",.0f", "count": ",.0f", "users": ",.0f", "minutes": ",.1f"}.get(unit, ",.2f")


def daily_lines(
    series: dict[str, list[tuple[date, Any]]], unit: str, lang: str, y_title: str, dashed: tuple[str, ...] = ()
) -> alt.Chart | None:
    """Lines of named daily series (``name -> [(day, value)]``); ``dashed`` names are drawn dashed
    (targets, budgets). None when no series has a value."""
    records = [
        {"day": pd.Timestamp(d), "value": float(v), "series": name}
        for name, points in series.items()
        for d, v in points
        if v is not None
    ]
    if not records:
        return None
    frame = pd.DataFrame(records)
    names = list(series)
    chart = (
        alt.Chart(frame)
        .mark_line(point=len(frame) < 40)
        .encode(
            x=alt.X("day:T", title=None, axis=alt.Axis(format=_DAY_FORMAT[lang], labelAngle=0)),
            y=alt.Y("value:Q", title=y_title, axis=alt.Axis(format=value_format(unit)), scale=alt.Scale(zero=False)),
            color=alt.Color(
                "series:N",
                title=None,
                scale=alt.Scale(domain=names, range=_PALETTE[: len(names)]),
                legend=alt.Legend(orient="bottom"),
            ),
            strokeDash=alt.StrokeDash(
                "series:N",
                legend=None,
                scale=alt.Scale(domain=names, range=[[6, 4] if n in dashed else [1, 0] for n in names]),
            ),
            tooltip=[
                alt.Tooltip("day:T", format=_TIME[lang]["date"], title=""),
                alt.Tooltip("series:N", title=""),
                alt.Tooltip("value:Q", format=value_format(unit), title=""),
            ],
        )
        .properties(height=260)
    )
    return localize(chart, lang)


def bars(labels: list[str], values: list[float], unit: str, lang: str, x_title: str) -> alt.Chart | None:
    """Horizontal bars, largest first; None when there is nothing to draw."""
    rows = [{"label": k, "value": float(v)} for k, v in zip(labels, values, strict=True) if v is not None]
    if not rows:
        return None
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar(color=_PALETTE[0])
        .encode(
            x=alt.X("value:Q", title=x_title, axis=alt.Axis(format=value_format(unit))),
            y=alt.Y("label:N", title=None, sort="-x"),
            tooltip=[alt.Tooltip("label:N", title=""), alt.Tooltip("value:Q", format=value_format(unit), title="")],
        )
        .properties(height=max(120, 28 * len(rows)))
    )
    return localize(chart, lang)


def localize(chart: alt.Chart, lang: str) -> alt.Chart:
    """Apply the language's number and time locale to every axis and tooltip of the chart."""
    return chart.configure(locale=alt.Locale(number=_NUMBER[lang], time=_TIME[lang]))


def sparkline_svg(values: list[float], color: str = "#4f81bd", height: int = 36) -> str:
    """A daily series as a small inline SVG (area under a line), the width of its container.

    Plain markup instead of a chart widget: a page of 14 cards draws instantly and loads no chart
    library. Empty string with fewer than two finite values (no sparkline rather than a flat guess).
    """
    points = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(points) < 2:
        return ""
    lo, hi = min(points), max(points)
    step = 100.0 / (len(points) - 1)
    # y grows downwards; 2 units of margin keep the stroke inside the box; a flat series runs mid-box
    coords = [
        (i * step, 2 + (height - 4) * (1 - (v - lo) / (hi - lo)) if hi > lo else height / 2)
        for i, v in enumerate(points)
    ]
    line = " ".join(f"{x:.2f},{y:.2f}" for x, y in coords)
    area = f"0,{height} {line} 100,{height}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pulso-spark" viewBox="0 0 100 {height}" preserveAspectRatio="none" width="100%" '
        f'height="{height}" role="img" aria-hidden="true" focusable="false">'
        f'<polygon points="{area}" fill="{color}" fill-opacity="0.15" stroke="none"/>'
        f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.5" '
        f'vector-effect="non-scaling-stroke"/></svg>'
    )
