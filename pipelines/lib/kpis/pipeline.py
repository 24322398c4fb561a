"""The whole warehouse flow for a set of days as plain function calls (what the Dagster assets do, step by
step, without Dagster): load sources → staging → marts. Used by tests and benchmarks of the logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import duckdb

from pipelines.lib.ingest.billing import build_cost_items_daily, load_cur2
from pipelines.lib.ingest.events import arrival_folders, load_events_day
from pipelines.lib.ingest.fx import build_fx_daily, load_fx
from pipelines.lib.ingest.metrics import MetricsReader, load_metrics_day
from pipelines.lib.kpis import ensure_inputs
from pipelines.lib.kpis.marts import build_all_marts
from pipelines.lib.kpis.staging import build_event_staging
from pipelines.lib.sources.billing_load import load_billing_files
from pipelines.lib.storage import Storage
from pipelines.lib.warehouse import LoadResult


@dataclass
class SourceSet:
    """Where each source is read from (see ``pipelines.lib.sources.config``)."""

    metrics: MetricsReader | None
    billing: Storage | None
    events: Storage | None
    fx: Storage | None


def load_sources(
    con: duckdb.DuckDBPyConnection, sources: SourceSet, days: Iterable[date], key: bytes | None = None
) -> dict[str, LoadResult]:
    """Load every source for ``days`` (metrics and events per day; billing and FX whole)."""
    day_list = sorted(set(days))
    ensure_inputs(con)
    results: dict[str, LoadResult] = {}
    if sources.fx is not None and sources.fx.exists("ars_usd.csv"):
        results["fx"] = load_fx(con, sources.fx)
    build_fx_daily(con, max(day_list))
    if sources.billing is not None:
        results["billing"] = load_cur2(con, sources.billing)
        results["billing"].merge(load_billing_files(con, sources.billing))  # legacy CUR and FOCUS files
    build_cost_items_daily(con)
    if sources.events is not None:
        total = LoadResult("events", f"{day_list[0]}..{day_list[-1]}")
        for d in arrival_folders(day_list):
            total.merge(load_events_day(con, sources.events, d, key=key))
        results["events"] = total
    build_event_staging(con, sorted({*day_list, *results.get("events", LoadResult("events", "")).touched_days}))
    if sources.metrics is not None:
        total = LoadResult("metrics", f"{day_list[0]}..{day_list[-1]}")
        for d in day_list:
            total.merge(load_metrics_day(con, sources.metrics, d))
        results["metrics"] = total
    return results


def refresh(
    con: duckdb.DuckDBPyConnection, sources: SourceSet, days: Iterable[date], key: bytes | None = None
) -> dict[str, int]:
    """Load then build every mart for ``days``; returns rows per mart."""
    day_list = sorted(set(days))
    load_sources(con, sources, day_list, key=key)
    return build_all_marts(con, day_list)
