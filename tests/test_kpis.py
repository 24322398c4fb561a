"""KPI marts on small hand-made fixtures; every expected number is worked out by hand in the test."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib import warehouse
from pipelines.lib.catalog import load_catalog
from pipelines.lib.ingest.metrics import FileMetricsReader
from pipelines.lib.kpis.marts import grains_for, scaling_times
from pipelines.lib.kpis.pipeline import SourceSet, refresh
from pipelines.lib.kpis.quantiles import histogram_quantile
from pipelines.lib.storage import LocalStorage
from tests.test_ingest import KEY, Sources, _cur_row, event, payment

D1 = date(2026, 11, 2)
BUCKETS = ("0.025", "0.05", "0.1", "0.15", "0.2", "0.3", "0.5", "1.0", "2.5", "5.0", "+Inf")
BARBER = {"niche": "barber", "country": "AR", "region": "cordoba", "service": "web", "route": "/"}
PSY = {"niche": "psychology", "country": "AR", "region": "buenos_aires", "service": "api", "route": "/api"}


def run(root: Path, days: list[date]) -> duckdb.DuckDBPyConnection:
    con = warehouse.connect(":memory:")
    sources = SourceSet(
        FileMetricsReader(LocalStorage(root / "metrics")),
        LocalStorage(root / "billing"),
        LocalStorage(root / "events"),
        LocalStorage(root / "fx"),
    )
    refresh(con, sources, days, key=KEY)
    return con


def kpi(con, kpi_id: str, day: date, niche: str = "all", country: str = "all", region: str = "all"):
    rows = con.execute(
        "SELECT value, target, status FROM marts.kpi_daily WHERE kpi = ? AND day = ? AND niche = ? "
        "AND country = ? AND region = ?",
        [kpi_id, day, niche, country, region],
    ).fetchall()
    assert len(rows) == 1, f"{kpi_id} {day} {niche}/{country}/{region}: {rows}"
    return rows[0]


def test_percentile_from_merged_buckets_not_average_of_minute_percentiles(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    start, _ = warehouse.day_bounds_utc(D1)
    # minute 1: 90 requests all in (0.025, 0.05]; minute 2: 10 requests in (0.5, 1.0].
    cum = {0: dict.fromkeys(BUCKETS, 0.0)}
    cum[1] = {le: (0.0 if le == "0.025" else 90.0) for le in BUCKETS}
    cum[2] = {le: cum[1][le] + (10.0 if le in ("1.0", "2.5", "5.0", "+Inf") else 0.0) for le in BUCKETS}
    rows = [
        {**BARBER, "ts": start + timedelta(minutes=m), "le": le, "value": v}
        for m, per in cum.items()
        for le, v in per.items()
    ]
    src.metric("http_request_duration_seconds_bucket", D1, rows)
    con = run(tmp_path, [D1])
    p95 = kpi(con, "latency_p95_ms", D1)[0]
    # merged: 100 requests, rank 95 in (0.5, 1.0]: 0.5 + 0.5 * (95 - 90) / 10 = 0.75 s
    assert p95 == pytest.approx(750.0, abs=1e-9)
    # the naive way: p95 of minute 1 = 0.025 + 0.025 * 85.5/90 = 48.75 ms; minute 2 = 0.5 + 0.5 * 9.5/10
    # = 975 ms; their mean is 511.875 ms, which is wrong.
    bounds = [math.inf if b == "+Inf" else float(b) for b in BUCKETS]
    m1 = histogram_quantile(0.95, zip(bounds, [cum[1][b] for b in BUCKETS], strict=True)) * 1000
    m2 = histogram_quantile(0.95, zip(bounds, [cum[2][b] - cum[1][b] for b in BUCKETS], strict=True)) * 1000
    assert (m1, m2) == (pytest.approx(48.75), pytest.approx(975.0))
    assert (m1 + m2) / 2 == pytest.approx(511.875) and p95 != pytest.approx(511.875)
    # p50: rank 50 in (0.025, 0.05] → 0.025 + 0.025 * 50/90; the catalog target of p95 (200 ms) is breached
    assert kpi(con, "latency_p50_ms", D1)[0] == pytest.approx((0.025 + 0.025 * 50 / 90) * 1000)
    assert kpi(con, "latency_p95_ms", D1)[1:] == (200.0, "breach")
    # same at the niche+country+region grain, and no row for a region without traffic
    assert kpi(con, "latency_p95_ms", D1, "barber", "AR", "cordoba")[0] == pytest.approx(750.0)
    assert con.execute(
        "SELECT count(*) FROM marts.kpi_daily WHERE kpi = 'latency_p95_ms' AND region = 'rosario'"
    ).fetchall() == [(0,)]


def test_ratio_from_summed_counts_1003_of_1004(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    start, _ = warehouse.day_bounds_utc(D1)
    t0, t1 = start, start + timedelta(minutes=1)
    rows = []
    # series A: 4 requests, 1 of them a 500; series B: 1000 requests, all 200.
    for lab, ok, bad in ((BARBER, 3.0, 1.0), (PSY, 1000.0, 0.0)):
        rows += [
            {**lab, "ts": t0, "code": "200", "value": 0.0},
            {**lab, "ts": t1, "code": "200", "value": ok},
            {**lab, "ts": t0, "code": "500", "value": 0.0},
            {**lab, "ts": t1, "code": "500", "value": bad},
        ]
    src.metric("http_requests_total", D1, rows)
    con = run(tmp_path, [D1])
    value, target, status = kpi(con, "availability_ratio", D1)
    assert value == pytest.approx(1003 / 1004) and value != pytest.approx((0.75 + 1.0) / 2)
    assert (target, status) == (0.999, "ok")  # 0.99900 ≥ 0.999
    assert kpi(con, "availability_ratio", D1, "barber")[0] == pytest.approx(0.75)
    # error budget: 1 - bad / (total * (1 - 0.999)) = 1 - 1 / 1.004
    assert kpi(con, "error_budget_remaining_ratio", D1)[0] == pytest.approx(1 - 1 / (1004 * 0.001))


def test_ar_day_boundary_2330_local_belongs_to_that_day(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    oct31, nov1 = date(2026, 10, 31), date(2026, 11, 1)
    # 23:30 on the 31st in Argentina is 02:30 UTC on the 1st (arrives in the 1st's UTC folder).
    src.events(
        nov1,
        [
            event("e1", "booking.created", "2026-11-01T02:30:00Z", booking_id="b1"),
            event("e2", "booking.created", "2026-11-01T03:00:00Z", booking_id="b2"),
        ],
    )
    con = run(tmp_path, [oct31, nov1])
    assert kpi(con, "bookings", oct31)[0] == 1.0
    assert kpi(con, "bookings", nov1)[0] == 1.0
    assert kpi(con, "active_users", oct31)[0] == 1.0


def test_revenue_in_usd_with_the_days_rate(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    fri, sat, mon = date(2026, 11, 6), date(2026, 11, 7), date(2026, 11, 9)
    src.fx([("2026-11-06", "1000"), ("2026-11-09", "1250")])
    src.events(
        fri, [payment("p1", "pay1", "approved", "2026-11-06T15:00:00Z", "2026-11-06T15:01:00Z", amount="1500.00")]
    )
    src.events(
        sat,
        [
            payment(
                "p2",
                "pay2",
                "approved",
                "2026-11-07T15:00:00Z",
                "2026-11-07T15:01:00Z",
                amount="1000.00",
                refunded="250.00",
            ),
            payment("p3", "pay3", "rejected", "2026-11-07T16:00:00Z", "2026-11-07T16:01:00Z", amount="9999.00"),
        ],
    )
    src.events(
        mon, [payment("p4", "pay4", "approved", "2026-11-09T15:00:00Z", "2026-11-09T15:01:00Z", amount="2500.00")]
    )
    con = run(tmp_path, [fri, sat, date(2026, 11, 8), mon])
    assert kpi(con, "revenue_usd", fri)[0] == 1.5  # 1500 / 1000
    assert kpi(con, "revenue_usd", sat)[0] == 0.75  # (1000 - 250 refunded) / Friday's 1000 (no Saturday quote)
    assert kpi(con, "revenue_usd", mon)[0] == 2.0  # 2500 / 1250, Monday's own rate
    exact = con.execute(
        "SELECT amount_usd FROM marts.payments_daily WHERE day = ? AND status = 'approved'", [sat]
    ).fetchall()
    assert exact == [(Decimal("0.750000"),)]
    # MercadoPago success on Saturday: 1 approved of 2 final attempts
    assert kpi(con, "mercadopago_success_ratio", sat)[0] == 0.5
    # ARR from 30-day revenue: (1.5 + 0.75 + 2.0) * 365 / 30 on Monday
    assert kpi(con, "arr_usd", mon)[0] == pytest.approx(4.25 * 365 / 30)


def test_cost_per_active_user_zero_users_is_null_no_data(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    d2 = D1 + timedelta(days=1)
    src.cur(
        "2026-11",
        "e",
        [
            _cur_row(1, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "10"),
            _cur_row(2, "2026-11-03T12:00:00Z", "2026-11-03T13:00:00Z", "20"),
        ],
    )
    src.events(
        d2,
        [
            event("e1", "session.started", "2026-11-03T12:00:00Z", user="u1", session_id="s"),
            event("e2", "session.started", "2026-11-03T13:00:00Z", user="u2", session_id="s"),
        ],
    )
    con = run(tmp_path, [D1, d2])
    value, target, status = kpi(con, "cost_per_active_user_usd", D1)
    assert (value, status) == (None, "no_data") and target == 2.0
    # next day: 30-day cost 10 + 20 over 2 distinct users
    assert kpi(con, "cost_per_active_user_usd", d2) == (15.0, 2.0, "breach")
    # no revenue at all: margin undefined (NULL), never NaN or Inf
    assert kpi(con, "infra_margin_ratio", d2)[0] is None
    assert kpi(con, "revenue_per_infra_usd", d2)[0] == 0.0
    assert con.execute("SELECT count(*) FROM marts.kpi_daily WHERE isnan(value) OR isinf(value)").fetchall() == [(0,)]


def test_shared_cost_split_sums_exactly(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    # traffic: barber 2 requests/min, psychology 1 → shared cost split 2:1 by requests
    src.steady_day(D1, [BARBER, PSY], {"barber": 2.0, "psychology": 1.0}, {le: 1.0 for le in BUCKETS})
    src.cur(
        "2026-11",
        "e",
        [
            _cur_row(1, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "0.000010", niche=None),  # 10 micro-USD shared
            _cur_row(2, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "100.000001", niche="shared"),
            _cur_row(3, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "5.5", niche="barber"),
            _cur_row(4, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "-1.000001", kind="Credit", niche=None),
        ],
    )
    con = run(tmp_path, [D1])
    parts = dict(
        con.execute(
            "SELECT niche || '/' || service || '/' || charge_category || '/' || allocation, cost_usd "
            "FROM marts.cost_daily WHERE day = ?",
            [D1],
        ).fetchall()
    )
    # web usage tagged niche=shared: 100000001 micro-USD * 2/3 = 66666667.33 and * 1/3 = 33333333.67; the one
    # micro left goes to the larger remainder (psychology): 66.666667 + 33.333334 = 100.000001 exactly.
    total = sum(parts.values())
    assert total == Decimal("5.5") + Decimal("100.000001") + Decimal("0.000010") - Decimal("1.000001")
    assert parts["barber/web/usage/shared_split"] == Decimal("66.666667")
    assert parts["psychology/web/usage/shared_split"] == Decimal("33.333334")
    # untagged (no service tag either): 10 micro-USD → 6.67 / 3.33 → 7 and 3
    assert parts["barber/shared/usage/shared_split"] == Decimal("0.000007")
    assert parts["psychology/shared/usage/shared_split"] == Decimal("0.000003")
    # an untagged credit is split the same way and keeps its sign
    assert parts["barber/shared/credit/shared_split"] == Decimal("-0.666667")
    assert parts["psychology/shared/credit/shared_split"] == Decimal("-0.333334")
    assert parts["barber/web/usage/tagged"] == Decimal("5.5")
    day_total = kpi(con, "infra_cost_usd", D1)[0]
    niches = kpi(con, "infra_cost_usd", D1, "barber")[0] + kpi(con, "infra_cost_usd", D1, "psychology")[0]
    assert day_total == float(total) and niches == pytest.approx(day_total, abs=1e-9)


def test_restated_month_is_not_doubled_in_marts(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    src.cur("2026-11", "first", [_cur_row(1, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "10")])
    con = warehouse.connect(":memory:")
    sources = SourceSet(None, LocalStorage(tmp_path / "billing"), None, None)
    refresh(con, sources, [D1], key=KEY)
    assert kpi(con, "infra_cost_usd", D1)[0] == 10.0
    src.cur("2026-11", "second", [_cur_row(1, "2026-11-02T12:00:00Z", "2026-11-02T13:00:00Z", "12.5")])
    refresh(con, sources, [D1], key=KEY)
    assert kpi(con, "infra_cost_usd", D1)[0] == 12.5


def test_late_and_duplicate_events_counted_once(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    d2, d3 = D1 + timedelta(days=1), D1 + timedelta(days=2)
    src.events(D1, [event("e1", "booking.created", "2026-11-02T12:00:00Z", booking_id="b1")])
    # two days later: e1 again (duplicate) and e2, a late booking of D1
    src.events(
        d3,
        [
            event("e1", "booking.created", "2026-11-02T12:00:00Z", booking_id="b1"),
            event("e2", "booking.created", "2026-11-02T18:00:00Z", booking_id="b2", user="u2"),
        ],
    )
    con = run(tmp_path, [D1, d2, d3])
    assert kpi(con, "bookings", D1)[0] == 2.0
    assert kpi(con, "active_users", D1)[0] == 2.0
    # a payment updated twice: counted once, in its final state
    src.events(
        d3,
        [
            payment("p1", "pay1", "pending", "2026-11-04T12:00:00Z", "2026-11-04T12:00:00Z"),
            payment("p2", "pay1", "approved", "2026-11-04T12:00:00Z", "2026-11-04T12:05:00Z"),
        ],
        part=1,
    )
    con = run(tmp_path, [D1, d2, d3])
    assert con.execute("SELECT status, payments FROM marts.payments_daily WHERE day = ?", [d3]).fetchall() == [
        ("approved", 1)
    ]


def test_incidents_recovery_and_scaling_time(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    # probes fail at minutes 100..104 (5 minutes) and at 300 (1 minute: below incidents.min_failed_minutes)
    src.steady_day(
        D1,
        [BARBER],
        {"barber": 1.0},
        {le: 1.0 for le in BUCKETS},
        probe_fail={100, 101, 102, 103, 104, 300},
        scaling={600: (5.0, 3.0), 602: (5.0, 4.0), 607: (5.0, 5.0), 900: (6.0, 6.0)},
    )
    con = run(tmp_path, [D1])
    assert kpi(con, "incidents", D1) == (1.0, 0.0, "warn")
    assert kpi(con, "mttr_minutes", D1) == (5.0, 15.0, "ok")
    # desired 3 → 5 at minute 600, in service reaches 5 at minute 607; 5 → 6 at 900 reached at once
    assert kpi(con, "scaling_time_minutes", D1) == (7.0, 3.0, "breach")
    # DB pool: 50 + (minute % 100) peaks at 149 of 200
    assert kpi(con, "db_pool_utilization_ratio", D1)[0] == pytest.approx(149 / 200)
    # sessions: 10 per (niche, region) per minute
    assert kpi(con, "peak_concurrent_users", D1)[0] == 10.0
    # cache: 9 hits of 10 requests every minute
    assert kpi(con, "cache_hit_ratio", D1)[0] == pytest.approx(0.9)


def test_scaling_times_unit() -> None:
    import polars as pl

    from tests.test_ingest import utc

    ts = [utc("2026-11-02T12:00:00Z") + timedelta(minutes=i) for i in range(5)]
    frame = pl.DataFrame(
        {
            "ts": ts,
            "group": ["web"] * 5,
            "country": ["AR"] * 5,
            "desired": [3.0, 5.0, 5.0, 4.0, 5.0],
            "in_service": [3.0, 3.0, 4.0, 5.0, 5.0],
        }
    )
    out = scaling_times(frame)
    assert out["minutes"].to_list() == [2.0, 0.0]


def test_every_kpi_on_every_day_even_without_data(tmp_path: Path) -> None:
    days = [D1, D1 + timedelta(days=1)]
    con = run(tmp_path, days)  # no source files at all
    got = con.execute(
        "SELECT day, kpi, value, status FROM marts.kpi_daily WHERE niche = 'all' AND country = 'all' "
        "AND region = 'all' ORDER BY ALL"
    ).fetchall()
    ids = load_catalog().kpi_ids
    assert {(d, k) for d, k, _, _ in got} == {(d, k) for d in days for k in ids} and len(got) == 2 * len(ids)
    # counts without any data are no data, not zero
    assert all(v is None and s == "no_data" for _, _, v, s in got)


def test_grains_follow_catalog_dims() -> None:
    assert grains_for([]) == [()]
    assert grains_for(["niche"]) == [(), ("niche",)]
    assert grains_for(["country", "region"]) == [(), ("country",), ("country", "region")]
    assert len(grains_for(["niche", "country", "region"])) == 6


def test_thirty_day_distinct_users_sweep_matches_brute_force() -> None:
    import random

    from pipelines.lib.kpis import ensure_inputs
    from pipelines.lib.kpis.kpi_daily import kpi_queries
    from pipelines.lib.kpis.staging import build_event_staging

    con = warehouse.connect(":memory:")
    ensure_inputs(con)
    build_event_staging(con, [D1])
    rng = random.Random(7)
    base = date(2026, 9, 1)
    rows = {
        (f"u{rng.randrange(40)}", rng.choice(["barber", "psychology"]), base + timedelta(days=rng.randrange(90)))
        for _ in range(600)
    }
    con.executemany("INSERT INTO staging.user_days VALUES (?, ?, 'AR', 'cordoba', ?)", [(d, n, u) for u, n, d in rows])
    days = [base + timedelta(days=i) for i in range(40, 95)]
    con.execute("CREATE OR REPLACE TEMP TABLE _days AS SELECT unnest($d::DATE[]) AS day", {"d": days})
    got = {(d, n): u for d, n, _, _, u in con.execute(kpi_queries()["_users30"]).fetchall()}
    for d in days:
        window = [(u, n) for u, n, a in rows if d - timedelta(days=29) <= a <= d]
        assert got[(d, "all")] == len({u for u, _ in window}), d
        for niche in ("barber", "psychology"):
            assert got[(d, niche)] == len({u for u, n in window if n == niche}), (d, niche)


def test_usd_payments_outside_argentina_are_not_converted(tmp_path: Path) -> None:
    src = Sources(tmp_path)
    src.fx([("2026-11-02", "1000")])
    p = payment("p1", "pay1", "approved", "2026-11-02T15:00:00Z", "2026-11-02T15:01:00Z", amount="14.91")
    p["payload"]["payment"]["currency_id"] = "USD"
    p["country"], p["region"] = "CO", "bogota"
    src.events(
        D1, [p, payment("p2", "pay2", "approved", "2026-11-02T16:00:00Z", "2026-11-02T16:01:00Z", amount="2000.00")]
    )
    con = run(tmp_path, [D1])
    rows = con.execute("SELECT country, amount_ars, amount_usd FROM marts.payments_daily ORDER BY country").fetchall()
    assert rows == [("AR", Decimal("2000.00"), Decimal("2.000000")), ("CO", Decimal("14910.00"), Decimal("14.910000"))]
    assert kpi(con, "revenue_usd", D1)[0] == pytest.approx(16.91)
