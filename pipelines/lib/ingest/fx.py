"""FX quotes (``fx/ars_usd.csv``: ``date,ars_per_usd``) → ``raw.fx_rates`` and ``staging.fx_daily``.

A day without a quote (weekend, holiday) uses the last earlier quote; a day before the first quote has
no rate (its revenue in USD is NULL, shown as no data, never guessed).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

import duckdb

from pipelines.lib.catalog import load_catalog
from pipelines.lib.storage import Storage, check_columns
from pipelines.lib.warehouse import LoadResult, QuarantinedRow, quarantine, record_load

FX_KEY = "ars_usd.csv"
_MAX_RATE = Decimal("1e12")  # raw.fx_rates.ars_per_usd is DECIMAL(18,6): 12 integer digits


def load_fx(
    con: duckdb.DuckDBPyConnection,
    storage: Storage,
    key: str = FX_KEY,
    quote_range: tuple[Decimal, Decimal] | None = None,
) -> LoadResult:
    """Replace ``raw.fx_rates`` with the quotes of the CSV; bad rows are quarantined, among them a quote
    outside the catalog's plausible ``currency.fx_quote_range`` (``quote_range`` overrides it)."""
    low, high = quote_range or load_catalog().fx_quote_range
    result = LoadResult("fx", key)
    where = storage.describe(key)
    try:
        text = storage.read_bytes(key).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: not UTF-8 text at byte {exc.start}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        rows = list(enumerate(reader, start=2))
    except csv.Error as exc:  # e.g. a field past csv's size limit: the file cannot be read as CSV
        raise ValueError(f"{where}: malformed CSV after line {reader.line_num} ({exc})") from None
    if header is None or [h.strip() for h in header[:2]] != ["date", "ars_per_usd"]:
        raise ValueError(f"{where}: expected header 'date,ars_per_usd', got {header!r:.200}")
    check_columns(len(header), where)
    result.files = 1
    good: dict[date, tuple[Decimal, int]] = {}
    bad: list[QuarantinedRow] = []
    for line_no, row in rows:
        if not row or all(not c.strip() for c in row):
            continue
        result.rows_read += 1
        try:
            day = date.fromisoformat(row[0].strip())
            rate = Decimal(row[1].strip())
            if not rate.is_finite() or rate <= 0:
                raise InvalidOperation("rate must be a positive number")
            if rate >= _MAX_RATE:
                raise InvalidOperation(f"rate {rate} does not fit DECIMAL(18,6)")
            if not low <= rate <= high:
                raise InvalidOperation(
                    f"rate {rate} ARS per USD is outside the plausible range {low}..{high} "
                    "(catalog currency.fx_quote_range)"
                )
        except (IndexError, ValueError, InvalidOperation) as exc:
            bad.append(QuarantinedRow(where, line_no, ",".join(row), f"bad FX row: {exc}"))
            continue
        if day in good:
            bad.append(
                QuarantinedRow(where, line_no, ",".join(row), f"duplicate quote for {day} (line {good[day][1]} kept)")
            )
            continue
        good[day] = (rate, line_no)
    result.rows_quarantined = quarantine(con, "fx", bad)
    con.execute(
        "CREATE OR REPLACE TABLE raw.fx_rates (date DATE, ars_per_usd DECIMAL(18,6), _source_file VARCHAR, _loaded_at TIMESTAMPTZ)"
    )
    now = datetime.now(UTC)
    if good:  # DuckDB's executemany refuses an empty list: a file without a usable quote loads no rows
        con.executemany(
            "INSERT INTO raw.fx_rates VALUES (?, ?, ?, ?)", [(d, r, where, now) for d, (r, _) in sorted(good.items())]
        )
    result.rows_loaded = len(good)
    record_load(con, result)
    return result


def ensure_fx_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``raw.fx_rates`` and ``staging.fx_daily`` if missing."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS raw.fx_rates (date DATE, ars_per_usd DECIMAL(18,6), _source_file VARCHAR, _loaded_at TIMESTAMPTZ)"
    )
    con.execute("CREATE TABLE IF NOT EXISTS staging.fx_daily (day DATE, ars_per_usd DECIMAL(18,6), quoted_on DATE)")


def build_fx_daily(con: duckdb.DuckDBPyConnection, last_day: date) -> int:
    """``staging.fx_daily(day, ars_per_usd, quoted_on)``: every day from the first quote to ``last_day``,
    carrying the last earlier quote forward. Returns the number of days."""
    ensure_fx_tables(con)
    if con.execute("SELECT count(*) FROM raw.fx_rates").fetchall()[0][0] == 0:
        con.execute("DELETE FROM staging.fx_daily")
        return 0
    con.execute(
        """
        CREATE OR REPLACE TABLE staging.fx_daily AS
        WITH days AS (
            SELECT CAST(d AS DATE) AS day
            FROM range((SELECT min(date) FROM raw.fx_rates),
                       greatest(CAST($last AS DATE), (SELECT max(date) FROM raw.fx_rates)) + INTERVAL 1 DAY,
                       INTERVAL 1 DAY) t(d)
        )
        SELECT days.day, q.ars_per_usd, q.date AS quoted_on
        FROM days ASOF LEFT JOIN raw.fx_rates q ON days.day >= q.date
        ORDER BY days.day
        """,
        {"last": last_day},
    )
    return con.execute("SELECT count(*) FROM staging.fx_daily").fetchall()[0][0]
