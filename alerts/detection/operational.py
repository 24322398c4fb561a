"""Operational series for the detector: 5-minute buckets straight from the metric samples.

The warehouse keeps counters per hour (enough for every daily KPI), but an alert that must fire within
15 minutes needs finer buckets, so this module reads the samples itself through the warehouse's own
reader (:class:`pipelines.lib.ingest.metrics.FileMetricsReader`, or a live Prometheus source) and its
reset rule (:func:`pipelines.lib.sources.prometheus.counter_increases`). Everything is merged, never
averaged: ratios from summed counts, p95 from summed histogram buckets, concurrent users as the peak
per-minute sum of sessions.

Grains: the total, each niche, and each (country, region). Each series carries its finest cells
(niche x country x region) so an anomaly can be explained.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl

from pipelines.lib.catalog import ALL, Catalog, load_catalog
from pipelines.lib.ingest.metrics import MetricsReader
from pipelines.lib.kpis.quantiles import histogram_quantile, le_value
from pipelines.lib.sources.prometheus import counter_increases
from pipelines.lib.warehouse import day_bounds_utc

CELL = ("niche", "country", "region")
GRAINS: dict[str, tuple[str, ...]] = {"total": (), "niche": ("niche",), "region": ("country", "region")}
OPERATIONAL_METRICS = ("requests", "error_ratio", "latency_p95_ms", "cache_hit_ratio", "concurrent_users")


@dataclass
class Series:
    """One watched series: metric + scope, its timestamps and values, and the cells behind each point."""

    metric: str
    scope: dict[str, str]
    ts: list[datetime]
    values: np.ndarray
    cells: pl.DataFrame | None = field(default=None, repr=False)  # bucket, niche, country, region, + parts

    @property
    def key(self) -> str:
        """Stable identity: ``metric|dim=value|...`` (the alert key)."""
        return "|".join([self.metric, *(f"{k}={v}" for k, v in self.scope.items())])


def _bucket(col: str, step_minutes: int) -> pl.Expr:
    return pl.col(col).dt.truncate(f"{step_minutes}m").alias("bucket")


def _day_cells(reader: MetricsReader, day: date, step_minutes: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(counts per bucket x cell, latency buckets per bucket x cell x le, sessions per minute x cell)."""
    start, end = day_bounds_utc(day)
    return window_cells(reader, start, end, step_minutes)


def window_cells(
    reader: MetricsReader, start: datetime, end: datetime, step_minutes: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Like a day's cells, for the samples in ``[start, end)`` (bucket-aligned) only: what the 5-minute
    table (``alerts.detection.ops_store``) adds on each run."""
    lead = start - timedelta(minutes=5)  # the previous samples, so the window's first increase is known

    def increases(metric: str, extra: tuple[str, ...] = ()) -> pl.DataFrame:
        raw = reader.samples(metric, lead, end)
        if raw.is_empty():
            return pl.DataFrame(
                schema={
                    "bucket": pl.Datetime("us", "UTC"),
                    **{c: pl.String for c in (*CELL, *extra)},
                    "increase": pl.Float64,
                }
            )
        # Damaged samples (no time, negative or non-finite) are the warehouse loader's to quarantine;
        # here they are left out so one bad row cannot fake a traffic collapse.
        raw = raw.filter(pl.col("ts").is_not_null() & pl.col("value").is_finite() & (pl.col("value") >= 0))
        inc = counter_increases(raw).filter((pl.col("ts") >= start) & pl.col("increase").is_not_null())
        return inc.group_by(_bucket("ts", step_minutes), *CELL, *extra).agg(pl.col("increase").sum())

    req = increases("http_requests_total", ("code",))
    counts = req.group_by("bucket", *CELL).agg(
        pl.col("increase").sum().alias("requests"),
        pl.col("increase").filter(pl.col("code").str.starts_with("5")).sum().alias("errors"),
    )
    hits = increases("cache_hits_total").rename({"increase": "cache_hits"})
    creq = increases("cache_requests_total").rename({"increase": "cache_requests"})
    counts = (
        counts.join(hits, on=["bucket", *CELL], how="full", coalesce=True)
        .join(creq, on=["bucket", *CELL], how="full", coalesce=True)
        .fill_null(0.0)
    )
    latency = increases("http_request_duration_seconds_bucket", ("le",)).rename({"increase": "count"})
    sessions = reader.samples("active_sessions", start, end)
    sessions = sessions.filter(pl.col("ts").is_not_null() & pl.col("value").is_finite() & (pl.col("value") >= 0))
    sessions = (
        sessions.group_by("ts", *CELL).agg(pl.col("value").sum())
        if not sessions.is_empty()
        else pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), **{c: pl.String for c in CELL}, "value": pl.Float64})
    )
    return counts, latency, sessions


def load_operational(reader: MetricsReader, days: Iterable[date], step_minutes: int = 5) -> dict[str, pl.DataFrame]:
    """Read ``days`` of samples into bucketed frames: ``counts``, ``latency`` and ``sessions``."""
    parts: dict[str, list[pl.DataFrame]] = {"counts": [], "latency": [], "sessions": []}
    for day in sorted(set(days)):
        counts, latency, sessions = _day_cells(reader, day, step_minutes)
        parts["counts"].append(counts)
        parts["latency"].append(latency)
        parts["sessions"].append(sessions)
    return {
        name: pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame() for name, frames in parts.items()
    }


def _scope(grain: tuple[str, ...], row: dict) -> dict[str, str]:
    scope = {"niche": ALL, "country": ALL, "region": ALL}
    for g in grain:
        scope[g] = row[g]
    return scope


def _grid(frame: pl.DataFrame, col: str, step_minutes: int) -> tuple[list[datetime], np.ndarray]:
    """A regular timeline (missing buckets are no data, not zero)."""
    frame = frame.sort("bucket")
    if frame.is_empty():
        return [], np.array([])
    full = pl.datetime_range(frame["bucket"][0], frame["bucket"][-1], f"{step_minutes}m", eager=True).alias("bucket")
    joined = pl.DataFrame(full).join(frame, on="bucket", how="left")
    return joined["bucket"].to_list(), joined[col].cast(pl.Float64).to_numpy()


def min_volume(step_minutes: int, catalog: Catalog | None = None) -> float:
    """Fewest requests a bucket needs for a ratio or a percentile to be judged (the catalog's traffic
    guard ``burn_rate_alerts.min_requests_per_5m``, scaled to the bucket): fewer is no data, not an alert."""
    catalog = catalog or load_catalog()
    return float(catalog.section("burn_rate_alerts")["min_requests_per_5m"]) * step_minutes / 5


def build_series(
    frames: dict[str, pl.DataFrame], step_minutes: int = 5, metrics: Iterable[str] = OPERATIONAL_METRICS
) -> list[Series]:
    """Every watched operational series at every grain (total, niche, region).

    ``frames`` come from :func:`load_operational` (``counts``, ``latency``, per-minute ``sessions``) or
    from the 5-minute table (:func:`alerts.detection.ops_store.read_frames`: ``sessions`` replaced by
    ``peaks``, each scope's peak concurrent users per bucket, and ``counts`` carrying ``sessions_peak``).
    """
    wanted = set(metrics)
    guard = min_volume(step_minutes)
    counts, latency = frames["counts"], frames["latency"]
    sessions, peaks = frames.get("sessions", pl.DataFrame()), frames.get("peaks")
    out: list[Series] = []
    for grain in GRAINS.values():
        keys = list(grain)
        groups = (counts.select(keys).unique().sort(keys).iter_rows(named=True)) if keys else [{}]
        for row in groups:
            flt = pl.lit(True)
            for k in keys:
                flt = flt & (pl.col(k) == row[k])
            scope = _scope(grain, row)
            c = counts.filter(flt)
            agg = c.group_by("bucket").agg(pl.col("requests", "errors", "cache_hits", "cache_requests").sum())
            agg = agg.with_columns(
                pl.when(pl.col("requests") >= guard).then(pl.col("errors") / pl.col("requests")).alias("error_ratio"),
                pl.when(pl.col("cache_requests") >= guard)
                .then(pl.col("cache_hits") / pl.col("cache_requests"))
                .alias("cache_hit_ratio"),
            )
            for metric in ("requests", "error_ratio", "cache_hit_ratio"):
                if metric in wanted:
                    ts, values = _grid(agg, metric, step_minutes)
                    out.append(Series(metric, scope, ts, values, c))
            if "latency_p95_ms" in wanted and not latency.is_empty():
                lat = latency.filter(flt).group_by("bucket", "le").agg(pl.col("count").sum()).sort("bucket")
                p95 = []
                for (bucket,), block in lat.group_by("bucket", maintain_order=True):
                    cum = sorted((le_value(le), n) for le, n in zip(block["le"], block["count"], strict=True))
                    q = histogram_quantile(0.95, cum) if cum and cum[-1][1] >= guard else None
                    p95.append((bucket, None if q is None else q * 1000))
                frame = pl.DataFrame(
                    p95, schema={"bucket": pl.Datetime("us", "UTC"), "latency_p95_ms": pl.Float64}, orient="row"
                )
                ts, values = _grid(frame, "latency_p95_ms", step_minutes)
                out.append(Series("latency_p95_ms", scope, ts, values, latency.filter(flt)))
            if "concurrent_users" in wanted and peaks is not None:
                # From the 5-minute table: the scope's stored peak; per-cell peaks explain it.
                s = peaks.filter(
                    (pl.col("niche") == scope["niche"])
                    & (pl.col("country") == scope["country"])
                    & (pl.col("region") == scope["region"])
                ).select("bucket", "concurrent_users")
                if not s.is_empty():
                    ts, values = _grid(s, "concurrent_users", step_minutes)
                    cells = c.select("bucket", *CELL, pl.col("sessions_peak").alias("value"))
                    out.append(Series("concurrent_users", scope, ts, values, cells))
            elif "concurrent_users" in wanted and not sessions.is_empty():
                s = (
                    sessions.filter(flt)
                    .group_by("ts")
                    .agg(pl.col("value").sum())
                    .group_by(_bucket("ts", step_minutes))
                    .agg(pl.col("value").max().alias("concurrent_users"))
                )
                ts, values = _grid(s, "concurrent_users", step_minutes)
                out.append(Series("concurrent_users", scope, ts, values, sessions.filter(flt)))
    return out
