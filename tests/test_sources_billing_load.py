"""Legacy CUR and FOCUS files into raw.billing_line_items: totals, replacement, quarantine, audit."""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib import warehouse
from pipelines.lib.quality.runner import run_suite
from pipelines.lib.quality.suites import suite_for
from pipelines.lib.sources.billing_load import billing_files, load_billing_files
from pipelines.lib.storage import LocalStorage

ingest_billing = pytest.importorskip("pipelines.lib.ingest.billing")
FIXTURES = Path(__file__).parent / "fixtures" / "sources"


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    ingest_billing.ensure_billing_tables(c)
    yield c
    c.close()


def _source(root: Path) -> LocalStorage:
    (root / "legacy" / "2023-11").mkdir(parents=True)
    shutil.copy(FIXTURES / "aws-cur-legacy-sample.csv", root / "legacy" / "2023-11" / "cur.csv")
    (root / "focus").mkdir()
    shutil.copy(FIXTURES / "focus-1.2-multi-provider.csv", root / "focus" / "november.csv")
    shutil.copy(FIXTURES / "focus-1.0-refund.csv", root / "focus" / "october.csv")
    return LocalStorage(root)


def _totals(con) -> dict[tuple[str, str], tuple[Decimal, int]]:
    rows = con.execute("SELECT source_format, billing_period, sum(unblended_cost), count(*) "
                       "FROM raw.billing_line_items GROUP BY ALL").fetchall()
    return {(f, p): (total, n) for f, p, total, n in rows}


def test_legacy_and_focus_land_with_exact_totals_and_replace_on_reload(tmp_path: Path, con) -> None:
    storage = _source(tmp_path)
    assert billing_files(storage) == ["focus/november.csv", "focus/october.csv", "legacy/2023-11/cur.csv"]
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined, result.files) == (1292, 1292, 0, 3)
    expected = {
        ("cur_legacy", "2023-11"): (Decimal("1.682291"), 1281),
        ("focus", "2026-11"): (Decimal("118.009012"), 9),  # 22.279012 + 1.23 - 5 + 100 - 0.5
        ("focus", "2026-10"): (Decimal("2.5"), 2),  # 4 - 1.5 refund
    }
    assert _totals(con) == expected
    assert date(2026, 11, 3) in result.touched_days and date(2023, 10, 31) in result.touched_days  # UTC 00:00 = AR 21:00
    # loading again replaces, never doubles
    load_billing_files(con, storage)
    assert _totals(con) == expected
    assert run_suite(con, suite_for("raw_billing")).failures == []


def test_bad_rows_and_unreadable_files_are_quarantined_the_rest_lands(tmp_path: Path, con) -> None:
    storage = _source(tmp_path)
    good = (FIXTURES / "focus-1.2-multi-provider.csv").read_text().splitlines()
    (tmp_path / "focus" / "november.csv").write_text("\n".join([*good, good[1].replace(",USD,", ",XYZ,", 1)]) + "\n")
    (tmp_path / "focus" / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (1294, 1292, 2)
    reasons = sorted(con.execute("SELECT source_file, row_number, reason FROM quarantine.rows").fetchall(),
                     key=lambda r: r[0])
    assert reasons[0][0].endswith("focus/broken.csv.gz") and "gzip stream is cut short or corrupt" in reasons[0][2]
    assert reasons[1][0].endswith("focus/november.csv") and reasons[1][1] == 11
    assert reasons[1][2].startswith("BillingCurrency 'XYZ' is not a known currency")
    assert _totals(con)[("focus", "2026-11")] == (Decimal("118.009012"), 9)


def test_cur2_rows_are_never_touched(tmp_path: Path, con) -> None:
    from tests.fixtures.sources import broken

    broken.write_cur2_delivery(tmp_path, "2026-11", "nov-1", {"00001": broken.cur2_parquet([broken.cur2_row(1)])})
    ingest_billing.load_cur2(con, LocalStorage(tmp_path))
    storage = _source(tmp_path)
    load_billing_files(con, storage)
    assert _totals(con)[("cur2", "2026-11")] == (Decimal("1.5"), 1)
    assert _totals(con)[("focus", "2026-11")] == (Decimal("118.009012"), 9)
