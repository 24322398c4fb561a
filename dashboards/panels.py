"""Building blocks for Pulso's grafanalib dashboards: datasource, selectors, units, thresholds, layout.

Variables: ``niche``, ``country``, ``region`` are custom variables listing the catalog's values, with an
"All" option whose value is ``.*``. Two kinds of series are filtered differently:

* raw service metrics (``http_requests_total``, ...) have only real label values:
  ``niche=~"$niche"`` (All -> ``.*``);
* exporter metrics hold pre-merged totals on ``all`` rows (a ratio or percentile cannot be re-summed):
  ``niche=~"(?i)${niche:text}"`` selects the ``all`` row when "All" is chosen and the niche's row
  otherwise, so a total is always the published merged value, never an average of parts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from grafanalib import core as g

from exporters.naming import kpi_metric
from pipelines.lib.catalog import Catalog

DATASOURCE_UID = "pulso-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
PLACE = ("niche", "country", "region")

# Catalog unit -> Grafana unit of the exporter's base-unit metric.
GRAFANA_UNITS = {
    "ms": "s",
    "minutes": "s",
    "ratio": "percentunit",
    "usd": "currencyUSD",
    "usd_per_usd": "none",
    "count": "short",
    "users": "short",
}


def raw_selector(*extra: str, dims: Sequence[str] = PLACE) -> str:
    """Label matchers for raw service metrics, driven by the dashboard variables."""
    return ",".join([*(f'{d}=~"${d}"' for d in dims), *extra])


def published_selector(dims: Sequence[str] = PLACE, fixed: dict[str, str] | None = None, *extra: str) -> str:
    """Label matchers for exporter metrics: the variable's row, or ``all`` for a dimension not in ``dims``."""
    fixed = fixed or {}
    parts = []
    for d in PLACE:
        if d in fixed:
            parts.append(f'{d}="{fixed[d]}"')
        elif d in dims:
            parts.append(f'{d}=~"(?i)${{{d}:text}}"')
        else:
            parts.append(f'{d}="all"')
    return ",".join([*parts, *extra])


def kpi_expr(catalog: Catalog, kpi_id: str, fixed: dict[str, str] | None = None, target: bool = False) -> str:
    """The exporter series of a KPI (or its target) at the grain the variables select."""
    kpi = catalog.kpi(kpi_id)
    metric = kpi_metric(kpi)
    return f"{metric.target_name if target else metric.name}{{{published_selector(kpi.dims, fixed)}}}"


def threshold_steps(catalog: Catalog, kpi_id: str, day: date) -> list[dict[str, Any]]:
    """Grafana threshold steps mirroring ``Catalog.status`` for the target in force on ``day``.

    Values are in the exporter's base unit (targets in ms become seconds).
    """
    kpi = catalog.kpi(kpi_id)
    target = catalog.target(kpi_id, day)
    factor = kpi_metric(kpi).factor
    base = [{"color": "green", "value": None}]
    raw = kpi.raw
    if "warn_above" in raw or "breach_above" in raw:
        steps = base
        if "warn_above" in raw:
            steps.append({"color": "orange", "value": float(raw["warn_above"]) + 1})
        if "breach_above" in raw:
            steps.append({"color": "red", "value": float(raw["breach_above"]) + 1})
        return steps
    if target is None:
        return [{"color": "blue", "value": None}]
    if "warn_below" in raw:
        return [
            {"color": "red", "value": None},
            {"color": "orange", "value": target * factor},
            {"color": "green", "value": float(raw["warn_below"]) * factor},
        ]
    margin = kpi.warn_margin
    delta = margin if kpi.unit == "ratio" else abs(target) * margin
    if kpi.direction == "lower":
        steps = [{"color": "green", "value": None}, {"color": "orange", "value": target * factor}]
        if delta:
            steps.append({"color": "red", "value": (target + delta) * factor})
        return steps
    steps = [{"color": "red", "value": None}]
    if delta:
        steps.append({"color": "orange", "value": (target - delta) * factor})
    steps.append({"color": "green", "value": target * factor})
    return steps


def target(expr: str, legend: str = "", instant: bool = False, fmt: str = "time_series", ref: str = "A") -> g.Target:
    return g.Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, format=fmt, datasource=DATASOURCE)


def _targets(queries: Iterable[tuple[str, str]], instant: bool = False, fmt: str = "time_series") -> list[g.Target]:
    return [target(e, legend, instant, fmt, chr(ord("A") + i)) for i, (e, legend) in enumerate(queries)]


def stat(title: str, expr: str, unit: str, steps: list[dict[str, Any]] | None = None, description: str = "") -> g.Stat:
    """A single published (or live) value; 'No data' rather than a made-up zero when absent."""
    return g.Stat(
        title=title,
        description=description or None,
        dataSource=DATASOURCE,
        targets=_targets([(expr, "")]),
        format=unit,
        reduceCalc="lastNotNull",
        graphMode="none",
        noValue="No data",
        thresholds=steps or [{"color": "blue", "value": None}],
    )


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    unit: str,
    steps: list[dict[str, Any]] | None = None,
    description: str = "",
) -> g.TimeSeries:
    return g.TimeSeries(
        title=title,
        description=description or None,
        dataSource=DATASOURCE,
        targets=_targets(queries),
        unit=unit,
        thresholds=steps or [{"color": "green", "value": None}],
        thresholdsStyleMode="line" if steps else "off",
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "max"],
    )


def table(
    title: str, queries: list[tuple[str, str]], unit: str, sort_by: str | None = None, description: str = ""
) -> g.Table:
    return g.Table(
        title=title,
        description=description or None,
        dataSource=DATASOURCE,
        targets=_targets(queries, instant=True, fmt="table"),
        unit=unit,
        sortBy=[g.TableSortByField(displayName=sort_by)] if sort_by else [],
        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}],
    )


def heatmap(title: str, expr: str, description: str = "") -> g.Heatmap:
    return g.Heatmap(
        title=title,
        description=description or None,
        dataSource=DATASOURCE,
        targets=[target(expr, "{{le}}", fmt="heatmap")],
        dataFormat="tsbuckets",
        hideZeroBuckets=True,
    )


@dataclass
class Layout:
    """Places panels on Grafana's 24-column grid, row by row, under ``RowPanel`` headers."""

    panels: list[Any] = field(default_factory=list)
    y: int = 0
    x: int = 0
    row_height: int = 0

    def row(self, title: str) -> Layout:
        self._newline()
        self.panels.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=self.y)))
        self.y += 1
        return self

    def add(self, panel: Any, w: int, h: int) -> Layout:
        if not 0 < w <= 24:
            raise ValueError(f"panel {panel.title!r}: width {w} does not fit the 24-column grid")
        if self.x + w > 24:
            self._newline()
        panel.gridPos = g.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)
        return self

    def _newline(self) -> None:
        self.y += self.row_height
        self.x, self.row_height = 0, 0


def variables(catalog: Catalog, dims: Sequence[str] = PLACE, slo: bool = False) -> g.Templating:
    """Custom variables listing catalog values (adding a niche adds its option), each with "All"."""
    values = {
        "niche": [n.id for n in catalog.niches],
        "country": [c.id for c in catalog.countries],
        "region": [r.id for r in catalog.regions],
    }
    listing = []
    if slo:
        ids = [s.id for s in catalog.slos]
        listing.append(g.Template(name="slo", label="SLO", type="custom", query=",".join(ids), default=ids[0]))
    for d in dims:
        listing.append(
            g.Template(
                name=d,
                label=d.capitalize(),
                type="custom",
                query=",".join(values[d]),
                includeAll=True,
                allValue=".*",
                default="All",
                options=[{"selected": True, "text": "All", "value": "$__all"}]
                + [{"selected": False, "text": v, "value": v} for v in values[d]],
            )
        )
    return g.Templating(list=listing)


def dashboard(
    catalog: Catalog, uid: str, title: str, layout: Layout, templating: g.Templating, tags: list[str], description: str
) -> g.Dashboard:
    """A dashboard with a fixed uid, shown in Argentina time, not editable (provisioned from code)."""
    return g.Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=["pulso", *tags],
        panels=layout.panels,
        templating=templating,
        timezone=catalog.timezone,
        editable=False,
        refresh="1m",
        time=g.Time("now-24h", "now"),
    ).auto_panel_ids()
