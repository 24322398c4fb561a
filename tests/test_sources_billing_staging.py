"""``staging.cost_items_daily`` from the billing line items: the three cost kinds and the cost views'
dimensions kept apart, exact to the micro-dollar where it matters.

- A billing period's days of one series (provider, niche, service, category) sum to its exact total rounded
  once, for effective, billed and list cost alike.
- The finer dimensions (accounts, region, frequency, pricing, commitment) of a series' day sum to it exactly,
  each within one micro-dollar of its exact share.
- One source per (provider, billing account, billing period): a CUR 2.0 export wins over a legacy CUR, which
  wins over a FOCUS export of the same account.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pytest

from pipelines.lib import warehouse
from pipelines.lib.catalog import load_catalog
from pipelines.lib.ingest.billing import build_cost_items_daily, ensure_billing_tables
from pipelines.lib.sources.billing_formats import LINE_ITEM_SCHEMA, parse_focus
from tests.fixtures.sources.focus import focus_csv

TZ = ZoneInfo(load_catalog().timezone)
MICRO = Decimal("0.000001")


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    ensure_billing_tables(c)
    yield c
    c.close()


def _insert(con, items: pl.DataFrame) -> None:
    con.register("_items", items.to_arrow())
    con.execute("INSERT INTO raw.billing_line_items BY NAME SELECT * FROM _items")
    con.unregister("_items")


def _exact_days(rows: list[dict], money: str) -> dict[tuple, Fraction]:
    """Independent reference: each item's cost over the AR days of its interval, as exact fractions."""
    out: dict[tuple, Fraction] = defaultdict(Fraction)
    for r in rows:
        if r[money] is None:
            continue
        cost, start, end = Fraction(r[money]), r["usage_start"], r["usage_end"]
        if end <= start:
            out[(r["billing_period"], r["series"], start.astimezone(TZ).date())] += cost
            continue
        total, cursor = Fraction((end - start).total_seconds()), start
        while cursor < end:
            local = cursor.astimezone(TZ)
            stop = min(
                end, (datetime(local.year, local.month, local.day, tzinfo=TZ) + timedelta(days=1)).astimezone(UTC)
            )
            out[(r["billing_period"], r["series"], local.date())] += (
                cost * Fraction((stop - cursor).total_seconds()) / total
            )
            cursor = stop
    return dict(out)


def _random_items(seed: int) -> pl.DataFrame:
    """Line items of two providers, two billing periods, mixed signs, sub-micro amounts, multi-day spans."""
    rng = random.Random(seed)
    rows = []
    for i in range(300):
        start = datetime(2026, 10, 28, tzinfo=UTC) + timedelta(hours=rng.randrange(0, 24 * 8))
        hours = rng.choice([1, 1, 1, 5, 24, 24 * 3])
        eff = Decimal(rng.randrange(-30_000_000, 90_000_000)) / Decimal(10**10) * rng.choice([1, 1000, 10**6])
        rows.append(
            {
                "source_format": "focus",
                "source_file": "f.csv",
                "delivery": "d",
                "billing_period": start.strftime("%Y-%m"),
                "line_item_id": f"li-{i}",
                "usage_start": start,
                "usage_end": start + timedelta(hours=hours),
                "provider": rng.choice(["aws", "azure"]),
                "billing_account_id": rng.choice(["a1", "a2"]),
                "region": rng.choice(["sa-east-1", "us-east-1", None]),
                "charge_category": rng.choice(["usage", "usage", "credit"]),
                "pricing_category": rng.choice(["Standard", "Committed", None]),
                "niche_tag": rng.choice(["barber", None]),
                "currency": "USD",
                "unblended_cost": eff * 2,
                "amortized_cost": eff,
                "list_cost": None if rng.random() < 0.3 else eff * 3,
            }
        )
    return pl.DataFrame(rows, schema={k: v for k, v in LINE_ITEM_SCHEMA.items() if k in rows[0]})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_cost_kind_of_every_series_is_exact_and_the_finer_rows_share_it(con, seed: int) -> None:
    items = _random_items(seed)
    _insert(con, items)
    build_cost_items_daily(con)
    staged = con.execute(
        "SELECT day, provider, niche_tag, charge_category, billing_account_id, region, pricing_category, "
        "cost_micros, billed_micros, list_micros FROM staging.cost_items_daily"
    ).fetchall()
    rows = [{**r, "series": (r["provider"], r["niche_tag"], r["charge_category"])} for r in items.iter_rows(named=True)]
    for money, column in (("amortized_cost", 7), ("unblended_cost", 8), ("list_cost", 9)):
        exact = _exact_days(rows, money)
        # a billing period's days of one series sum to its exact total rounded once (half-even)
        per_period: dict[tuple, Fraction] = defaultdict(Fraction)
        for (period, series, _day), v in exact.items():
            per_period[(period, series)] += v
        got_series_day: dict[tuple, int] = defaultdict(int)
        for r in staged:
            if r[column] is not None:
                got_series_day[((r[1], r[2], r[3]), r[0])] += r[column]
        exact_series_day: dict[tuple, Fraction] = defaultdict(Fraction)
        for (_period, series, day), v in exact.items():
            exact_series_day[(series, day)] += v
        # each series' day within one micro-dollar per billing period it mixes (two at most here)
        assert all(abs(got_series_day[k] - v * 1_000_000) < 2 for k, v in exact_series_day.items()), money
        total = sum(got_series_day.values())
        rounded = sum(
            int((Decimal(v.numerator) / Decimal(v.denominator) * 1_000_000).to_integral_value(ROUND_HALF_EVEN))
            for v in per_period.values()
        )
        assert total == rounded, money  # the sum of the series' exact totals, each rounded once
    # the finer rows: each within one micro-dollar of its exact share
    fine_exact: dict[tuple, Fraction] = defaultdict(Fraction)
    fine_rows = [
        {**r, "series": (r["provider"], r["niche_tag"], r["charge_category"], r["billing_account_id"], r["region"],
                         r["pricing_category"])}
        for r in items.iter_rows(named=True)
    ]  # fmt: skip
    for (_period, series, day), v in _exact_days(fine_rows, "amortized_cost").items():
        fine_exact[(day, *series)] += v
    got_fine = {(r[0], r[1], r[2], r[3], r[4], r[5], r[6]): r[7] for r in staged}
    assert set(got_fine) == set(fine_exact)
    assert max(abs(got_fine[k] - v * 1_000_000) for k, v in fine_exact.items()) < 2  # two periods may share a day


def test_four_provider_bill_in_staging_per_provider_and_cost_kind(con) -> None:
    from tests.test_sources_billing_focus import november_bill

    _insert(con, parse_focus(focus_csv(november_bill()), "focus/bill.csv").line_items)
    build_cost_items_daily(con)
    got = dict(
        ((p, "effective"), e)
        for p, e in con.execute(
            "SELECT provider, sum(cost_micros) FROM staging.cost_items_daily GROUP BY ALL"
        ).fetchall()
    )
    got |= dict(
        ((p, "billed"), b)
        for p, b in con.execute(
            "SELECT provider, sum(billed_micros) FROM staging.cost_items_daily GROUP BY ALL"
        ).fetchall()
    )
    got |= dict(
        ((p, "list"), v)
        for p, v in con.execute(
            "SELECT provider, sum(list_micros) FROM staging.cost_items_daily GROUP BY ALL"
        ).fetchall()
    )
    # the raw totals (tests/test_sources_billing_focus.py) in micro-dollars, each series rounded once:
    # aws -5.876121099 -> -5.876121; gcp usage 0.333333333 + 0.1 -> 0.433333, barber 2.5, adjustment -0.0000001 -> 0
    assert got == {
        ("aws", "effective"): -5_876_121,
        ("aws", "billed"): -5_876_121,
        ("aws", "list"): 9_600_000,
        ("azure", "effective"): 7_350_000,
        ("azure", "billed"): 7_350_000,
        ("azure", "list"): 8_000_000,
        ("gcp", "effective"): 2_933_333,
        ("gcp", "billed"): 2_933_333,
        ("gcp", "list"): None,
        ("oci", "effective"): 3_210_000,
        ("oci", "billed"): 3_210_000,
        ("oci", "list"): None,
    }
    dims = con.execute(
        "SELECT DISTINCT provider, billing_account_id, sub_account_id, region, service_category, charge_frequency, "
        "pricing_category, commitment_discount_type, commitment_discount_status FROM staging.cost_items_daily "
        "WHERE commitment_discount_status IS NOT NULL ORDER BY ALL"
    ).fetchall()
    assert dims == [
        ("aws", "111111111111", "222222222222", "sa-east-1", "Compute", "Usage-Based", "Committed", "Savings Plan", "Unused"),
        ("aws", "111111111111", "222222222222", "sa-east-1", "Compute", "Usage-Based", "Committed", "Savings Plan", "Used"),
    ]  # fmt: skip
