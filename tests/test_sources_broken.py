"""The broken-input corpus through the real loaders (pipelines.lib.ingest) and the quality checks.

For each broken file: the error or quarantine reason names the file and the problem, the good rows of
the same load still land, and nothing already in the warehouse changes.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib import warehouse
from pipelines.lib.ingest import billing as ingest_billing
from pipelines.lib.ingest import events as ingest_events
from pipelines.lib.ingest import fx as ingest_fx
from pipelines.lib.ingest import metrics as ingest_metrics
from pipelines.lib.quality.runner import run_suite
from pipelines.lib.quality.suites import suite_for
from pipelines.lib.storage import LocalStorage, SourceError
from tests.fixtures.sources import broken

KEY = b"k" * 32  # pseudonym key for tests only
DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    yield c
    c.close()


def _snapshot(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


# -- events ---------------------------------------------------------------------------------------------


def _events_dir(root: Path, day: date) -> Path:
    folder = root / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("case", broken.event_cases(), ids=lambda c: c.name)
def test_broken_event_file_quarantined_good_rows_land_history_unchanged(tmp_path: Path, con, case) -> None:
    root = tmp_path / "events"
    (_events_dir(root, DAY1) / "part-0000.jsonl.gz").write_bytes(broken.jsonl_gz([broken.event("old-1")]))
    storage = LocalStorage(root)
    ingest_events.load_events_day(con, storage, DAY1, KEY)
    before = _snapshot(con, "SELECT * EXCLUDE (_loaded_at) FROM raw.events WHERE arrival_day = DATE '2026-11-01'")

    folder = _events_dir(root, DAY2)
    (folder / "part-0000.jsonl.gz").write_bytes(broken.jsonl_gz(broken.GOOD_EVENTS))
    (folder / "part-0001.jsonl.gz").write_bytes(case.data)
    result = ingest_events.load_events_day(con, storage, DAY2, KEY)

    assert result.reconciled
    assert result.rows_quarantined == case.quarantined
    landed = con.execute("SELECT count(*) FROM raw.events WHERE arrival_day = DATE '2026-11-02'").fetchone()[0]
    assert landed == len(broken.GOOD_EVENTS) + case.good_rows
    reasons = con.execute("SELECT source_file, reason FROM quarantine.rows WHERE source = 'events'").fetchall()
    if case.reason:
        assert any(f.endswith("date=2026-11-02/part-0001.jsonl.gz") and case.reason in r for f, r in reasons), reasons
    # the earlier day is untouched
    assert (
        _snapshot(con, "SELECT * EXCLUDE (_loaded_at) FROM raw.events WHERE arrival_day = DATE '2026-11-01'") == before
    )


def test_empty_event_file_is_named_in_a_warning(tmp_path: Path, con) -> None:
    import gzip

    folder = _events_dir(tmp_path, DAY2)
    (folder / "part-0000.jsonl.gz").write_bytes(b"")
    (folder / "part-0001.jsonl.gz").write_bytes(gzip.compress(b""))  # a valid gzip of nothing
    (folder / "part-0002.jsonl.gz").write_bytes(broken.jsonl_gz(broken.GOOD_EVENTS))
    result = ingest_events.load_events_day(con, LocalStorage(tmp_path), DAY2, KEY)
    assert [w.rsplit("/", 1)[-1] for w in result.warnings] == [
        "part-0000.jsonl.gz: empty file (0 bytes), no events loaded",
        "part-0001.jsonl.gz: empty file (no event lines), no events loaded",
    ]
    # 0 rows each, counted and reconciled; the good file of the day lands
    assert result.reconciled and result.files == 3
    assert (result.rows_read, result.rows_quarantined) == (len(broken.GOOD_EVENTS), 0)
    landed = con.execute("SELECT count(*) FROM raw.events WHERE arrival_day = DATE '2026-11-02'").fetchone()[0]
    assert landed == len(broken.GOOD_EVENTS)


def test_unknown_currency_and_status_land_but_fail_the_payments_check(tmp_path: Path, con) -> None:
    folder = _events_dir(tmp_path, DAY2)
    (folder / "part-0000.jsonl.gz").write_bytes(
        broken.jsonl_gz(
            [
                *broken.GOOD_EVENTS,
                broken.payment_event("x-1", "p-9", currency="EUR"),
                broken.payment_event("x-2", "p-10", status="approvedd"),
            ]
        )
    )
    ingest_events.load_events_day(con, LocalStorage(tmp_path), DAY2, KEY)
    outcome = run_suite(con, suite_for("raw_events_payments_quality"), DAY2)
    assert outcome.rows_checked == 3
    assert outcome.failures == [
        "raw.payment_updates: in_set status: 1 of 3 rows fail (e.g. approvedd) — known MercadoPago statuses",
        "raw.payment_updates: in_set currency_id: 1 of 3 rows fail (e.g. EUR) — known currencies",
    ]
    events = run_suite(con, suite_for("raw_events"), DAY2)
    assert [f for f in events.failures if "stale" not in f] == []  # the events themselves are fine


# -- CUR 2.0 ----------------------------------------------------------------------------------------------


def _load_october(root: Path, con) -> list[tuple]:
    broken.write_cur2_delivery(
        root,
        "2026-10",
        "oct-1",
        {"00001": broken.cur2_parquet([broken.cur2_row(i, day="2026-10-15") for i in range(3)])},
    )
    ingest_billing.load_cur2(con, LocalStorage(root))
    return _snapshot(con, "SELECT * EXCLUDE (_loaded_at) FROM raw.billing_line_items WHERE billing_period = '2026-10'")


@pytest.mark.parametrize(
    ("name", "bad_file", "reason", "bad_rows"),
    [
        ("truncated_parquet", lambda: broken.truncated(broken.cur2_parquet([broken.cur2_row(9)])), "unreadable", 1),
        (
            "missing_columns",
            lambda: broken.cur2_parquet([broken.cur2_row(9)], drop=("line_item_unblended_cost",)),
            "missing line_item_unblended_cost",
            1,
        ),
        (
            "non_numeric_cost",
            lambda: broken.cur2_parquet([broken.cur2_row(9, cost="abc"), broken.cur2_row(10)], money_as_text=True),
            "line_item_unblended_cost missing or not a number",
            1,
        ),
        (
            "unknown_currency",
            lambda: broken.cur2_parquet([broken.cur2_row(9, currency="XYZ"), broken.cur2_row(10)]),
            "line_item_currency_code XYZ is not a known currency",
            1,
        ),
    ],
)
def test_broken_cur2_file_quarantined_rest_of_delivery_lands(
    tmp_path: Path, con, name, bad_file, reason, bad_rows
) -> None:
    october = _load_october(tmp_path, con)
    good = broken.cur2_parquet([broken.cur2_row(i) for i in range(4)])
    broken.write_cur2_delivery(tmp_path, "2026-11", "nov-1", {"00001": good, "00002": bad_file()})
    result = ingest_billing.load_cur2(con, LocalStorage(tmp_path))
    assert result.reconciled and result.rows_quarantined == bad_rows
    november = con.execute("SELECT count(*) FROM raw.billing_line_items WHERE billing_period = '2026-11'").fetchone()[0]
    assert november == 4 + (1 if name in ("non_numeric_cost", "unknown_currency") else 0)
    ((file, why),) = con.execute("SELECT source_file, reason FROM quarantine.rows WHERE source = 'billing'").fetchall()
    assert file.endswith("pulso-cur-nov-1-00002.snappy.parquet") and reason in why, why
    assert (
        _snapshot(con, "SELECT * EXCLUDE (_loaded_at) FROM raw.billing_line_items WHERE billing_period = '2026-10'")
        == october
    )


def test_zero_byte_manifest_is_a_clear_error_and_nothing_changes(tmp_path: Path, con) -> None:
    october = _load_october(tmp_path, con)
    broken.write_cur2_delivery(
        tmp_path, "2026-11", "nov-1", {"00001": broken.cur2_parquet([broken.cur2_row(1)])}, manifest=b""
    )
    with pytest.raises(SourceError, match=r"BILLING_PERIOD=2026-11/pulso-cur-Manifest.json: not a CUR 2.0 manifest"):
        ingest_billing.load_cur2(con, LocalStorage(tmp_path))
    assert _snapshot(con, "SELECT * EXCLUDE (_loaded_at) FROM raw.billing_line_items") == october


def test_negative_usage_cost_lands_and_passes_the_billing_check(tmp_path: Path, con) -> None:
    """A negative usage line (an AWS correction) is a bill: it loads and nets out, and no sign rule fails it."""
    broken.write_cur2_delivery(
        tmp_path,
        "2026-11",
        "nov-1",
        {"00001": broken.cur2_parquet([broken.cur2_row(1), broken.cur2_row(2, cost="-4.25")])},
    )
    ingest_billing.load_cur2(con, LocalStorage(tmp_path))
    assert con.execute("SELECT sum(unblended_cost) FROM raw.billing_line_items").fetchall() == [(Decimal("-2.75"),)]
    assert run_suite(con, suite_for("raw_billing")).failures == []


# -- FX ---------------------------------------------------------------------------------------------------


def test_bad_fx_rows_quarantined_good_rows_land(tmp_path: Path, con) -> None:
    lines = [broken.FX_GOOD_LINES[0], *broken.FX_BAD_LINES, broken.FX_GOOD_LINES[1]]
    (tmp_path / "ars_usd.csv").write_text("date,ars_per_usd\n" + "\n".join(lines) + "\n")
    result = ingest_fx.load_fx(con, LocalStorage(tmp_path))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (5, 2, 3)
    assert con.execute("SELECT count(*) FROM raw.fx_rates").fetchone()[0] == 2
    reasons = dict(con.execute("SELECT \"row\", reason FROM quarantine.rows WHERE source = 'fx'").fetchall())
    for row, why in broken.FX_BAD_LINES.items():
        assert why in reasons[row]
    assert run_suite(con, suite_for("raw_fx")).failures == []


def test_fx_missing_column_names_the_file(tmp_path: Path, con) -> None:
    (tmp_path / "ars_usd.csv").write_text("date,rate\n2026-11-02,1000\n")
    with pytest.raises(ValueError, match=r"ars_usd.csv: expected header 'date,ars_per_usd'"):
        ingest_fx.load_fx(con, LocalStorage(tmp_path))


# -- metrics ------------------------------------------------------------------------------------------------


def test_truncated_metric_file_quarantined_other_metrics_land(tmp_path: Path, con) -> None:
    import polars as pl

    from pipelines.lib.sources.prometheus import SAMPLE_SCHEMA

    start, _ = warehouse.day_bounds_utc(DAY2)
    frame = (
        pl.DataFrame({"ts": [start], "niche": ["barber"], "country": ["AR"], "region": ["cordoba"], "value": [1.0]})
        .with_columns([pl.lit(None, pl.String).alias(c) for c in ("service", "route", "code", "le", "group")])
        .select(list(SAMPLE_SCHEMA))
        .cast(SAMPLE_SCHEMA)
    )
    for metric in ("probe_success", "active_sessions"):
        folder = tmp_path / metric / f"date={DAY2.isoformat()}"
        folder.mkdir(parents=True)
        frame.write_parquet(folder / "part-0.parquet")
    bad = tmp_path / "active_sessions" / f"date={DAY2.isoformat()}" / "part-0.parquet"
    bad.write_bytes(broken.truncated(bad.read_bytes()))
    result = ingest_metrics.load_metrics_day(con, ingest_metrics.FileMetricsReader(LocalStorage(tmp_path)), DAY2)
    assert result.reconciled
    ((file, why),) = con.execute("SELECT source_file, reason FROM quarantine.rows WHERE source = 'metrics'").fetchall()
    assert file.endswith("active_sessions/date=2026-11-02/part-0.parquet") and "unreadable Parquet" in why
    assert con.execute("SELECT metric, value FROM staging.metric_gauges_minutely").fetchall() == [
        ("probe_success", 1.0)
    ]


def test_metric_file_with_wrong_value_type_is_quarantined_by_name(tmp_path: Path, con) -> None:
    import polars as pl

    start, _ = warehouse.day_bounds_utc(DAY2)
    folder = tmp_path / "probe_success" / f"date={DAY2.isoformat()}"
    folder.mkdir(parents=True)
    pl.DataFrame({"ts": [start], "niche": ["barber"], "value": ["abc"]}).write_parquet(folder / "part-0.parquet")
    good = tmp_path / "active_sessions" / f"date={DAY2.isoformat()}"
    good.mkdir(parents=True)
    pl.DataFrame(
        {"ts": [start, start.replace(minute=1)], "niche": ["barber", "barber"], "value": [3.0, 4.0]}
    ).write_parquet(good / "part-0.parquet")
    result = ingest_metrics.load_metrics_day(con, ingest_metrics.FileMetricsReader(LocalStorage(tmp_path)), DAY2)
    assert result.reconciled
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (3, 2, 1)
    ((file, why),) = con.execute("SELECT source_file, reason FROM quarantine.rows WHERE source = 'metrics'").fetchall()
    assert file.endswith("probe_success/date=2026-11-02/part-0.parquet") and "column value is String" in why
    assert file in result.warnings[0]
    # the other file of the day still loads
    assert con.execute("SELECT metric, sum(value) FROM staging.metric_gauges_minutely GROUP BY ALL").fetchall() == [
        ("active_sessions", 7.0)
    ]
