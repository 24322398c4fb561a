"""The executive view over a store the real pipeline published (simulator ``tiny`` → Dagster → published
Parquet), not over the hand-made fixture: the ARS/USD switch works on a real build because ``fx_daily``
is published, and the period's cache hit ratio is the ratio of the published counts.

Expected numbers are computed here from the sources (the FX CSV, each day's quote carried over days
without one) and the warehouse's cost mart and raw cache counters, independently of the app's queries.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource
from streamlit.testing.v1 import AppTest

from app.auth import Identity
from app.formatting import kpi_value
from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from pipelines.defs.warehouse.assets import WAREHOUSE_ASSETS
from pipelines.lib.published import read_manifest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("warehouse_pipeline")]
REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app" / "streamlit_app.py")
DAYS = [date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("app-pipeline")
    sources = root / "sources"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.simulate",
            "--profile",
            "tiny",
            "--out",
            str(sources),
            "--end",
            DAYS[-1].isoformat(),
            "--quiet",
        ],
        check=True,
        cwd=REPO,
    )
    saved = {k: os.environ.get(k) for k in ("PULSO_PUBLISHED", "PULSO_PSEUDONYM_KEY")}
    os.environ["PULSO_PUBLISHED"] = str(root / "published")
    os.environ["PULSO_PSEUDONYM_KEY"] = "app-pipeline-test-key"
    try:
        result = dg.materialize(
            WAREHOUSE_ASSETS,
            instance=dg.DagsterInstance.ephemeral(),
            resources={
                "duckdb": DuckDBResource(database=str(root / "warehouse.duckdb")),
                "metrics_source": MetricsSourceResource(location=str(sources / "metrics")),
                "billing_source": SourceResource(source="billing", location=str(sources / "billing")),
                "events_source": SourceResource(source="events", location=str(sources / "events")),
                "fx_source": SourceResource(source="fx", location=str(sources / "fx")),
            },
            tags={
                "dagster/asset_partition_range_start": DAYS[0].isoformat(),
                "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
            },
        )
        assert result.success
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root


def quotes_in_force(fx_csv: Path) -> dict[date, Decimal]:
    """ARS per USD for each test day, read from the source CSV: the day's quote or the last earlier one."""
    with fx_csv.open(newline="") as fh:
        quotes = {date.fromisoformat(r["date"]): Decimal(r["ars_per_usd"]) for r in csv.DictReader(fh)}
    return {d: quotes[max(q for q in quotes if q <= d)] for d in DAYS}


def warehouse(root: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def open_overview(root: Path, monkeypatch: pytest.MonkeyPatch, currency: str) -> AppTest:
    monkeypatch.setenv("PULSO_PUBLISHED", str(root / "published"))
    monkeypatch.setenv("PULSO_APP_ACCESS_LOG", str(root / "access.log"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["pulso_identity"] = Identity("ana", ("clinical",))
    at.run()
    at.radio(key="lang").set_value("en").run()
    at.radio(key="currency").set_value(currency)
    at.date_input(key="period_en").set_value((DAYS[0], DAYS[-1]))
    at.run()
    assert not at.exception, at.exception
    return at


def test_fx_daily_is_published_by_the_pipeline(built: Path) -> None:
    manifest = read_manifest(built / "published")
    assert manifest.days("fx_daily") == DAYS and manifest.days("cache_daily") == DAYS
    assert ["ars_per_usd", "DECIMAL(18,6)"] in manifest.schema("fx_daily")


def test_overview_in_ars_on_a_pipeline_build(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rates = quotes_in_force(built / "sources" / "fx" / "ars_usd.csv")
    cost_usd = dict(warehouse(built, "SELECT day, sum(cost_usd) FROM marts.cost_daily GROUP BY day"))
    assert set(cost_usd) == set(DAYS)
    # each day's USD cost at that day's rate, summed; exact decimals
    expected_ars = sum((cost_usd[d] * rates[d] for d in DAYS), Decimal(0))
    last_day_ars = cost_usd[DAYS[-1]] * rates[DAYS[-1]]

    at = open_overview(built, monkeypatch, "ARS")
    assert not at.radio(key="currency").disabled  # the switch is live on a real build
    cards = {m.label: m for m in at.metric}
    assert f"ARS {expected_ars:,.2f}." in cards["Infrastructure cost"].proto.help
    targets = {row[0]: row for row in at.table[0].value.to_numpy().tolist()}
    assert targets["Infrastructure cost"][1] == f"ARS {last_day_ars:,.2f}"

    usd = {m.label: m for m in open_overview(built, monkeypatch, "USD").metric}
    assert f"US${sum(cost_usd.values()):,.2f}." in usd["Infrastructure cost"].proto.help


def test_period_cache_hit_ratio_is_summed_hits_over_summed_requests(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ((hits, requests),) = warehouse(
        built,
        "SELECT sum(increase) FILTER (WHERE metric = 'cache_hits_total'), "
        "sum(increase) FILTER (WHERE metric = 'cache_requests_total') FROM staging.metric_counters_hourly "
        "WHERE day BETWEEN ? AND ?",
        [DAYS[0], DAYS[-1]],
    )
    daily = [
        v
        for (v,) in warehouse(
            built,
            "SELECT value FROM marts.kpi_daily WHERE kpi = 'cache_hit_ratio' AND niche = 'all' "
            "AND country = 'all' AND region = 'all' ORDER BY day",
        )
    ]
    # the tiny profile degrades the cache on its first day, so the last day's ratio is not the period's
    assert kpi_value(daily[-1], "ratio", "en", "USD", True) != kpi_value(hits / requests, "ratio", "en", "USD", True)
    at = open_overview(built, monkeypatch, "USD")
    assert {m.label: m.value for m in at.metric}["Cache hit rate"] == kpi_value(
        hits / requests, "ratio", "en", "USD", True
    )
