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
TS_TYPE = "TIMESTAMP WITH TIME ZONE"
CHARGE_CATEGORIES = ("usage", "tax", "credit", "refund", "fee", "purchase", "adjustment")
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

    @property
    def name(self) -> str:
        return f"{self.asset}_quality"


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
            "source_format": "VARCHAR", "source_file": "VARCHAR", "billing_period": "VARCHAR", "line_item_id": "VARCHAR",
            "usage_start": TS_TYPE, "usage_end": TS_TYPE, "provider": "VARCHAR", "line_item_type": "VARCHAR",
            "charge_category": "VARCHAR", "service_code": "VARCHAR", "niche_tag": "VARCHAR", "currency": "VARCHAR",
            "unblended_cost": MONEY_TYPE, "amortized_cost": MONEY_TYPE, "list_cost": MONEY_TYPE,
        },
        derived={
            "period_is_ordered": "usage_start <= usage_end",
            "cost_sign_fits_category": (
                "CASE WHEN charge_category IN ('usage','tax','fee','purchase') "
                "AND line_item_type <> 'SavingsPlanNegation' THEN unblended_cost >= 0 "
                "WHEN charge_category IN ('credit','refund') THEN unblended_cost <= 0 ELSE TRUE END"
            ),
            "in_reporting_currency": f"currency = '{reporting}'",
        },
        expectations=(
            Expect("columns", args={"columns": ["line_item_id", "unblended_cost", "amortized_cost", "currency"]}),
            *(Expect("not_null", c) for c in ("line_item_id", "billing_period", "usage_start", "usage_end",
                                             "charge_category", "currency", "unblended_cost", "amortized_cost")),
            Expect("unique", args={"columns": ["source_format", "billing_period", "line_item_id"]},
                   why="a line item counted twice doubles its cost"),
            Expect("in_set", "charge_category", {"values": list(CHARGE_CATEGORIES)}),
            Expect("in_set", "currency", {"values": _currencies(catalog)}, why="unknown currency"),
            Expect("true", "in_reporting_currency", why=f"infra cost KPIs are in {reporting}; other currencies need FX"),
            Expect("true", "period_is_ordered"),
            Expect("true", "cost_sign_fits_category", why="usage/tax/fees are charges, credits/refunds reduce cost"),
            Expect("in_set", "niche_tag", {"values": [*catalog.niche_ids, *catalog.section("cost_allocation")["shared_niche_values"]]}),
            Expect("min_rows", args={"min": 1}),
        ),
        day_column=None,
        freshness_days=None,  # a bill arrives once a day at best and months are restated; no day freshness
        audit_source="billing",
    )


def metrics_suite(catalog: Catalog) -> Suite:
    """``staging.metric_counters_hourly``: hourly sums of per-minute counter increases."""
    # Prometheus writes bucket bounds as Python/Go float text ("0.025", "1.0", "+Inf")
    buckets = [repr(float(b)) for b in catalog.latency_buckets_seconds] + ["+Inf"]
    return Suite(
        asset="raw_metrics",
        table="staging.metric_counters_hourly",
        columns={"day": "DATE", "hour_start": TS_TYPE, "metric": "VARCHAR", "niche": "VARCHAR", "country": "VARCHAR",
                 "region": "VARCHAR", "service": "VARCHAR", "code": "VARCHAR", "le": "VARCHAR", "increase": "DOUBLE"},
        derived={"increase_is_finite": "increase IS NOT NULL AND isfinite(increase)"},
        expectations=(
            *(Expect("not_null", c) for c in ("day", "hour_start", "metric")),
            Expect("true", "increase_is_finite", why="NaN/Inf or missing increases poison every sum"),
            Expect("between", "increase", {"min_value": 0}, why="counter increases are never negative"),
            Expect("in_set", "niche", {"values": list(catalog.niche_ids)}),
            Expect("in_set", "country", {"values": [c.id for c in catalog.countries]}),
            Expect("in_set", "region", {"values": _regions(catalog)}),
            Expect("in_set", "service", {"values": [s.id for s in catalog.services]}),
            Expect("in_set", "le", {"values": buckets}, why="bucket bounds must be the catalog's"),
            Expect("min_rows", args={"min": 1}),
        ),
        audit_source="metrics",
    )


def events_suite(catalog: Catalog) -> Suite:
    """``staging.payments``: the latest state of each payment (MercadoPago payment object)."""
    payments = catalog.section("payments")
    return Suite(
        asset="raw_events",
        table="staging.payments",
        columns={"payment_id": None, "status": "VARCHAR", "provider": "VARCHAR", "currency_id": "VARCHAR",
                 "transaction_amount": None, "niche": "VARCHAR"},
        derived={"amount_non_negative": "transaction_amount IS NULL OR transaction_amount >= 0"},
        expectations=(
            Expect("not_null", "payment_id"),
            Expect("unique", args={"columns": ["provider", "payment_id"]}, why="one latest state per payment"),
            Expect("in_set", "status", {"values": list(payments["statuses"])}, why="known MercadoPago statuses"),
            Expect("in_set", "provider", {"values": list(payments["providers"])}),
            Expect("in_set", "currency_id", {"values": list(payments["currencies"])}, why="known currencies"),
            Expect("in_set", "niche", {"values": list(catalog.niche_ids)}),
            Expect("true", "amount_non_negative"),
        ),
        audit_source="events",
    )


def fx_suite(catalog: Catalog) -> Suite:
    """``raw.fx_rates``: one ARS-per-USD quote per day."""
    return Suite(
        asset="raw_fx",
        table="raw.fx_rates",
        columns={"day": "DATE", "ars_per_usd": None},
        derived={"rate_positive_finite": "ars_per_usd IS NOT NULL AND ars_per_usd > 0"},
        expectations=(
            Expect("not_null", "day"),
            Expect("unique", args={"columns": ["day"]}, why="two rates for a day make revenue ambiguous"),
            Expect("true", "rate_positive_finite"),
            Expect("min_rows", args={"min": 1}),
        ),
        day_column="day",
        freshness_days=7,  # weekends and holidays have no quote; the last earlier quote applies
        audit_source="fx",
    )


def kpi_daily_suite(catalog: Catalog) -> Suite:
    """``marts.kpi_daily`` (the published serving contract, docs/data-contract.md section 3)."""
    units = {k.id: k.unit for k in catalog.kpis}
    unit_case = " ".join(f"WHEN '{k}' THEN '{u}'" for k, u in units.items())
    bounded = [k.id for k in catalog.kpis if k.unit == "ratio" and k.id not in _UNBOUNDED_RATIOS]
    non_negative = [k.id for k in catalog.kpis if k.unit in ("ms", "count", "minutes", "users")] + [
        k.id for k in catalog.kpis if k.id in ("infra_cost_usd", "revenue_usd", "arr_usd", "cost_per_active_user_usd")]
    in_list = ", ".join(f"'{k}'" for k in bounded)
    nn_list = ", ".join(f"'{k}'" for k in non_negative)
    return Suite(
        asset="kpi_daily",
        table="marts.kpi_daily",
        columns={"day": "DATE", "kpi": "VARCHAR", "niche": "VARCHAR", "country": "VARCHAR", "region": "VARCHAR",
                 "value": "DOUBLE", "unit": "VARCHAR", "target": "DOUBLE", "status": "VARCHAR"},
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
    return (metrics_suite(catalog), billing_suite(catalog), events_suite(catalog), fx_suite(catalog),
            kpi_daily_suite(catalog))


def suite_for(asset: str, catalog: Catalog | None = None) -> Suite:
    """The suite of one asset key."""
    for suite in all_suites(catalog):
        if suite.asset == asset:
            return suite
    raise KeyError(f"no quality suite for asset {asset!r}")
