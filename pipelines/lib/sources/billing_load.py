"""Load legacy CUR and FOCUS files into ``raw.billing_line_items`` beside the CUR 2.0 rows.

The files live in the billing source under ``legacy/`` and ``focus/`` (any depth, CSV, CSV.gz or Parquet;
the format is detected from the columns). Each file is parsed by
:mod:`pipelines.lib.sources.billing_formats`; a (billing period, format) present in the files replaces
that period's rows of that format (a re-delivered month is never doubled); rejected rows go to the
quarantine with their reasons, unreadable files too, and the counts are audited in ``ops.loads``.
CUR 2.0 rows (``source_format = 'cur2'``) are never touched here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl

from pipelines.lib.sources.billing_formats import BillingFormatError, BillingParse, read_billing_file
from pipelines.lib.storage import SourceError, Storage
from pipelines.lib.warehouse import LoadResult, QuarantinedRow, ar_tz, quarantine, record_load

FOLDERS = ("legacy", "focus")
_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def billing_files(storage: Storage) -> list[str]:
    """Keys of legacy CUR / FOCUS files in the billing source (under ``legacy/`` or ``focus/``)."""
    keys: list[str] = []
    for folder in FOLDERS:
        keys.extend(k for k in storage.list(folder) if k.lower().endswith(_SUFFIXES))
    return sorted(keys)


def load_billing_files(con: duckdb.DuckDBPyConnection, storage: Storage) -> LoadResult:
    """Parse every legacy CUR / FOCUS file and replace the (period, format) rows they deliver.

    ``raw.billing_line_items`` must exist (``pipelines.lib.ingest.billing.ensure_billing_tables``).
    ``touched_days`` are the Argentina days covered by the replaced and the new rows.
    """
    result = LoadResult("billing", "legacy+focus")
    parsed: list[BillingParse] = []
    bad: list[QuarantinedRow] = []
    for key in billing_files(storage):
        try:
            parse = read_billing_file(storage, key)
        except (BillingFormatError, SourceError) as exc:
            # A file that cannot be read at all is one quarantined row naming it; the others still load.
            result.rows_read += 1
            bad.append(QuarantinedRow(storage.describe(key), None, "", str(exc)))
            result.warnings.append(str(exc))
            continue
        result.files += 1
        result.rows_read += parse.rows_read
        result.rows_loaded += parse.line_items.height
        bad.extend(QuarantinedRow(r["source_file"], r["row_number"], r["row"], r["reason"])
                   for r in parse.rejects.iter_rows(named=True))
        parsed.append(parse)
    items = pl.concat([p.line_items for p in parsed]) if parsed else None
    if items is not None and items.height:
        periods = items.select("billing_period", "source_format").unique().rows()
        result.touched_days |= _days(con, periods)
        for period, fmt in periods:
            con.execute("DELETE FROM raw.billing_line_items WHERE billing_period = ? AND source_format = ?",
                        [period, fmt])
        con.register("_billing_items", items.with_columns(pl.lit(datetime.now(UTC)).alias("_loaded_at")).to_arrow())
        try:
            con.execute("INSERT INTO raw.billing_line_items BY NAME SELECT * FROM _billing_items")
        finally:
            con.unregister("_billing_items")
        result.touched_days |= _days(con, periods)
    result.rows_quarantined = quarantine(con, "billing", bad)
    record_load(con, result)
    return result


def _days(con: duckdb.DuckDBPyConnection, periods: list[tuple[str, str]]):
    """Argentina days covered by the stored rows of the given (period, format) pairs."""
    if not periods:
        return set()
    rows = con.execute(
        "SELECT DISTINCT CAST(timezone($tz, usage_start) AS DATE) FROM raw.billing_line_items "
        "WHERE billing_period || '|' || source_format IN (SELECT unnest($keys))",
        {"tz": str(ar_tz()), "keys": [f"{p}|{f}" for p, f in periods]},
    ).fetchall()
    return {r[0] for r in rows}
