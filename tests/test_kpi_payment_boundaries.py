"""Payments at the edges of the KPIs that count them: the Argentina day and the final-status denominator.

Hand-made event logs through the real loaders and marts (``pipelines.lib.kpis.pipeline.refresh``);
every expected number is worked out in the comments.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb

from pipelines.lib import warehouse
from pipelines.lib.ingest.metrics import FileMetricsReader
from pipelines.lib.kpis.pipeline import SourceSet, refresh
from pipelines.lib.storage import LocalStorage
from tests.test_ingest import KEY, Sources, payment

TUE, WED, THU = date(2026, 11, 3), date(2026, 11, 4), date(2026, 11, 5)


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


def kpi(con: duckdb.DuckDBPyConnection, kpi_id: str, day: date) -> float | None:
    rows = con.execute(
        "SELECT value FROM marts.kpi_daily WHERE kpi = ? AND day = ? AND niche = 'all' AND country = 'all' "
        "AND region = 'all'",
        [kpi_id, day],
    ).fetchall()
    assert len(rows) == 1, (kpi_id, day, rows)
    return rows[0][0]


def mercadopago_slo(con: duckdb.DuckDBPyConnection, day: date) -> tuple[float, float]:
    """(good, total) of the MercadoPago success SLO over its period ending ``day``, all places."""
    return con.execute(
        "SELECT sum(good), sum(total) FROM marts.slo_daily WHERE slo = 'mercadopago_success' AND day = ? "
        "AND niche = 'all' AND country = 'all' AND region = 'all'",
        [day],
    ).fetchone()


def test_a_payment_at_2330_argentina_time_counts_on_its_argentina_day(tmp_path: Path) -> None:
    """23:30 on Tuesday in Buenos Aires is 02:30 UTC on Wednesday (and arrives in Wednesday's folder)."""
    src = Sources(tmp_path)
    src.fx([("2026-11-03", "1000"), ("2026-11-04", "1250")])
    src.events(
        WED,
        [
            # Tuesday 23:30 AR, approved a minute later (still Tuesday in Argentina): ARS 1500.
            payment("e1", "pay1", "approved", "2026-11-04T02:30:00Z", "2026-11-04T02:31:00Z", amount="1500.00"),
            # Wednesday 00:00 AR sharp, rejected.
            payment("e2", "pay2", "rejected", "2026-11-04T03:00:00Z", "2026-11-04T03:01:00Z", amount="900.00"),
        ],
    )
    con = run(tmp_path, [TUE, WED])
    days = con.execute("SELECT day, status, payments FROM marts.payments_daily ORDER BY day").fetchall()
    assert days == [(TUE, "approved", 1), (WED, "rejected", 1)]
    # Revenue with Tuesday's own rate: 1500 / 1000 (Wednesday's 1250 would give 1.2).
    assert kpi(con, "revenue_usd", TUE) == 1.5
    assert con.execute("SELECT amount_usd FROM marts.payments_daily WHERE day = ?", [TUE]).fetchall() == [
        (Decimal("1.500000"),)
    ]
    # MercadoPago success: Tuesday 1 of 1, Wednesday 0 of 1 (as UTC days it would be 1 of 2 on Wednesday).
    assert kpi(con, "mercadopago_success_ratio", TUE) == 1.0
    assert kpi(con, "mercadopago_success_ratio", WED) == 0.0
    # The SLO's rolling period: up to Tuesday 1 of 1; up to Wednesday 1 of 2 (UTC days: 0 of 0, then 1 of 2).
    assert mercadopago_slo(con, TUE) == (1.0, 1.0)
    assert mercadopago_slo(con, WED) == (1.0, 2.0)


def test_pending_and_in_process_payments_are_not_in_the_success_denominator(tmp_path: Path) -> None:
    """Success = attempts whose final status is a success / attempts that reached a final status."""
    src = Sources(tmp_path)
    src.fx([("2026-11-03", "1000"), ("2026-11-05", "1000")])
    src.events(
        TUE,
        [
            payment("e1", "pay1", "approved", "2026-11-03T13:00:00Z", "2026-11-03T13:01:00Z"),
            payment("e2", "pay2", "rejected", "2026-11-03T14:00:00Z", "2026-11-03T14:01:00Z"),
            payment("e3", "pay3", "pending", "2026-11-03T15:00:00Z", "2026-11-03T15:00:00Z"),
            payment("e4", "pay4", "in_process", "2026-11-03T16:00:00Z", "2026-11-03T16:00:00Z"),
            payment("e5", "pay5", "authorized", "2026-11-03T17:00:00Z", "2026-11-03T17:00:00Z"),
        ],
    )
    con = run(tmp_path, [TUE])
    # 1 approved of 2 final (approved, rejected); pending, in_process and authorized are not final yet.
    assert kpi(con, "mercadopago_success_ratio", TUE) == 0.5
    assert mercadopago_slo(con, TUE) == (1.0, 2.0)
    # Revenue only from the approved one: ARS 1000 / 1000.
    assert kpi(con, "revenue_usd", TUE) == 1.0

    # Thursday: the pending one is approved and the in_process one rejected (late updates in a later
    # folder). They count on Tuesday, their creation day: 2 approved of 4 final.
    src.events(
        THU,
        [
            payment("e6", "pay3", "approved", "2026-11-03T15:00:00Z", "2026-11-05T12:00:00Z"),
            payment("e7", "pay4", "rejected", "2026-11-03T16:00:00Z", "2026-11-05T12:30:00Z"),
        ],
    )
    con = run(tmp_path, [TUE, WED, THU])
    assert kpi(con, "mercadopago_success_ratio", TUE) == 0.5
    assert mercadopago_slo(con, TUE) == (2.0, 4.0)
    assert kpi(con, "revenue_usd", TUE) == 2.0
    assert kpi(con, "mercadopago_success_ratio", THU) is None  # nothing created on Thursday: no data


def test_a_day_with_only_unfinished_payments_has_no_success_ratio(tmp_path: Path) -> None:
    """No attempt reached a final status: no data, never 0 % or 100 %."""
    src = Sources(tmp_path)
    src.fx([("2026-11-03", "1000")])
    src.events(
        TUE,
        [
            payment("e1", "pay1", "pending", "2026-11-03T13:00:00Z", "2026-11-03T13:00:00Z"),
            payment("e2", "pay2", "in_process", "2026-11-03T14:00:00Z", "2026-11-03T14:00:00Z"),
        ],
    )
    con = run(tmp_path, [TUE])
    assert kpi(con, "mercadopago_success_ratio", TUE) is None
    assert mercadopago_slo(con, TUE) == (None, None)
