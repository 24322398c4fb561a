"""Property-based tests of the KPI maths (issue #7 item 6; docs/reliability.md section 6).

Random but valid inputs (counts are whole numbers, hits never exceed requests, pool use never exceeds the
pool) go through the real SQL of ``pipelines/lib/kpis``; the properties:

- every ratio KPI is in [0, 1], or NULL exactly when its denominator is zero (never NaN/Inf);
- percentiles from merged histograms are monotonic in the quantile and lie inside the bucket where the
  rank falls (the largest finite bound when it falls in +Inf); SQL and the Python reference agree;
- merging histograms is associative and order-independent (same percentile whatever the order);
- shared-cost splits sum exactly to the shared amount (no micro-dollar lost), each niche's part is within
  one micro-dollar of its exact proportional share, tagged cost is never split;
- ARS→USD per day is exact: each payment converted with its day's rate, half away from zero, then summed.

Deterministic (``derandomize=True``, no example database).
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.lib import warehouse
from pipelines.lib.catalog import load_catalog
from pipelines.lib.ingest.billing import spread_micros
from pipelines.lib.kpis import ensure_inputs
from pipelines.lib.kpis.marts import build_all_marts, build_cost_daily, build_payments_daily
from pipelines.lib.kpis.quantiles import histogram_quantile, quantile_sql
from pipelines.lib.kpis.staging import build_event_staging

#: ``PULSO_FUZZ_SCALE=20`` multiplies every example count (a deeper run; the suite uses 1).
SCALE = int(os.environ.get("PULSO_FUZZ_SCALE", "1"))
FAST = settings(
    max_examples=150 * SCALE,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SQL = settings(FAST, max_examples=50 * SCALE)
MARTS = settings(FAST, max_examples=10 * SCALE)

CATALOG = load_catalog()
D1, D2 = date(2026, 11, 2), date(2026, 11, 3)
DAYS = [D1, D2]
REGIONS = [(r.country, r.id) for r in CATALOG.regions]
NICHES = [n.id for n in CATALOG.live_niches(CATALOG.phase_on(D1))]
BOUNDS = [*CATALOG.latency_buckets_seconds, math.inf]
POOL = float(CATALOG.section("capacity")["db_pool_size"])
INPUTS = (
    "staging.metric_counters_hourly",
    "staging.metric_gauges_minutely",
    "staging.cost_items_daily",
    "staging.fx_daily",
    "staging.payments_final",
    "psychology.payments_final",
)


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = warehouse.connect(":memory:")
    ensure_inputs(c)
    build_event_staging(c, DAYS)
    yield c
    c.close()


def _reset(con: duckdb.DuckDBPyConnection) -> None:
    for table in INPUTS:
        con.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names


def _hour(day: date, h: int) -> datetime:
    return warehouse.day_bounds_utc(day)[0] + timedelta(hours=h)


# --- histograms --------------------------------------------------------------------------------------


@st.composite
def histograms(draw: st.DrawFn, bounds: list[float] | None = None) -> list[tuple[float, float]]:
    """Cumulative ``(upper_bound, count)`` buckets with whole counts (+Inf last)."""
    if bounds is None:
        finite = draw(st.lists(st.floats(0.001, 60, allow_nan=False), min_size=1, max_size=8, unique=True))
        bounds = [*sorted(finite), math.inf]
    per_bucket = draw(st.lists(st.integers(0, 1000), min_size=len(bounds), max_size=len(bounds)))
    if draw(st.booleans()):  # sparse: most buckets empty
        per_bucket = [c if draw(st.integers(0, 3)) == 0 else 0 for c in per_bucket]
    cumulative, total = [], 0
    for b, c in zip(bounds, per_bucket, strict=True):
        total += c
        cumulative.append((b, float(total)))
    return cumulative


quantiles = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=6)


def _sql_quantiles(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, float, float]], qs: list[float]) -> dict:
    """quantile_sql over ``rows`` of (key, le, requests): {key: [value per q]}."""
    con.execute("CREATE OR REPLACE TEMP TABLE _h (k VARCHAR, le VARCHAR, requests DOUBLE)")
    con.executemany(
        "INSERT INTO _h VALUES (?, ?, ?)", [(k, "+Inf" if math.isinf(b) else repr(b), c) for k, b, c in rows]
    )
    names = {f"q{i}": q for i, q in enumerate(qs)}
    out = con.execute(f"SELECT k, {', '.join(names)} FROM ({quantile_sql('_h', ['k'], names)}) ORDER BY k").fetchall()  # noqa: S608
    return {r[0]: list(r[1:]) for r in out}


@FAST
@given(hist=histograms(), qs=quantiles)
def test_percentile_is_monotonic_and_inside_the_rank_bucket(hist: list[tuple[float, float]], qs: list[float]) -> None:
    total = hist[-1][1]
    values = [histogram_quantile(q, hist) for q in sorted(qs)]
    if total == 0:
        assert values == [None] * len(qs)  # no requests: no value, never NaN
        return
    assert all(a <= b for a, b in zip(values, values[1:], strict=False)), values  # monotonic in q
    for q, v in zip(sorted(qs), values, strict=True):
        rank = q * total
        i = next(i for i, (_, c) in enumerate(hist) if c >= rank)
        if math.isinf(hist[i][0]):
            assert v == hist[-2][0]  # rank in +Inf: the largest finite bound
        else:
            lower = hist[i - 1][0] if i else 0.0
            assert lower <= v <= hist[i][0], (q, v, lower, hist[i][0])


@SQL
@given(hist=histograms(), qs=quantiles)
def test_sql_percentile_equals_the_python_reference(con, hist: list[tuple[float, float]], qs: list[float]) -> None:
    got = _sql_quantiles(con, [("a", b, c) for b, c in hist], qs)
    expected = [histogram_quantile(q, hist) for q in qs]
    if hist[-1][1] == 0:  # no requests: the key has no value
        assert got == {"a": [None] * len(qs)}
        return
    assert got["a"] == pytest.approx(expected, rel=1e-12, abs=1e-12)


@SQL
@given(
    parts=st.lists(histograms(BOUNDS[:4] + [math.inf]), min_size=2, max_size=5),
    qs=quantiles,
    seed=st.integers(0, 2**32 - 1),
)
def test_merging_histograms_is_associative_and_order_independent(
    con, parts: list[list[tuple[float, float]]], qs: list[float], seed: int
) -> None:
    def merge(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x[0], x[1] + y[1]) for x, y in zip(a, b, strict=True)]

    left = parts[0]
    for p in parts[1:]:
        left = merge(left, p)  # ((a + b) + c) + ...
    right = parts[-1]
    for p in reversed(parts[:-1]):
        right = merge(p, right)  # a + (b + (c + ...))
    shuffled = parts[:]
    random.Random(seed).shuffle(shuffled)
    other = shuffled[0]
    for p in shuffled[1:]:
        other = merge(other, p)
    assert left == right == other
    py = [histogram_quantile(q, left) for q in qs]
    # SQL over every part's rows in a random order (series and minutes as they come), key "m"; and a
    # second key holding only the first part: the keys' rows never mix.
    rows = [("m", b, c) for p in parts for b, c in p] + [("z", b, c) for b, c in parts[0]]
    random.Random(seed + 1).shuffle(rows)
    got = _sql_quantiles(con, rows, qs)
    if left[-1][1] == 0:
        assert got["m"] == [None] * len(qs)
    else:
        assert got["m"] == pytest.approx(py, rel=1e-12, abs=1e-12)
    if parts[0][-1][1] > 0:
        assert got["z"] == pytest.approx([histogram_quantile(q, parts[0]) for q in qs], rel=1e-12, abs=1e-12)


# --- ratios and percentiles through every mart -------------------------------------------------------

series = st.tuples(st.sampled_from(NICHES), st.sampled_from(REGIONS), st.sampled_from(["web", "api"]))


@st.composite
def metric_inputs(draw: st.DrawFn) -> dict[str, list[tuple]]:
    """Hourly counter increases and minute gauges for two days (whole counts, hits <= requests)."""
    counters, gauges = [], []
    for s in draw(st.lists(series, min_size=1, max_size=4, unique=True)):
        niche, (country, region), service = s
        for day in DAYS:
            for h in draw(st.lists(st.integers(0, 23), max_size=3, unique=True)):
                hs = _hour(day, h)
                ok, bad = draw(st.integers(0, 500)), draw(st.integers(0, 50))
                counters += [
                    (day, hs, "http_requests_total", niche, country, region, service, "200", None, None, float(ok)),
                    (day, hs, "http_requests_total", niche, country, region, service, "503", None, None, float(bad)),
                ]
                for b, c in draw(histograms(BOUNDS)):
                    le = "+Inf" if math.isinf(b) else repr(b)
                    counters.append(
                        (
                            day,
                            hs,
                            "http_request_duration_seconds_bucket",
                            niche,
                            country,
                            region,
                            service,
                            None,
                            le,
                            None,
                            c,
                        )
                    )
                requests = draw(st.integers(0, 300))
                hits = draw(st.integers(0, requests))
                counters += [
                    (day, hs, "cache_requests_total", niche, country, region, None, None, None, None, float(requests)),
                    (day, hs, "cache_hits_total", niche, country, region, None, None, None, None, float(hits)),
                ]
    for day in DAYS:
        for m in draw(st.lists(st.integers(0, 1439), max_size=3, unique=True)):
            ts = warehouse.day_bounds_utc(day)[0] + timedelta(minutes=m)
            gauges.append(
                (day, ts, "db_connections_in_use", None, None, None, None, float(draw(st.integers(0, int(POOL)))))
            )
    return {"counters": counters, "gauges": gauges}


@st.composite
def payment_rows(draw: st.DrawFn, max_size: int = 8) -> list[tuple]:
    """payments_final rows: any status and currency, amounts with cents, refunds up to the amount."""
    rows = []
    for i in range(draw(st.integers(0, max_size))):
        day = draw(st.sampled_from(DAYS))
        niche = draw(st.sampled_from(NICHES))
        country, region = draw(st.sampled_from(REGIONS))
        cents = draw(st.integers(0, 10**10))  # up to 100 M (ARS or USD) per payment
        refunded = draw(st.one_of(st.just(0), st.integers(0, cents)))
        status = draw(st.sampled_from(CATALOG.section("payments")["statuses"]))
        rows.append(
            (
                f"p{i}",
                niche,
                country,
                region,
                draw(st.sampled_from(["mercadopago", "todopago"])),
                "visa",
                "credit_card",
                status,
                "x",
                draw(st.sampled_from(["ARS", "ARS", "USD", "ars", "BRL", None])),
                Decimal(cents).scaleb(-2),
                Decimal(refunded).scaleb(-2),
                _hour(day, 15),
                day,
                status in CATALOG.section("payments")["final_statuses"],
            )
        )
    return rows


# Rates from 0.5 to 10,000 ARS per USD (DECIMAL(18,6)). Far outside (a rate of 0.000001) a day's USD sum
# passes DECIMAL(18,6)'s 12 integer digits and the mart build fails with a conversion error (docs/reliability.md 6).
fx_rates = st.dictionaries(
    st.sampled_from(DAYS), st.integers(500_000, 10**10).map(lambda m: Decimal(m).scaleb(-6)), max_size=2
)


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    if rows:
        marks = ", ".join("?" * len(rows[0]))
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608


def _payments(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    sensitive = set(CATALOG.sensitive_niches)
    _insert(con, "staging.payments_final", [r for r in rows if r[1] not in sensitive])
    _insert(con, "psychology.payments_final", [r for r in rows if r[1] in sensitive])


def _fx(con: duckdb.DuckDBPyConnection, rates: dict[date, Decimal]) -> None:
    _insert(con, "staging.fx_daily", [(d, r, d) for d, r in rates.items()])


RATIOS_0_1 = ("availability_ratio", "cache_hit_ratio", "db_pool_utilization_ratio", "mercadopago_success_ratio")


@MARTS
@given(
    metrics=metric_inputs(),
    pays=payment_rows(),
    rates=fx_rates,
    costs=st.lists(
        st.tuples(st.sampled_from(DAYS), st.sampled_from([None, "shared", *NICHES]), st.integers(0, 10**10)), max_size=4
    ),
)
def test_every_ratio_kpi_is_within_0_1_or_null_on_a_zero_denominator(con, metrics, pays, rates, costs) -> None:
    _reset(con)
    _insert(con, "staging.metric_counters_hourly", metrics["counters"])
    _insert(con, "staging.metric_gauges_minutely", metrics["gauges"])
    _payments(con, pays)
    _fx(con, rates)
    _insert(
        con,
        "staging.cost_items_daily (day, niche_tag, service_tag, charge_category, cost_micros)",
        [(d, n, "api", "usage", m) for d, n, m in costs],
    )
    build_all_marts(con, DAYS)
    rows = con.execute("SELECT kpi, day, niche, country, region, value FROM marts.kpi_daily").fetchall()
    values: dict[tuple, float | None] = {(k, d, n, c, r): v for k, d, n, c, r, v in rows}
    for (kpi, *_), v in values.items():
        assert v is None or math.isfinite(v)  # never NaN/Inf
        if kpi in RATIOS_0_1 and v is not None:
            assert 0.0 <= v <= 1.0, (kpi, v)
        if kpi in ("error_budget_remaining_ratio", "infra_margin_ratio") and v is not None:
            assert v <= 1.0, (kpi, v)  # may be negative (budget overspent, cost above revenue), never above 1
    # NULL exactly when the denominator is zero, at the total grain (hand-summed from the inputs)
    for day in DAYS:
        cache_req = sum(r[10] for r in metrics["counters"] if r[2] == "cache_requests_total" and r[0] == day)
        cache_hits = sum(r[10] for r in metrics["counters"] if r[2] == "cache_hits_total" and r[0] == day)
        v = values[("cache_hit_ratio", day, "all", "all", "all")]
        assert (v is None) == (cache_req == 0)
        if v is not None:
            assert v == pytest.approx(cache_hits / cache_req, rel=1e-12)
        window = [r for r in metrics["counters"] if r[2] == "http_requests_total" and r[0] <= day]  # 30-day SLO window
        total, good = sum(r[10] for r in window), sum(r[10] for r in window if r[7] == "200")
        v = values[("availability_ratio", day, "all", "all", "all")]
        assert (v is None) == (total == 0)
        if v is not None:
            assert v == pytest.approx(good / total, rel=1e-12)
        pool = [r[7] for r in metrics["gauges"] if r[0] == day]
        v = values[("db_pool_utilization_ratio", day, "all", "all", "all")]
        assert v == (max(pool) / POOL if pool else None)
    # latency percentiles: p50 <= p95 <= p99 at every grain, inside [0, largest finite bound] (ms)
    for (kpi, day, n, c, r), p50 in values.items():
        if kpi != "latency_p50_ms" or p50 is None:
            continue
        p95, p99 = values[("latency_p95_ms", day, n, c, r)], values[("latency_p99_ms", day, n, c, r)]
        assert 0 <= p50 <= p95 <= p99 <= BOUNDS[-2] * 1000 + 1e-9, (p50, p95, p99)


# --- shared-cost split -------------------------------------------------------------------------------

cost_items = st.lists(
    st.tuples(
        st.sampled_from(DAYS),
        st.sampled_from([None, "shared", "Shared", *NICHES, "not_in_catalog"]),
        st.sampled_from([None, "api", "web"]),
        st.sampled_from(["usage", "credit", "tax"]),
        st.integers(-(10**12), 10**12),
    ),
    min_size=1,
    max_size=8,
)
traffic = st.dictionaries(st.tuples(st.sampled_from(DAYS), st.sampled_from(NICHES)), st.integers(0, 10**7), max_size=6)


@SQL
@given(items=cost_items, requests=traffic)
def test_shared_cost_split_sums_exactly_and_each_part_is_its_share(con, items, requests) -> None:
    _reset(con)
    _insert(con, "staging.cost_items_daily (day, niche_tag, service_tag, charge_category, cost_micros)", items)
    _insert(
        con,
        "staging.metric_counters_hourly",
        [
            (d, _hour(d, 12), "http_requests_total", n, "AR", "cordoba", "web", "200", None, None, float(v))
            for (d, n), v in requests.items()
        ],
    )
    build_cost_daily(con, DAYS)
    out = con.execute(
        "SELECT day, niche, service, charge_category, allocation, cost_usd FROM marts.cost_daily "
        "WHERE day IN (SELECT unnest($d::DATE[]))",
        {"d": DAYS},
    ).fetchall()
    micros = Decimal("0.000001")
    shared_values = {"shared"}
    for day in DAYS:
        # every micro-dollar of the day's bill is in the mart, whatever was split
        billed = sum(m for d, *_, m in items if d == day)
        assert sum(r[5] for r in out if r[0] == day) == billed * micros
        weights = {n: round(v) for (d, n), v in requests.items() if d == day and v > 0}
        if not weights:  # no traffic that day: the live niches in equal shares
            weights = dict.fromkeys((n.id for n in CATALOG.live_niches(CATALOG.phase_on(day))), 1)
        wsum = sum(weights.values())
        shared: dict[tuple, int] = defaultdict(int)
        tagged: dict[tuple, int] = defaultdict(int)
        for d, niche, service, category, m in items:
            if d != day:
                continue
            if niche is None or niche.lower() in shared_values:
                shared[(service or "shared", category)] += m
            else:
                tagged[(niche, service or "shared", category)] += m
        for (service, category), amount in shared.items():
            parts = {
                r[1]: r[5]
                for r in out
                if r[0] == day and r[2] == service and r[3] == category and r[4] == "shared_split"
            }
            assert sum(parts.values()) == amount * micros  # the split sums exactly to the shared amount
            for niche, w in weights.items():
                exact = Fraction(amount * w, wsum)  # this niche's exact share, in micro-dollars
                assert abs(Fraction(parts.get(niche, Decimal(0)) / micros) - exact) < 1, (niche, parts, exact)
        for (niche, service, category), amount in tagged.items():
            got = [
                r[5]
                for r in out
                if r[0] == day and r[1] == niche and r[2] == service and r[3] == category and r[4] == "tagged"
            ]
            assert got == [amount * micros]  # tagged cost lands whole on its niche, never split


@FAST
@given(amount=st.integers(-(10**13), 10**13), start_h=st.integers(0, 24 * 40), hours=st.integers(0, 24 * 40))
def test_spreading_a_line_item_over_days_keeps_every_micro_dollar(amount: int, start_h: int, hours: int) -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC) + timedelta(hours=start_h)
    parts = spread_micros(amount, start, start + timedelta(hours=hours))
    assert sum(parts.values()) == amount
    assert all((p >= 0) if amount >= 0 else (p <= 0) for p in parts.values())


# --- ARS → USD per day -------------------------------------------------------------------------------


def _half_away(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero, in integers."""
    q, r = divmod(abs(numerator), denominator)
    return (1 if numerator >= 0 else -1) * (q + (1 if 2 * r >= denominator else 0))


@SQL
@given(pays=payment_rows(max_size=10), rates=fx_rates)
def test_ars_to_usd_is_exact_per_payment_and_day(con, pays, rates) -> None:
    _reset(con)
    _payments(con, pays)
    _fx(con, rates)
    build_payments_daily(con, DAYS)
    out = {
        r[:8]: r[8:]
        for r in con.execute(
            "SELECT day, niche, country, region, provider, payment_method, status, status_detail, payments, amount_ars, "
            "amount_usd FROM marts.payments_daily"
        ).fetchall()
    }
    expected: dict[tuple, list] = defaultdict(lambda: [0, 0, 0])  # payments, ars cents | None, usd micros | None
    for _, niche, country, region, provider, method, _, status, detail, currency, amount, refunded, _, day, _ in pays:
        key = (day, niche, country, region, provider, method, status, detail)
        cents = int((amount - refunded) * 100)
        rate = rates.get(day)
        rate_micros = int(rate * 1_000_000) if rate is not None else None
        cur = (currency or "ARS").upper()
        if cur == "ARS" and rate_micros:
            usd, ars = _half_away(cents * 10**10, rate_micros), cents
        elif cur == "USD":
            usd = cents * 10_000
            ars = _half_away(cents * rate_micros, 10**6) if rate_micros else None
        else:
            usd, ars = None, (cents if cur == "ARS" else None)
        e = expected[key]
        e[0] += 1
        e[1] = None if e[1] is None or ars is None else e[1] + ars
        e[2] = None if e[2] is None or usd is None else e[2] + usd
    assert set(out) == set(expected)
    for key, (n, ars, usd) in expected.items():
        got_n, got_ars, got_usd = out[key]
        assert got_n == n
        assert got_ars == (None if ars is None else Decimal(ars).scaleb(-2))
        assert got_usd == (None if usd is None else Decimal(usd).scaleb(-6)), (key, got_usd, usd)
