"""Daily series for the detector from the published store: cost, MercadoPago success, bookings.

Reads only what the warehouse publishes (``cost_daily``, ``kpi_daily``; docs/data-contract.md
section 3), through a :class:`pipelines.lib.published.PublishedReader` snapshot connection.
"""

from __future__ import annotations

import duckdb
import polars as pl

from alerts.detection.monitor import daily_series
from alerts.detection.operational import Series
from pipelines.lib.catalog import ALL, load_catalog

COST_GRAINS = {"total": (), "niche": ("niche",), "niche_service": ("niche", "service")}


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def published_daily_series(con: duckdb.DuckDBPyConnection) -> list[Series]:
    """Daily cost (total, niche, niche x service), MercadoPago success and bookings (total) series."""
    tz = load_catalog().timezone
    tables = _tables(con)
    out: list[Series] = []
    if "cost_daily" in tables:
        # Money is summed exactly in DuckDB (DECIMAL) and only then handed to the detector as a number.
        cost = pl.from_arrow(
            con.sql(
                "SELECT day, niche, service, sum(cost_usd) AS cost_usd FROM cost_daily GROUP BY ALL ORDER BY ALL"
            ).to_arrow_table()
        ).with_columns(pl.col("cost_usd").cast(pl.Float64))
        out += daily_series(cost, "infra_cost_usd", "cost_usd", COST_GRAINS, tz)
    if "kpi_daily" in tables:
        kpis = pl.from_arrow(
            con.sql(
                "SELECT day, kpi, value FROM kpi_daily WHERE niche = $all AND country = $all AND region = $all "
                "AND kpi IN ('mercadopago_success_ratio', 'bookings') ORDER BY day",
                params={"all": ALL},
            ).to_arrow_table()
        )
        for kpi in ("mercadopago_success_ratio", "bookings"):
            frame = (
                kpis.filter(pl.col("kpi") == kpi).drop_nulls("value").select("day", pl.col("value").cast(pl.Float64))
            )
            if not frame.is_empty():
                out += daily_series(frame, kpi, "value", {"total": ()}, tz)
    return out
