"""Great Expectations suites: pass on good marts/raw tables, fail with named reasons on corrupted ones."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from pipelines.lib.catalog import ALL, load_catalog
from pipelines.lib.quality.runner import run_suite
from pipelines.lib.quality.suites import all_suites, suite_for
from pipelines.lib.sources.billing_formats import parse_cur_legacy, parse_focus

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
DAY = date(2026, 11, 20)


def _kpi_rows(day: date) -> list[tuple]:
    """One valid row per catalog KPI at the total grain (value = target or 1, status from the catalog)."""
    catalog = load_catalog()
    rows = []
    for kpi in catalog.kpis:
        target = catalog.target(kpi.id, day)
        value = 0.5 if kpi.unit == "ratio" else (target if target is not None else 1.0)
        rows.append((day, kpi.id, ALL, ALL, ALL, value, kpi.unit, target, catalog.status(kpi.id, value, target)))
    return rows


def _kpi_table(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    con.execute(
        "CREATE OR REPLACE TABLE marts.kpi_daily (day DATE, kpi VARCHAR, niche VARCHAR, country VARCHAR, "
        "region VARCHAR, value DOUBLE, unit VARCHAR, target DOUBLE, status VARCHAR)"
    )
    con.executemany("INSERT INTO marts.kpi_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def test_every_suite_lists_catalog_values() -> None:
    suites = {s.name: s for s in all_suites()}
    assert {s.asset for s in all_suites()} == {"raw_metrics", "raw_billing", "raw_events", "raw_fx", "kpi_daily"}
    statuses = next(
        e for e in suites["raw_events_payments_quality"].expectations if e.kind == "in_set" and e.column == "status"
    ).args["values"]
    assert statuses == load_catalog().section("payments")["statuses"]
    kpis = next(e for e in suites["kpi_daily_quality"].expectations if e.kind == "in_set" and e.column == "kpi").args[
        "values"
    ]
    assert len(kpis) == 21


def test_good_kpi_daily_passes(con) -> None:
    _kpi_table(con, _kpi_rows(DAY))
    outcome = run_suite(con, suite_for("kpi_daily"), DAY)
    assert outcome.failures == []
    assert outcome.rows_checked == 21 and outcome.expectations_run == 21


def _corrupt(rows: list[tuple], kpi: str, **changes) -> list[tuple]:
    fields = ("day", "kpi", "niche", "country", "region", "value", "unit", "target", "status")
    out = []
    for row in rows:
        if row[1] == kpi:
            as_dict = dict(zip(fields, row, strict=True)) | changes
            row = tuple(as_dict[f] for f in fields)
        out.append(row)
    return out


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: _corrupt(r, "cache_hit_ratio", value=1.5, status="ok"), "true ratio_in_0_1: 1 of 21 rows fail"),
        (lambda r: _corrupt(r, "latency_p95_ms", value=math.nan), "true value_is_not_nan_or_inf: 1 of 21 rows fail"),
        (lambda r: _corrupt(r, "bookings", value=-3.0), "true count_non_negative: 1 of 21 rows fail"),
        (lambda r: _corrupt(r, "bookings", unit="usd"), "true unit_matches_catalog: 1 of 21 rows fail"),
        (lambda r: _corrupt(r, "bookings", status="no_data"), "true no_data_iff_null: 1 of 21 rows fail"),
        (lambda r: _corrupt(r, "bookings", status="great"), "in_set status: 1 of 21 rows fail (e.g. great)"),
        (
            lambda r: [*r, (DAY, "bookings", "dentistt", "AR", ALL, 1.0, "count", None, "ok")],
            "in_set niche: 1 of 22 rows fail (e.g. dentistt)",
        ),
        (lambda r: [*r, r[0]], "unique (day, kpi, niche, country, region): 2 of 22 rows fail"),
        (
            lambda r: [
                *(x for x in r if x[1] != "arr_usd"),
                (DAY, "arr_usd", "barber", ALL, ALL, 1.0, "usd", None, "ok"),
            ],
            "true every_kpi_at_total_grain: 21 of 21 rows fail",
        ),  # arr_usd only per niche, not at the total
    ],
)
def test_corrupted_kpi_daily_fails_with_the_reason(con, mutate, expected: str) -> None:
    _kpi_table(con, mutate(_kpi_rows(DAY)))
    outcome = run_suite(con, suite_for("kpi_daily"), DAY)
    assert not outcome.passed
    assert [f for f in outcome.failures if expected in f] != [], outcome.failures
    assert len(outcome.failures) == 1, outcome.failures


def test_schema_drift_and_staleness_fail(con) -> None:
    _kpi_table(con, _kpi_rows(DAY))
    con.execute("ALTER TABLE marts.kpi_daily ALTER value TYPE VARCHAR")
    outcome = run_suite(con, suite_for("kpi_daily"), date(2026, 11, 25))
    assert "marts.kpi_daily: column value is VARCHAR, expected DOUBLE" in outcome.failures
    assert "marts.kpi_daily: stale: newest day is 2026-11-20, more than 2 days before 2026-11-25" in outcome.failures


def test_missing_table_fails(con) -> None:
    outcome = run_suite(con, suite_for("raw_fx"))
    assert outcome.failures == ["raw.fx_rates: table does not exist (asset raw_fx not materialized?)"]


# -- raw billing ---------------------------------------------------------------------------------------


def _billing_table(con: duckdb.DuckDBPyConnection, frames, audit: tuple[int, int, int]) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE SCHEMA IF NOT EXISTS ops")
    import polars as pl

    items = pl.concat(frames)  # noqa: F841 - read by DuckDB's replacement scan below
    con.execute("CREATE OR REPLACE TABLE raw.billing_line_items AS SELECT * FROM items")
    con.execute(
        "CREATE OR REPLACE TABLE ops.loads (source VARCHAR, scope VARCHAR, rows_read BIGINT, "
        "rows_loaded BIGINT, rows_quarantined BIGINT, files BIGINT, warnings VARCHAR[], loaded_at TIMESTAMPTZ)"
    )
    con.execute("INSERT INTO ops.loads VALUES ('billing', '2023-11', ?, ?, ?, 1, [], ?)", [*audit, datetime.now(UTC)])


def test_raw_billing_passes_then_fails_on_duplicates_currency_and_reconciliation(con) -> None:
    legacy = parse_cur_legacy((FIXTURES / "aws-cur-legacy-sample.csv").read_bytes(), "cur.csv").line_items
    _billing_table(con, [legacy], (1281, 1281, 0))
    good = run_suite(con, suite_for("raw_billing"))
    assert good.failures == [] and good.rows_checked == 1281
    assert good.audit == {"loads": 1, "rows_read": 1281, "rows_loaded": 1281, "rows_quarantined": 0}

    focus = parse_focus((FIXTURES / "focus-1.2-multi-provider.csv").read_bytes(), "focus.csv").line_items
    import polars as pl

    bad = pl.concat(
        [
            legacy.head(2),  # the same two line items delivered twice
            # a positive credit (a credit reversed) is a bill too: no sign rule
            focus.filter(pl.col("charge_category") == "credit").with_columns(
                unblended_cost=pl.lit(5).cast(pl.Decimal(18, 6))
            ),
            focus.head(1).with_columns(currency=pl.lit("EUR")),
        ]
    )
    _billing_table(con, [legacy, bad], (1286, 1284, 1))
    failures = run_suite(con, suite_for("raw_billing")).failures
    first = min(legacy["line_item_id"].head(2))
    assert failures == [
        "raw.billing_line_items: unique (source_format, billing_period, line_item_id): 4 of 1285 rows fail"
        f" (e.g. {first} in cur.csv) — a line item counted twice doubles its cost",
        "raw.billing_line_items: in_set currency: 1 of 1285 rows fail (e.g. EUR) — unknown currency",
        "raw.billing_line_items: true in_reporting_currency: 1 of 1285 rows fail"
        " — infra cost KPIs are in USD; other currencies need FX",
        "ops.loads: 1 load(s) of billing do not reconcile (read 1286 vs loaded 1284 + quarantined 1)",
    ]


# -- as Dagster asset checks ---------------------------------------------------------------------------


def test_asset_check_blocks_a_corrupted_kpi_daily(tmp_path: Path) -> None:
    from pipelines.defs.quality.checks import build_quality_check

    db = tmp_path / "warehouse.duckdb"
    rows = _kpi_rows(DAY)

    @dg.asset(name="kpi_daily")
    def kpi_daily(duckdb: DuckDBResource) -> None:
        with duckdb.get_connection() as c:
            _kpi_table(c, rows)

    @dg.asset(deps=[kpi_daily])
    def downstream() -> None:
        pass

    check = build_quality_check(suite_for("kpi_daily"))
    resources = {"duckdb": DuckDBResource(database=str(db))}
    result = dg.materialize([kpi_daily, downstream, check], resources=resources, raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed  # no data for "today": the suite checks the newest day, but it is stale
    assert "stale" in evaluation.metadata["failures"].value

    rows[:] = _corrupt(_kpi_rows(DAY), "availability_ratio", value=1.2)
    result = dg.materialize(
        [kpi_daily, downstream, check], resources=resources, raise_on_error=False, selection=[kpi_daily, downstream]
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "true ratio_in_0_1: 1 of 21 rows fail" in evaluation.metadata["failures"].value
    # blocking: the asset downstream of the failed check did not run
    assert [e.asset_key.path[-1] for e in result.get_asset_materialization_events()] == ["kpi_daily"]


# -- on a real warehouse built from the simulator --------------------------------------------------------


@pytest.mark.slow
def test_suites_pass_on_a_simulated_warehouse_and_catch_a_corrupted_mart(tmp_path: Path) -> None:
    from pipelines.lib import simulator, warehouse
    from pipelines.lib.ingest.metrics import FileMetricsReader
    from pipelines.lib.kpis import pipeline
    from pipelines.lib.storage import LocalStorage

    src = tmp_path / "src"
    result = simulator.simulate("tiny", src, end=date(2026, 11, 20))
    days = [result.start, date(2026, 11, 19), result.end]
    con = warehouse.connect(tmp_path / "w.duckdb")
    pipeline.refresh(
        con,
        pipeline.SourceSet(
            FileMetricsReader(LocalStorage(src / "metrics")),
            LocalStorage(src / "billing"),
            LocalStorage(src / "events"),
            LocalStorage(src / "fx"),
        ),
        days,
        key=b"k" * 32,
    )
    for suite in all_suites():
        outcome = run_suite(con, suite, result.end if suite.day_column else None)
        assert outcome.failures == [] and outcome.rows_checked > 0, (suite.name, outcome.failures)

    # corrupt the real mart: a cache hit ratio above 1 and a NaN latency on the last day
    con.execute(
        "UPDATE marts.kpi_daily SET value = 1.25 WHERE kpi = 'cache_hit_ratio' AND niche = 'all' "
        "AND country = 'all' AND region = 'all' AND day = ?",
        [result.end],
    )
    con.execute(
        "UPDATE marts.kpi_daily SET value = 'NaN'::DOUBLE WHERE kpi = 'latency_p95_ms' AND niche = 'barber' "
        "AND country = 'all' AND region = 'all' AND day = ?",
        [result.end],
    )
    outcome = run_suite(con, suite_for("kpi_daily"), result.end)
    n = outcome.rows_checked
    assert outcome.failures == [
        f"marts.kpi_daily: true value_is_not_nan_or_inf: 1 of {n} rows fail — no NaN/Inf ever reaches a person",
        f"marts.kpi_daily: true ratio_in_0_1: 1 of {n} rows fail",
    ]
