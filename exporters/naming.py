"""Prometheus names and base units of the catalog's KPIs (shared by the exporter and the dashboards).

A KPI id carries its catalog unit (``latency_p95_ms``); its metric is ``pulso_`` + the id in base units
(``pulso_latency_p95_seconds``), with values scaled accordingly. Counts and users have no unit suffix.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.lib.catalog import Kpi

PREFIX = "pulso_"

# catalog unit -> (suffix in the KPI id, Prometheus base-unit suffix, factor to the base unit, HELP words)
UNITS: dict[str, tuple[str, str, float, str]] = {
    "ms": ("_ms", "_seconds", 0.001, "seconds"),
    "minutes": ("_minutes", "_seconds", 60.0, "seconds"),
    "ratio": ("_ratio", "_ratio", 1.0, "ratio 0-1"),
    "usd": ("_usd", "_usd", 1.0, "US dollars"),
    "usd_per_usd": ("", "_ratio", 1.0, "US dollars of revenue per US dollar of infra cost"),
    "count": ("", "", 1.0, "count"),
    "users": ("", "", 1.0, "users"),
}


class UnknownUnitError(ValueError):
    """A catalog KPI has a unit the exporter cannot express in base units."""


@dataclass(frozen=True)
class KpiMetric:
    """How one KPI is exposed: metric name, scale to base units and HELP text."""

    kpi: str
    name: str
    factor: float
    help: str

    @property
    def target_name(self) -> str:
        return f"{self.name}_target"


def kpi_metric(kpi: Kpi) -> KpiMetric:
    """The metric of a catalog KPI (``latency_p95_ms`` -> ``pulso_latency_p95_seconds``, value / 1000)."""
    try:
        id_suffix, base_suffix, factor, words = UNITS[kpi.unit]
    except KeyError as exc:
        raise UnknownUnitError(f"kpi {kpi.id!r}: unit {kpi.unit!r} has no base unit; known: {sorted(UNITS)}") from exc
    stem = kpi.id[: -len(id_suffix)] if id_suffix and kpi.id.endswith(id_suffix) else kpi.id
    name = f"{PREFIX}{stem}{base_suffix}"
    return KpiMetric(kpi.id, name, factor, f"{kpi.name['en']} ({words}), newest published day. {kpi.definition}")
