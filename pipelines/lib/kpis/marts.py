"""The marts: every published table of docs/data-contract.md section 3, for a set of Argentina days.

All logic is SQL/polars over the warehouse connection (no Dagster). Each builder replaces the rows of
the given days only, reading whatever history its rolling windows need from staging, so re-running a
day gives the same rows and a run's cost grows with the days it touches.

Rules (the catalog's definitions): merge, never average (percentiles from summed buckets, ratios from
summed counts); money stays DECIMAL / integer micro-dollars until a KPI's final DOUBLE; a ratio with a
zero denominator is NULL (no data), never NaN/Inf.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import duckdb
import polars as pl

from pipelines.lib.catalog import load_catalog
from pipelines.lib.ingest.billing import ensure_cost_items_table
from pipelines.lib.ingest.metrics import COUNTER_TABLE, GAUGE_TABLE
from pipelines.lib.kpis.quantiles import quantile_sql
from pipelines.lib.kpis.staging import both
from pipelines.lib.warehouse import day_bounds_utc, replace_days, table_exists

#: kpi_daily grains, coarse to fine (docs/data-contract.md): a KPI gets those within its catalog dims.
GRAINS: tuple[tuple[str, ...], ...] = (
    (),
    ("niche",),
    ("country",),
    ("country", "region"),
    ("niche", "country"),
    ("niche", "country", "region"),
)
DIMS = ("niche", "country", "region")
_WINDOW_HOURS = {"h": 1, "d": 24}


def grains_for(dims: Sequence[str]) -> list[tuple[str, ...]]:
    """The grains a KPI with these catalog ``dims`` is published at (the total always)."""
    return [g for g in GRAINS if set(g) <= set(dims)]


def grouping(dims: Sequence[str], keys: Sequence[str] = ("day",), prefix: str = "") -> tuple[str, str]:
    """``(select_columns, group_by)`` SQL for the grains of ``dims``; totals are ``'all'``."""
    sets = ", ".join("(" + ", ".join([*keys, *(f"{prefix}{c}" for c in g)]) + ")" for g in grains_for(dims))
    cols = ", ".join(
        f"CASE WHEN grouping({prefix}{c}) = 1 THEN 'all' ELSE coalesce({prefix}{c}, 'unknown') END AS {c}"
        if c in dims
        else f"'all' AS {c}"
        for c in DIMS
    )
    # With no dims every grouping set is (keys) and grouping() cannot be asked of absent columns.
    if not dims:
        return cols, "GROUP BY " + ", ".join(keys)
    return cols, f"GROUP BY GROUPING SETS ({sets})"


def window_hours(window: str) -> int:
    """``1h``/``6h``/``1d``/``3d`` → hours."""
    return int(window[:-1]) * _WINDOW_HOURS[window[-1]]


def _days_table(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> None:
    tz = load_catalog().timezone
    con.execute("CREATE OR REPLACE TEMP TABLE _days (day DATE)")
    con.executemany("INSERT INTO _days VALUES (?)", [(d,) for d in days])
    # Window end: the day's end, or the newest metric hour for a day still in progress.
    newest = con.execute(f"SELECT max(hour_start) + INTERVAL 1 HOUR FROM {COUNTER_TABLE}").fetchall()[0][0]  # noqa: S608
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _day_ends AS SELECT day, "
        "least(timezone($tz, (day + INTERVAL 1 DAY)::TIMESTAMP), coalesce($newest, timezone($tz, (day + INTERVAL 1 DAY)::TIMESTAMP))) AS end_ts "
        "FROM _days",
        {"tz": tz, "newest": newest},
    )


# --------------------------------------------------------------------------------------------------
# metric-based marts
# --------------------------------------------------------------------------------------------------


def build_latency_daily(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """``marts.latency_daily``: summed cumulative histogram buckets per day and series labels."""
    return replace_days(
        con,
        "marts.latency_daily",
        f"SELECT day, niche, country, region, service, le, sum(increase) AS requests FROM {COUNTER_TABLE} "  # noqa: S608
        "WHERE metric = 'http_request_duration_seconds_bucket' AND day IN (SELECT unnest($days::DATE[])) "
        "GROUP BY ALL ORDER BY ALL",
        days,
    )


def build_cache_daily(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """``marts.cache_daily``: cache hits and cache requests summed per day, niche, country and region
    (the counts behind ``cache_hit_ratio``, so a period's ratio is summed hits / summed requests)."""
    return replace_days(
        con,
        "marts.cache_daily",
        f"""SELECT day, niche, country, region,
               coalesce(sum(increase) FILTER (WHERE metric = 'cache_hits_total'), 0) AS hits,
               coalesce(sum(increase) FILTER (WHERE metric = 'cache_requests_total'), 0) AS requests
        FROM {COUNTER_TABLE} WHERE metric IN ('cache_hits_total', 'cache_requests_total')
          AND day IN (SELECT unnest($days::DATE[])) GROUP BY ALL ORDER BY ALL""",  # noqa: S608 - a module constant
        days,
    )


def build_ops_hourly(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """``marts.ops_hourly``: requests, 5xx errors, p95 (ms) per hour and service; the niche-region's peak
    active sessions of the hour is repeated on each of its service rows (sessions have no service label)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _lat_hourly AS
        SELECT day, hour_start, niche, country, region, service, le, increase AS requests FROM {COUNTER_TABLE}
        WHERE metric = 'http_request_duration_seconds_bucket' AND day IN (SELECT unnest($days::DATE[]))
        """,  # noqa: S608
        {"days": list(days)},
    )
    p95 = quantile_sql(
        "_lat_hourly", ["day", "hour_start", "niche", "country", "region", "service"], {"p95": 0.95}, 1000.0
    )
    sql = f"""
        WITH req AS (
            SELECT day, hour_start, niche, country, region, service, sum(increase) AS requests,
                   sum(CASE WHEN code LIKE '5%' THEN increase ELSE 0 END) AS errors
            FROM {COUNTER_TABLE} WHERE metric = 'http_requests_total' AND day IN (SELECT unnest($days::DATE[]))
            GROUP BY ALL
        ),
        sess AS (
            SELECT day, time_bucket(INTERVAL 1 HOUR, ts) AS hour_start, niche, country, region, max(v) AS peak
            FROM (SELECT day, ts, niche, country, region, sum(value) AS v FROM {GAUGE_TABLE}
                  WHERE metric = 'active_sessions' AND day IN (SELECT unnest($days::DATE[])) GROUP BY ALL)
            GROUP BY ALL
        ),
        p AS ({p95})
        SELECT req.day, req.hour_start, req.niche, req.country, req.region, req.service, req.requests, req.errors,
               p.p95 AS latency_p95_ms, sess.peak AS active_sessions_peak
        FROM req
        LEFT JOIN p ON p.day = req.day AND p.hour_start = req.hour_start AND p.niche IS NOT DISTINCT FROM req.niche
            AND p.country IS NOT DISTINCT FROM req.country AND p.region IS NOT DISTINCT FROM req.region
            AND p.service IS NOT DISTINCT FROM req.service
        LEFT JOIN sess ON sess.day = req.day AND sess.hour_start = req.hour_start
            AND sess.niche IS NOT DISTINCT FROM req.niche AND sess.country IS NOT DISTINCT FROM req.country
            AND sess.region IS NOT DISTINCT FROM req.region
        ORDER BY ALL
    """  # noqa: S608
    n = replace_days(con, "marts.ops_hourly", sql, days)
    con.execute("DROP TABLE IF EXISTS _lat_hourly")
    return n


def build_incidents(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """``marts.incidents``: runs of at least ``incidents.min_failed_minutes`` consecutive failed probe
    minutes per (niche, region). Recovery = first failed minute to the first successful probe after;
    ``ended_at`` NULL while still failing at the newest data. Reads one day either side of the range."""
    catalog = load_catalog()
    min_minutes = int(catalog.section("incidents")["min_failed_minutes"])
    first, last = min(days), max(days)
    sql = f"""
        WITH p AS (
            SELECT ts, niche, country, region, value < 1 AS failed,
                   lag(ts) OVER w AS prev_ts, lag(value < 1) OVER w AS prev_failed,
                   lead(ts) OVER w AS next_ts, lead(value < 1) OVER w AS next_failed
            FROM {GAUGE_TABLE}
            WHERE metric = 'probe_success' AND day BETWEEN $lo AND $hi
            WINDOW w AS (PARTITION BY niche, country, region ORDER BY ts)
        ),
        marked AS (
            SELECT *, sum(CASE WHEN failed AND (prev_failed IS DISTINCT FROM true OR ts - prev_ts > INTERVAL 1 MINUTE)
                               THEN 1 ELSE 0 END) OVER (PARTITION BY niche, country, region ORDER BY ts) AS island
            FROM p
        ),
        ended AS (
            -- recovery: the successful probe right after the island's last failed minute (none yet: open)
            SELECT niche, country, region, island, min(ts) AS started_at, count(*) AS minutes,
                   arg_max(CASE WHEN next_failed = false THEN next_ts END, ts) AS ended_at
            FROM marked WHERE failed GROUP BY ALL HAVING count(*) >= {min_minutes}
        )
        SELECT timezone($tz, started_at)::DATE AS day,
               substr(md5(concat_ws('|', niche, country, region, started_at::VARCHAR)), 1, 16) AS incident_id,
               niche, country, region, started_at, ended_at,
               CASE WHEN ended_at IS NULL THEN NULL ELSE epoch(ended_at - started_at) / 60.0 END AS recovery_minutes
        FROM ended ORDER BY ALL
    """  # noqa: S608
    return replace_days(
        con,
        "marts.incidents",
        sql,
        days,
        {"lo": first - timedelta(days=1), "hi": last + timedelta(days=1), "tz": catalog.timezone},
    )


def scaling_times(frame: pl.DataFrame) -> pl.DataFrame:
    """Per scaling event: minutes from a rise in desired capacity to in-service reaching it.

    ``frame``: ``ts, group, country, desired, in_service`` per minute. A rise is a minute whose desired
    capacity is above the previous minute's; it is reached at the first minute (same or later) whose
    in-service count is at least that desired value. Unreached rises are left out (reported later, when
    the data that reaches them arrives). Returns ``group, country, rise_at, reached_at, minutes``.
    """
    out: dict[str, list] = {"group": [], "country": [], "rise_at": [], "reached_at": [], "minutes": []}
    for (group, country), part in frame.sort("ts").group_by(["group", "country"], maintain_order=True):
        pending: list[tuple[datetime, float]] = []
        prev = None
        for ts, desired, in_service in part.select(["ts", "desired", "in_service"]).iter_rows():
            if desired is not None and prev is not None and desired > prev:
                pending.append((ts, desired))
            if desired is not None:
                prev = desired
            if in_service is None:
                continue
            still = []
            for rise_at, target in pending:
                if in_service >= target:
                    out["group"].append(group)
                    out["country"].append(country)
                    out["rise_at"].append(rise_at)
                    out["reached_at"].append(ts)
                    out["minutes"].append((ts - rise_at).total_seconds() / 60.0)
                else:
                    still.append((rise_at, target))
            pending = still
    return pl.DataFrame(
        out,
        schema={
            "group": pl.String,
            "country": pl.String,
            "rise_at": pl.Datetime("us", "UTC"),
            "reached_at": pl.Datetime("us", "UTC"),
            "minutes": pl.Float64,
        },
    )


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> pl.DataFrame:
    """A query's result as a polars frame (fully fetched, so the connection is free again)."""
    return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())


def _scaling_daily(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> pl.DataFrame:
    lo, hi = min(days), max(days) + timedelta(days=1)
    frame = _frame(
        con,
        f"""
        SELECT ts, "group", country,
               max(CASE WHEN metric = 'autoscaling_group_desired_capacity' THEN value END) AS desired,
               max(CASE WHEN metric = 'autoscaling_group_in_service_instances' THEN value END) AS in_service
        FROM {GAUGE_TABLE}
        WHERE metric IN ('autoscaling_group_desired_capacity', 'autoscaling_group_in_service_instances')
          AND day BETWEEN $lo AND $hi
        GROUP BY ALL ORDER BY ALL
        """,  # noqa: S608
        {"lo": lo, "hi": hi},
    )
    if frame.is_empty():
        return pl.DataFrame(schema={"day": pl.Date, "value": pl.Float64})
    times = scaling_times(frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")))
    tz = load_catalog().timezone
    return (
        times.with_columns(pl.col("rise_at").dt.convert_time_zone(tz).dt.date().alias("day"))
        .group_by("day")
        .agg(pl.col("minutes").max().alias("value"))
    )


# --------------------------------------------------------------------------------------------------
# SLOs
# --------------------------------------------------------------------------------------------------


def _slo_inputs(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> None:
    """Temp tables ``_slo_hourly`` and ``_slo_day`` (slo, labels, good, total) over the windows needed."""
    catalog = load_catalog()
    max_period = max(s.period_days for s in catalog.slos)
    lo = min(days) - timedelta(days=max_period)
    hi = max(days) + timedelta(days=1)
    thresholds = {c.id: c.latency_slo_ms / 1000.0 for c in catalog.countries}
    success = list(catalog.section("payments")["success_statuses"])
    con.execute("CREATE OR REPLACE TEMP TABLE _thresholds (country VARCHAR, le_s DOUBLE)")
    con.executemany("INSERT INTO _thresholds VALUES (?, ?)", list(thresholds.items()))
    has_pay = table_exists(con, "staging.payments_final") and table_exists(con, "psychology.payments_final")
    pay = (
        f"""
        UNION ALL
        SELECT 'mercadopago_success' AS slo, time_bucket(INTERVAL 1 HOUR, date_created) AS hour_start, day,
               niche, country, region,
               sum(CASE WHEN list_contains($success, status) THEN 1 ELSE 0 END)::DOUBLE AS good, count(*)::DOUBLE AS total
        FROM {both("payments_final")}
        WHERE provider = 'mercadopago' AND is_final AND day BETWEEN $lo AND $hi
        GROUP BY ALL
    """  # noqa: S608
        if has_pay
        else ""
    )  # noqa: S608
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _slo_hourly AS
        SELECT 'availability' AS slo, hour_start, day, niche, country, region,
               sum(CASE WHEN code LIKE '5%' THEN 0 ELSE increase END) AS good, sum(increase) AS total
        FROM {COUNTER_TABLE} WHERE metric = 'http_requests_total' AND day BETWEEN $lo AND $hi
        GROUP BY ALL
        UNION ALL
        SELECT 'latency' AS slo, c.hour_start, c.day, c.niche, c.country, c.region,
               sum(CASE WHEN TRY_CAST(c.le AS DOUBLE) = t.le_s THEN c.increase ELSE 0 END) AS good,
               sum(CASE WHEN c.le IN ('+Inf', 'Inf', 'inf') THEN c.increase ELSE 0 END) AS total
        FROM {COUNTER_TABLE} c JOIN _thresholds t ON t.country = c.country
        WHERE c.metric = 'http_request_duration_seconds_bucket' AND c.day BETWEEN $lo AND $hi
        GROUP BY ALL
        {pay}
        """,  # noqa: S608
        {"lo": lo, "hi": hi, **({"success": success} if has_pay else {})},
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _slo_day AS SELECT slo, day, niche, country, region, sum(good) AS good, "
        "sum(total) AS total FROM _slo_hourly GROUP BY ALL"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _slos (slo VARCHAR, objective DOUBLE, period_days INTEGER)")
    con.executemany("INSERT INTO _slos VALUES (?, ?, ?)", [(s.id, s.objective, s.period_days) for s in catalog.slos])


def build_slo_daily(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """``marts.slo_daily``: per SLO and grain, good/total over the SLO period ending that day, the SLI,
    the error budget left and burn rates over the catalog's report windows (ending at the day's end, or
    at the newest data for a day in progress)."""
    catalog = load_catalog()
    _slo_inputs(con, days)
    cols, group = grouping(DIMS, keys=("d.day", "s.slo"), prefix="s.")
    windows = catalog.section("burn_rate_alerts")["report_windows"]
    burn_parts = []
    for w in windows:
        hours = window_hours(w)
        wcols, wgroup = grouping(DIMS, keys=("e.day", "s.slo"), prefix="s.")
        burn_parts.append(
            (
                w,
                f"""
            SELECT e.day, s.slo, {wcols}, sum(s.total) - sum(s.good) AS bad, sum(s.total) AS total
            FROM _day_ends e JOIN _slo_hourly s
              ON s.hour_start >= e.end_ts - INTERVAL {hours} HOUR AND s.hour_start < e.end_ts
            {wgroup}
        """,  # noqa: S608
            )
        )  # noqa: S608
    joins = "\n".join(
        f"LEFT JOIN ({sql}) b{i} ON b{i}.day = m.day AND b{i}.slo = m.slo AND b{i}.niche = m.niche "
        f"AND b{i}.country = m.country AND b{i}.region = m.region"
        for i, (_, sql) in enumerate(burn_parts)
    )
    burn_cols = ",\n".join(
        f"CASE WHEN b{i}.total > 0 THEN (b{i}.bad / b{i}.total) / (1 - o.objective) END AS burn_rate_{w}"
        for i, (w, _) in enumerate(burn_parts)
    )
    _days_table(con, days)
    sql = f"""
        WITH m AS (
            SELECT d.day, s.slo, {cols}, sum(s.good) AS good, sum(s.total) AS total
            FROM _days d JOIN (SELECT x.*, o.period_days FROM _slo_day x JOIN _slos o USING (slo)) s
              ON s.day BETWEEN d.day - (s.period_days - 1) AND d.day
            {group}
        )
        SELECT m.day, m.slo, m.niche, m.country, m.region, o.objective, o.period_days, m.good, m.total,
               CASE WHEN m.total > 0 THEN m.good / m.total END AS sli_ratio,
               CASE WHEN m.total > 0 THEN 1 - ((m.total - m.good) / (m.total * (1 - o.objective))) END
                   AS error_budget_remaining_ratio,
               {burn_cols}
        FROM m JOIN _slos o ON o.slo = m.slo
        {joins}
        ORDER BY ALL
    """  # noqa: S608
    return replace_days(con, "marts.slo_daily", sql, days)


# --------------------------------------------------------------------------------------------------
# money: cost and payments
# --------------------------------------------------------------------------------------------------


def build_cost_daily(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """``marts.cost_daily``: amortized (effective) USD per day, niche, service, charge category and provider.

    Tagged cost goes to its niche; cost tagged with a shared value or untagged is split across the
    niches with traffic that day in proportion to their HTTP requests (the catalog's live niches in
    equal shares when there was no traffic), in integer micro-dollars with the largest-remainder rule,
    so every day's parts sum exactly to the bill.
    """
    catalog = load_catalog()
    alloc = catalog.section("cost_allocation")
    shared_values = [v for v in alloc["shared_niche_values"] if v]
    ensure_cost_items_table(con)
    if table_exists(con, "marts.cost_daily"):  # a mart built before the provider column: add it (last)
        con.execute("ALTER TABLE marts.cost_daily ADD COLUMN IF NOT EXISTS provider VARCHAR")
    con.execute("CREATE OR REPLACE TEMP TABLE _live (day DATE, niche VARCHAR)")
    con.executemany(
        "INSERT INTO _live VALUES (?, ?)", [(d, n.id) for d in days for n in catalog.live_niches(catalog.phase_on(d))]
    )
    sql = f"""
        WITH items AS (
            SELECT day, CASE WHEN niche_tag IS NULL OR list_contains($shared, lower(niche_tag)) THEN NULL ELSE niche_tag END AS niche,
                   coalesce(service_tag, 'shared') AS service, charge_category, coalesce(provider, 'unknown') AS provider,
                   sum(cost_micros) AS micros
            FROM staging.cost_items_daily WHERE day IN (SELECT unnest($days::DATE[])) GROUP BY ALL
        ),
        traffic AS (
            SELECT day, niche, sum(increase) AS requests FROM {COUNTER_TABLE}
            WHERE metric = 'http_requests_total' AND day IN (SELECT unnest($days::DATE[])) AND niche IS NOT NULL
            GROUP BY ALL HAVING sum(increase) > 0
        ),
        weights AS (
            SELECT day, niche, round(requests)::HUGEINT AS w FROM traffic
            UNION ALL
            SELECT l.day, l.niche, 1::HUGEINT FROM _live l WHERE l.day NOT IN (SELECT day FROM traffic)
        ),
        shared AS (SELECT * FROM items WHERE niche IS NULL),
        parts AS (
            SELECT s.day, w.niche, s.service, s.charge_category, s.provider, s.micros, w.w,
                   sum(w.w) OVER (PARTITION BY s.day, s.service, s.charge_category, s.provider) AS wsum
            FROM shared s JOIN weights w ON w.day = s.day
        ),
        floored AS (
            SELECT *, (abs(micros)::HUGEINT * w) // wsum AS base, (abs(micros)::HUGEINT * w) % wsum AS rem
            FROM parts
        ),
        ranked AS (
            SELECT *, abs(micros) - sum(base) OVER (PARTITION BY day, service, charge_category, provider) AS leftover,
                   row_number() OVER (PARTITION BY day, service, charge_category, provider ORDER BY rem DESC, niche) AS rk
            FROM floored
        ),
        split AS (
            SELECT day, niche, service, charge_category, 'shared_split' AS allocation,
                   sign(micros) * (base + CASE WHEN rk <= leftover THEN 1 ELSE 0 END) AS micros, provider
            FROM ranked
        ),
        unsplit AS (  -- shared cost of a day with no niche at all to carry it: kept, never dropped
            SELECT day, 'unallocated' AS niche, service, charge_category, 'shared_split' AS allocation, micros, provider
            FROM shared WHERE day NOT IN (SELECT day FROM weights)
        ),
        allocated AS (
            SELECT day, niche, service, charge_category, 'tagged' AS allocation, micros, provider FROM items WHERE niche IS NOT NULL
            UNION ALL SELECT * FROM split
            UNION ALL SELECT * FROM unsplit
        )
        SELECT day, niche, service, charge_category, allocation,
               CAST(CAST(sum(micros) AS DECIMAL(18,0)) * CAST(0.000001 AS DECIMAL(18,6)) AS DECIMAL(18,6)) AS cost_usd,
               provider  -- last: a mart built before it gets the column appended
        FROM allocated GROUP BY ALL
        ORDER BY ALL
    """  # noqa: S608
    return replace_days(con, "marts.cost_daily", sql, days, {"shared": shared_values})


def build_payments_daily(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """``marts.payments_daily``: final-state payments by creation day and breakdown; amounts net of refunds.

    ARS payments are converted with the day's ARS rate per payment, in exact integer arithmetic (half away
    from zero to 1e-6 USD) before summing; USD payments (outside Argentina) are already USD and their
    ``amount_ars`` is the ARS equivalent at the same rate. No rate for the day, or another currency → the
    USD amount is NULL (no data), never guessed.
    """
    sql = f"""
        WITH p AS (
            SELECT f.day, f.niche, f.country, f.region, f.provider, f.payment_method, f.status, f.status_detail,
                   upper(coalesce(f.currency, 'ARS')) AS currency,
                   (coalesce(f.transaction_amount, 0) - coalesce(f.transaction_amount_refunded, 0))::DECIMAL(18,2) AS net,
                   fx.ars_per_usd
            FROM {both("payments_final")} f LEFT JOIN staging.fx_daily fx ON fx.day = f.day
            WHERE f.day IN (SELECT unnest($days::DATE[]))
        ),
        conv AS (
            SELECT *, CAST(net * 100 AS HUGEINT) AS cents, CAST(ars_per_usd * 1000000 AS HUGEINT) AS rate_micros FROM p
        ),
        usd AS (
            SELECT *,
                CASE
                    -- micro-USD = cents * 1e10 / rate_micros, rounded half away from zero, in integers
                    WHEN currency = 'ARS' AND rate_micros > 0 THEN
                        sign(cents) * ((abs(cents) * 20000000000 + rate_micros) // (2 * rate_micros))
                    WHEN currency = 'USD' THEN cents * 10000
                END AS usd_micros,
                CASE
                    WHEN currency = 'ARS' THEN net
                    -- ARS equivalent of a USD payment: cents * rate_micros / 1e6, half away from zero
                    WHEN currency = 'USD' AND rate_micros > 0 THEN
                        CAST(CAST(sign(cents) * ((abs(cents) * rate_micros * 2 + 1000000) // 2000000) AS DECIMAL(18,0))
                             * CAST(0.01 AS DECIMAL(18,2)) AS DECIMAL(18,2))
                END AS ars
            FROM conv
        )
        SELECT day, niche, country, region, provider, payment_method, status, status_detail, count(*) AS payments,
               CASE WHEN count(ars) = count(*) THEN sum(ars)::DECIMAL(18,2) END AS amount_ars,
               CASE WHEN count(usd_micros) = count(*) THEN
                   CAST(CAST(sum(usd_micros) AS DECIMAL(18,0)) * CAST(0.000001 AS DECIMAL(18,6)) AS DECIMAL(18,6)) END AS amount_usd
        FROM usd GROUP BY ALL ORDER BY ALL
    """  # noqa: S608
    return replace_days(con, "marts.payments_daily", sql, days)


def build_all_marts(con: duckdb.DuckDBPyConnection, days: Iterable[date]) -> dict[str, int]:
    """Build every mart for ``days`` (kpi_daily last: it reads the others). Returns rows per table."""
    from pipelines.lib.kpis.kpi_daily import build_kpi_daily  # kpi_daily imports this module

    day_list = sorted(set(days))
    _days_table(con, day_list)
    counts = {
        "latency_daily": build_latency_daily(con, day_list),
        "ops_hourly": build_ops_hourly(con, day_list),
        "cache_daily": build_cache_daily(con, day_list),
        "incidents": build_incidents(con, day_list),
        "slo_daily": build_slo_daily(con, day_list),
        "cost_daily": build_cost_daily(con, day_list),
        "payments_daily": build_payments_daily(con, day_list),
    }
    counts["kpi_daily"] = build_kpi_daily(con, day_list)
    return counts


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = ["build_all_marts", "day_bounds_utc", "grains_for", "scaling_times"]
