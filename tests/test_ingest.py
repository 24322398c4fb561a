"""Loaders on small hand-made source files in the contract's formats (docs/data-contract.md section 1).

The :class:`Sources` builder here is also used by tests/test_kpis.py.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.lib import warehouse
from pipelines.lib.catalog import load_catalog
from pipelines.lib.ingest.billing import build_cost_items_daily, load_cur2, spread_micros
from pipelines.lib.ingest.events import load_events_day, user_key
from pipelines.lib.ingest.fx import build_fx_daily, load_fx
from pipelines.lib.ingest.metrics import FileMetricsReader, load_metrics_day
from pipelines.lib.sources.prometheus import SAMPLE_SCHEMA
from pipelines.lib.storage import LocalStorage

KEY = b"test-pseudonym-key"
AR = "America/Argentina/Buenos_Aires"


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


class Sources:
    """Writes source files in the contract's layout under ``root`` (metrics, billing, events, fx)."""

    def __init__(self, root: Path):
        self.root = root

    # metrics -------------------------------------------------------------------------------------
    def metric(self, metric: str, day: date, rows: list[dict[str, Any]]) -> Path:
        path = self.root / "metrics" / metric / f"date={day.isoformat()}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pl.DataFrame({c: [r.get(c) for r in rows] for c in SAMPLE_SCHEMA}, schema=SAMPLE_SCHEMA)
        frame.write_parquet(path)
        return path

    def minutes(self, day: date) -> list[datetime]:
        start, _ = warehouse.day_bounds_utc(day)
        return [start + timedelta(minutes=i) for i in range(1440)]

    def steady_day(
        self,
        day: date,
        series: list[dict[str, Any]],
        per_minute: dict[str, float],
        buckets: dict[str, float],
        start_value: float = 0.0,
        sessions: float = 10.0,
        probe_fail: set[int] | frozenset[int] = frozenset(),
        codes: dict[str, float] | None = None,
        cache: tuple[float, float] = (9.0, 10.0),
        scaling: dict[int, tuple[float, float]] | None = None,
    ) -> None:
        """Counters growing by fixed amounts each minute for each label set in ``series``.

        ``per_minute[i]`` requests for series i; ``buckets`` = cumulative share per ``le``; ``codes`` =
        share per status code; ``scaling`` = minute → (desired, in service) from that minute on. Counters start at ``start_value + k`` so the day's minute 0 has an
        increase from the previous day's last sample when that day exists.
        """
        mins = self.minutes(day)
        offset = (day - date(2026, 1, 1)).days * 1440
        codes = codes or {"200": 1.0}
        hist, reqs, hits, creqs, sess, probes = [], [], [], [], [], []
        for s in series:
            rate = per_minute[s["niche"]]
            for i, ts in enumerate(mins):
                k = offset + i + 1
                for le, share in buckets.items():
                    hist.append({**s, "ts": ts, "le": le, "value": start_value + rate * share * k})
                for code, share in codes.items():
                    reqs.append({**s, "ts": ts, "code": code, "value": start_value + rate * share * k})
                lab = {"niche": s["niche"], "country": s["country"], "region": s["region"]}
                hits.append({**lab, "ts": ts, "value": cache[0] * k})
                creqs.append({**lab, "ts": ts, "value": cache[1] * k})
                sess.append({**lab, "ts": ts, "value": sessions})
                probes.append({**lab, "ts": ts, "value": 0.0 if i in probe_fail else 1.0})
        self.metric("http_request_duration_seconds_bucket", day, hist)
        self.metric("http_requests_total", day, reqs)
        self.metric("cache_hits_total", day, _dedupe(hits))
        self.metric("cache_requests_total", day, _dedupe(creqs))
        self.metric("active_sessions", day, _dedupe(sess))
        self.metric("probe_success", day, _dedupe(probes))
        scale, state = [], (3.0, 3.0)
        for i, ts in enumerate(mins):
            state = (scaling or {}).get(i, state)
            scale.append({"ts": ts, "group": "web", "country": "AR", "desired": state[0], "in": state[1]})
        self.metric(
            "autoscaling_group_desired_capacity",
            day,
            [{"ts": r["ts"], "group": r["group"], "country": r["country"], "value": r["desired"]} for r in scale],
        )
        self.metric(
            "autoscaling_group_in_service_instances",
            day,
            [{"ts": r["ts"], "group": r["group"], "country": r["country"], "value": r["in"]} for r in scale],
        )
        self.metric("db_connections_in_use", day, [{"ts": ts, "value": 50.0 + (i % 100)} for i, ts in enumerate(mins)])

    # events --------------------------------------------------------------------------------------
    def events(self, arrival_day: date, events: list[dict[str, Any] | str], part: int = 0) -> Path:
        path = self.root / "events" / f"date={arrival_day.isoformat()}" / f"part-{part:04d}.jsonl.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    # billing -------------------------------------------------------------------------------------
    def cur(self, period: str, execution_id: str, rows: list[dict[str, Any]], export: str = "pulso-cur") -> None:
        base = self.root / "billing" / "cur" / export
        data_key = f"data/BILLING_PERIOD={period}/{export}-{execution_id}-00001.snappy.parquet"
        path = base / data_key
        path.parent.mkdir(parents=True, exist_ok=True)
        tags_type = pa.map_(pa.string(), pa.string())
        cols: dict[str, pa.Array] = {}
        names = [
            "identity_line_item_id",
            "identity_time_interval",
            "bill_billing_period_start_date",
            "line_item_usage_start_date",
            "line_item_usage_end_date",
            "line_item_line_item_type",
            "line_item_product_code",
            "line_item_usage_type",
            "line_item_operation",
            "line_item_resource_id",
            "line_item_currency_code",
        ]
        for n in names:
            cols[n] = pa.array([r.get(n) for r in rows], pa.string())
        cols["line_item_usage_amount"] = pa.array([1.0 for _ in rows], pa.float64())
        for n in ("line_item_unblended_cost", "savings_plan_savings_plan_effective_cost", "reservation_effective_cost"):
            cols[n] = pa.array([None if r.get(n) is None else Decimal(str(r[n])) for r in rows], pa.decimal128(18, 6))
        cols["resource_tags"] = pa.array([list((r.get("tags") or {}).items()) for r in rows], tags_type)
        pq.write_table(pa.table(cols), path)
        manifest = base / "metadata" / f"BILLING_PERIOD={period}" / f"{export}-Manifest.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(
            json.dumps(
                {
                    "executionId": execution_id,
                    "billingPeriod": {"start": f"{period}-01"},
                    "dataFiles": [f"s3://bucket/cur/{export}/{data_key}"],
                }
            )
        )

    # fx ------------------------------------------------------------------------------------------
    def fx(self, rows: list[tuple[str, str]]) -> None:
        path = self.root / "fx" / "ars_usd.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("date,ars_per_usd\n" + "".join(f"{d},{r}\n" for d, r in rows))


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for r in rows:
        k = tuple(sorted((a, str(b)) for a, b in r.items()))
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def event(
    event_id: str,
    kind: str,
    occurred_at: str,
    niche: str = "barber",
    region: str = "buenos_aires",
    user: str = "u_1",
    **payload: Any,
) -> dict[str, Any]:
    """An event envelope with personal data in it (the loader must drop it)."""
    return {
        "event_id": event_id,
        "type": kind,
        "occurred_at": occurred_at,
        "niche": niche,
        "country": "AR",
        "region": region,
        "user": {
            "id": user,
            "name": "Juana Pérez",
            "email": "juana@example.com",
            "phone": "+54 11 5555 0000",
            "dni": "30123456",
        },
        "payload": payload,
    }


def payment(
    event_id: str,
    pid: str,
    status: str,
    created: str,
    updated: str,
    amount: str = "1000.00",
    provider: str = "mercadopago",
    niche: str = "barber",
    refunded: str = "0",
    **kw: Any,
) -> dict[str, Any]:
    return event(
        event_id,
        "payment.updated",
        updated,
        niche=niche,
        provider=provider,
        payment={
            "id": pid,
            "status": status,
            "status_detail": kw.get("detail", "accredited"),
            "transaction_amount": json.loads(amount),
            "transaction_amount_refunded": json.loads(refunded),
            "currency_id": "ARS",
            "payment_method_id": "visa",
            "payment_type_id": "credit_card",
            "date_created": created,
            "date_approved": None,
            "date_last_updated": updated,
            "external_reference": "b_1",
            "payer": {
                "email": "payer@example.com",
                "first_name": "Ana",
                "identification": {"type": "DNI", "number": "20111222"},
            },
        },
    )


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    yield c
    c.close()


# ---------------------------------------------------------------------------------------------------


def test_events_dedupe_pseudonymize_ar_day_and_drop_personal_data(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    # 23:30 local on the 31st = 02:30 UTC on the 1st: belongs to the 31st.
    src.events(
        date(2026, 11, 1),
        [
            event("e1", "booking.created", "2026-11-01T02:30:00Z", booking_id="b1", price_ars=1500.5),
            event("e2", "session.started", "2026-11-01T12:00:00Z", niche="psychology", user="u_2", session_id="s"),
            event("e1", "booking.created", "2026-11-01T02:30:00Z", booking_id="b1", price_ars=1500.5),  # twice
        ],
    )
    # The same event again, late, in the next day's folder.
    src.events(date(2026, 11, 2), [event("e1", "booking.created", "2026-11-01T02:30:00Z", booking_id="b1")])
    storage = LocalStorage(tmp_path / "events")
    first = load_events_day(con, storage, date(2026, 11, 1), key=KEY)
    second = load_events_day(con, storage, date(2026, 11, 2), key=KEY)
    assert (first.rows_read, first.rows_loaded, first.rows_quarantined, first.duplicates) == (3, 3, 0, 1)
    assert (second.rows_read, second.rows_loaded, second.duplicates) == (1, 1, 1)
    assert con.execute("SELECT event_id, day, user_key FROM raw.events").fetchall() == [
        ("e1", date(2026, 10, 31), user_key(KEY, "u_1"))
    ]
    # Psychology rows live in their own schema.
    assert con.execute("SELECT event_id, niche FROM psychology.events").fetchall() == [("e2", "psychology")]
    assert first.touched_days == {date(2026, 10, 31), date(2026, 11, 1)}
    # No personal value anywhere in the stored rows.
    dump = str(con.execute("SELECT * FROM raw.events UNION ALL SELECT * FROM psychology.events").fetchall())
    for personal in ("Juana", "juana@example.com", "5555", "30123456", "u_1", "u_2"):
        assert personal not in dump
    # Re-loading a folder replaces it: still one row.
    load_events_day(con, storage, date(2026, 11, 1), key=KEY)
    assert con.execute("SELECT count(*) FROM raw.events").fetchall()[0][0] == 1


def test_bad_line_is_quarantined_and_counts_reconcile(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    src.events(
        date(2026, 11, 1),
        [
            event("e1", "user.signed_up", "2026-11-01T12:00:00Z", channel="web"),
            '{"event_id": "e2", "type": "booking.created", "occurred_at": ',  # cut JSON
            json.dumps(
                {"event_id": "e3", "type": "teleport", "occurred_at": "2026-11-01T12:00:00Z", "niche": "barber"}
            ),
            event("e4", "user.signed_up", "2026-11-01T13:00:00Z", channel="app"),
        ],
    )
    result = load_events_day(con, LocalStorage(tmp_path / "events"), date(2026, 11, 1), key=KEY)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (4, 2, 2)
    rows = con.execute(
        "SELECT source, source_file, row_number, reason FROM quarantine.rows ORDER BY row_number"
    ).fetchall()
    assert [(r[0], r[2]) for r in rows] == [("events", 2), ("events", 3)]
    assert all(r[1].endswith("events/date=2026-11-01/part-0000.jsonl.gz") for r in rows)
    assert "not valid JSON" in rows[0][3] and "unknown event type 'teleport'" in rows[1][3]
    audit = con.execute(
        "SELECT rows_read, rows_loaded, rows_quarantined FROM ops.loads WHERE source = 'events'"
    ).fetchall()
    assert audit == [(4, 2, 2)]


def test_truncated_gzip_keeps_complete_lines_and_names_the_file(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    evs = [
        event(f"e{i}", "user.signed_up", "2026-11-01T12:00:00Z", user=f"u{i}", channel="web" * 50) for i in range(200)
    ]
    path = src.events(date(2026, 11, 1), evs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = load_events_day(con, LocalStorage(tmp_path / "events"), date(2026, 11, 1), key=KEY)
    assert result.reconciled and 0 < result.rows_loaded < 200
    reasons = [r[0] for r in con.execute("SELECT reason FROM quarantine.rows").fetchall()]
    assert any("truncated gzip" in r for r in reasons)
    assert any("part-0000.jsonl.gz" in w for w in result.warnings)


def test_fx_carry_forward_and_bad_row(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    src.fx([("2026-11-06", "1000.50"), ("2026-11-09", "1010"), ("2026-11-07", "abc")])
    result = load_fx(con, LocalStorage(tmp_path / "fx"))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (3, 2, 1)
    build_fx_daily(con, date(2026, 11, 10))
    rows = dict(con.execute("SELECT day, ars_per_usd FROM staging.fx_daily").fetchall())
    assert rows[date(2026, 11, 7)] == Decimal("1000.500000")  # weekend: Friday's quote
    assert rows[date(2026, 11, 8)] == Decimal("1000.500000")
    assert rows[date(2026, 11, 10)] == Decimal("1010.000000")
    assert date(2026, 11, 5) not in rows  # before the first quote: no rate, never guessed


def test_fx_quote_outside_the_catalogs_plausible_range_is_quarantined(tmp_path: Path, con) -> None:
    # The catalog's range is 0.5..10,000,000 ARS per USD: a mistyped quote would make a day's USD revenue
    # meaningless (0.000001 ARS per USD turns 1 M ARS into 10^12 USD, past DECIMAL(18,6)).
    src = Sources(tmp_path)
    src.fx(
        [
            ("2026-11-06", "1000.50"),
            ("2026-11-09", "0.000001"),
            ("2026-11-10", "10000000.000001"),
            ("2026-11-11", "0.5"),
            ("2026-11-12", "10000000"),
        ]
    )
    result = load_fx(con, LocalStorage(tmp_path / "fx"))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (5, 3, 2)
    assert sorted(r[0] for r in con.execute("SELECT date FROM raw.fx_rates").fetchall()) == [
        date(2026, 11, 6),
        date(2026, 11, 11),
        date(2026, 11, 12),
    ]
    reasons = dict(con.execute("SELECT row_number, reason FROM quarantine.rows WHERE source = 'fx'").fetchall())
    assert set(reasons) == {3, 4}
    assert all("outside the plausible range 0.5..10000000" in r for r in reasons.values()), reasons
    # The range is the catalog's; a caller may pass another.
    narrow = load_fx(con, LocalStorage(tmp_path / "fx"), quote_range=(Decimal("900"), Decimal("1100")))
    assert (narrow.rows_loaded, narrow.rows_quarantined) == (1, 4)


def _cur_row(
    i: int, start: str, end: str, cost: str, kind: str = "Usage", niche: str | None = "barber", **kw: Any
) -> dict[str, Any]:
    return {
        "identity_line_item_id": f"li{i}",
        "identity_time_interval": f"{start}/{end}",
        "bill_billing_period_start_date": start[:8] + "01T00:00:00Z",
        "line_item_usage_start_date": start,
        "line_item_usage_end_date": end,
        "line_item_line_item_type": kind,
        "line_item_product_code": "AmazonEC2",
        "line_item_currency_code": "USD",
        "line_item_unblended_cost": cost,
        "tags": {"user_niche": niche, "user_service": "web"} if niche else {},
        **kw,
    }


def test_cur_restated_month_replaces_never_doubles(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    storage = LocalStorage(tmp_path / "billing")
    src.cur(
        "2026-11",
        "exec-1",
        [
            _cur_row(1, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "10.000001"),
            _cur_row(2, "2026-11-02T13:00:00Z", "2026-11-02T14:00:00Z", "5"),
        ],
    )
    first = load_cur2(con, storage)
    assert (first.rows_read, first.rows_loaded) == (2, 2)
    assert load_cur2(con, storage).rows_read == 0  # unchanged delivery: not read again
    # Restatement: a new execution with corrected rows replaces the month.
    src.cur(
        "2026-11",
        "exec-2",
        [
            _cur_row(1, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "12"),
            _cur_row(2, "2026-11-02T13:00:00Z", "2026-11-02T14:00:00Z", "5"),
        ],
    )
    second = load_cur2(con, storage)
    assert second.rows_loaded == 2 and date(2026, 11, 2) in second.touched_days
    total = con.execute("SELECT sum(amortized_cost), count(*) FROM raw.billing_line_items").fetchall()[0]
    assert total == (Decimal("17.000000"), 2)


def test_cur_period_without_manifest_is_skipped_with_warning(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    src.cur("2026-10", "exec-1", [_cur_row(1, "2026-10-02T12:00:00Z", "2026-10-02T13:00:00Z", "1")])
    (tmp_path / "billing/cur/pulso-cur/metadata/BILLING_PERIOD=2026-10/pulso-cur-Manifest.json").unlink()
    result = load_cur2(con, LocalStorage(tmp_path / "billing"))
    assert result.rows_read == 0
    assert any("2026-10" in w and "no manifest" in w for w in result.warnings)


def test_cur_amortized_rule_and_bad_rows(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    src.cur(
        "2026-11",
        "e",
        [
            _cur_row(
                1,
                "2026-11-02T12:00:00Z",
                "2026-11-02T13:00:00Z",
                "10",
                kind="SavingsPlanCoveredUsage",
                savings_plan_savings_plan_effective_cost="6.5",
            ),
            _cur_row(2, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "-10", kind="SavingsPlanNegation"),
            _cur_row(
                3,
                "2026-11-02T12:00:00Z",
                "2026-11-02T13:00:00Z",
                "4",
                kind="DiscountedUsage",
                reservation_effective_cost="3.25",
            ),
            _cur_row(4, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "100", kind="RIFee"),
            _cur_row(5, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "-2", kind="Credit"),
            _cur_row(6, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "1", kind="Mystery"),
        ],
    )
    result = load_cur2(con, LocalStorage(tmp_path / "billing"))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (6, 5, 1)
    got = dict(con.execute("SELECT line_item_type, amortized_cost FROM raw.billing_line_items").fetchall())
    assert got == {
        "SavingsPlanCoveredUsage": Decimal("6.5"),
        "SavingsPlanNegation": Decimal(0),
        "DiscountedUsage": Decimal("3.25"),
        "RIFee": Decimal(0),
        "Credit": Decimal(-2),
    }
    row = con.execute("SELECT row_number, reason FROM quarantine.rows").fetchall()[0]
    assert row[0] == 6 and "Mystery" in row[1]


def test_spread_over_ar_days_is_exact() -> None:
    # A UTC calendar day (00:00-24:00 UTC) is 21:00-21:00 in Argentina: 3 h on the previous AR day.
    parts = spread_micros(1_000_000, utc("2026-11-02T00:00:00Z"), utc("2026-11-03T00:00:00Z"))
    assert parts == {date(2026, 11, 1): 125_000, date(2026, 11, 2): 875_000}
    odd = spread_micros(-100, utc("2026-11-02T00:00:00Z"), utc("2026-11-05T00:00:00Z"))
    assert sum(odd.values()) == -100 and len(odd) == 4


def test_cost_items_daily_from_daily_items(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    src.cur("2026-11", "e", [_cur_row(1, "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z", "24")])
    load_cur2(con, LocalStorage(tmp_path / "billing"))
    build_cost_items_daily(con)
    assert con.execute("SELECT day, cost_micros FROM staging.cost_items_daily ORDER BY day").fetchall() == [
        (date(2026, 11, 1), 3_000_000),
        (date(2026, 11, 2), 21_000_000),
    ]


def test_metrics_counter_reset_and_day_boundary(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    d1, d2 = date(2026, 11, 1), date(2026, 11, 2)
    lab = {"niche": "barber", "country": "AR", "region": "cordoba", "service": "web", "route": "/", "code": "200"}
    last_d1 = warehouse.day_bounds_utc(d1)[1] - timedelta(minutes=1)
    src.metric("http_requests_total", d1, [{**lab, "ts": last_d1, "value": 100.0}])
    first = warehouse.day_bounds_utc(d2)[0]
    # 100 → 110 (+10), 110 → 4 (reset: +4), 4 → 9 (+5), then a NaN sample (quarantined).
    src.metric(
        "http_requests_total",
        d2,
        [
            {**lab, "ts": first, "value": 110.0},
            {**lab, "ts": first + timedelta(minutes=1), "value": 4.0},
            {**lab, "ts": first + timedelta(minutes=2), "value": 9.0},
            {**lab, "ts": first + timedelta(minutes=3), "value": float("nan")},
        ],
    )
    reader = FileMetricsReader(LocalStorage(tmp_path / "metrics"))
    load_metrics_day(con, reader, d1)
    result = load_metrics_day(con, reader, d2)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (4, 3, 1)
    got = con.execute("SELECT sum(increase) FROM staging.metric_counters_hourly WHERE day = ?", [d2]).fetchall()[0][0]
    assert got == 19.0


def test_metrics_unreadable_file_is_quarantined_rest_lands(tmp_path: Path, con) -> None:
    src = Sources(tmp_path)
    day = date(2026, 11, 2)
    ts = warehouse.day_bounds_utc(day)[0]
    src.metric(
        "active_sessions", day, [{"ts": ts, "niche": "barber", "country": "AR", "region": "cordoba", "value": 7.0}]
    )
    bad = src.metric(
        "probe_success", day, [{"ts": ts, "niche": "barber", "country": "AR", "region": "cordoba", "value": 1.0}]
    )
    bad.write_bytes(bad.read_bytes()[:40])
    result = load_metrics_day(con, FileMetricsReader(LocalStorage(tmp_path / "metrics")), day)
    assert result.reconciled and result.rows_quarantined == 1 and result.rows_loaded == 1
    reason, source_file = con.execute("SELECT reason, source_file FROM quarantine.rows").fetchall()[0]
    assert "probe_success/date=2026-11-02/part-0.parquet" in source_file and "unreadable Parquet" in reason
    assert con.execute("SELECT value FROM staging.metric_gauges_minutely").fetchall() == [(7.0,)]


def test_reader_protocol_accepts_any_object(con) -> None:
    """The loader takes any object with ``samples(metric, start, end)`` (e.g. a Prometheus source)."""
    day = date(2026, 11, 2)
    start, _ = warehouse.day_bounds_utc(day)

    class Fake:
        def samples(self, metric: str, start_utc: datetime, end_utc: datetime) -> pl.DataFrame:
            if metric != "db_connections_in_use":
                return pl.DataFrame(schema=SAMPLE_SCHEMA)
            return (
                pl.DataFrame({"ts": [start, start + timedelta(minutes=1)], "value": [3.0, 8.0]})
                .with_columns(
                    [
                        pl.lit(None, pl.String).alias(c)
                        for c in ("niche", "country", "region", "service", "route", "code", "le", "group")
                    ]
                )
                .select(list(SAMPLE_SCHEMA))
                .cast(SAMPLE_SCHEMA)
            )

    result = load_metrics_day(con, Fake(), day)
    assert result.rows_loaded == 2
    assert con.execute("SELECT max(value) FROM staging.metric_gauges_minutely").fetchall()[0][0] == 8.0


def test_pseudonym_key_file_generated_once(tmp_path: Path, monkeypatch) -> None:
    from pipelines.lib.ingest.events import pseudonym_key

    monkeypatch.delenv("PULSO_PSEUDONYM_KEY", raising=False)
    k1 = pseudonym_key(tmp_path / ".secrets")
    k2 = pseudonym_key(tmp_path / ".secrets")
    assert k1 == k2 and len(k1) == 64
    assert oct((tmp_path / ".secrets" / "pseudonym.key").stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("PULSO_PSEUDONYM_KEY", "from-env")
    assert pseudonym_key(tmp_path / ".secrets") == b"from-env"


def test_catalog_has_the_contract_kpis() -> None:
    assert len(load_catalog().kpi_ids) == 21


def test_fast_increases_equal_the_reference_reset_rule() -> None:
    from pipelines.lib.ingest.metrics import per_minute_increases
    from pipelines.lib.sources.prometheus import counter_increases

    t0 = utc("2026-11-02T12:00:00Z")
    rows = []
    for series, values in (
        (("barber", "200"), [5.0, 7.0, 2.0, 2.0, 9.0]),
        (("barber", "500"), [1.0, 1.0, 3.0, 0.0, 4.0]),
        ((None, "200"), [0.0, 10.0, 20.0, 5.0, 6.0]),
    ):
        for i, v in enumerate(values):
            rows.append({"ts": t0 + timedelta(minutes=i), "niche": series[0], "code": series[1], "value": v})
    frame = pl.DataFrame({c: [r.get(c) for r in rows] for c in SAMPLE_SCHEMA}, schema=SAMPLE_SCHEMA).sample(
        fraction=1.0, shuffle=True, seed=3
    )
    key = ["niche", "code", "ts"]
    ours = per_minute_increases(frame).sort(key, nulls_last=True)
    ref = counter_increases(frame).sort(key, nulls_last=True)
    assert ours["increase"].to_list() == ref["increase"].to_list()
    barber_200 = ours.filter((pl.col("niche") == "barber") & (pl.col("code") == "200"))["increase"].to_list()
    assert barber_200 == [None, 2.0, 2.0, 0.0, 7.0]  # 7 → 2 is a reset: increase 2


def test_hourly_increases_equal_summed_minute_increases() -> None:
    import random

    from pipelines.lib.ingest.metrics import hourly_increases, per_minute_increases

    rng = random.Random(5)
    start = utc("2026-11-02T03:00:00Z")
    rows = []
    for code in ("200", "500"):
        value = 100.0
        for i in range(-1, 200):
            if i in (37, 61, 150) and code == "200":
                value = rng.random() * 3  # process restart: counter reset
            elif i != 90:  # a missing minute
                value += rng.randrange(5)
            if i == 90:
                continue
            rows.append({"ts": start + timedelta(minutes=i), "code": code, "niche": "barber", "value": value})
    frame = pl.DataFrame({c: [r.get(c) for r in rows] for c in SAMPLE_SCHEMA}, schema=SAMPLE_SCHEMA)
    ours = hourly_increases(frame, start).sort(["code", "hour_start"])
    ref = (
        per_minute_increases(frame)
        .filter(pl.col("ts") >= start)
        .with_columns(pl.col("ts").dt.truncate("1h").alias("hour_start"))
        .group_by(["code", "hour_start"])
        .agg(pl.col("increase").fill_null(0).sum())
        .sort(["code", "hour_start"])
    )
    assert ours["hour_start"].to_list() == ref["hour_start"].to_list()
    assert ours["increase"].to_list() == pytest.approx(ref["increase"].to_list())


def test_fast_and_line_by_line_event_parsing_agree() -> None:
    from zoneinfo import ZoneInfo

    from pipelines.lib.ingest.events import parse_event, parse_lines_fast

    evs = [
        event(
            "a",
            "booking.created",
            "2026-11-01T02:30:00.123Z",
            booking_id="b1",
            professional_id="p1",
            scheduled_for="2026-11-03T15:00:00.000Z",
            price_ars=1500.5,
        ),
        event("b", "session.started", "2026-11-01T12:00:00Z", niche="psychology", session_id="s1"),
        event(
            "c",
            "professional.onboarded",
            "2026-11-01T12:00:00.5Z",
            niche="psychology",
            professional_id="p9",
            license_number="MN-123",
            license_verified=True,
        ),
        payment(
            "d",
            "pay1",
            "refunded",
            "2026-11-01T12:00:00.000Z",
            "2026-11-01T13:00:00.000Z",
            amount="14.91",
            refunded="3.10",
        ),
        event("e", "user.signed_up", "2026-11-01T12:00:00+00:00", channel="web"),  # other ISO form: slow path
    ]
    numbered = [(i + 1, json.dumps(e).encode()) for i, e in enumerate(evs)]
    tz = ZoneInfo(AR)
    sensitive = frozenset({"psychology"})
    events, payments, slow = parse_lines_fast(
        numbered, KEY, tz, sensitive, {"arrival_day": date(2026, 11, 1), "_source_file": "f"}
    )
    assert slow == {5}
    fast_rows = {r["event_id"]: r for r in events.to_pylist()}
    for n, line in numbered[:4]:
        ref = parse_event(line, KEY, tz, sensitive)
        got = fast_rows[ref.event["event_id"]]
        assert {k: got[k] for k in ref.event} == ref.event
        assert got["_sensitive"] == ref.sensitive and got["_row_number"] == n
    ref_pay = parse_event(numbered[3][1], KEY, tz, sensitive).payment
    got_pay = payments.to_pylist()[0]
    assert {k: got_pay[k] for k in ref_pay} == ref_pay
    assert got_pay["transaction_amount"] == Decimal("14.91") and got_pay["transaction_amount_refunded"] == Decimal(
        "3.10"
    )
    assert "MN-123" not in str(events.to_pylist())
