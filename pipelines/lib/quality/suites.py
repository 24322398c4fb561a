"""Data-quality suites per warehouse asset, declared as plain data and built from the catalog.

A suite says which DuckDB table backs an asset, the SQL type of each contract column, derived boolean
columns computed in SQL (things pandas cannot see after ``.df()``: NaN vs NULL, DECIMAL scale, row
rules across columns) and expectations over the rows. :mod:`pipelines.lib.quality.runner` turns the
expectations into Great Expectations 1.x objects and validates a pandas batch from DuckDB.

Nothing here imports Great Expectations (it takes ~2 s to import), so the suites are cheap to list and
test. Allowed values (niches, countries, regions, KPI ids, units, statuses, currencies, MercadoPago
statuses, bucket bounds) come from the catalog, never from this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.lib.catalog import ALL, STATUSES, Catalog, load_catalog

MONEY_TYPE = "DECIMAL(18,6)"
RAW_MONEY_TYPE = "DECIMAL(38,10)"  # raw billing line items keep AWS's sub-micro-dollar amounts
TS_TYPE = "TIMESTAMP WITH TIME ZONE"
CHARGE_CATEGORIES = ("usage", "tax", "credit", "refund", "fee", "purchase", "adjustment")
# docs/data-contract.md section 1.3 (used only if the warehouse loader is not importable)
_CONTRACT_EVENT_TYPES = (
    "session.started",
    "user.signed_up",
    "booking.created",
    "booking.confirmed",
    "booking.cancelled",
    "booking.completed",
    "booking.no_show",
    "professional.onboarded",
    "payment.updated",
)
# KPIs whose ratio may leave [0, 1] by definition (overspent budget, cost above revenue).
_UNBOUNDED_RATIOS = ("error_budget_remaining_ratio", "infra_margin_ratio")


@dataclass(frozen=True)
class Expect:
    """One expectation in plain data; ``kind`` maps to a Great Expectations class in the runner.

    kinds: ``not_null`` (column), ``in_set`` (column, values; NULL allowed unless ``not_null`` too),
    ``between`` (column, min, max), ``unique`` (columns), ``true`` (a derived boolean column must be
    true on every row), ``columns`` (the table has at least these columns), ``min_rows`` (min).
    """

    kind: str
    column: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Suite:
    """The quality contract of one asset."""

    asset: str
    table: str
    columns: dict[str, str | None]  # contract column -> required SQL type (None: any)
    expectations: tuple[Expect, ...]
    derived: dict[str, str] = field(default_factory=dict)  # name -> SQL boolean expression
    day_column: str | None = "day"  # column the check filters to the partition/newest day
    blocking: bool = True  # bad data here would corrupt KPIs: downstream must not run
    freshness_days: int | None = 2  # newest day must be within this many days of the expected day
    audit_source: str | None = None  # ops.loads source whose counts must reconcile
    check: str = "quality"  # the check's name is <asset>_<check>
    also: tuple[str, ...] = ()  # same-shaped tables checked together (the psychology schema's copy)

    @property
    def name(self) -> str:
        return f"{self.asset}_{self.check}"


def _regions(catalog: Catalog) -> list[str]:
    return [r.id for r in catalog.regions]


def _currencies(catalog: Catalog) -> list[str]:
    known = {catalog.section("currency")["reporting"], catalog.section("currency")["local"]}
    known |= {c.currency for c in catalog.countries} | set(catalog.section("payments")["currencies"])
    return sorted(known)


def billing_suite(catalog: Catalog) -> Suite:
    """``raw.billing_line_items`` (contract section 4)."""
    reporting = catalog.section("currency")["reporting"]
    return Suite(
        asset="raw_billing",
        table="raw.billing_line_items",
        columns={
            "source_format": "VARCHAR",
            "source_file": "VARCHAR",
            "billing_period": "VARCHAR",
            "line_item_id": "VARCHAR",
            "usage_start": TS_TYPE,
            "usage_end": TS_TYPE,
            "provider": "VARCHAR",
            "line_item_type": "VARCHAR",
            "charge_category": "VARCHAR",
            "service_code": "VARCHAR",
            "niche_tag": "VARCHAR",
            "currency": "VARCHAR",
            "unblended_cost": RAW_MONEY_TYPE,
            "amortized_cost": RAW_MONEY_TYPE,
            "list_cost": RAW_MONEY_TYPE,
            "billing_account_id": "VARCHAR",
            "region": "VARCHAR",
            "charge_class": "VARCHAR",
            "charge_frequency": "VARCHAR",
            "pricing_category": "VARCHAR",
            "commitment_discount_status": "VARCHAR",
        },
        derived={
            "period_is_ordered": "usage_start <= usage_end",
            # no sign rule: FOCUS allows either sign in every category (corrections, refunds, credit
            # reversals) and AWS writes negative usage corrections; they must load and net out
            "in_reporting_currency": f"currency = '{reporting}'",
        },
        expectations=(
            Expect("columns", args={"columns": ["line_item_id", "unblended_cost", "amortized_cost", "currency"]}),
            *(
                Expect("not_null", c)
                for c in (
                    "line_item_id",
                    "billing_period",
                    "usage_start",
                    "usage_end",
                    "charge_category",
                    "currency",
                    "unblended_cost",
                    "amortized_cost",
                )
            ),
            Expect(
                "unique",
                args={"columns": ["source_format", "billing_period", "line_item_id"]},
                why="a line item counted twice doubles its cost",
            ),
            Expect("in_set", "charge_category", {"values": list(CHARGE_CATEGORIES)}),
            Expect("in_set", "currency", {"values": _currencies(catalog)}, why="unknown currency"),
            Expect(
                "true", "in_reporting_currency", why=f"infra cost KPIs are in {reporting}; other currencies need FX"
            ),
            Expect("true", "period_is_ordered"),
            Expect("in_set", "charge_class", {"values": ["Correction"]}, why="FOCUS ChargeClass"),
            Expect("in_set", "charge_frequency", {"values": ["One-Time", "Recurring", "Usage-Based"]}),
            Expect("in_set", "pricing_category", {"values": ["Standard", "Dynamic", "Committed", "Other"]}),
            Expect("in_set", "commitment_discount_status", {"values": ["Used", "Unused"]}),
            Expect(
                "in_set",
                "niche_tag",
                {"values": [*catalog.niche_ids, *catalog.section("cost_allocation")["shared_niche_values"]]},
            ),
            Expect("min_rows", args={"min": 1}),
        ),
        day_column=None,
        freshness_days=None,  # a bill arrives once a day at best and months are restated; no day freshness
        audit_source="billing",
    )


def metrics_suite(catalog: Catalog) -> Suite:
    """``staging.metric_counters_hourly``: hourly sums of per-minute counter increases."""
    # Exporters spell bounds differently ("1" in Go, "1.0" in Python/Prometheus 3): compare numerically.
    bounds = ", ".join(f"{float(b)!r}::DOUBLE" for b in catalog.latency_buckets_seconds)
    return Suite(
        asset="raw_metrics",
        table="staging.metric_counters_hourly",
        columns={
            "day": "DATE",
            "hour_start": TS_TYPE,
            "metric": "VARCHAR",
            "niche": "VARCHAR",
            "country": "VARCHAR",
            "region": "VARCHAR",
            "service": "VARCHAR",
            "code": "VARCHAR",
            "le": "VARCHAR",
            "increase": "DOUBLE",
        },
        derived={
            "increase_is_finite": "increase IS NOT NULL AND isfinite(increase)",
            "le_is_a_catalog_bound": f"le IS NULL OR le = '+Inf' OR TRY_CAST(le AS DOUBLE) IN ({bounds})",
        },
        expectations=(
            *(Expect("not_null", c) for c in ("day", "hour_start", "metric")),
            Expect("true", "increase_is_finite", why="NaN/Inf or missing increases poison every sum"),
            Expect("between", "increase", {"min_value": 0}, why="counter increases are never negative"),
            Expect("in_set", "niche", {"values": list(catalog.niche_ids)}),
            Expect("in_set", "country", {"values": [c.id for c in catalog.countries]}),
            Expect("in_set", "region", {"values": _regions(catalog)}),
            Expect("in_set", "service", {"values": [s.id for s in catalog.services]}),
            Expect("true", "le_is_a_catalog_bound", why="bucket bounds must be the catalog's"),
            Expect("min_rows", args={"min": 1}),
        ),
        audit_source="metrics",
    )


def gauges_suite(catalog: Catalog) -> Suite:
    """``staging.metric_gauges_minutely``: probes, sessions, autoscaling, DB connections per minute."""
    return Suite(
        asset="raw_metrics",
        check="gauges_quality",
        table="staging.metric_gauges_minutely",
        columns={
            "day": "DATE",
            "ts": TS_TYPE,
            "metric": "VARCHAR",
            "niche": "VARCHAR",
            "country": "VARCHAR",
            "region": "VARCHAR",
            "group": "VARCHAR",
            "value": "DOUBLE",
        },
        derived={
            "value_is_finite": "value IS NOT NULL AND isfinite(value)",
            "probe_is_0_or_1": "metric <> 'probe_success' OR value IN (0, 1)",
            "ts_minute_aligned": "date_trunc('minute', ts) = ts",
        },
        expectations=(
            *(Expect("not_null", c) for c in ("day", "ts", "metric")),
            Expect("true", "value_is_finite", why="NaN/Inf or missing gauges break peaks and incidents"),
            Expect("between", "value", {"min_value": 0}, why="sessions, instances and connections are counts"),
            Expect("true", "probe_is_0_or_1", why="blackbox probes succeed (1) or fail (0)"),
            Expect("true", "ts_minute_aligned"),
            Expect("in_set", "niche", {"values": list(catalog.niche_ids)}),
            Expect("in_set", "region", {"values": _regions(catalog)}),
            Expect("in_set", "group", {"values": [g.id for g in catalog.autoscaling_groups]}),
            Expect(
                "unique",
                args={"columns": ["ts", "metric", "niche", "country", "region", "group"]},
                why="one sample per series and minute",
            ),
        ),
        audit_source=None,  # reconciled by the counters' check (same load)
    )


def events_suite(catalog: Catalog, event_types: tuple[str, ...]) -> Suite:
    """``raw.events`` and ``psychology.events``: deduplicated, pseudonymized app events."""
    return Suite(
        asset="raw_events",
        table="raw.events",
        also=("psychology.events",),
        columns={
            "event_id": "VARCHAR",
            "type": "VARCHAR",
            "occurred_at": TS_TYPE,
            "day": "DATE",
            "arrival_day": "DATE",
            "niche": "VARCHAR",
            "country": "VARCHAR",
            "region": "VARCHAR",
            "user_key": "VARCHAR",
            "price_ars": "DECIMAL(18,2)",
        },
        derived={"price_non_negative": "price_ars IS NULL OR price_ars >= 0"},
        expectations=(
            *(Expect("not_null", c) for c in ("event_id", "type", "occurred_at", "day", "niche")),
            Expect("unique", args={"columns": ["event_id"]}, why="an event counted twice inflates bookings and users"),
            Expect("in_set", "type", {"values": list(event_types)}),
            Expect("in_set", "niche", {"values": list(catalog.niche_ids)}),
            Expect("in_set", "country", {"values": [c.id for c in catalog.countries]}),
            Expect("in_set", "region", {"values": _regions(catalog)}),
            Expect("true", "price_non_negative"),
        ),
        day_column="arrival_day",
        audit_source="events",
    )


def payments_suite(catalog: Catalog) -> Suite:
    """``raw.payment_updates`` and ``psychology.payment_updates``: MercadoPago payment objects."""
    payments = catalog.section("payments")
    return Suite(
        asset="raw_events",
        check="payments_quality",
        table="raw.payment_updates",
        also=("psychology.payment_updates",),
        columns={
            "event_id": "VARCHAR",
            "provider": "VARCHAR",
            "payment_id": "VARCHAR",
            "status": "VARCHAR",
            "transaction_amount": "DECIMAL(18,2)",
            "currency_id": "VARCHAR",
            "arrival_day": "DATE",
            "date_last_updated": TS_TYPE,
        },
        derived={
            "amount_non_negative": "transaction_amount IS NULL OR transaction_amount >= 0",
            "refund_within_amount": (
                "transaction_amount_refunded IS NULL OR transaction_amount IS NULL "
                "OR transaction_amount_refunded BETWEEN 0 AND transaction_amount"
            ),
        },
        expectations=(
            *(Expect("not_null", c) for c in ("event_id", "payment_id", "status", "provider")),
            Expect("unique", args={"columns": ["event_id"]}),
            Expect("in_set", "status", {"values": list(payments["statuses"])}, why="known MercadoPago statuses"),
            Expect("in_set", "provider", {"values": list(payments["providers"])}),
            Expect("in_set", "currency_id", {"values": list(payments["currencies"])}, why="known currencies"),
            Expect("in_set", "niche", {"values": list(catalog.niche_ids)}),
            Expect("true", "amount_non_negative"),
            Expect("true", "refund_within_amount"),
        ),
        day_column="arrival_day",
        freshness_days=None,  # payments are a subset of events; freshness is checked on events
        audit_source=None,
    )


def fx_suite(catalog: Catalog) -> Suite:
    """``raw.fx_rates``: one ARS-per-USD quote per day."""
    return Suite(
        asset="raw_fx",
        table="raw.fx_rates",
        columns={"date": "DATE", "ars_per_usd": MONEY_TYPE},
        derived={"rate_positive": "ars_per_usd IS NOT NULL AND ars_per_usd > 0"},
        expectations=(
            Expect("not_null", "date"),
            Expect("unique", args={"columns": ["date"]}, why="two rates for a day make revenue ambiguous"),
            Expect("true", "rate_positive"),
        ),
        day_column=None,  # the FX file is reloaded whole: check every quote
        freshness_days=None,  # weekends/holidays have no quote; staging.fx_daily carries the last one forward
        audit_source="fx",
    )


def kpi_daily_suite(catalog: Catalog) -> Suite:
    """``marts.kpi_daily`` (the published serving contract, docs/data-contract.md section 3)."""
    units = {k.id: k.unit for k in catalog.kpis}
    unit_case = " ".join(f"WHEN '{k}' THEN '{u}'" for k, u in units.items())
    bounded = [k.id for k in catalog.kpis if k.unit == "ratio" and k.id not in _UNBOUNDED_RATIOS]
    non_negative = [k.id for k in catalog.kpis if k.unit in ("ms", "count", "minutes", "users")] + [
        k.id for k in catalog.kpis if k.id in ("infra_cost_usd", "revenue_usd", "arr_usd", "cost_per_active_user_usd")
    ]
    in_list = ", ".join(f"'{k}'" for k in bounded)
    nn_list = ", ".join(f"'{k}'" for k in non_negative)
    return Suite(
        asset="kpi_daily",
        table="marts.kpi_daily",
        columns={
            "day": "DATE",
            "kpi": "VARCHAR",
            "niche": "VARCHAR",
            "country": "VARCHAR",
            "region": "VARCHAR",
            "value": "DOUBLE",
            "unit": "VARCHAR",
            "target": "DOUBLE",
            "status": "VARCHAR",
        },
        derived={
            "value_is_not_nan_or_inf": "value IS NULL OR isfinite(value)",
            "unit_matches_catalog": f"unit = CASE kpi {unit_case} END",
            "ratio_in_0_1": f"kpi NOT IN ({in_list}) OR value IS NULL OR value BETWEEN 0 AND 1",
            "count_non_negative": f"kpi NOT IN ({nn_list}) OR value IS NULL OR value >= 0",
            "no_data_iff_null": "(value IS NULL) = (status = 'no_data')",
            "target_is_finite": "target IS NULL OR isfinite(target)",
            "every_kpi_at_total_grain": (
                f"count(DISTINCT kpi) FILTER (WHERE niche = '{ALL}' AND country = '{ALL}' AND region = '{ALL}') "
                f"OVER (PARTITION BY day) = {len(catalog.kpis)}"
            ),
        },
        expectations=(
            *(Expect("not_null", c) for c in ("day", "kpi", "niche", "country", "region", "unit", "status")),
            Expect("in_set", "kpi", {"values": list(catalog.kpi_ids)}),
            Expect("in_set", "status", {"values": list(STATUSES)}),
            Expect("in_set", "niche", {"values": [ALL, *catalog.niche_ids]}),
            Expect("in_set", "country", {"values": [ALL, *[c.id for c in catalog.countries]]}),
            Expect("in_set", "region", {"values": [ALL, *_regions(catalog)]}),
            Expect("unique", args={"columns": ["day", "kpi", "niche", "country", "region"]}),
            Expect("true", "value_is_not_nan_or_inf", why="no NaN/Inf ever reaches a person"),
            Expect("true", "unit_matches_catalog"),
            Expect("true", "ratio_in_0_1"),
            Expect("true", "count_non_negative"),
            Expect("true", "no_data_iff_null", why="no data is shown as no data"),
            Expect("true", "target_is_finite"),
            Expect("true", "every_kpi_at_total_grain", why="every KPI id at the total grain every day"),
            Expect("min_rows", args={"min": len(catalog.kpis)}),
        ),
        audit_source=None,
    )


def all_suites(catalog: Catalog | None = None) -> tuple[Suite, ...]:
    """The suite of every raw source and of ``kpi_daily``."""
    catalog = catalog or load_catalog()
    try:  # the event types are the warehouse loader's (one list); fall back to the contract's
        from pipelines.lib.ingest.events import EVENT_TYPES
    except ImportError:
        EVENT_TYPES = _CONTRACT_EVENT_TYPES  # noqa: N806
    return (
        metrics_suite(catalog),
        gauges_suite(catalog),
        billing_suite(catalog),
        events_suite(catalog, tuple(EVENT_TYPES)),
        payments_suite(catalog),
        fx_suite(catalog),
        kpi_daily_suite(catalog),
    )


def suite_for(name: str, catalog: Catalog | None = None) -> Suite:
    """A suite by check name (``raw_events_payments_quality``) or by asset key (its main suite)."""
    suites = all_suites(catalog)
    for suite in suites:
        if suite.name == name:
            return suite
    for suite in suites:
        if suite.asset == name:
            return suite
    raise KeyError(f"no quality suite {name!r}; known: {[s.name for s in suites]}")
