"""KPI marts: SQL/polars over the warehouse, testable without Dagster.

- :mod:`.quantiles` — ``histogram_quantile`` (Python reference and SQL).
- :mod:`.staging` — event staging (users, bookings, onboarding, final payment state).
- :mod:`.marts` — latency_daily, ops_hourly, cache_daily, incidents, slo_daily, cost_daily, payments_daily.
- :mod:`.kpi_daily` — the 21 catalog KPIs with target and status.

:func:`ensure_inputs` creates empty staging tables so marts build even when a source has no data yet.
"""

import duckdb

from pipelines.lib.ingest.billing import ensure_billing_tables
from pipelines.lib.ingest.events import ensure_event_tables
from pipelines.lib.ingest.fx import ensure_fx_tables
from pipelines.lib.ingest.metrics import ensure_metric_tables

PUBLISHED_TABLES = (
    "kpi_daily",
    "slo_daily",
    "incidents",
    "cost_daily",
    "payments_daily",
    "latency_daily",
    "ops_hourly",
    "cache_daily",
    "fx_daily",
)
# The warehouse relation each published table is read from: the marts, and the daily FX rate as staged
# (docs/data-contract.md section 3).
PUBLISHED_RELATIONS = {t: f"marts.{t}" for t in PUBLISHED_TABLES} | {"fx_daily": "staging.fx_daily"}


def ensure_inputs(con: duckdb.DuckDBPyConnection) -> None:
    """Create every raw/staging input table the marts read, empty if no load ran yet."""
    ensure_metric_tables(con)
    ensure_event_tables(con)
    ensure_fx_tables(con)
    ensure_billing_tables(con)  # raw.billing_line_items and staging.cost_items_daily
