"""Warehouse assets: sources → raw → staging → marts → published.

Every asset is partitioned by Argentina day, runs a whole partition range in one run (a year builds in
one run), and writes DuckDB under the ``duckdb`` pool (limit 1: one writer). The logic lives in
``pipelines.lib`` (ingest, kpis); these assets only pick the days, call it and report metadata.
"""

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import dagster as dg
import duckdb as duckdb_lib
from dagster_duckdb import DuckDBResource

from pipelines.defs.common.resources import published_root
from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from pipelines.defs.warehouse.partitions import daily_partitions, run_days
from pipelines.lib.catalog import load_catalog
from pipelines.lib.ingest.billing import build_cost_items_daily, cost_outside, load_cur2, micros_to_usd
from pipelines.lib.ingest.events import arrival_folders, load_events_day
from pipelines.lib.ingest.fx import FX_KEY, build_fx_daily, load_fx
from pipelines.lib.ingest.metrics import load_metrics_day
from pipelines.lib.kpis import PUBLISHED_TABLES, ensure_inputs
from pipelines.lib.kpis import marts as marts_lib
from pipelines.lib.kpis.kpi_daily import build_kpi_daily
from pipelines.lib.kpis.staging import build_event_staging
from pipelines.lib.published import publish
from pipelines.lib.sources.billing_load import load_billing_files
from pipelines.lib.warehouse import LoadResult, prepare, record_load

COMMON = {
    "partitions_def": daily_partitions,
    "backfill_policy": dg.BackfillPolicy.single_run(),
    "pool": "duckdb",
}


def _connect(duckdb: DuckDBResource):
    return duckdb.get_connection()


def _open(con: duckdb_lib.DuckDBPyConnection) -> duckdb_lib.DuckDBPyConnection:
    prepare(con)
    ensure_inputs(con)
    return con


def _preview(
    con: duckdb_lib.DuckDBPyConnection, sql: str, params: dict | None = None, limit: int = 10
) -> dg.MetadataValue:
    """A small markdown table of a query's first rows (for the Dagster UI)."""
    cur = con.execute(f"SELECT * FROM ({sql}) LIMIT {int(limit)}", params or {})  # noqa: S608
    cols = [d[0] for d in cur.description]
    rows = cur.fetchall()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _count(con: duckdb_lib.DuckDBPyConnection, table: str, days: Sequence[date]) -> int:
    return con.execute(
        f"SELECT count(*) FROM {table} WHERE day IN (SELECT unnest($d::DATE[]))",  # noqa: S608
        {"d": list(days)},
    ).fetchall()[0][0]


def _days_meta(days: Sequence[date]) -> dict:
    return {"first_day": days[0].isoformat(), "last_day": days[-1].isoformat(), "days": len(days)}


def _note_touched(
    con: duckdb_lib.DuckDBPyConnection, source: str, touched: set[date], days: Sequence[date]
) -> list[date]:
    """Remember days a load changed outside the run's range (late events, restated bills) in
    ``ops.dirty_days``; staging and marts rebuild them and the late-data sensor re-opens them."""
    con.execute("CREATE TABLE IF NOT EXISTS ops.dirty_days (day DATE, source VARCHAR, noted_at TIMESTAMPTZ)")
    outside = sorted(d for d in touched if d not in set(days))
    if outside:
        con.executemany("INSERT INTO ops.dirty_days VALUES (?, ?, now())", [(d, source) for d in outside])
    return outside


# --- raw ------------------------------------------------------------------------------------------------


@dg.asset(group_name="raw", kinds={"duckdb"}, **COMMON)
def raw_metrics(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, metrics_source: MetricsSourceResource
) -> dg.MaterializeResult:
    """Prometheus metric samples of the run's days, loaded with the counter-reset rule: counters as hourly
    sums of per-minute increases (``staging.metric_counters_hourly``), gauges per minute
    (``staging.metric_gauges_minutely``). The source (files or Prometheus) is already the raw archive."""
    days = run_days(context)
    reader = metrics_source.reader()
    total = LoadResult("metrics", f"{days[0]}..{days[-1]}")
    with _connect(duckdb) as con:
        _open(con)
        for day in days:
            total.merge(load_metrics_day(con, reader, day))
        counters = _count(con, "staging.metric_counters_hourly", days)
        gauges = _count(con, "staging.metric_gauges_minutely", days)
        preview = _preview(
            con, "SELECT * FROM staging.metric_counters_hourly WHERE day = $d ORDER BY ALL", {"d": days[-1]}
        )
    return dg.MaterializeResult(
        metadata={
            **total.metadata(),
            **_days_meta(days),
            "dagster/row_count": counters + gauges,
            "counter_rows": counters,
            "gauge_rows": gauges,
            "source": metrics_source.describe(),
            "preview": preview,
        }
    )


@dg.asset(group_name="raw", kinds={"duckdb"}, **COMMON)
def raw_billing(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, billing_source: SourceResource
) -> dg.MaterializeResult:
    """Billing line items (``raw.billing_line_items``, contract section 4): AWS CUR 2.0 read through each
    billing period's manifest, and legacy CUR CSV / FinOps FOCUS files under ``legacy/`` and ``focus/``.
    A restated month (a new manifest, a re-delivered file) replaces its rows, never doubles them. Loads
    whatever is new, whatever the partition: a bill is per month, not per day."""
    days = run_days(context)
    storage = billing_source.storage()
    with _connect(duckdb) as con:
        _open(con)
        result = load_cur2(con, storage)
        result.merge(load_billing_files(con, storage))  # each load is reconciled and audited on its own
        result.scope = "cur2+legacy+focus"
        outside = _note_touched(con, "billing", result.touched_days, days)
        for w in result.warnings:
            context.log.warning(w)
        rows = con.execute("SELECT count(*) FROM raw.billing_line_items").fetchall()[0][0]
        preview = _preview(
            con,
            "SELECT billing_period, source_format, charge_category, count(*) AS items, "
            "sum(amortized_cost) AS amortized FROM raw.billing_line_items GROUP BY ALL ORDER BY ALL",
        )
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            **_days_meta(days),
            "dagster/row_count": rows,
            "touched_outside_run": ",".join(d.isoformat() for d in outside),
            "preview": preview,
        }
    )


@dg.asset(group_name="raw", kinds={"duckdb"}, **COMMON)
def raw_events(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, events_source: SourceResource
) -> dg.MaterializeResult:
    """App events of the run's arrival-day folders: deduplicated by event id, pseudonymized, personal
    fields dropped; sensitive niches in the ``psychology`` schema (``raw.events``, ``raw.payment_updates``,
    ``psychology.*``). Folders are UTC arrival days: AR day D ends at 03:00 UTC of D+1, so the folder after
    the run's last day is loaded too (and replaced by the next day's run). Late events touch earlier days:
    they are listed for the late-data sensor."""
    days = run_days(context)
    storage = events_source.storage()
    total = LoadResult("events", f"{days[0]}..{days[-1]}")
    with _connect(duckdb) as con:
        _open(con)
        for folder in arrival_folders(days):
            total.merge(load_events_day(con, storage, folder))
        outside = _note_touched(con, "events", total.touched_days, days)
        rows = con.execute(
            "SELECT count(*) FROM raw.events WHERE arrival_day IN (SELECT unnest($d::DATE[]))", {"d": days}
        ).fetchall()[0][0]
        preview = _preview(
            con,
            "SELECT day, type, niche, count(*) AS events FROM raw.events WHERE arrival_day = $d "
            "GROUP BY ALL ORDER BY ALL",
            {"d": days[-1]},
        )
    return dg.MaterializeResult(
        metadata={
            **total.metadata(),
            **_days_meta(days),
            "dagster/row_count": rows,
            "touched_outside_run": ",".join(d.isoformat() for d in outside),
            "preview": preview,
        }
    )


@dg.asset(group_name="raw", kinds={"duckdb"}, **COMMON)
def raw_fx(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, fx_source: SourceResource
) -> dg.MaterializeResult:
    """Daily ARS per USD quotes (``raw.fx_rates``), reloaded whole (one small CSV)."""
    days = run_days(context)
    storage = fx_source.storage()
    with _connect(duckdb) as con:
        _open(con)
        if storage.exists(FX_KEY):
            result = load_fx(con, storage)
        else:
            result = LoadResult(
                "fx", FX_KEY, warnings=[f"{storage.describe(FX_KEY)}: no FX file; revenue in USD will be no data"]
            )
            context.log.warning(result.warnings[0])
            record_load(con, result)  # the audit shows the empty load (and the quality check flags it)
        rows = con.execute("SELECT count(*) FROM raw.fx_rates").fetchall()[0][0]
        preview = _preview(con, "SELECT * FROM raw.fx_rates ORDER BY date DESC")
    return dg.MaterializeResult(
        metadata={**result.metadata(), **_days_meta(days), "dagster/row_count": rows, "preview": preview}
    )


# --- staging --------------------------------------------------------------------------------------------


def _dirty(con: duckdb_lib.DuckDBPyConnection, source: str | None = None) -> set[date]:
    con.execute("CREATE TABLE IF NOT EXISTS ops.dirty_days (day DATE, source VARCHAR, noted_at TIMESTAMPTZ)")
    rows = con.execute(
        "SELECT DISTINCT day FROM ops.dirty_days WHERE $s IS NULL OR source = $s", {"s": source}
    ).fetchall()
    return {r[0] for r in rows}


@dg.asset(group_name="staging", kinds={"duckdb"}, deps=[raw_fx], **COMMON)
def fx_daily(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """``staging.fx_daily``: a rate for every day, the last earlier quote carried over days without one."""
    days = run_days(context)
    with _connect(duckdb) as con:
        _open(con)
        n = build_fx_daily(con, days[-1])
        missing = [
            d
            for d in days
            if not con.execute(
                "SELECT count(*) FROM staging.fx_daily WHERE day = ? AND ars_per_usd IS NOT NULL", [d]
            ).fetchall()[0][0]
        ]
        preview = _preview(con, "SELECT * FROM staging.fx_daily ORDER BY day DESC")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": n, "days_without_rate": len(missing), **_days_meta(days), "preview": preview}
    )


@dg.asset(group_name="staging", kinds={"duckdb"}, deps=[raw_billing], **COMMON)
def cost_items_daily(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """``staging.cost_items_daily``: each line item's effective, billed and list cost on the AR days its
    usage covers, per provider, account, region, niche, service, category, … in exact integer micro-USD
    (largest remainder across days). Billing days outside the partitions (never built into the marts) are
    reported with their amount, never silently left out."""
    days = run_days(context)
    with _connect(duckdb) as con:
        _open(con)
        n = build_cost_items_daily(con)
        outside, micros = cost_outside(con, _first_partition(), _last_partition())
        preview = _preview(
            con,
            "SELECT day, provider, charge_category, sum(cost_micros) / 1e6 AS usd FROM staging.cost_items_daily "
            "WHERE day IN (SELECT unnest($d::DATE[])) GROUP BY ALL ORDER BY ALL",
            {"d": days},
        )
    span = "none"
    if outside:
        span = f"{outside[0]}..{outside[-1]}" if len(outside) > 1 else f"{outside[0]}"
        span += f" ({len(outside)} day{'s' if len(outside) > 1 else ''})"
        context.log.warning(
            f"billing cost on {span} is outside the partitions ({_first_partition()}..{_last_partition()}): "
            f"${micros_to_usd(micros)} effective is in staging.cost_items_daily but in no mart or KPI; set "
            "PULSO_PARTITION_START to its first day and materialize those days to build them (docs/sources.md)"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            **_days_meta(days),
            "days_outside_partitions": span,
            "cost_outside_partitions_usd": str(micros_to_usd(micros).normalize() if micros else 0),
            "preview": preview,
        }
    )


def _first_partition() -> date:
    return date.fromisoformat(daily_partitions.start.strftime("%Y-%m-%d"))


def _last_partition() -> date:
    return max(date.fromisoformat(k) for k in daily_partitions.get_partition_keys())


@dg.asset(group_name="staging", kinds={"duckdb"}, deps=[raw_events], **COMMON)
def event_staging(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Per-day users, bookings, onboarded professionals and each payment's final state
    (``staging.*`` and ``psychology.*``), for the run's days and any day late events touched."""
    days = run_days(context)
    with _connect(duckdb) as con:
        _open(con)
        redo = sorted(set(days) | _dirty(con, "events"))
        counts = build_event_staging(con, redo)
        users = con.execute(
            "SELECT count(*) FROM (SELECT * FROM staging.user_days UNION ALL SELECT * FROM psychology.user_days) "
            "WHERE day IN (SELECT unnest($d::DATE[]))",
            {"d": days},
        ).fetchall()[0][0]
    return dg.MaterializeResult(
        metadata={"dagster/row_count": users, **counts, "days_rebuilt": len(redo), **_days_meta(days)}
    )


# --- marts ----------------------------------------------------------------------------------------------


def _mart(name: str, builder, deps: list, description: str):
    @dg.asset(name=name, group_name="marts", kinds={"duckdb"}, deps=deps, description=description, **COMMON)
    def _asset(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        days = run_days(context)
        with _connect(duckdb) as con:
            _open(con)
            redo = _redo_days(con, days)
            marts_lib._days_table(con, redo)
            builder(con, redo)
            n = _count(con, f"marts.{name}", days)
            preview = _preview(con, f"SELECT * FROM marts.{name} WHERE day = $d ORDER BY ALL", {"d": days[-1]})  # noqa: S608
        return dg.MaterializeResult(
            metadata={"dagster/row_count": n, "days_rebuilt": len(redo), **_days_meta(days), "preview": preview}
        )

    return _asset


def _redo_days(con: duckdb_lib.DuckDBPyConnection, days: Sequence[date]) -> list[date]:
    """The run's days plus days a load touched outside earlier runs (bounded to the partitions)."""
    first = date.fromisoformat(daily_partitions.start.strftime("%Y-%m-%d"))
    return sorted({*days, *(d for d in _dirty(con) if d >= first)})


latency_daily = _mart(
    "latency_daily",
    marts_lib.build_latency_daily,
    [raw_metrics],
    "Summed histogram buckets per day, niche, country, region, service and bound (heatmaps).",
)
ops_hourly = _mart(
    "ops_hourly",
    marts_lib.build_ops_hourly,
    [raw_metrics],
    "Hourly requests, 5xx errors, p95 latency (merged buckets) and peak sessions per service.",
)
incidents = _mart(
    "incidents",
    marts_lib.build_incidents,
    [raw_metrics],
    "Probe-detected incidents (consecutive failed minutes) with start, end and recovery minutes.",
)
slo_daily = _mart(
    "slo_daily",
    marts_lib.build_slo_daily,
    [raw_metrics, event_staging],
    "SLOs per grain: 30-day good/total, SLI, error budget left, burn rates over 1h/6h/1d/3d.",
)
cost_daily = _mart(
    "cost_daily",
    marts_lib.build_cost_daily,
    [cost_items_daily, raw_metrics],
    "Amortized USD cost per day, niche, service, charge category; shared cost split by requests, exact.",
)
payments_daily = _mart(
    "payments_daily",
    marts_lib.build_payments_daily,
    [event_staging, fx_daily],
    "Final-state payments by creation day: counts, ARS net of refunds, USD at the day's rate.",
)


@dg.asset(
    group_name="marts",
    kinds={"duckdb"},
    deps=[latency_daily, slo_daily, incidents, cost_daily, payments_daily, event_staging, raw_metrics],
    **COMMON,
)
def kpi_daily(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Every catalog KPI per day and grain with its target and status (the stable serving contract)."""
    days = run_days(context)
    with _connect(duckdb) as con:
        _open(con)
        redo = _redo_days(con, days)
        build_kpi_daily(con, redo)
        n = _count(con, "marts.kpi_daily", days)
        status = dict(
            con.execute(
                "SELECT status, count(*) FROM marts.kpi_daily WHERE day IN (SELECT unnest($d::DATE[])) "
                "AND niche = 'all' AND country = 'all' GROUP BY ALL",
                {"d": days},
            ).fetchall()
        )
        preview = _preview(
            con,
            "SELECT kpi, value, unit, target, status FROM marts.kpi_daily WHERE day = $d AND niche = 'all' "
            "AND country = 'all' AND region = 'all' ORDER BY kpi",
            {"d": days[-1]},
            limit=25,
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": n,
            "days_rebuilt": len(redo),
            **_days_meta(days),
            **{f"total_grain_{k}": v for k, v in sorted(status.items())},
            "preview": preview,
        }
    )


# --- published ------------------------------------------------------------------------------------------


def freshness(con: duckdb_lib.DuckDBPyConnection) -> tuple[date | None, date | None]:
    """``(complete_through, data_through)``: the last AR day whose metrics reach its end, and the newest
    AR day with any metric sample."""
    tz = load_catalog().timezone
    newest = con.execute("SELECT max(ts) FROM staging.metric_gauges_minutely").fetchall()[0][0]
    if newest is None:
        return None, None
    newest_local: datetime = newest.astimezone(__import__("zoneinfo").ZoneInfo(tz))
    data_through = newest_local.date()
    complete_through = (newest_local + timedelta(minutes=1)).date() - timedelta(days=1)
    return complete_through, data_through


@dg.asset(
    group_name="published",
    kinds={"parquet"},
    deps=[
        kpi_daily,
        slo_daily,
        incidents,
        cost_daily,
        payments_daily,
        latency_daily,
        ops_hourly,
        fx_daily,
        raw_metrics,
    ],
    **COMMON,
)
def published_marts(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """The marts of the run's days (and re-opened days) and their daily ARS/USD rate (``staging.fx_daily``)
    published atomically for consumers (``pipelines.lib.published``), with ``complete_through`` /
    ``data_through`` in the manifest. ``marts.cache_daily`` (hits and requests per day and place, the
    counts behind the cache hit ratio) is a plain roll-up of the metric counters, rebuilt here for the
    days being published."""
    from pipelines.lib.kpis import PUBLISHED_RELATIONS

    days = run_days(context)
    with _connect(duckdb) as con:
        _open(con)
        redo = _redo_days(con, days)
        marts_lib.build_cache_daily(con, redo)
        complete, through = freshness(con)
        manifest = publish(
            con,
            PUBLISHED_RELATIONS,
            redo,
            root=published_root(),
            extra={
                "complete_through": complete.isoformat() if complete else None,
                "data_through": through.isoformat() if through else None,
                "run_id": context.run.run_id,
            },
        )
        # The re-opened days are now rebuilt and published: forget them.
        con.execute("DELETE FROM ops.dirty_days WHERE day IN (SELECT unnest($d::DATE[]))", {"d": redo})
    return dg.MaterializeResult(
        metadata={
            "manifest_version": manifest.version,
            "days_published": len(redo),
            **_days_meta(days),
            "reopened_days": ",".join(d.isoformat() for d in redo if d not in set(days)),
            "complete_through": str(complete),
            "data_through": str(through),
            "root": str(published_root()),
            "dagster/row_count": sum(len(manifest.days(t)) for t in PUBLISHED_TABLES),
        }
    )


WAREHOUSE_ASSETS = [
    raw_metrics,
    raw_billing,
    raw_events,
    raw_fx,
    fx_daily,
    cost_items_daily,
    event_staging,
    latency_daily,
    ops_hourly,
    incidents,
    slo_daily,
    cost_daily,
    payments_daily,
    kpi_daily,
    published_marts,
]
