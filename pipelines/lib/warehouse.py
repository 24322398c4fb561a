"""The DuckDB warehouse: connection, schemas, the load audit and the quarantine.

Layout (docs/data-contract.md section 2): ``raw`` (as loaded), ``staging`` (typed, deduplicated, per-day
aggregates), ``marts`` (KPIs and the published tables), ``psychology`` (the sensitive niche's event rows),
``quarantine`` (rows that could not be loaded, with the reason) and ``ops`` (load audit, deliveries).

Only Dagster writes the warehouse; these helpers are plain functions over a connection so loaders and
KPI SQL are testable without Dagster.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from pipelines.lib.catalog import load_catalog
from pipelines.lib.faults import crash_point

SCHEMAS = ("raw", "staging", "marts", "psychology", "quarantine", "ops")


def ar_tz() -> ZoneInfo:
    """The reporting time zone (Argentina) from the catalog."""
    return ZoneInfo(load_catalog().timezone)


def day_bounds_utc(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of an Argentina day, in UTC."""
    start = datetime(day.year, day.month, day.day, tzinfo=ar_tz())
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def ar_day(ts: datetime) -> date:
    """The Argentina day of an aware timestamp."""
    return ts.astimezone(ar_tz()).date()


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last`` inclusive."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def warehouse_path() -> Path:
    """``$PULSO_WAREHOUSE`` or ``data/warehouse.duckdb``."""
    return Path(os.environ.get("PULSO_WAREHOUSE", "data/warehouse.duckdb"))


def connect(path: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (creating schemas and tables) with the session in UTC."""
    target = Path(path) if path is not None else warehouse_path()
    if str(target) != ":memory:":
        target.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target))
    prepare(con)
    return con


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Set the session time zone to UTC and create every schema and fixed table (idempotent)."""
    # Timestamps are stored in UTC; AR days are computed explicitly, never from the session zone.
    con.execute("SET TimeZone = 'UTC'")
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS quarantine.rows (
            source VARCHAR, source_file VARCHAR, row_number BIGINT, "row" VARCHAR, reason VARCHAR,
            loaded_at TIMESTAMPTZ)
        """
    )
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS ops.loads (
            source VARCHAR, scope VARCHAR, rows_read BIGINT, rows_loaded BIGINT, rows_quarantined BIGINT,
            files BIGINT, warnings VARCHAR[], loaded_at TIMESTAMPTZ)
        """
    )


@dataclass
class LoadResult:
    """What one load read, loaded and quarantined; ``rows_read == rows_loaded + rows_quarantined``.

    ``rows_loaded`` counts rows that landed, including rows recognised as duplicates of rows already
    loaded (they are *accounted for*, not lost); ``duplicates`` says how many of them there were.
    ``touched_days`` are the Argentina days whose data this load changed (late events, a restated month).
    """

    source: str
    scope: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    duplicates: int = 0
    files: int = 0
    warnings: list[str] = field(default_factory=list)
    touched_days: set[date] = field(default_factory=set)

    @property
    def reconciled(self) -> bool:
        return self.rows_read == self.rows_loaded + self.rows_quarantined

    def merge(self, other: LoadResult) -> None:
        """Add another load's counts to this one."""
        self.rows_read += other.rows_read
        self.rows_loaded += other.rows_loaded
        self.rows_quarantined += other.rows_quarantined
        self.duplicates += other.duplicates
        self.files += other.files
        self.warnings.extend(other.warnings)
        self.touched_days |= other.touched_days

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata."""
        return {
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_quarantined": self.rows_quarantined,
            "duplicates": self.duplicates,
            "files": self.files,
            "reconciled": self.reconciled,
            "warnings": "\n".join(self.warnings[:50]) or "none",
            "touched_days": ",".join(d.isoformat() for d in sorted(self.touched_days)),
        }


def record_load(con: duckdb.DuckDBPyConnection, result: LoadResult) -> None:
    """Append the load to ``ops.loads``; raise if the counts do not reconcile (nothing lost silently)."""
    if not result.reconciled:
        raise RuntimeError(
            f"{result.source} load {result.scope}: read {result.rows_read} rows but loaded "
            f"{result.rows_loaded} and quarantined {result.rows_quarantined}"
        )
    crash_point(f"load:{result.source}")
    con.execute(
        "INSERT INTO ops.loads VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            result.source,
            result.scope,
            result.rows_read,
            result.rows_loaded,
            result.rows_quarantined,
            result.files,
            result.warnings[:100],
            datetime.now(UTC),
        ],
    )


@dataclass(frozen=True)
class QuarantinedRow:
    """One input row that could not be loaded."""

    source_file: str
    row_number: int | None
    row: str
    reason: str


def quarantine(con: duckdb.DuckDBPyConnection, source: str, rows: Iterable[QuarantinedRow]) -> int:
    """Store quarantined rows (row text truncated to 2,000 characters); returns how many."""
    now = datetime.now(UTC)
    batch = [(source, r.source_file, r.row_number, r.row[:2000], r.reason, now) for r in rows]
    if batch:
        con.executemany("INSERT INTO quarantine.rows VALUES (?, ?, ?, ?, ?, ?)", batch)
    return len(batch)


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Whether ``schema.table`` exists (table or view)."""
    schema, _, name = qualified.partition(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def replace_days(
    con: duckdb.DuckDBPyConnection,
    table: str,
    select_sql: str,
    days: Iterable[date],
    params: dict[str, Any] | None = None,
) -> int:
    """Replace the rows of ``days`` in ``table`` by ``select_sql`` (idempotent partition write).

    The table is created from the query's shape the first time. ``select_sql`` must only return rows
    of ``days`` (its ``day`` column); returns the rows inserted.
    """
    day_list = sorted(set(days))
    bound = {**(params or {}), "days": day_list}
    rows = f"SELECT * FROM ({select_sql}) WHERE day IN (SELECT unnest($days::DATE[]))"  # noqa: S608
    if not table_exists(con, table):
        con.execute(f"CREATE TABLE {table} AS {rows} LIMIT 0", bound)
    con.execute(f"DELETE FROM {table} WHERE day IN (SELECT unnest($days::DATE[]))", {"days": day_list})  # noqa: S608
    before = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]  # noqa: S608
    crash_point(f"replace:{table}")
    con.execute(f"INSERT INTO {table} {rows}", bound)
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] - before  # noqa: S608


# Columns that say *when* a row was written, not what it holds: left out of content checksums.
VOLATILE_COLUMNS = frozenset({"_loaded_at", "loaded_at", "noted_at"})


def table_checksums(
    con: duckdb.DuckDBPyConnection,
    schemas: Iterable[str] = ("raw", "staging", "marts", "psychology"),
    exclude: Iterable[str] = VOLATILE_COLUMNS,
) -> dict[str, tuple[int, str]]:
    """``{schema.table: (rows, md5)}`` of every table of ``schemas``, order-independent and without the
    write-time columns, so two warehouses (or one before and after a re-run) compare by content."""
    skip = set(exclude)
    wanted = list(schemas)
    tables = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        "AND table_schema IN (SELECT unnest($s::VARCHAR[])) ORDER BY ALL",
        {"s": wanted},
    ).fetchall()
    out: dict[str, tuple[int, str]] = {}
    for schema, table in tables:
        columns = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
                "ORDER BY ordinal_position",
                [schema, table],
            ).fetchall()
            if r[0] not in skip
        ]
        listed = ", ".join(f'"{c}"' for c in columns)
        # Each row as text (a struct), the rows sorted: the digest does not depend on storage order.
        rows, digest = con.execute(
            f"SELECT count(*), md5(coalesce(string_agg(r, chr(10) ORDER BY r), '')) "  # noqa: S608
            f'FROM (SELECT CAST(ROW({listed}) AS VARCHAR) AS r FROM "{schema}"."{table}")'
        ).fetchall()[0]
        out[f"{schema}.{table}"] = (int(rows), str(digest))
    return out
