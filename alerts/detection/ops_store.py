"""The 5-minute operational table: what the 15-minute alert job reads instead of re-reading the day's samples.

Three DuckDB tables, one row per 5-minute bucket (UTC start) and cell, each with its Argentina ``day``:

* ``staging.ops_5m`` -- bucket x niche x country x region: ``requests``, ``errors`` (5xx), ``cache_hits``,
  ``cache_requests`` (counter increases, Prometheus' reset rule) and ``sessions_peak`` (the cell's peak
  per-minute active sessions);
* ``staging.ops_5m_latency`` -- the same cells x histogram bucket ``le``: request counts, so a p95 at
  any grain is computed from *merged* buckets;
* ``staging.ops_5m_peaks`` -- bucket x watched scope (total, each niche, each country/region; ``all``
  for a dimension not fixed): peak concurrent users = the highest per-minute **sum** of the scope's
  sessions (a sum of per-cell peaks would overstate it).

``staging.ops_5m_state`` remembers, per Argentine day, up to when the buckets are stored. An update
with new settled buckets reads ``[stored_through - restate, last settled bucket)`` from the metrics source:
the new buckets, and the last ``restate`` (10 minutes) of stored ones again, replaced, so samples that
landed after their bucket was stored (a slow scrape, a late file) are counted; a re-run with nothing new
reads nothing and changes nothing; a partial bucket is never stored (only buckets that ended ``settle``
ago). Writes for a day happen in one transaction (delete the window, insert, move the
state), so an interrupted run leaves the day as it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import duckdb
import polars as pl

from alerts.detection.operational import CELL, GRAINS, window_cells
from pipelines.lib.catalog import ALL
from pipelines.lib.ingest.metrics import MetricsReader
from pipelines.lib.warehouse import ar_day, day_bounds_utc

COUNTS = "staging.ops_5m"
LATENCY = "staging.ops_5m_latency"
PEAKS = "staging.ops_5m_peaks"
STATE = "staging.ops_5m_state"
COUNT_COLUMNS = ("requests", "errors", "cache_hits", "cache_requests", "sessions_peak")
_CELL_SQL = ", ".join(f"{c} VARCHAR" for c in CELL)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schema and tables if missing."""
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {COUNTS} (day DATE, bucket TIMESTAMPTZ, {_CELL_SQL}, "
        + ", ".join(f"{c} DOUBLE" for c in COUNT_COLUMNS)
        + ")"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {LATENCY} (day DATE, bucket TIMESTAMPTZ, {_CELL_SQL}, le VARCHAR, count DOUBLE)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {PEAKS} (day DATE, bucket TIMESTAMPTZ, {_CELL_SQL}, concurrent_users DOUBLE)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {STATE} (day DATE PRIMARY KEY, stored_through TIMESTAMPTZ, "
        "step_minutes INTEGER, updated_at TIMESTAMPTZ)"
    )


def summarize(
    counts: pl.DataFrame, latency: pl.DataFrame, sessions: pl.DataFrame, step_minutes: int
) -> dict[str, pl.DataFrame]:
    """The table rows of one window from :func:`alerts.detection.operational.window_cells` frames."""
    bucket = pl.col("ts").dt.truncate(f"{step_minutes}m").alias("bucket")
    cell_peak = sessions.group_by(bucket, *CELL).agg(pl.col("value").max().alias("sessions_peak"))
    rows = (
        counts.join(cell_peak, on=["bucket", *CELL], how="full", coalesce=True)
        .with_columns(
            pl.col(c).fill_null(0.0).cast(pl.Float64) for c in ("requests", "errors", "cache_hits", "cache_requests")
        )
        .select("bucket", *CELL, *COUNT_COLUMNS)
    )
    peaks = []
    for grain in GRAINS.values():
        keys = list(grain)
        per_minute = sessions.group_by("ts", *keys).agg(pl.col("value").sum())
        p = per_minute.group_by(bucket, *keys).agg(pl.col("value").max().alias("concurrent_users"))
        peaks.append(
            p.with_columns(pl.lit(ALL).alias(c) for c in CELL if c not in keys).select(
                "bucket", *CELL, "concurrent_users"
            )
        )
    lat = latency.select("bucket", *CELL, "le", pl.col("count").cast(pl.Float64))
    return {
        "counts": rows.sort("bucket", *CELL),
        "latency": lat.sort("bucket", *CELL, "le"),
        "peaks": pl.concat(peaks).sort("bucket", *CELL),
    }


def settled_until(now: datetime, step_minutes: int, settle: timedelta = timedelta(minutes=2)) -> datetime:
    """End of the last bucket that ended at least ``settle`` before ``now`` (late samples have landed)."""
    t = (now - settle).astimezone(UTC)
    epoch = int(t.timestamp()) // (step_minutes * 60) * (step_minutes * 60)
    return datetime.fromtimestamp(epoch, UTC)


def stored_through(con: duckdb.DuckDBPyConnection, day: date) -> datetime | None:
    """Up to when ``day``'s buckets are stored (None: nothing yet)."""
    rows = con.execute(f"SELECT stored_through FROM {STATE} WHERE day = ?", [day]).fetchall()  # noqa: S608
    return rows[0][0].astimezone(UTC) if rows and rows[0][0] is not None else None


@dataclass(frozen=True)
class UpdateResult:
    """What one update read and stored."""

    days: tuple[date, ...]  # days that received new buckets
    buckets: int  # new 5-minute buckets (time slots) stored
    rows: int  # rows written to ops_5m (new buckets and the restated ones)
    read_from: datetime | None  # includes the restated buckets
    read_to: datetime | None


RESTATE = timedelta(minutes=10)


def update(
    con: duckdb.DuckDBPyConnection,
    reader: MetricsReader,
    days: Iterable[date],
    now: datetime,
    step_minutes: int = 5,
    settle: timedelta = timedelta(minutes=2),
    restate: timedelta = RESTATE,
) -> UpdateResult:
    """Append every settled bucket of ``days`` not stored yet, re-reading and replacing the last
    ``restate`` of stored buckets with them (late samples); reads nothing when nothing new has settled."""
    ensure_tables(con)
    limit = settled_until(now, step_minutes, settle)
    touched, buckets, rows, first, last = [], 0, 0, None, None
    for day in sorted(set(days)):
        start, end = day_bounds_utc(day)
        done = stored_through(con, day)
        new_from = max(start, done) if done else start
        hi = min(end, limit)
        if hi <= new_from:
            continue
        step = timedelta(minutes=step_minutes)
        lo = max(start, new_from - step * math.ceil(restate / step))  # whole buckets
        counts, latency, sessions = window_cells(reader, lo, hi, step_minutes)
        parts = summarize(counts, latency, sessions, step_minutes)
        n = _write(con, day, lo, hi, parts, step_minutes)
        buckets += int((hi - new_from).total_seconds() // (step_minutes * 60))
        rows += n
        touched.append(day)
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    return UpdateResult(tuple(touched), buckets, rows, first, last)


def _write(
    con: duckdb.DuckDBPyConnection,
    day: date,
    lo: datetime,
    hi: datetime,
    parts: dict[str, pl.DataFrame],
    step_minutes: int,
) -> int:
    con.execute("BEGIN TRANSACTION")
    try:
        for table, name in ((COUNTS, "counts"), (LATENCY, "latency"), (PEAKS, "peaks")):
            con.execute(f"DELETE FROM {table} WHERE bucket >= ? AND bucket < ?", [lo, hi])  # noqa: S608
            frame = parts[name].filter((pl.col("bucket") >= lo) & (pl.col("bucket") < hi))
            if not frame.is_empty():
                con.register("_ops_new", frame.with_columns(pl.lit(day).alias("day")).to_arrow())
                cols = ", ".join(frame.columns)
                con.execute(f"INSERT INTO {table} (day, {cols}) SELECT day, {cols} FROM _ops_new")  # noqa: S608
                con.unregister("_ops_new")
        con.execute(f"INSERT OR REPLACE INTO {STATE} VALUES (?, ?, ?, now())", [day, hi, step_minutes])  # noqa: S608
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return parts["counts"].filter((pl.col("bucket") >= lo) & (pl.col("bucket") < hi)).height


def prune(con: duckdb.DuckDBPyConnection, keep_from: date) -> int:
    """Drop the days before ``keep_from`` (the detector's history is bounded); returns ops_5m rows dropped."""
    ensure_tables(con)
    n = con.execute(f"SELECT count(*) FROM {COUNTS} WHERE day < ?", [keep_from]).fetchall()[0][0]  # noqa: S608
    for table in (COUNTS, LATENCY, PEAKS, STATE):
        con.execute(f"DELETE FROM {table} WHERE day < ?", [keep_from])  # noqa: S608
    return int(n)


def read_frames(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> dict[str, pl.DataFrame]:
    """The stored buckets in ``[start, end)`` as frames for :func:`alerts.detection.operational.build_series`."""
    ensure_tables(con)

    def q(table: str, cols: str) -> pl.DataFrame:
        frame = pl.from_arrow(
            con.sql(
                f"SELECT {cols} FROM {table} WHERE bucket >= $start AND bucket < $end ORDER BY ALL",  # noqa: S608
                params={"start": start, "end": end},
            ).to_arrow_table()
        )
        return frame.with_columns(pl.col("bucket").dt.convert_time_zone("UTC"))

    cells = ", ".join(CELL)
    return {
        "counts": q(COUNTS, f"bucket, {cells}, " + ", ".join(COUNT_COLUMNS)),
        "latency": q(LATENCY, f"bucket, {cells}, le, count"),
        "peaks": q(PEAKS, f"bucket, {cells}, concurrent_users"),
    }


def history_days(now: datetime, days: int) -> list[date]:
    """The ``days`` Argentine days ending today (oldest first)."""
    today = ar_day(now)
    return [today - timedelta(days=k) for k in range(days - 1, -1, -1)]
