"""Executive-view benchmark: time to first full render of the overview at ``m6-year`` scale.

    python -m bench.app [--days 365] [--no-browser]

``run(results)`` is what the bench runner calls. It synthesizes a contract-shaped published store the
size of ``m6-year`` (365 days x 21 KPIs x every grain of 6 niches, 5 countries, 8 regions; plus
cost_daily, payments_daily, latency_daily, incidents, fx_daily), then measures

* the overview script run by Streamlit's AppTest with cold caches (loads the published snapshot) and
  warm (same manifest: the reader's snapshot is reused),
* in headless Chromium against ``streamlit run`` on loopback: from submitting the sign-in form to the
  overview's cards and targets table being on screen (when Chromium is installed),

and records the figures in docs/benchmarks.md, section "Executive view" (other sections kept).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from bench.report import replace_section
from pipelines.lib.catalog import ALL, Catalog, load_catalog
from pipelines.lib.published import Manifest, publish

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"
APP = REPO / "app" / "streamlit_app.py"
SECTION = "Executive view"
GOAL_S = 2.0
_BASE = {"ms": 120.0, "ratio": 0.95, "count": 3.0, "minutes": 4.0, "users": 900.0, "usd": 800.0, "usd_per_usd": 6.0}


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


def synthesize(root: Path, days: int = 365, end: date | None = None) -> Manifest:
    """Publish a deterministic m6-year-sized store of ``days`` days ending ``end`` (default: today, AR)."""
    catalog = load_catalog()
    end = end or datetime.now(ZoneInfo(catalog.timezone)).date()
    start = end - timedelta(days=days - 1)
    con = duckdb.connect()
    con.execute("CREATE TABLE days AS SELECT d::DATE AS day, row_number() OVER (ORDER BY d) - 1 AS i "
                "FROM range(?::DATE, ?::DATE + 1, INTERVAL 1 DAY) t(d)", [start, end])
    con.execute("CREATE TABLE grain (kpi VARCHAR, niche VARCHAR, country VARCHAR, region VARCHAR, unit VARCHAR, "
                "base DOUBLE, tgt DOUBLE)")
    con.executemany("INSERT INTO grain VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (k.id, n, c, r, k.unit, _BASE.get(k.unit, 1.0), catalog.target(k.id, end, n, c))
        for k in catalog.kpis for n, c, r in grains(catalog, k.dims)])
    con.execute("""
        CREATE TABLE kpi_daily AS
        SELECT day, kpi, niche, country, region,
               CASE WHEN unit = 'ratio' THEN least(1.0, base + (hash(day, kpi, niche, country, region) % 500) / 10000.0)
                    ELSE base * (1 + (hash(day, kpi, niche, country, region) % 200) / 1000.0) END AS value,
               unit, tgt AS target, 'ok' AS status
        FROM days, grain""")
    con.execute("CREATE TABLE place (niche VARCHAR, country VARCHAR, region VARCHAR)")
    con.executemany("INSERT INTO place VALUES (?, ?, ?)",
                    [(n.id, r.country, r.id) for n in catalog.niches for r in catalog.regions])
    con.execute("CREATE TABLE svc (id VARCHAR)")
    con.executemany("INSERT INTO svc VALUES (?)", [(s.id,) for s in catalog.services])
    con.execute("CREATE TABLE le (le VARCHAR, k INTEGER)")
    bounds = [str(b) for b in catalog.latency_buckets_seconds] + ["+Inf"]
    con.executemany("INSERT INTO le VALUES (?, ?)", [(b, k) for k, b in enumerate(bounds)])
    # Cumulative buckets: share k/(n-1) of requests under the k-th bound, the last bound holds them all.
    con.execute("""
        CREATE TABLE latency_daily AS
        SELECT day, niche, country, region, svc.id AS service, le,
               ((1000 + hash(day, niche, region, svc.id) % 1000) * least(1.0, (k + 1) / ?))::BIGINT AS requests
        FROM days, place, svc, le""", [float(len(bounds) - 2)])
    con.execute("CREATE TABLE pay (method VARCHAR, status VARCHAR, detail VARCHAR)")
    con.executemany("INSERT INTO pay VALUES (?, ?, ?)", [
        (m, s, d) for m in ("visa", "master", "debmaster", "account_money")
        for s, d in (("approved", "accredited"), ("rejected", "cc_rejected_insufficient_amount"),
                     ("rejected", "cc_rejected_high_risk"), ("pending", "pending_waiting_payment"))])
    con.execute("""
        CREATE TABLE payments_daily AS
        SELECT day, niche, country, region, 'mercadopago' AS provider, method AS payment_method, status,
               detail AS status_detail, (1 + hash(day, niche, region, method, detail) % 50)::BIGINT AS payments,
               ((1 + hash(day, niche, region, method, detail) % 50) * 15000)::DECIMAL(18,2) AS amount_ars,
               ((1 + hash(day, niche, region, method, detail) % 50) * 15000 / (1000 + i))::DECIMAL(18,6) AS amount_usd
        FROM days, place, pay""")
    con.execute("CREATE TABLE costkey (niche VARCHAR, service VARCHAR, charge_category VARCHAR, allocation VARCHAR)")
    cats = catalog.section("cost_allocation")["charge_categories"]
    con.executemany("INSERT INTO costkey VALUES (?, ?, ?, ?)", [
        (n.id, s.id, c, a) for n in catalog.niches for s in catalog.services for c in cats
        for a in ("tagged", "shared_split")])
    con.execute("""
        CREATE TABLE cost_daily AS
        SELECT day, niche, service, charge_category, allocation,
               (CASE WHEN charge_category IN ('credit', 'refund') THEN -1 ELSE 1 END
                * (hash(day, niche, service, charge_category, allocation) % 100000) / 1000.0)::DECIMAL(18,6) AS cost_usd
        FROM days, costkey""")
    con.execute("""
        CREATE TABLE incidents AS
        SELECT day, 'inc-' || strftime(day, '%Y%m%d') AS incident_id, 'barber' AS niche, 'AR' AS country,
               'cordoba' AS region, day::TIMESTAMPTZ + INTERVAL 13 HOUR AS started_at,
               day::TIMESTAMPTZ + INTERVAL 13 HOUR + INTERVAL 9 MINUTE AS ended_at, 9.0 AS recovery_minutes
        FROM days WHERE i % 7 = 0""")
    con.execute("CREATE TABLE fx_daily AS SELECT day, (1000 + i)::DECIMAL(18,6) AS ars_per_usd FROM days")
    tables = ("kpi_daily", "latency_daily", "payments_daily", "cost_daily", "incidents", "fx_daily")
    all_days = [start + timedelta(days=i) for i in range(days)]
    return publish(con, {t: t for t in tables}, all_days, root,
                   {"complete_through": (end - timedelta(days=1)).isoformat(), "data_through": end.isoformat()})


def measure_apptest(root: Path, repeats: int = 5) -> dict[str, float]:
    """The overview's script run (AppTest) with cold caches, then warm reruns; seconds."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from app import session
    from app.auth import Identity

    os.environ["PULSO_PUBLISHED"] = str(root)
    cold = []
    for _ in range(5):
        session.clear_readers()
        st.cache_data.clear()
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.session_state["pulso_identity"] = Identity("bench", ())
        t0 = time.perf_counter()
        at.run()
        cold.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
        assert len(at.metric) > 10 and at.dataframe, "the overview did not render its cards and table"
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t0)
    return {"apptest_cold_s": round(statistics.median(cold), 2), "apptest_warm_s": round(statistics.median(warm), 2)}


def measure_browser(root: Path) -> dict[str, float]:
    """Headless Chromium: sign-in submitted -> overview cards and targets table on screen; seconds."""
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return {}
    import requests
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    password = "bench-password"
    env = {**os.environ, "PULSO_PUBLISHED": str(root), "PULSO_APP_PASSWORD": password,
           "PULSO_APP_ACCESS_LOG": str(root.parent / "access.log")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--window-size=1600,1400"):
            options.add_argument(flag)
        driver = None
        try:
            for _ in range(300):
                try:
                    if requests.get(f"{base}/_stcore/health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.2)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            driver.get(base)
            deadline = time.monotonic() + 60
            while not driver.find_elements(By.CSS_SELECTOR, "input[type=password]") and time.monotonic() < deadline:
                time.sleep(0.05)
            driver.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("bench")
            driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(password)
            button = next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Iniciar sesión")
            t0 = time.perf_counter()
            button.click()
            script = ("return document.querySelectorAll('[data-testid=stMetric]').length > 10 && "
                      "document.querySelectorAll('[role=gridcell]').length > 0 && "
                      "!document.body.innerText.includes('Running...')")
            while not driver.execute_script(script):
                if time.monotonic() > deadline + 60:
                    raise TimeoutError("the overview did not render in the browser")
                time.sleep(0.02)
            first = round(time.perf_counter() - t0, 2)
            # Warm: another page, then the overview again (same session, data already loaded).
            next(a for a in driver.find_elements(By.TAG_NAME, "a") if a.text.strip().endswith("Alertas")).click()
            while "Alertas de anomalías" not in driver.execute_script("return document.body.innerText"):
                time.sleep(0.02)
            t0 = time.perf_counter()
            next(a for a in driver.find_elements(By.TAG_NAME, "a") if a.text.strip().endswith("Resumen")).click()
            time.sleep(0.05)
            while not driver.execute_script(script):
                time.sleep(0.02)
            return {"browser_first_render_s": first, "browser_warm_render_s": round(time.perf_counter() - t0, 2)}
        finally:
            if driver is not None:
                driver.quit()
            proc.terminate()
            proc.wait(15)


def write_section(figures: dict[str, Any], path: Path = BENCHMARKS_MD) -> None:
    """Replace (or add) the "## Executive view" section of docs/benchmarks.md, keeping the others."""
    def verdict(seconds: float | None) -> str:
        return "" if seconds is None else f" ({'met' if seconds < GOAL_S else 'NOT met'}: goal < {GOAL_S:g} s)"

    browser = figures.get("browser_first_render_s")
    warm_browser = figures.get("browser_warm_render_s")
    body = (
        f"## {SECTION}\n\n"
        f"`python -m bench.app` (also `make bench`): the Streamlit overview over a synthesized published store "
        f"at m6-year scale ({figures['days']} days, {figures['kpi_rows']:,} kpi_daily rows, "
        f"{figures['latency_rows']:,} latency_daily rows, {figures['payment_rows']:,} payments_daily rows), "
        f"measured {figures['measured_at']} on the 2-core machine shared with the other engineers (load average "
        f"{figures['load_average']} at the start: every figure is inflated accordingly).\n\n"
        "| figure | value |\n|---|---|\n"
        f"| first full render in headless Chromium (sign-in submitted → cards and targets table on screen, "
        f"fresh server, median of {figures.get('browser_runs', 0)}) | "
        f"{'not measured (no Chromium)' if browser is None else f'{browser} s'}{verdict(browser)} |\n"
        f"| same, navigating back to the overview in the same session | "
        f"{'not measured' if warm_browser is None else f'{warm_browser} s'}{verdict(warm_browser)} |\n"
        f"| overview script run, cold (loads the published snapshot), AppTest median of 5 | "
        f"{figures['apptest_cold_s']} s{verdict(figures['apptest_cold_s'])} |\n"
        f"| overview script rerun, warm (same manifest), AppTest median of 5 | {figures['apptest_warm_s']} s |\n"
        f"| publishing the synthetic store | {figures['publish_s']} s |\n\n"
        "The app loads only the tables it shows (not `ops_hourly`) and only the days the chosen period needs "
        "(the period, the previous one and 60 days for MoM growth, from a Monday) into one in-memory snapshot "
        "per manifest version, prewarmed while the sign-in form is on screen; every page query runs on that "
        "snapshot. The first browser render also pays for the browser loading the chart library and drawing "
        "14 sparklines; the warm figure is what a signed-in user sees moving between pages.\n"
    )
    replace_section(body, path)


def run(results: dict[str, Any] | None = None, days: int = 365, browser: bool = True) -> dict[str, Any]:
    """Benchmark the overview at m6-year scale; record figures in docs/benchmarks.md and ``results``."""
    previous = os.environ.get("PULSO_PUBLISHED")
    try:
        with tempfile.TemporaryDirectory(prefix="pulso-bench-app-") as tmp:
            root = Path(tmp) / "published"
            t0 = time.perf_counter()
            synthesize(root, days=days)
            publish_s = round(time.perf_counter() - t0, 1)
            from pipelines.lib.published import PublishedReader

            con = PublishedReader(root).snapshot()
            count = lambda t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: E731, S608
            figures: dict[str, Any] = {
                "days": days, "kpi_rows": count("kpi_daily"), "latency_rows": count("latency_daily"),
                "payment_rows": count("payments_daily"), "publish_s": publish_s,
                "measured_at": datetime.now(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M UTC"),
                "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
            }
            figures.update(measure_apptest(root))
            if browser:
                runs = [measure_browser(root) for _ in range(3)]
                runs = [r for r in runs if r]
                if runs:
                    figures["browser_runs"] = len(runs)
                    for key in ("browser_first_render_s", "browser_warm_render_s"):
                        figures[key] = round(statistics.median(r[key] for r in runs), 2)
    finally:
        if previous is None:
            os.environ.pop("PULSO_PUBLISHED", None)
        else:
            os.environ["PULSO_PUBLISHED"] = previous
    write_section(figures)
    if results is not None:
        results[SECTION.lower()] = figures
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Executive view: time to first full render at m6-year scale")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    figures = run(days=args.days, browser=not args.no_browser)
    print(", ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
