"""FX quotes at their edges: the day range of ``staging.fx_daily``, duplicates, blanks and bad quotes."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib import warehouse
from pipelines.lib.ingest.fx import build_fx_daily, load_fx
from pipelines.lib.storage import InputTooLarge, LocalStorage


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    yield c
    c.close()


def write_quotes(root: Path, text: str) -> LocalStorage:
    (root / "fx").mkdir(parents=True, exist_ok=True)
    (root / "fx" / "ars_usd.csv").write_text(text, encoding="utf-8")
    return LocalStorage(root / "fx")


def fx_daily(con) -> list[tuple[date, Decimal, date]]:
    return con.execute("SELECT day, ars_per_usd, quoted_on FROM staging.fx_daily ORDER BY day").fetchall()


def test_a_quote_after_the_last_day_built_is_kept_and_days_run_to_it(tmp_path: Path, con) -> None:
    storage = write_quotes(tmp_path, "date,ars_per_usd\n2026-11-02,1000\n2026-11-06,1100\n")
    load_fx(con, storage)
    # Built up to Wednesday the 4th, with a quote already on Friday the 6th: days run to the 6th.
    assert build_fx_daily(con, date(2026, 11, 4)) == 5
    assert fx_daily(con) == [
        (date(2026, 11, 2), Decimal("1000.000000"), date(2026, 11, 2)),
        (date(2026, 11, 3), Decimal("1000.000000"), date(2026, 11, 2)),
        (date(2026, 11, 4), Decimal("1000.000000"), date(2026, 11, 2)),
        (date(2026, 11, 5), Decimal("1000.000000"), date(2026, 11, 2)),
        (date(2026, 11, 6), Decimal("1100.000000"), date(2026, 11, 6)),
    ]
    # Built to a later day: the last quote carries forward to it.
    assert build_fx_daily(con, date(2026, 11, 8)) == 7
    assert fx_daily(con)[-1] == (date(2026, 11, 8), Decimal("1100.000000"), date(2026, 11, 6))


def test_no_quotes_empties_fx_daily(tmp_path: Path, con) -> None:
    load_fx(con, write_quotes(tmp_path, "date,ars_per_usd\n2026-11-02,1000\n"))
    assert build_fx_daily(con, date(2026, 11, 3)) == 2
    load_fx(con, write_quotes(tmp_path, "date,ars_per_usd\n2026-11-02,-5\n"))
    assert build_fx_daily(con, date(2026, 11, 3)) == 0
    assert fx_daily(con) == []


def test_duplicates_blanks_and_bad_quotes(tmp_path: Path, con) -> None:
    text = (
        "\ufeffdate,ars_per_usd\n"  # a byte-order mark, as spreadsheet exports write
        "2026-11-02,1000\n"
        "\n"
        " , \n"
        "2026-11-02,999\n"  # line 5: the same day again
        "2026-11-03,0\n"
        "2026-11-04,-1\n"
        "2026-11-05,NaN\n"
        "2026-11-06\n"
        "2026-11-09,1000000000000\n"  # 10^12: does not fit DECIMAL(18,6)
        "2026-11-10,1010.25\n"
    )
    result = load_fx(con, write_quotes(tmp_path, text))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (8, 2, 6)
    reasons = dict(con.execute("SELECT row_number, reason FROM quarantine.rows").fetchall())
    assert reasons[5] == "duplicate quote for 2026-11-02 (line 2 kept)"
    assert all(reasons[n] == "bad FX row: rate must be a positive number" for n in (6, 7, 8))
    assert reasons[9].startswith("bad FX row: ")  # no rate column
    assert reasons[10] == "bad FX row: rate 1000000000000 does not fit DECIMAL(18,6)"
    assert set(reasons) == {5, 6, 7, 8, 9, 10}
    assert con.execute("SELECT date, ars_per_usd FROM raw.fx_rates ORDER BY date").fetchall() == [
        (date(2026, 11, 2), Decimal("1000.000000")),
        (date(2026, 11, 10), Decimal("1010.250000")),
    ]


def test_the_plausible_range_is_inclusive_and_can_be_overridden(tmp_path: Path, con) -> None:
    storage = write_quotes(tmp_path, "date,ars_per_usd\n2026-11-02,10\n2026-11-03,20\n2026-11-04,20.000001\n")
    result = load_fx(con, storage, quote_range=(Decimal("10"), Decimal("20")))
    assert (result.rows_loaded, result.rows_quarantined) == (2, 1)
    (reason,) = con.execute("SELECT reason FROM quarantine.rows").fetchone()
    assert reason == (
        "bad FX row: rate 20.000001 ARS per USD is outside the plausible range 10..20 (catalog currency.fx_quote_range)"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("day,rate\n2026-11-02,1000\n", "expected header 'date,ars_per_usd'"),
        ("", "expected header 'date,ars_per_usd', got None"),
    ],
)
def test_a_file_without_the_header_is_a_clear_error(tmp_path: Path, con, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_fx(con, write_quotes(tmp_path, text))


def test_the_load_is_recorded_and_bad_rows_keep_their_file_and_text(tmp_path: Path, con) -> None:
    storage = write_quotes(tmp_path, "date,ars_per_usd,source\n2026-11-02,1000,bcra\n2026-11-03,0,bcra\n")
    result = load_fx(con, storage)  # a third column is allowed: only the first two are read
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (2, 1, 1)
    loads = con.execute(
        "SELECT source, scope, rows_read, rows_loaded, rows_quarantined, files FROM ops.loads"
    ).fetchall()
    assert loads == [("fx", "ars_usd.csv", 2, 1, 1, 1)]
    quarantined = con.execute("SELECT source, source_file, row_number, row FROM quarantine.rows").fetchall()
    assert quarantined == [("fx", storage.describe("ars_usd.csv"), 3, "2026-11-03,0,bcra")]
    load_fx(con, write_quotes(tmp_path, "date,ars_per_usd\n2026-11-02,1000\n2026-11-02,1001\n"))
    (where,) = con.execute("SELECT source_file FROM quarantine.rows WHERE reason LIKE 'duplicate%'").fetchone()
    assert where == storage.describe("ars_usd.csv")


def test_unreadable_files_are_clear_errors_naming_the_file(tmp_path: Path, con, monkeypatch) -> None:
    storage = write_quotes(tmp_path, "")
    where = storage.describe("ars_usd.csv")
    (tmp_path / "fx" / "ars_usd.csv").write_bytes(b"date,ars_per_usd\n2026-11-02,1000\xff\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(where)}: not UTF-8 text at byte 32$"):
        load_fx(con, storage)
    (tmp_path / "fx" / "ars_usd.csv").write_text('date,ars_per_usd\n2026-11-02,"' + "9" * 200_000 + '"\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(where)}: malformed CSV after line 2 \(field larger"):
        load_fx(con, storage)
    monkeypatch.setenv("PULSO_MAX_COLUMNS", "3")
    (tmp_path / "fx" / "ars_usd.csv").write_text("date,ars_per_usd,a,b\n2026-11-02,1000,x,y\n")
    with pytest.raises(InputTooLarge, match=rf"^{re.escape(where)}: column count \(4 columns\)"):
        load_fx(con, storage)
