"""Exporter benchmark: scrape latency over a published store at ``m6-year`` scale.

    python -m bench.exporter [--scrapes 500] [--days 365]

``run(results)`` is what the bench runner calls: it synthesizes a contract-shaped published store the
size of ``m6-year`` (365 days x 21 KPIs x every grain of 6 niches, 5 countries, 8 regions, plus
slo_daily, cost_daily, incidents), serves it with the real HTTP exporter on a loopback port, scrapes it
many times and records the median and p99 scrape latency in docs/benchmarks.md, section "Exporter"
(other sections of that file are kept as they are).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from bench.report import replace_section
from pipelines.lib.catalog import ALL, Catalog, load_catalog
from pipelines.lib.published import Manifest, PublishedReader, publish

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "Exporter"
GOAL_P99_MS = 50.0


def grains(catalog: Catalog, dims: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """The (niche, country, region) rows of a KPI with catalog ``dims`` (data contract, kpi_daily)."""
    niches = [n.id for n in catalog.niches]
    rows = [(ALL, ALL, ALL)]
    if "niche" in dims:
        rows += [(n, ALL, ALL) for n in niches]
    if "country" in dims:
        rows += [(ALL, c.id, ALL) for c in catalog.countries]
        if "region" in dims:
            rows += [(ALL, c.id, r.id) for c in catalog.countries for r in c.regions]
        if "niche" in dims:
            rows += [(n, c.id, ALL) for n in niches for c in catalog.countries]
            if "region" in dims:
                rows += [(n, c.id, r.id) for n in niches for c in catalog.countries for r in c.regions]
    return rows


# Plausible values per unit (the benchmark measures serving, not the numbers; tests use hand-made rows).
_BASE = {"ms": 120.0, "ratio": 0.95, "count": 3.0, "minutes": 4.0, "users": 900.0, "usd": 800.0, "usd_per_usd": 6.0}


def synthesize_published(
    root: Path, days: int = 365, end: date | None = None, catalog: Catalog | None = None, app_tables: bool = False
) -> Manifest:
    """Publish a deterministic, contract-shaped store of ``days`` days ending ``end`` (default: today, AR).

    ``app_tables`` also publishes what the executive view reads besides (latency_daily, payments_daily,
    cache_daily, fx_daily, and shared-split cost lines): one synthesis for both benchmarks.
    """
    catalog = catalog or load_catalog()
    end = end or datetime.now(ZoneInfo(catalog.timezone)).date()
    start = end - timedelta(days=days - 1)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE grain (kpi VARCHAR, niche VARCHAR, country VARCHAR, region VARCHAR, unit VARCHAR, base DOUBLE, tgt DOUBLE)"
    )
    rows = []
    for kpi in catalog.kpis:
        for niche, country, region in grains(catalog, kpi.dims):
            rows.append(
                (
                    kpi.id,
                    niche,
                    country,
                    region,
                    kpi.unit,
                    _BASE.get(kpi.unit, 1.0),
                    catalog.target(kpi.id, end, niche, country),
                )
            )
    con.executemany("INSERT INTO grain VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute(
        "CREATE TABLE days AS SELECT d::DATE AS day FROM range(?::DATE, ?::DATE + 1, INTERVAL 1 DAY) t(d)", [start, end]
    )
    # A value that varies by day and grain, always finite; ratios stay in (0, 1].
    con.execute("""
        CREATE TABLE kpi_daily AS
        SELECT day, kpi, niche, country, region,
               CASE WHEN unit = 'ratio' THEN least(1.0, base + (hash(day, kpi, niche, country, region) % 500) / 10000.0)
                    ELSE base * (1 + (hash(day, kpi, niche, country, region) % 200) / 1000.0) END AS value,
               unit, tgt AS target, 'ok' AS status
        FROM days, grain""")
    con.execute("CREATE TABLE slo_grain (slo VARCHAR, objective DOUBLE, period_days INTEGER)")
    con.executemany(
        "INSERT INTO slo_grain VALUES (?, ?, ?)", [(s.id, s.objective, s.period_days) for s in catalog.slos]
    )
    place = [g for g in grains(catalog, ("niche", "country", "region"))]
    con.execute("CREATE TABLE place (niche VARCHAR, country VARCHAR, region VARCHAR)")
    con.executemany("INSERT INTO place VALUES (?, ?, ?)", place)
    con.execute("""
        CREATE TABLE slo_daily AS
        SELECT day, slo, niche, country, region, objective, period_days,
               total - bad AS good, total, (total - bad) / total AS sli_ratio,
               1 - (bad / total) / (1 - objective) AS error_budget_remaining_ratio,
               r * 1.5 AS burn_rate_1h, r * 1.2 AS burn_rate_6h, r AS burn_rate_1d, r * 0.9 AS burn_rate_3d
        FROM (SELECT *, 1000000::BIGINT AS total,
                     (hash(day, slo, niche, country, region) % 400)::BIGINT AS bad,
                     0.2 + (hash(day, slo, niche, region) % 100) / 100.0 AS r
              FROM days, slo_grain, place)""")
    con.execute("CREATE TABLE svc (niche VARCHAR, service VARCHAR, charge_category VARCHAR)")
    cats = catalog.section("cost_allocation")["charge_categories"]
    con.executemany(
        "INSERT INTO svc VALUES (?, ?, ?)",
        [(n.id, s.id, c) for n in catalog.niches for s in catalog.services for c in cats],
    )
    con.execute("""
        CREATE TABLE cost_daily AS
        SELECT day, niche, service, charge_category, 'tagged' AS allocation,
               (CASE WHEN charge_category IN ('credit', 'refund') THEN -1 ELSE 1 END
                * (hash(day, niche, service, charge_category) % 100000) / 1000.0)::DECIMAL(18,6) AS cost_usd
        FROM days, svc""")
    con.execute(
        """
        CREATE TABLE incidents AS
        SELECT day, 'inc-' || strftime(day, '%Y%m%d') AS incident_id, 'barber' AS niche, 'AR' AS country,
               'cordoba' AS region, day::TIMESTAMPTZ + INTERVAL 13 HOUR AS started_at,
               CASE WHEN day = ?::DATE THEN NULL ELSE day::TIMESTAMPTZ + INTERVAL 13 HOUR + INTERVAL 9 MINUTE END AS ended_at,
               CASE WHEN day = ?::DATE THEN NULL ELSE 9.0 END AS recovery_minutes
        FROM days WHERE dayofyear(day) % 7 = 0 OR day = ?::DATE""",
        [end, end, end],
    )
    names = ["kpi_daily", "slo_daily", "cost_daily", "incidents"]
    if app_tables:
        names += _app_tables(con, catalog)
    all_days = [start + timedelta(days=i) for i in range(days)]
    tables = {t: t for t in names}
    return publish(
        con,
        tables,
        all_days,
        Path(root),
        {"complete_through": (end - timedelta(days=1)).isoformat(), "data_through": end.isoformat()},
    )


def _app_tables(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> list[str]:
    """The executive view's other tables over the ``days`` of ``con``, at the finest grain (every niche
    in every region, every service); returns their names."""
    con.execute("CREATE TABLE day_index AS SELECT day, row_number() OVER (ORDER BY day) - 1 AS i FROM days")
    con.execute("CREATE TABLE finest (niche VARCHAR, country VARCHAR, region VARCHAR)")
    con.executemany(
        "INSERT INTO finest VALUES (?, ?, ?)",
        [(n.id, r.country, r.id) for n in catalog.niches for r in catalog.regions],
    )
    con.execute("CREATE TABLE service (id VARCHAR)")
    con.executemany("INSERT INTO service VALUES (?)", [(s.id,) for s in catalog.services])
    con.execute("CREATE TABLE le (le VARCHAR, k INTEGER)")
    bounds = [str(b) for b in catalog.latency_buckets_seconds] + ["+Inf"]
    con.executemany("INSERT INTO le VALUES (?, ?)", [(b, k) for k, b in enumerate(bounds)])
    # Cumulative buckets: share (k+1)/(n-1) of requests under the k-th bound, the last bounds hold them all.
    con.execute(
        """
        CREATE TABLE latency_daily AS
        SELECT day, niche, country, region, service.id AS service, le,
               ((1000 + hash(day, niche, region, service.id) % 1000) * least(1.0, (k + 1) / ?))::BIGINT AS requests
        FROM days, finest, service, le""",
        [float(len(bounds) - 2)],
    )
    con.execute("CREATE TABLE pay (method VARCHAR, status VARCHAR, detail VARCHAR)")
    con.executemany(
        "INSERT INTO pay VALUES (?, ?, ?)",
        [
            (m, s, d)
            for m in ("visa", "master", "debmaster", "account_money")
            for s, d in (
                ("approved", "accredited"),
                ("rejected", "cc_rejected_insufficient_amount"),
                ("rejected", "cc_rejected_high_risk"),
                ("pending", "pending_waiting_payment"),
            )
        ],
    )
    con.execute("""
        CREATE TABLE payments_daily AS
        SELECT day, niche, country, region, 'mercadopago' AS provider, method AS payment_method, status,
               detail AS status_detail, (1 + hash(day, niche, region, method, detail) % 50)::BIGINT AS payments,
               ((1 + hash(day, niche, region, method, detail) % 50) * 15000)::DECIMAL(18,2) AS amount_ars,
               ((1 + hash(day, niche, region, method, detail) % 50) * 15000 / (1000 + i))::DECIMAL(18,6) AS amount_usd
        FROM day_index, finest, pay""")
    con.execute("""
        CREATE TABLE cache_daily AS
        SELECT day, niche, country, region, (requests * (0.85 + (hash(day, niche, region) % 100) / 1000.0)) AS hits,
               requests
        FROM (SELECT *, (10000 + hash(day, region, niche) % 5000)::DOUBLE AS requests FROM days, finest)""")
    con.execute("CREATE TABLE fx_daily AS SELECT day, (1000 + i)::DECIMAL(18,6) AS ars_per_usd FROM day_index")
    # shared cost split across niches, besides the tagged lines
    con.execute("""
        INSERT INTO cost_daily
        SELECT day, niche, service, 'usage', 'shared_split', (hash(day, niche, service, 'shared') % 20000 / 1000.0)::DECIMAL(18,6)
        FROM (SELECT DISTINCT day, niche, service FROM cost_daily)""")
    return ["latency_daily", "payments_daily", "cache_daily", "fx_daily"]


def measure(root: Path, scrapes: int = 500) -> dict[str, Any]:
    """Scrape the real HTTP exporter ``scrapes`` times; latency figures in milliseconds."""
    from exporters.serve import start

    server, _ = start(0, "127.0.0.1", root)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            first_body = response.read()
        first_ms = (time.perf_counter() - t0) * 1000  # includes loading the manifest's files
        latencies = []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        server.shutdown()
        server.server_close()
    latencies.sort()
    series = sum(1 for line in first_body.decode().splitlines() if line and not line.startswith("#"))
    return {
        "scrapes": scrapes,
        "series": series,
        "body_kib": round(len(first_body) / 1024, 1),
        "first_scrape_ms": round(first_ms, 1),
        "median_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
        "max_ms": round(latencies[-1], 2),
    }


def write_section(figures: dict[str, Any], path: Path = BENCHMARKS_MD) -> None:
    """Replace (or add) the "## Exporter" section of docs/benchmarks.md, keeping every other section."""
    body = (
        f"## {SECTION}\n\n"
        f"`python -m bench.exporter` (also `make bench`): the real HTTP exporter over a synthesized published "
        f"store at m6-year scale ({figures['days']} days, {figures['kpi_rows']:,} kpi_daily rows, "
        f"{figures['slo_rows']:,} slo_daily rows), {figures['scrapes']} sequential scrapes on loopback, "
        f"measured {figures['measured_at']} on the 2-core shared machine.\n\n"
        "| figure | value |\n|---|---|\n"
        f"| series per scrape | {figures['series']:,} ({figures['body_kib']} KiB) |\n"
        f"| first scrape after a publish (loads the manifest's files) | {figures['first_scrape_ms']} ms |\n"
        f"| scrape latency median | {figures['median_ms']} ms |\n"
        f"| scrape latency p99 | {figures['p99_ms']} ms (goal < {GOAL_P99_MS:g} ms: "
        f"{'met' if figures['p99_ms'] < GOAL_P99_MS else 'NOT met'}) |\n"
        f"| scrape latency max | {figures['max_ms']} ms |\n"
        f"| publishing the synthetic store | {figures['publish_s']} s |\n\n"
        "A scrape only builds gauges from rows cached per manifest version; the newest day is queried once "
        "per publish.\n"
    )
    replace_section(body, path)


def run(results: dict[str, Any] | None = None, scrapes: int = 500, days: int = 365) -> dict[str, Any]:
    """Benchmark the exporter at m6-year scale, record the figures in docs/benchmarks.md and ``results``."""
    with tempfile.TemporaryDirectory(prefix="pulso-bench-exporter-") as tmp:
        root = Path(tmp) / "published"
        t0 = time.perf_counter()
        synthesize_published(root, days=days)
        publish_s = round(time.perf_counter() - t0, 1)
        con = PublishedReader(root, tables=["kpi_daily", "slo_daily"]).snapshot()
        kpi_rows = con.execute("SELECT count(*) FROM kpi_daily").fetchone()[0]
        slo_rows = con.execute("SELECT count(*) FROM slo_daily").fetchone()[0]
        figures = {
            "days": days,
            "kpi_rows": kpi_rows,
            "slo_rows": slo_rows,
            "publish_s": publish_s,
            "measured_at": datetime.now(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M UTC"),
            **measure(root, scrapes),
        }
    write_section(figures)
    if results is not None:
        results[SECTION.lower()] = figures
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Exporter scrape latency at m6-year scale")
    parser.add_argument("--scrapes", type=int, default=500)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    figures = run(scrapes=args.scrapes, days=args.days)
    print(", ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
