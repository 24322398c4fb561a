"""Legacy CUR and FOCUS files next to a CUR 2.0 delivery, through Dagster (``dg.materialize``): raw line items,
``staging.cost_items_daily`` and ``marts.cost_daily`` with exact totals; a restated file replaces, never doubles.

The billing source (a small synthetic folder) holds:
- ``cur/…`` a CUR 2.0 delivery for 2026-11: two hours on 2026-11-03 (12:00-13:00 UTC = 09:00 AR), 1.5 USD
  tagged barber/api and 0.00000177 USD untagged;
- ``legacy/2023-11/cur.csv`` the real anonymized legacy CUR sample (1,281 rows, Usage + Tax);
- ``focus/november.csv`` (FOCUS 1.2, AWS + Microsoft + Google Cloud, all five charge categories) and
  ``focus/october.csv`` (FOCUS 1.0 with a refund).
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from pipelines.defs.warehouse.assets import WAREHOUSE_ASSETS
from pipelines.lib import warehouse
from pipelines.lib.catalog import load_catalog
from pipelines.lib.kpis import marts as marts_lib
from tests.fixtures.sources import broken

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
LEGACY = FIXTURES / "aws-cur-legacy-sample.csv"
SELECTION = ["raw_billing", "cost_items_daily", "cost_daily"]


class Run:
    def __init__(self, root: Path):
        self.root = root
        self.billing = root / "billing"
        self.instance = dg.DagsterInstance.ephemeral()

    def materialize(self, day: str) -> dg.ExecuteInProcessResult:
        empty = str(self.root / "empty")
        resources = {
            "duckdb": DuckDBResource(database=str(self.root / "warehouse.duckdb")),
            "billing_source": SourceResource(source="billing", location=str(self.billing)),
            "metrics_source": MetricsSourceResource(location=empty),
            "events_source": SourceResource(source="events", location=empty),
            "fx_source": SourceResource(source="fx", location=empty),
        }
        return dg.materialize(
            WAREHOUSE_ASSETS, selection=SELECTION, partition_key=day, resources=resources, instance=self.instance
        )

    def query(self, sql: str, params: list | dict | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.root / "warehouse.duckdb"), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def billing_metadata(self, result: dg.ExecuteInProcessResult) -> dict:
        (mat,) = [m for m in result.asset_materializations_for_node("raw_billing")]
        return {k: v.value for k, v in mat.metadata.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    r = Run(tmp_path_factory.mktemp("billing_pipeline"))
    (r.root / "empty").mkdir()
    broken.write_cur2_delivery(
        r.billing,
        "2026-11",
        "nov-1",
        {
            "00001": broken.cur2_parquet(
                [
                    broken.cur2_row(1, cost="1.5", day="2026-11-03"),
                    broken.cur2_row(2, cost="0.0000017700", day="2026-11-03", niche=None),
                ],
                money_as_text=True,
            )
        },
    )
    (r.billing / "legacy" / "2023-11").mkdir(parents=True)
    shutil.copy(LEGACY, r.billing / "legacy" / "2023-11" / "cur.csv")
    (r.billing / "focus").mkdir()
    shutil.copy(FIXTURES / "focus-1.2-multi-provider.csv", r.billing / "focus" / "november.csv")
    shutil.copy(FIXTURES / "focus-1.0-refund.csv", r.billing / "focus" / "october.csv")
    r.first = r.materialize("2026-11-03")  # type: ignore[attr-defined]
    return r


def _raw_totals(run: Run) -> dict[tuple[str, str, str], tuple[Decimal, int]]:
    rows = run.query(
        "SELECT source_format, billing_period, charge_category, sum(unblended_cost), count(*) "
        "FROM raw.billing_line_items GROUP BY ALL"
    )
    return {(f, p, c): (total, n) for f, p, c, total, n in rows}


def _mart_day(run: Run, day: date) -> dict[str, Decimal]:
    rows = run.query("SELECT charge_category, sum(cost_usd) FROM marts.cost_daily WHERE day = ? GROUP BY ALL", [day])
    return dict(rows)


def test_every_format_lands_reconciled_with_exact_raw_totals(run: Run) -> None:
    assert run.first.success  # type: ignore[attr-defined]
    meta = run.billing_metadata(run.first)  # type: ignore[attr-defined]
    # 2 CUR 2.0 rows + 1,281 legacy + 9 + 2 FOCUS rows, nothing quarantined, in = loaded + quarantined
    assert (meta["rows_read"], meta["rows_loaded"], meta["rows_quarantined"], meta["reconciled"]) == (
        1294,
        1294,
        0,
        True,
    )
    assert meta["dagster/row_count"] == 1294
    # the legacy sample, independently: the CSV text summed as exact decimals per line item type
    by_type: dict[str, Decimal] = defaultdict(Decimal)
    with LEGACY.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_type[row["lineItem/LineItemType"]] += Decimal(row["lineItem/UnblendedCost"])
    assert by_type == {"Usage": Decimal("1.60230869740"), "Tax": Decimal("0.08")}
    assert _raw_totals(run) == {
        ("cur2", "2026-11", "usage"): (Decimal("1.5000017700"), 2),
        ("cur_legacy", "2023-11", "usage"): (by_type["Usage"], 1269),
        ("cur_legacy", "2023-11", "tax"): (by_type["Tax"], 12),
        # FOCUS 1.2: 12.345678 + 0.0000004 + 7.10 + 0.333333 + 2.500001; three providers in one file
        ("focus", "2026-11", "usage"): (Decimal("22.2790124"), 5),
        ("focus", "2026-11", "tax"): (Decimal("1.23"), 1),
        ("focus", "2026-11", "credit"): (Decimal("-5"), 1),
        ("focus", "2026-11", "purchase"): (Decimal("100"), 1),
        ("focus", "2026-11", "adjustment"): (Decimal("-0.5"), 1),
        ("focus", "2026-10", "usage"): (Decimal("4"), 1),
        ("focus", "2026-10", "refund"): (Decimal("-1.5"), 1),
    }
    providers = run.query(
        "SELECT DISTINCT provider FROM raw.billing_line_items WHERE source_format = 'focus' ORDER BY 1"
    )
    assert providers == [("aws",), ("azure",), ("gcp",)]  # ProviderName AWS, Microsoft, Google Cloud
    loads = run.query("SELECT scope, rows_read, rows_loaded, rows_quarantined FROM ops.loads ORDER BY scope")
    assert loads == [("cur2", 2, 2, 0), ("legacy+focus", 1292, 1292, 0)]


def _exact_legacy_days() -> dict[tuple[date, str], Fraction]:
    """Independent reference: each legacy row's cost over the AR days of its interval (in proportion to the
    time in each), as exact fractions summed per (day, category)."""
    tz = ZoneInfo(load_catalog().timezone)
    exact: dict[tuple[date, str], Fraction] = defaultdict(Fraction)
    category = {"Usage": "usage", "Tax": "tax"}
    with LEGACY.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            cost = Fraction(Decimal(row["lineItem/UnblendedCost"]))
            start = datetime.fromisoformat(row["lineItem/UsageStartDate"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(row["lineItem/UsageEndDate"].replace("Z", "+00:00"))
            total = Fraction((end - start).total_seconds())
            cursor = start
            while cursor < end:
                local = cursor.astimezone(tz)
                midnight = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(days=1)
                stop = min(end, midnight.astimezone(UTC))
                exact[(local.date(), category[row["lineItem/LineItemType"]])] += (
                    cost * Fraction((stop - cursor).total_seconds()) / total
                )
                cursor = stop
    return dict(exact)


def test_legacy_line_items_reach_staging_exactly_and_the_cost_mart(run: Run) -> None:
    exact = _exact_legacy_days()
    got = dict(
        ((d, c), int(m))
        for d, c, m in run.query(
            "SELECT day, charge_category, sum(cost_micros) FROM staging.cost_items_daily "
            "WHERE day < DATE '2024-01-01' GROUP BY ALL"
        )
    )
    assert set(got) == set(exact)
    # 31 AR days (2023-10-31 21:00 .. 2023-11-30 21:00 AR)
    assert min(d for d, _ in got) == date(2023, 10, 31) and max(d for d, _ in got) == date(2023, 11, 30)
    # each day within one micro-dollar of its exact cost ...
    assert max(abs(Fraction(got[k], 1_000_000) - exact[k]) for k in got) < Fraction(1, 1_000_000)
    # ... and the month sums to the exact bill rounded once: 1.60230869740 -> 1.602309, tax 0.08. The
    # sub-micro line items add up instead of vanishing (rounded one by one, usage came to 1.602291).
    assert sum(v for (_, c), v in got.items() if c == "usage") == 1_602_309
    assert sum(v for (_, c), v in got.items() if c == "tax") == 80_000

    # the same cost mart the CUR 2.0 rows feed (those days are before the partitions: built directly here)
    con = warehouse.connect(run.root / "warehouse.duckdb")
    try:
        days = sorted({d for d, _ in got})
        marts_lib._days_table(con, days)
        marts_lib.build_cost_daily(con, days)
        mart = dict(
            con.execute(
                "SELECT charge_category, sum(cost_usd) FROM marts.cost_daily WHERE day < DATE '2024-01-01' GROUP BY ALL"
            ).fetchall()
        )
        allocations = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT allocation FROM marts.cost_daily WHERE day < DATE '2024-01-01'"
            ).fetchall()
        }
    finally:
        con.close()
    # untagged (the sample has no tags): split across niches, never dropped; usage and tax stay apart
    assert mart == {"usage": Decimal("1.602309"), "tax": Decimal("0.08")}
    assert allocations == {"shared_split"}


def test_cost_mart_of_a_day_with_cur2_and_focus_rows(run: Run) -> None:
    # AR 2026-11-03 by hand. FOCUS daily rows run 00:00-24:00 UTC = 21:00-21:00 AR: 21/24 of the 3rd's row
    # and 3/24 of the 4th's fall on AR 11-03. Tax 1.23 over November's 720 hours: 24/720 = 0.041.
    # usage: barber/api 10 x 21/24 = 8.75 (+ CUR 2.0 1.5), psychology/web 7.10 x 21/24 = 6.2125,
    #        untagged 0.0000004 x 21/24 + 0.333333 x 3/24 + CUR 2.0 0.00000177 = 0.041668745 -> 0.041669,
    #        tagged shared 2.500001 x 3/24 = 0.312500125 -> 0.312500
    # credit -5 x 21/24 = -4.375; adjustment -0.5 x 3/24 = -0.0625; purchase amortized 0
    assert _mart_day(run, date(2026, 11, 3)) == {
        "usage": Decimal("16.816669"),
        "tax": Decimal("0.041"),
        "credit": Decimal("-4.375"),
        "adjustment": Decimal("-0.0625"),
        "purchase": Decimal("0"),
    }
    by_niche = dict(
        run.query(
            "SELECT niche, sum(cost_usd) FROM marts.cost_daily WHERE day = DATE '2026-11-03' "
            "AND allocation = 'tagged' GROUP BY ALL"
        )
    )
    assert by_niche == {"barber": Decimal("10.25"), "psychology": Decimal("1.8375")}  # 6.2125 - 4.375
    # October's FOCUS 1.0 refund is its own category on AR 10-30 (a day re-opened by the load): 4 and -1.5 x 21/24
    assert _mart_day(run, date(2026, 10, 30)) == {"usage": Decimal("3.5"), "refund": Decimal("-1.3125")}


def test_cost_mart_has_the_provider_and_each_providers_day_is_exact(run: Run) -> None:
    # AR 2026-11-03 per provider, by hand (see test_cost_mart_of_a_day_with_cur2_and_focus_rows):
    # aws   FOCUS barber/api 8.75 + CUR 2.0 1.5, untagged 0.00000035 + 0.00000177 -> 0.000002, tax 0.041,
    #       credit -4.375, tagged shared 0.312500125 -> 0.312500: 6.228502
    # azure psychology/web 7.10 x 21/24 = 6.2125 (its purchase is 0 effective)
    # gcp   untagged 0.333333 x 3/24 = 0.041666625 -> 0.041667, adjustment -0.0625: -0.020833
    rows = run.query("SELECT provider, sum(cost_usd) FROM marts.cost_daily WHERE day = DATE '2026-11-03' GROUP BY ALL")
    assert dict(rows) == {"aws": Decimal("6.228502"), "azure": Decimal("6.2125"), "gcp": Decimal("-0.020833")}


def test_restated_focus_file_replaces_never_doubles_and_reopens_its_days(run: Run) -> None:
    november = run.billing / "focus" / "november.csv"
    november.write_text(november.read_text().replace("7.10,7.10,8.00,7.10", "9.50,9.50,10.00,9.50"))
    result = run.materialize("2026-11-20")
    assert result.success
    meta = run.billing_metadata(result)
    # the file set changed: legacy and FOCUS parsed again (1,292 rows); CUR 2.0 unchanged, not re-read
    assert (meta["rows_read"], meta["rows_loaded"], meta["reconciled"]) == (1292, 1292, True)
    touched = meta["touched_days"].split(",")
    assert touched[0] == "2026-10-31" and touched[-1] == "2026-11-30" and "2023-11-15" not in touched
    assert "2026-11-03" in meta["touched_outside_run"]
    totals = _raw_totals(run)
    assert totals[("focus", "2026-11", "usage")] == (Decimal("24.6790124"), 5)  # + 2.40, once
    assert totals[("cur_legacy", "2023-11", "usage")] == (Decimal("1.60230869740"), 1269)
    assert totals[("cur2", "2026-11", "usage")] == (Decimal("1.5000017700"), 2)
    # the mart of AR 11-03, outside this run's partition, is rebuilt: 9.50 x 21/24 = 8.3125 (was 6.2125)
    assert _mart_day(run, date(2026, 11, 3))["usage"] == Decimal("18.916669")


def test_billing_days_outside_the_partitions_are_reported_with_their_amount(run: Run) -> None:
    """The legacy sample's AR days (2023-10-31 .. 2023-11-30) are before the first partition: never built,
    so the cost_items_daily materialization says which days and how much, and logs a warning."""
    (mat,) = run.first.asset_materializations_for_node("cost_items_daily")  # type: ignore[attr-defined]
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["days_outside_partitions"] == "2023-10-31..2023-11-30 (31 days)"
    assert meta["cost_outside_partitions_usd"] == "1.682309"  # the whole sample: usage 1.602309 + tax 0.08
    logs = [
        e.user_message
        for e in run.instance.all_logs(run.first.run_id)  # type: ignore[attr-defined]
        if "outside the partitions" in (e.user_message or "")
    ]
    assert logs and "31 days" in logs[0] and "$1.682309" in logs[0] and "PULSO_PARTITION_START" in logs[0]


REAL_BILL_RUN = """
import json, os, sys
import dagster as dg
from dagster_duckdb import DuckDBResource
from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from pipelines.defs.warehouse.assets import WAREHOUSE_ASSETS
root = sys.argv[1]
empty = os.path.join(root, "empty")
result = dg.materialize(
    WAREHOUSE_ASSETS,
    selection=["raw_billing", "cost_items_daily", "cost_daily"],
    resources={
        "duckdb": DuckDBResource(database=os.path.join(root, "warehouse.duckdb")),
        "billing_source": SourceResource(source="billing", location=os.path.join(root, "billing")),
        "metrics_source": MetricsSourceResource(location=empty),
        "events_source": SourceResource(source="events", location=empty),
        "fx_source": SourceResource(source="fx", location=empty),
    },
    tags={"dagster/asset_partition_range_start": "2023-11-01", "dagster/asset_partition_range_end": "2023-11-30"},
)
mat = result.asset_materializations_for_node("cost_items_daily")[-1]  # one per partition, the same metadata
print(json.dumps({"success": result.success, **{k: str(v.value) for k, v in mat.metadata.items()}}))
"""


def test_a_real_bill_dropped_in_gives_its_exact_total_in_cost_daily(tmp_path: Path) -> None:
    """docs/sources.md: put the legacy CUR under ``legacy/``, set ``PULSO_PARTITION_START`` to the bill's first
    day, materialize its days. The real anonymized sample is $1.682309 (micro-dollars, rounded once); the
    first partition is AR 2023-11-01, so AR 2023-10-31 (21:00-24:00, UTC Nov 1 00:00-03:00) is reported as
    left out: usage 0.002885 + tax 0.08 x 3/720 = 0.000333 = $0.003218, and cost_daily holds the rest."""
    import json
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    (tmp_path / "billing" / "legacy" / "2023-11").mkdir(parents=True)
    shutil.copy(LEGACY, tmp_path / "billing" / "legacy" / "2023-11" / "cur.csv")
    env = {**__import__("os").environ, "PULSO_PARTITION_START": "2023-11-01"}
    done = subprocess.run(
        [sys.executable, "-c", REAL_BILL_RUN, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads(done.stdout.strip().splitlines()[-1])
    assert meta["success"] is True
    assert meta["days_outside_partitions"] == "2023-10-31 (1 day)"
    assert meta["cost_outside_partitions_usd"] == "0.003218"
    oct31 = sum(v for (d, _), v in _exact_legacy_days().items() if d == date(2023, 10, 31))
    assert abs(Fraction(3218, 1_000_000) - oct31) < Fraction(2, 1_000_000)  # independent: exact fractions
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        total, days, providers = con.execute(
            "SELECT sum(cost_usd), count(DISTINCT day), list(DISTINCT provider) FROM marts.cost_daily"
        ).fetchall()[0]
    finally:
        con.close()
    assert (total, days, providers) == (Decimal("1.679091"), 30, ["aws"])  # 1.682309 - 0.003218
