"""``marts.kpi_daily``: every catalog KPI, per day and grain, with its target and status.

Each KPI's value query returns ``day, niche, country, region, value`` at the grains its catalog ``dims``
allow. A scaffold guarantees every KPI id on every day at the total grain (NULL + ``no_data`` when
there is no data). Targets come from ``Catalog.target`` and statuses from ``Catalog.status`` so the
pipeline, the exporter and the app judge a value the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

import duckdb
import polars as pl

from pipelines.lib.catalog import ALL, load_catalog
from pipelines.lib.ingest.metrics import COUNTER_TABLE, GAUGE_TABLE
from pipelines.lib.kpis.marts import DIMS, _frame, _scaling_daily, grouping
from pipelines.lib.kpis.quantiles import quantile_sql
from pipelines.lib.kpis.staging import both
from pipelines.lib.warehouse import replace_days

_DAYS = "day IN (SELECT unnest($days::DATE[]))"
_DAYS_D = "d.day IN (SELECT unnest($days::DATE[]))"


def _dims(kpi_id: str) -> tuple[str, ...]:
    return load_catalog().kpi(kpi_id).dims


def _g(kpi_id: str, keys: Sequence[str] = ("day",), prefix: str = "") -> tuple[str, str]:
    return grouping(_dims(kpi_id), keys, prefix)


def kpi_queries() -> dict[str, str]:
    """SQL per KPI id → ``day, niche, country, region, value`` (DOUBLE; NULL when undefined).

    Expects temp tables ``_days(day)`` and the staging/marts tables of the days.
    """
    catalog = load_catalog()
    pool = float(catalog.section("capacity")["db_pool_size"])
    revenue_statuses = catalog.section("payments")["revenue_statuses"]
    rev_list = "[" + ", ".join(f"'{s}'" for s in revenue_statuses) + "]"
    q: dict[str, str] = {}

    # --- latency percentiles from the day's summed buckets -----------------------------------------
    lat_cols, lat_group = _g("latency_p95_ms", keys=("day", "le"))
    pct = quantile_sql(
        "_lat_grains", ["day", "niche", "country", "region"], {"p50": 0.5, "p95": 0.95, "p99": 0.99}, 1000.0
    )
    # (a temp table: the quantile SQL has its own WITH clause)
    q["_lat_grains"] = f"""
        SELECT day, le, {lat_cols}, sum(requests) AS requests FROM marts.latency_daily WHERE {_DAYS} {lat_group}
    """  # noqa: S608
    q["_lat_pct"] = pct
    for name in ("p50", "p95", "p99"):
        q[f"latency_{name}_ms"] = f"SELECT day, niche, country, region, {name} AS value FROM _lat_pct"  # noqa: S608

    # --- SLO-based --------------------------------------------------------------------------------
    q["availability_ratio"] = (
        "SELECT day, niche, country, region, sli_ratio AS value FROM marts.slo_daily "  # noqa: S608
        f"WHERE slo = 'availability' AND {_DAYS}"
    )
    q["error_budget_remaining_ratio"] = (
        "SELECT day, niche, country, region, error_budget_remaining_ratio AS value "  # noqa: S608
        f"FROM marts.slo_daily WHERE slo = 'availability' AND {_DAYS}"
    )

    # --- incidents and recovery: rows for every (niche, region) probed that day --------------------
    c, g = _g("incidents", keys=("p.day",), prefix="p.")
    q["incidents"] = f"""
        WITH p AS (SELECT DISTINCT day, niche, country, region FROM {GAUGE_TABLE}
                   WHERE metric = 'probe_success' AND {_DAYS}),
        i AS (SELECT day, niche, country, region, count(*) AS n FROM marts.incidents WHERE {_DAYS} GROUP BY ALL)
        SELECT p.day, {c}, coalesce(sum(i.n), 0)::DOUBLE AS value
        FROM p LEFT JOIN i ON i.day = p.day AND i.niche IS NOT DISTINCT FROM p.niche
            AND i.country IS NOT DISTINCT FROM p.country AND i.region IS NOT DISTINCT FROM p.region
        {g}
    """  # noqa: S608
    c, g = _g("mttr_minutes")
    q["mttr_minutes"] = f"SELECT day, {c}, max(recovery_minutes) AS value FROM marts.incidents WHERE {_DAYS} {g}"  # noqa: S608

    # --- capacity ---------------------------------------------------------------------------------
    q["scaling_time_minutes"] = "SELECT day, 'all' AS niche, 'all' AS country, 'all' AS region, value FROM _scaling"
    c, g = _g("peak_concurrent_users", keys=("day", "ts"))
    q["peak_concurrent_users"] = f"""
        SELECT day, niche, country, region, max(v) AS value FROM (
            SELECT day, ts, {c}, sum(value) AS v FROM {GAUGE_TABLE} WHERE metric = 'active_sessions' AND {_DAYS} {g}
        ) GROUP BY ALL
    """  # noqa: S608
    c, g = _g("cache_hit_ratio")
    q["cache_hit_ratio"] = f"""
        SELECT day, {c},
            CASE WHEN sum(CASE WHEN metric = 'cache_requests_total' THEN increase END) > 0 THEN
                sum(CASE WHEN metric = 'cache_hits_total' THEN increase ELSE 0 END)
                / sum(CASE WHEN metric = 'cache_requests_total' THEN increase END) END AS value
        FROM {COUNTER_TABLE} WHERE metric IN ('cache_hits_total', 'cache_requests_total') AND {_DAYS} {g}
    """  # noqa: S608
    q["db_pool_utilization_ratio"] = f"""
        SELECT day, 'all' AS niche, 'all' AS country, 'all' AS region, max(value) / {pool!r} AS value
        FROM {GAUGE_TABLE} WHERE metric = 'db_connections_in_use' AND {_DAYS} GROUP BY day
    """  # noqa: S608

    # --- money (DECIMAL until the final value) ------------------------------------------------------
    c, g = _g("infra_cost_usd")
    q["infra_cost_usd"] = f"SELECT day, {c}, sum(cost_usd)::DOUBLE AS value FROM marts.cost_daily WHERE {_DAYS} {g}"  # noqa: S608
    c, g = _g("revenue_usd")
    q["revenue_usd"] = f"""
        SELECT day, {c},
            CASE WHEN count(*) FILTER (WHERE amount_usd IS NULL) = 0 THEN sum(amount_usd)::DOUBLE END AS value
        FROM marts.payments_daily WHERE list_contains({rev_list}, status) AND {_DAYS} {g}
    """  # noqa: S608
    # cost, revenue and 30-day sums per niche and total, as exact decimals
    c, g = _g("infra_cost_usd", keys=("d.day",))
    q["_cost30"] = f"""
        SELECT d.day, {c}, sum(cost_usd) AS cost FROM _days d
        JOIN marts_cost_hist m ON m.day BETWEEN d.day - 29 AND d.day {g}
    """  # noqa: S608
    q["_rev30"] = f"""
        SELECT d.day, {c}, sum(amount_usd) AS revenue, count(*) FILTER (WHERE amount_usd IS NULL) AS missing FROM _days d
        JOIN marts_rev_hist m ON m.day BETWEEN d.day - 29 AND d.day {g}
    """  # noqa: S608
    # Distinct users over 30 days without joining every day to 30 days of users: each user's active days
    # become disjoint "counted" intervals [a, min(a + 29, next active day - 1)], and a running sum of
    # interval starts and ends gives, for every day, how many users had an event in the 30 days up to it.
    q["_users30"] = f"""
        WITH u AS (
            SELECT DISTINCT user_key, niche, day FROM {both("user_days")}
            WHERE day BETWEEN (SELECT min(day) FROM _days) - 29 AND (SELECT max(day) FROM _days)
        ),
        t AS (SELECT DISTINCT user_key, 'all' AS niche, day FROM u),
        iv AS (
            SELECT niche, day AS s, least(day + 29, coalesce(lead(day) OVER w - 1, day + 29)) AS e
            FROM (SELECT * FROM u UNION ALL SELECT * FROM t) x
            WINDOW w AS (PARTITION BY user_key, niche ORDER BY day)
        ),
        deltas AS (
            SELECT niche, d, sum(delta) AS delta FROM (
                SELECT niche, s AS d, 1 AS delta FROM iv UNION ALL SELECT niche, e + 1 AS d, -1 AS delta FROM iv
            ) GROUP BY ALL
        ),
        running AS (SELECT niche, d, sum(delta) OVER (PARTITION BY niche ORDER BY d) AS users FROM deltas),
        grains AS (SELECT DISTINCT niche FROM running)
        SELECT x.day, g.niche, 'all' AS country, 'all' AS region, coalesce(r.users, 0) AS users
        FROM _days x CROSS JOIN grains g
        ASOF LEFT JOIN running r ON r.niche = g.niche AND r.d <= x.day
    """  # noqa: S608
    c, g = _g("infra_cost_usd")
    q["_cost1"] = f"SELECT day, {c}, sum(cost_usd) AS cost FROM marts.cost_daily WHERE {_DAYS} {g}"  # noqa: S608
    q["_rev1"] = f"""SELECT day, {c}, sum(amount_usd) AS revenue, count(*) FILTER (WHERE amount_usd IS NULL) AS missing
        FROM marts.payments_daily WHERE list_contains({rev_list}, status) AND {_DAYS} {g}"""  # noqa: S608
    q["cost_per_active_user_usd"] = """
        SELECT c.day, c.niche, c.country, c.region,
               CASE WHEN u.users > 0 THEN (c.cost / u.users)::DOUBLE END AS value
        FROM _cost30 c LEFT JOIN _users30 u USING (day, niche, country, region)
    """
    q["revenue_per_infra_usd"] = """
        SELECT c.day, c.niche, c.country, c.region,
               CASE WHEN c.cost > 0 AND coalesce(r.missing, 0) = 0 THEN (coalesce(r.revenue, 0) / c.cost)::DOUBLE END AS value
        FROM _cost1 c LEFT JOIN _rev1 r USING (day, niche, country, region)
    """
    q["infra_margin_ratio"] = """
        SELECT r.day, r.niche, r.country, r.region,
               CASE WHEN r.revenue > 0 AND r.missing = 0 THEN (1 - coalesce(c.cost, 0) / r.revenue)::DOUBLE END AS value
        FROM _rev1 r LEFT JOIN _cost1 c USING (day, niche, country, region)
    """
    q["arr_usd"] = """
        SELECT day, niche, country, region,
               CASE WHEN missing = 0 THEN (revenue * 365 / 30)::DOUBLE END AS value FROM _rev30
    """

    # --- payments, users, bookings, onboarding --------------------------------------------------------
    success = catalog.section("payments")["success_statuses"]
    final = catalog.section("payments")["final_statuses"]
    s_list = "[" + ", ".join(f"'{s}'" for s in success) + "]"
    f_list = "[" + ", ".join(f"'{s}'" for s in final) + "]"
    c, g = _g("mercadopago_success_ratio")
    q["mercadopago_success_ratio"] = f"""
        SELECT day, {c},
            CASE WHEN sum(payments) FILTER (WHERE list_contains({f_list}, status)) > 0 THEN
                (coalesce(sum(payments) FILTER (WHERE list_contains({s_list}, status)), 0)
                 / sum(payments) FILTER (WHERE list_contains({f_list}, status)))::DOUBLE END AS value
        FROM marts.payments_daily WHERE provider = 'mercadopago' AND {_DAYS} {g}
    """  # noqa: S608
    c, g = _g("active_users")
    q["active_users"] = (
        f"SELECT day, {c}, count(DISTINCT user_key)::DOUBLE AS value FROM {both('user_days')} WHERE {_DAYS} {g}"  # noqa: S608
    )
    c, g = _g("bookings")
    q["bookings"] = (
        f"SELECT day, {c}, count(DISTINCT booking_id)::DOUBLE AS value FROM {both('bookings_created')} WHERE {_DAYS} {g}"  # noqa: S608
    )
    c, g = _g("psychologists_onboarded", keys=("d.day",), prefix="o.")
    q["psychologists_onboarded"] = f"""
        SELECT d.day, {c}, count(DISTINCT o.professional_id)::DOUBLE AS value
        FROM _days d JOIN {both("onboarded")} o ON o.day <= d.day AND o.niche = 'psychology' {g}
    """  # noqa: S608
    return q


def build_kpi_daily(con: duckdb.DuckDBPyConnection, days: Sequence[date]) -> int:
    """Compute every KPI for ``days`` into ``marts.kpi_daily`` (replacing those days)."""
    catalog = load_catalog()
    day_list = sorted(set(days))
    params = {"days": day_list}
    lo = min(day_list)
    con.execute("CREATE OR REPLACE TEMP TABLE _days AS SELECT unnest($days::DATE[]) AS day", params)
    # History the 30-day windows need, read from the marts already built for earlier days.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE marts_cost_hist AS SELECT * FROM marts.cost_daily "
        "WHERE day BETWEEN $lo - INTERVAL 29 DAY AND $hi",
        {"lo": lo, "hi": max(day_list)},
    )
    revenue_statuses = list(catalog.section("payments")["revenue_statuses"])
    con.execute(
        "CREATE OR REPLACE TEMP TABLE marts_rev_hist AS SELECT * FROM marts.payments_daily "
        "WHERE day BETWEEN $lo - INTERVAL 29 DAY AND $hi AND list_contains($st, status)",
        {"lo": lo, "hi": max(day_list), "st": revenue_statuses},
    )
    scaling = _scaling_daily(con, day_list).filter(pl.col("day").is_in(day_list))
    con.register("_scaling", scaling.to_arrow())
    queries = kpi_queries()
    helpers = {k: v for k, v in queries.items() if k.startswith("_")}
    for name, sql in helpers.items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}", params if "$days" in sql else {})
    parts = []
    for kpi in catalog.kpis:
        sql = queries[kpi.id]
        frame = _frame(
            con,
            f"SELECT day, niche, country, region, value::DOUBLE AS value FROM ({sql}) t",  # noqa: S608
            params if "$days" in sql else {},
        )
        parts.append(frame.with_columns(pl.lit(kpi.id).alias("kpi")))
    con.unregister("_scaling")
    values = pl.concat(parts).filter(pl.col("day").is_in(day_list))
    scaffold = (
        pl.DataFrame({"day": day_list})
        .join(pl.DataFrame({"kpi": list(catalog.kpi_ids)}), how="cross")
        .with_columns(niche=pl.lit(ALL), country=pl.lit(ALL), region=pl.lit(ALL))
    )
    values = scaffold.join(values, on=["day", "kpi", *DIMS], how="full", coalesce=True)
    frame = _judge(values)
    con.register("_kpi_frame", frame.to_arrow())
    try:
        n = replace_days(
            con,
            "marts.kpi_daily",
            "SELECT day::DATE AS day, kpi, niche, country, region, value, unit, target, status FROM _kpi_frame "
            "ORDER BY day, kpi, niche, country, region",
            day_list,
        )
    finally:
        con.unregister("_kpi_frame")
        for name in (*helpers, "marts_cost_hist", "marts_rev_hist"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return n


def _judge(values: pl.DataFrame) -> pl.DataFrame:
    """Add unit, target (``Catalog.target``) and status (``Catalog.status``); non-finite → NULL."""
    catalog = load_catalog()
    units = {k.id: k.unit for k in catalog.kpis}
    target_cache: dict[tuple[str, date, str, str], float | None] = {}
    rows = values.select(["day", "kpi", "niche", "country", "region", "value"]).rows()
    out_value, out_target, out_status, out_unit = [], [], [], []
    for day, kpi, niche, country, _region, value in rows:
        if value is not None and not math.isfinite(value):
            value = None
        key = (kpi, day, niche, country)
        if key not in target_cache:
            target_cache[key] = catalog.target(kpi, day, niche=niche, country=country)
        target = target_cache[key]
        out_value.append(value)
        out_target.append(target)
        out_status.append(catalog.status(kpi, value, target))
        out_unit.append(units[kpi])
    return values.select(["day", "kpi", "niche", "country", "region"]).with_columns(
        pl.Series("value", out_value, pl.Float64),
        pl.Series("unit", out_unit, pl.String),
        pl.Series("target", out_target, pl.Float64),
        pl.Series("status", out_status, pl.String),
    )
