"""Read-only queries of the executive view over one published snapshot (a DuckDB connection).

Plain functions, no Streamlit: each takes the connection of one :class:`PublishedReader` snapshot, so
a page's numbers all come from the same published state. Principles kept here:

* merge, never average: period percentiles come from summed histogram buckets (``latency_daily``),
  the period's MercadoPago success from summed payment counts, ratios from sums;
* money is exact: USD amounts become ARS with *that day's* rate (``fx_daily``), in ``Decimal``;
* a missing value stays ``None`` (never NaN/Inf) and the page says "no data".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from app.formatting import is_missing, to_decimal
from pipelines.lib.catalog import ALL, Catalog, Kpi

MONEY_UNITS = ("usd",)
FX_TABLE = "fx_daily"  # day DATE, ars_per_usd DECIMAL(18,6): see the report / docs (requested contract)

# How a KPI's daily values make one value for a period. Merged where the published data allows it;
# rolling or cumulative KPIs (availability over 30 days, ARR, onboarded count) take the latest value.
# The cache hit ratio of a period is summed hits / summed requests (``cache_daily``), never a mean of
# daily ratios nor the last day's.
PERIOD_RULES: dict[str, str] = {
    "latency_p50_ms": "buckets:0.50",
    "latency_p95_ms": "buckets:0.95",
    "latency_p99_ms": "buckets:0.99",
    "availability_ratio": "last",
    "error_budget_remaining_ratio": "last",
    "incidents": "sum",
    "mttr_minutes": "max",
    "scaling_time_minutes": "max",
    "peak_concurrent_users": "max",
    "cache_hit_ratio": "cache",
    "db_pool_utilization_ratio": "max",
    "infra_cost_usd": "sum",
    "revenue_usd": "sum",
    "cost_per_active_user_usd": "last",
    "revenue_per_infra_usd": "revenue_per_cost",
    "infra_margin_ratio": "margin",
    "mercadopago_success_ratio": "payments",
    "active_users": "last",
    "bookings": "sum",
    "arr_usd": "last",
    "psychologists_onboarded": "last",
}


def period_rule(kpi_id: str) -> str:
    """The aggregation rule of a KPI over a period (a KPI added to the catalog later defaults to last)."""
    return PERIOD_RULES.get(kpi_id, "last")


@dataclass(frozen=True)
class Scope:
    """The slice being looked at: a date range and the niche / country / region filters (``all``)."""

    start: date
    end: date
    niche: str = ALL
    country: str = ALL
    region: str = ALL
    currency: str = "USD"

    def previous(self) -> Scope:
        """The period of the same length right before this one."""
        length = (self.end - self.start).days + 1
        return Scope(
            self.start - timedelta(days=length),
            self.start - timedelta(days=1),
            self.niche,
            self.country,
            self.region,
            self.currency,
        )

    def with_(self, **changes: Any) -> Scope:
        values = {**self.__dict__, **changes}
        return Scope(**values)


@dataclass(frozen=True)
class DailyPoint:
    day: date
    value: float | Decimal | None
    target: float | Decimal | None
    status: str


@dataclass(frozen=True)
class PeriodValue:
    kpi: str
    value: float | Decimal | None
    rule: str
    split: bool  # False when the KPI is not published at the requested grain and the total is shown


# ------------------------------------------------------------------------------------------------
# Tables and FX
# ------------------------------------------------------------------------------------------------


def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the snapshot has this published table."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [table]
    ).fetchone()
    return bool(row and row[0])


def fx_rates(con: duckdb.DuckDBPyConnection, start: date, end: date) -> dict[date, Decimal]:
    """ARS per USD for every day of [start, end]; a day without a quote takes the last earlier quote.

    Empty when ``fx_daily`` is not published. Days before the first quote are absent (no rate known).
    """
    if not has_table(con, FX_TABLE):
        return {}
    rows = con.execute(
        "SELECT day, CAST(ars_per_usd AS DECIMAL(18,6)) FROM fx_daily "
        "WHERE day <= ? AND ars_per_usd IS NOT NULL AND ars_per_usd > 0 ORDER BY day",
        [end],
    ).fetchall()
    quotes = dict(rows)
    rates: dict[date, Decimal] = {}
    last: Decimal | None = None
    earlier = [d for d in quotes if d < start]
    if earlier:
        last = quotes[max(earlier)]
    day = start
    while day <= end:
        last = quotes.get(day, last)
        if last is not None:
            rates[day] = last
        day += timedelta(days=1)
    return rates


def in_currency(
    value: float | Decimal | None, unit: str, day: date, currency: str, rates: dict[date, Decimal]
) -> float | Decimal | None:
    """A KPI value in the display currency: USD money as exact Decimal, times the day's rate for ARS."""
    if is_missing(value):
        return None
    if unit not in MONEY_UNITS:
        return value
    amount = to_decimal(value)  # type: ignore[arg-type]
    if currency == "USD":
        return amount
    rate = rates.get(day)
    return None if rate is None else amount * rate


# ------------------------------------------------------------------------------------------------
# kpi_daily
# ------------------------------------------------------------------------------------------------


def grain(kpi: Kpi, scope: Scope) -> tuple[str, str, str, bool]:
    """(niche, country, region, split) of the published row for a KPI under the scope's filters.

    A filter on a dimension the KPI is not published by (``dims`` in the catalog) falls back to the
    total, and ``split`` says so, so the page can label it rather than show nothing.
    """
    niche = scope.niche if "niche" in kpi.dims else ALL
    country = scope.country if "country" in kpi.dims else ALL
    region = scope.region if "region" in kpi.dims else ALL
    if region != ALL and country == ALL:
        region = ALL  # there is no region-without-country grain
    split = (niche, country, region) == (scope.niche, scope.country, scope.region)
    return niche, country, region, split


def kpi_series(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, kpi_ids: Sequence[str], scope: Scope, rates: dict[date, Decimal]
) -> dict[str, list[DailyPoint]]:
    """Daily points of each KPI in [start, end] at the scope's grain, money in the display currency."""
    by_grain: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for kpi_id in kpi_ids:
        n, c, r, _ = grain(catalog.kpi(kpi_id), scope)
        by_grain[(n, c, r)].append(kpi_id)
    series: dict[str, list[DailyPoint]] = {k: [] for k in kpi_ids}
    if not has_table(con, "kpi_daily"):
        return series
    for (n, c, r), ids in by_grain.items():
        rows = con.execute(
            "SELECT kpi, day, value, target, status FROM kpi_daily WHERE day BETWEEN ? AND ? "
            "AND niche = ? AND country = ? AND region = ? AND list_contains(?, kpi) ORDER BY kpi, day",
            [scope.start, scope.end, n, c, r, ids],
        ).fetchall()
        for kpi_id, day, value, target, status in rows:
            unit = catalog.kpi(kpi_id).unit
            series[kpi_id].append(
                DailyPoint(
                    day,
                    in_currency(value, unit, day, scope.currency, rates),
                    in_currency(target, unit, day, scope.currency, rates),
                    status if not is_missing(value) else "no_data",
                )
            )
    return series


def kpi_on_day(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, kpi_id: str, scope: Scope, rates: dict[date, Decimal]
) -> DailyPoint:
    """The published row of one KPI on ``scope.end`` (``no_data`` when absent)."""
    points = kpi_series(con, catalog, [kpi_id], scope.with_(start=scope.end), rates)[kpi_id]
    return points[0] if points else DailyPoint(scope.end, None, None, "no_data")


# ------------------------------------------------------------------------------------------------
# Merged latency and payments
# ------------------------------------------------------------------------------------------------


def _finest(alias: str = "") -> str:
    """Rows at the finest grain only, so a table that also carries 'all' totals is never double counted."""
    p = f"{alias}." if alias else ""
    return f"{p}niche <> 'all' AND {p}country <> 'all' AND {p}region <> 'all'"


# The only columns a caller may group by. SQL text is built from these fixed names; every filter value
# (dates, niche, country, region, statuses) is a bound parameter, never text in the query.
GROUP_COLUMNS = {
    "cost_daily": ("niche", "service", "allocation", "charge_category"),
    "payments_daily": ("day", "niche", "country", "region", "payment_method", "status", "status_detail"),
}


def _group_column(table: str, column: str) -> str:
    """``column`` if it is one of the fixed grouping columns of ``table``; ``ValueError`` otherwise."""
    if column not in GROUP_COLUMNS[table]:
        raise ValueError(f"cannot group {table} by {column!r}: one of {', '.join(GROUP_COLUMNS[table])}")
    return column


class ScopeError(ValueError):
    """A filter value that is not one the catalog knows (the page falls back to its defaults)."""


def checked_scope(scope: Scope, catalog: Catalog) -> Scope:
    """``scope`` if every filter is a value the catalog knows (or ``all``), the dates are dates in order
    and the currency is USD or ARS; :class:`ScopeError` otherwise. The app builds its scope only from
    catalog-known choices; this is the check at the query boundary."""
    known = {
        "niche": set(catalog.niche_ids),
        "country": {c.id for c in catalog.countries},
        "region": {r.id for r in catalog.regions},
    }
    for column, allowed in known.items():
        value = getattr(scope, column)
        if not isinstance(value, str) or (value != ALL and value not in allowed):
            raise ScopeError(f"unknown {column} filter")  # the value itself is not echoed back
    if not (isinstance(scope.start, date) and isinstance(scope.end, date) and scope.start <= scope.end):
        raise ScopeError("the period must be two dates in order")
    if scope.currency not in ("USD", "ARS"):
        raise ScopeError("unknown currency")
    return scope


def _scope_where(scope: Scope) -> tuple[str, list[Any]]:
    sql = "day BETWEEN ? AND ?"
    params: list[Any] = [scope.start, scope.end]
    for column in ("niche", "country", "region"):
        value = getattr(scope, column)
        if value != ALL:
            sql += f" AND {column} = ?"
            params.append(value)
    return sql, params


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative buckets ``(upper_bound, count)``.

    Linear interpolation inside the bucket holding rank ``q * total``; the first bucket starts at 0;
    a rank in the ``+Inf`` bucket returns the highest finite bound. None with no observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_buckets(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[tuple[float, float]]:
    """Cumulative request counts per bucket bound (seconds), summed over the scope."""
    if not has_table(con, "latency_daily"):
        return []
    where, params = _scope_where(scope)
    rows = con.execute(
        f"SELECT le, sum(requests) FROM latency_daily WHERE {where} AND {_finest()} AND service <> 'all' "  # noqa: S608
        "GROUP BY le",
        params,
    ).fetchall()
    return [(float(le), float(n)) for le, n in rows if n is not None]


def latency_quantile_ms(con: duckdb.DuckDBPyConnection, q: float, scope: Scope) -> float | None:
    """The q-quantile of request duration in ms over the scope, from merged buckets."""
    seconds = histogram_quantile(q, latency_buckets(con, scope))
    return None if seconds is None else seconds * 1000


def share_within(buckets: Sequence[tuple[float, float]], threshold_s: float) -> float | None:
    """Share of requests at or under a bucket bound (the SLA threshold is a bound by catalog rule)."""
    if not buckets:
        return None
    total = max(count for _, count in buckets)
    within = [count for bound, count in buckets if math.isclose(bound, threshold_s)]
    if total <= 0 or not within:
        return None
    return within[0] / total


@dataclass(frozen=True)
class PaymentCounts:
    final: int
    successful: int

    @property
    def success_ratio(self) -> float | None:
        return self.successful / self.final if self.final else None


def mercadopago_counts(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, scope: Scope, by: str | None = None
) -> dict[Any, PaymentCounts]:
    """MercadoPago payments with a final status and those successful, summed (optionally per ``by``)."""
    if not has_table(con, "payments_daily"):
        return {}
    payments = catalog.section("payments")
    where, params = _scope_where(scope)
    key = _group_column("payments_daily", by) if by else "'all'"
    rows = con.execute(
        f"SELECT {key} AS k, "  # noqa: S608 - `key` is an allow-listed column name; values are bound
        "sum(payments) FILTER (WHERE list_contains(?, status)), "
        "sum(payments) FILTER (WHERE list_contains(?, status)) "
        f"FROM payments_daily WHERE {where} AND {_finest()} AND provider = 'mercadopago' GROUP BY k ORDER BY k",
        [payments["final_statuses"], payments["success_statuses"], *params],
    ).fetchall()
    return {k: PaymentCounts(int(f or 0), int(s or 0)) for k, f, s in rows}


@dataclass(frozen=True)
class CacheCounts:
    hits: float
    requests: float

    @property
    def hit_ratio(self) -> float | None:
        return self.hits / self.requests if self.requests > 0 else None


def cache_counts(con: duckdb.DuckDBPyConnection, scope: Scope) -> CacheCounts | None:
    """Cache hits and requests summed over the scope (``cache_daily``); None when not published or
    when the scope has no cache traffic."""
    if not has_table(con, "cache_daily"):
        return None
    where, params = _scope_where(scope)
    row = con.execute(
        f"SELECT sum(hits), sum(requests) FROM cache_daily WHERE {where} AND {_finest()}",  # noqa: S608 - fixed text, values bound
        params,
    ).fetchall()[0]
    if row[1] is None:
        return None
    return CacheCounts(float(row[0] or 0), float(row[1]))


# ------------------------------------------------------------------------------------------------
# A KPI over a period
# ------------------------------------------------------------------------------------------------


def _combine(values: list[float | Decimal], how: str) -> float | Decimal | None:
    if not values:
        return None
    if how == "sum":
        if any(isinstance(v, Decimal) for v in values):
            return sum((to_decimal(v) for v in values), Decimal(0))
        return sum(values)  # type: ignore[arg-type]
    if how == "max":
        return max(values)  # type: ignore[type-var]
    return values[-1]


def period_value(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    kpi_id: str,
    scope: Scope,
    rates: dict[date, Decimal],
    series: dict[str, list[DailyPoint]] | None = None,
) -> PeriodValue:
    """One value of a KPI for the scope's period, by the KPI's :func:`period_rule`."""
    kpi = catalog.kpi(kpi_id)
    rule = period_rule(kpi_id)
    _, _, _, split = grain(kpi, scope)

    def daily(kid: str) -> list[float | Decimal]:
        # ``series`` (when given) holds the scope's daily points already: no second query.
        points = (
            series[kid] if series is not None and kid in series else kpi_series(con, catalog, [kid], scope, rates)[kid]
        )
        return [p.value for p in points if not is_missing(p.value) and scope.start <= p.day <= scope.end]  # type: ignore[misc]

    value: float | Decimal | None
    if rule.startswith("buckets:"):
        value = latency_quantile_ms(con, float(rule.split(":")[1]), scope)
        split = True
    elif rule == "payments":
        counts = mercadopago_counts(con, catalog, scope).get("all")
        value = counts.success_ratio if counts else None
        split = True
    elif rule == "cache":
        counts = cache_counts(con, scope)
        value = counts.hit_ratio if counts else None
        split = True
    elif rule in ("revenue_per_cost", "margin"):
        # Both sums in USD whatever the display currency: the ratio is currency-free.
        # Cost and revenue at the ratio's own grain (its catalog dims), so numerator and denominator
        # cover the same slice.
        n, c, r, split = grain(kpi, scope)
        usd = scope.with_(currency="USD", niche=n, country=c, region=r)
        cost = _combine(daily_usd(con, catalog, "infra_cost_usd", usd), "sum")
        revenue = _combine(daily_usd(con, catalog, "revenue_usd", usd), "sum")
        value = None
        if rule == "revenue_per_cost" and cost not in (None, 0) and revenue is not None:
            value = to_decimal(revenue) / to_decimal(cost)  # type: ignore[arg-type]
        if rule == "margin" and revenue not in (None, 0) and cost is not None:
            value = 1 - to_decimal(cost) / to_decimal(revenue)  # type: ignore[arg-type]
    else:
        value = _combine(daily(kpi_id), rule)
    return PeriodValue(kpi_id, value, rule, split)


def daily_usd(con: duckdb.DuckDBPyConnection, catalog: Catalog, kpi_id: str, scope: Scope) -> list[float | Decimal]:
    """Daily values of a money KPI in USD over the scope (exact Decimals)."""
    points = kpi_series(con, catalog, [kpi_id], scope.with_(currency="USD"), {})[kpi_id]
    return [p.value for p in points if not is_missing(p.value)]  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# Other published tables
# ------------------------------------------------------------------------------------------------


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Query result as a list of dicts (column name -> value)."""
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def availability_by_niche_country(con: duckdb.DuckDBPyConnection, day: date, scope: Scope) -> list[dict[str, Any]]:
    """Availability and error budget left (rolling 30 days) per niche x country on ``day``."""
    if not has_table(con, "kpi_daily"):
        return []
    where = "day = ? AND region = 'all' AND niche <> 'all' AND country <> 'all'"
    params: list[Any] = [day]
    for column in ("niche", "country"):
        if getattr(scope, column) != ALL:
            where += f" AND {column} = ?"
            params.append(getattr(scope, column))
    return rows(
        con,
        f"""
        SELECT niche, country,
               any_value(value) FILTER (WHERE kpi = 'availability_ratio') AS availability,
               any_value(status) FILTER (WHERE kpi = 'availability_ratio') AS availability_status,
               any_value(value) FILTER (WHERE kpi = 'error_budget_remaining_ratio') AS error_budget,
               any_value(status) FILTER (WHERE kpi = 'error_budget_remaining_ratio') AS error_budget_status
        FROM kpi_daily WHERE {where}
          AND kpi IN ('availability_ratio', 'error_budget_remaining_ratio')
        GROUP BY niche, country ORDER BY niche, country""",  # noqa: S608
        params,
    )  # noqa: S608


def incidents(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[dict[str, Any]]:
    """Incidents that started in the period (newest first), with recovery minutes (None while open)."""
    if not has_table(con, "incidents"):
        return []
    where, params = _scope_where(scope)
    return rows(
        con,
        f"SELECT incident_id, niche, country, region, started_at, ended_at, recovery_minutes "  # noqa: S608
        f"FROM incidents WHERE {where} ORDER BY started_at DESC, incident_id",
        params,
    )


def cost_by(
    con: duckdb.DuckDBPyConnection, scope: Scope, column: str, rates: dict[date, Decimal], allocation: str | None = None
) -> dict[str, Decimal | None]:
    """Exact cost per ``column`` value over the period, in the display currency (day-by-day rates);
    only lines of one ``allocation`` (``tagged`` / ``shared_split``) when given."""
    if not has_table(con, "cost_daily"):
        return {}
    column = _group_column("cost_daily", column)
    where = "day BETWEEN ? AND ?"
    params: list[Any] = [scope.start, scope.end]
    if scope.niche != ALL:
        where += " AND niche = ?"
        params.append(scope.niche)
    if allocation is not None:
        where += " AND allocation = ?"
        params.append(allocation)
    daily = con.execute(
        f"SELECT {column}, day, sum(cost_usd) FROM cost_daily WHERE {where} "  # noqa: S608 - allow-listed column
        f"GROUP BY {column}, day ORDER BY {column}, day",
        params,
    ).fetchall()
    totals: dict[str, Decimal | None] = {}
    for key, day, amount in daily:
        converted = in_currency(amount, "usd", day, scope.currency, rates)
        if key not in totals:
            totals[key] = Decimal(0)
        if converted is None or totals[key] is None:
            totals[key] = None  # a day without a rate: the total is unknown, not understated
        else:
            totals[key] += to_decimal(converted)  # type: ignore[operator]
    return totals


def payments_by(con: duckdb.DuckDBPyConnection, catalog: Catalog, scope: Scope, column: str) -> list[dict[str, Any]]:
    """MercadoPago payments per ``column``: final, successful, success ratio, approved amount (ARS and USD)."""
    if not has_table(con, "payments_daily"):
        return []
    payments = catalog.section("payments")
    column = _group_column("payments_daily", column)
    where, params = _scope_where(scope)
    return rows(
        con,
        f"""
        SELECT {column} AS key,
               sum(payments) FILTER (WHERE list_contains(?, status)) AS final,
               sum(payments) FILTER (WHERE list_contains(?, status)) AS successful,
               sum(amount_ars) FILTER (WHERE list_contains(?, status)) AS approved_ars,
               sum(amount_usd) FILTER (WHERE list_contains(?, status)) AS approved_usd
        FROM payments_daily WHERE {where} AND {_finest()} AND provider = 'mercadopago'
        GROUP BY key ORDER BY final DESC NULLS LAST, key""",  # noqa: S608
        [
            payments["final_statuses"],
            payments["success_statuses"],
            payments["revenue_statuses"],
            payments["revenue_statuses"],
            *params,
        ],
    )


def rejections(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[dict[str, Any]]:
    """Rejected MercadoPago payments per ``status_detail`` over the period, most frequent first."""
    if not has_table(con, "payments_daily"):
        return []
    where, params = _scope_where(scope)
    return rows(
        con,
        f"SELECT status_detail AS reason, sum(payments) AS payments FROM payments_daily "  # noqa: S608
        f"WHERE {where} AND {_finest()} AND provider = 'mercadopago' AND status = 'rejected' "
        "GROUP BY reason ORDER BY payments DESC, reason",
        params,
    )


def mercadopago_daily(con: duckdb.DuckDBPyConnection, catalog: Catalog, scope: Scope) -> dict[date, PaymentCounts]:
    """MercadoPago success counts per day of the period."""
    return mercadopago_counts(con, catalog, scope, by="day")


def alerts(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[dict[str, Any]]:
    """Anomaly alerts of the period from ``alert_history``, newest first; empty when not published."""
    if not has_table(con, "alert_history"):
        return []
    return rows(
        con,
        "SELECT * FROM alert_history WHERE day BETWEEN ? AND ? ORDER BY started_at DESC, alert_id",
        [scope.start, scope.end],
    )


def data_days(con: duckdb.DuckDBPyConnection) -> tuple[date | None, date | None]:
    """First and last day present in ``kpi_daily``."""
    if not has_table(con, "kpi_daily"):
        return None, None
    first, last = con.execute("SELECT min(day), max(day) FROM kpi_daily").fetchone()  # type: ignore[misc]
    return first, last
