"""AWS CUR 2.0 (Data Exports, Parquet) → ``raw.billing_line_items`` (docs/data-contract.md sections 1.2, 4).

Manifest-driven, like AWS intends: for each ``metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json``
only the files its ``dataFiles`` list are read (older deliveries left in ``data/`` are ignored). A period
without a manifest is skipped with a warning (a delivery in progress). A period whose manifest names a
new ``executionId`` (a restated month) *replaces* every row of that period: never doubled.
``ops.billing_deliveries`` remembers which delivery of each period is loaded, so an unchanged period is
not re-read.

Money is ``DECIMAL(38,10)`` in the raw layer (AWS bills line items below a micro-dollar); a warehouse
created with the older ``DECIMAL(18,6)`` columns is widened in place by :func:`ensure_billing_tables` and
its bills re-read at full precision on the next load.

Then :func:`build_cost_items_daily` spreads each line item's amortized cost over the Argentina days its
usage interval covers, exactly (integer 1e-10 USD units, largest remainder), and turns each billing
period's running totals into micro-dollars (half-even), into ``staging.cost_items_daily``.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib.catalog import load_catalog
from pipelines.lib.sources.billing_formats import CUR_CHARGE_CATEGORY, MONEY_SQL, known_currencies
from pipelines.lib.storage import SourceError, Storage, check_parquet
from pipelines.lib.warehouse import LoadResult, QuarantinedRow, ar_tz, quarantine, record_load

log = logging.getLogger(__name__)
_PERIOD = re.compile(r"BILLING_PERIOD=(\d{4}-\d{2})")
MONEY_COLUMNS = ("unblended_cost", "amortized_cost", "list_cost")
LINE_ITEMS_DDL = f"""
CREATE TABLE IF NOT EXISTS raw.billing_line_items (
    source_format VARCHAR, source_file VARCHAR, billing_period VARCHAR, line_item_id VARCHAR,
    usage_start TIMESTAMPTZ, usage_end TIMESTAMPTZ, provider VARCHAR, line_item_type VARCHAR,
    charge_category VARCHAR, service_code VARCHAR, usage_type VARCHAR, resource_id VARCHAR,
    niche_tag VARCHAR, service_tag VARCHAR, environment_tag VARCHAR, currency VARCHAR,
    unblended_cost {MONEY_SQL}, amortized_cost {MONEY_SQL}, list_cost {MONEY_SQL},
    _loaded_at TIMESTAMPTZ)
"""
UNITS_PER_USD = 10**10  # staging arithmetic in integer units of the raw scale (1e-10 USD)
CUR2_COLUMNS = (
    "identity_line_item_id",
    "identity_time_interval",
    "bill_billing_period_start_date",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_line_item_type",
    "line_item_product_code",
    "line_item_usage_type",
    "line_item_resource_id",
    "line_item_currency_code",
    "line_item_unblended_cost",
    "savings_plan_savings_plan_effective_cost",
    "reservation_effective_cost",
    "resource_tags",
)


@dataclass(frozen=True)
class Delivery:
    """One billing period's current delivery, as its manifest describes it."""

    period: str
    manifest_key: str
    execution_id: str
    data_keys: tuple[str, ...]


def find_deliveries(storage: Storage) -> tuple[list[Delivery], list[str]]:
    """Current deliveries (one per period, from manifests) and warnings for periods without a manifest."""
    keys = storage.list("")
    deliveries: dict[str, Delivery] = {}
    warnings = []
    data_periods: set[str] = set()
    for key in keys:
        m = _PERIOD.search(key)
        if not m:
            continue
        if "/metadata/" in f"/{key}" and key.endswith("Manifest.json"):
            period = m.group(1)
            where = storage.describe(key)
            try:
                manifest = json.loads(storage.read_bytes(key))
                files = manifest["dataFiles"]
                execution = str(manifest.get("executionId") or manifest.get("assemblyId") or "")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SourceError(f"{where}: not a CUR 2.0 manifest ({exc})") from exc
            root = key[: key.index("metadata/")] if "metadata/" in key else ""
            data_keys = []
            for f in files:
                f = str(f)
                idx = f.find("data/BILLING_PERIOD=")
                data_keys.append(root + f[idx:] if idx >= 0 else f)
            deliveries[period] = Delivery(period, key, execution, tuple(data_keys))
        elif "/data/" in f"/{key}":
            data_periods.add(m.group(1))
    for period in sorted(data_periods - set(deliveries)):
        warnings.append(f"billing period {period}: data files but no manifest yet; skipped until it is delivered")
    return [deliveries[p] for p in sorted(deliveries)], warnings


def ensure_billing_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``raw.billing_line_items`` and ``ops.billing_deliveries`` if missing; migrate older money columns."""
    con.execute(LINE_ITEMS_DDL)
    con.execute(
        "CREATE TABLE IF NOT EXISTS ops.billing_deliveries (billing_period VARCHAR, execution_id VARCHAR, "
        "manifest VARCHAR, rows_loaded BIGINT, loaded_at TIMESTAMPTZ)"
    )
    migrate_money_columns(con)


def migrate_money_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Widen ``raw.billing_line_items`` money columns of an older warehouse (``DECIMAL(18,6)``) to
    ``DECIMAL(38,10)`` in place (lossless), and forget which bills were loaded so the next billing load
    re-reads every current delivery and file at full precision (rows stored at 6 decimals already lost
    their sub-micro-dollar part). Returns the columns changed (none on a current warehouse)."""
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' "
            "AND table_name = 'billing_line_items' AND column_name IN (SELECT unnest($c::VARCHAR[]))",
            {"c": list(MONEY_COLUMNS)},
        ).fetchall()
    )
    old = [c for c in MONEY_COLUMNS if types.get(c, MONEY_SQL) != MONEY_SQL]
    if not old:
        return []
    for column in old:
        con.execute(f"ALTER TABLE raw.billing_line_items ALTER COLUMN {column} TYPE {MONEY_SQL}")
    con.execute("DELETE FROM ops.billing_deliveries")
    con.execute("DROP TABLE IF EXISTS ops.billing_file_sets")
    log.warning(
        "raw.billing_line_items: money columns %s widened from %s to %s; every bill is re-read on the "
        "next billing load",
        ", ".join(old),
        types[old[0]],
        MONEY_SQL,
    )
    return old


def load_cur2(con: duckdb.DuckDBPyConnection, storage: Storage, force: bool = False) -> LoadResult:
    """Load every period whose current delivery is not loaded yet (or all with ``force``).

    ``touched_days`` are the AR days covered by the replaced and the new rows of each loaded period.
    """
    ensure_billing_tables(con)
    result = LoadResult("billing", "cur2")
    deliveries, warnings = find_deliveries(storage)
    result.warnings.extend(warnings)
    loaded = dict(
        con.execute(
            "SELECT billing_period, arg_max(execution_id, loaded_at) FROM ops.billing_deliveries GROUP BY ALL"
        ).fetchall()
    )
    for delivery in deliveries:
        if not force and loaded.get(delivery.period) == delivery.execution_id:
            continue
        result.merge(_load_delivery(con, storage, delivery))
    record_load(con, result)
    return result


def _read_tables(
    storage: Storage, delivery: Delivery, result: LoadResult, bad: list[QuarantinedRow]
) -> list[tuple[str, pa.Table]]:
    tables = []
    for key in delivery.data_keys:
        where = storage.describe(key)
        try:
            data = storage.read_bytes(key)
            check_parquet(data, where)
            table = pq.read_table(io.BytesIO(data))
        except (SourceError, pa.ArrowInvalid, OSError) as exc:
            result.rows_read += 1
            bad.append(
                QuarantinedRow(
                    where, None, "", f"CUR 2.0 data file listed in {delivery.manifest_key} unreadable: {exc}"
                )
            )
            result.warnings.append(f"{where}: unreadable ({exc})")
            continue
        missing = [c for c in CUR2_COLUMNS if c not in table.column_names]
        if missing:
            result.rows_read += 1
            bad.append(QuarantinedRow(where, None, "", f"not a CUR 2.0 file: missing {', '.join(missing)}"))
            continue
        result.files += 1
        table = table.select(list(CUR2_COLUMNS))
        # File row numbers for the quarantine (SQL row order is not guaranteed).
        tables.append((where, table.append_column("_row", pa.array(range(1, table.num_rows + 1), pa.int64()))))
    return tables


def _load_delivery(con: duckdb.DuckDBPyConnection, storage: Storage, delivery: Delivery) -> LoadResult:
    result = LoadResult("billing", delivery.period)
    bad: list[QuarantinedRow] = []
    known = sorted(known_currencies())
    categories = json.dumps(CUR_CHARGE_CATEGORY)
    tags = load_catalog().section("cost_allocation")["tags"]
    before_days = _period_days(con, delivery.period)
    con.execute(
        "DELETE FROM raw.billing_line_items WHERE billing_period = ? AND source_format = 'cur2'", [delivery.period]
    )
    now = datetime.now(UTC)
    for where, table in _read_tables(storage, delivery, result, bad):
        con.register("_cur", table)
        try:
            # One pass types every row and names what is wrong with it (NULL problem = good row).
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE _cur_typed AS
                WITH t AS (
                    SELECT *,
                        TRY_CAST(line_item_unblended_cost AS DECIMAL(38,10)) AS unblended,
                        TRY_CAST(savings_plan_savings_plan_effective_cost AS DECIMAL(38,10)) AS sp_eff,
                        TRY_CAST(reservation_effective_cost AS DECIMAL(38,10)) AS ri_eff,
                        TRY_CAST(line_item_usage_start_date AS TIMESTAMPTZ) AS u_start,
                        TRY_CAST(line_item_usage_end_date AS TIMESTAMPTZ) AS u_end,
                        json_extract_string($categories, '$.' || line_item_line_item_type) AS category
                    FROM _cur
                )
                SELECT *,
                    CASE line_item_line_item_type
                        WHEN 'SavingsPlanCoveredUsage' THEN sp_eff
                        WHEN 'DiscountedUsage' THEN ri_eff
                        WHEN 'SavingsPlanRecurringFee' THEN 0::DECIMAL(38,10)
                        WHEN 'SavingsPlanNegation' THEN 0::DECIMAL(38,10)
                        WHEN 'RIFee' THEN 0::DECIMAL(38,10)
                        ELSE unblended END AS amortized,
                    CASE
                        WHEN identity_line_item_id IS NULL THEN 'identity_line_item_id is missing'
                        WHEN category IS NULL THEN 'line_item_line_item_type ' || coalesce(line_item_line_item_type, 'NULL') || ' is not a known CUR line item type'
                        WHEN unblended IS NULL THEN 'line_item_unblended_cost missing or not a number'
                        WHEN greatest(abs(unblended), abs(coalesce(sp_eff, 0)), abs(coalesce(ri_eff, 0))) >= 1000000000000
                            THEN 'cost out of range (a line item of 1e12 or more)'
                        WHEN u_start IS NULL THEN 'line_item_usage_start_date missing or not a timestamp'
                        WHEN line_item_currency_code IS NULL OR NOT list_contains($known, upper(line_item_currency_code))
                            THEN 'line_item_currency_code ' || coalesce(line_item_currency_code, 'NULL') || ' is not a known currency'
                        WHEN upper(line_item_currency_code) <> 'USD' THEN 'non-USD billing currency is not supported yet'
                        WHEN line_item_line_item_type IN ('SavingsPlanCoveredUsage', 'DiscountedUsage')
                             AND (CASE WHEN line_item_line_item_type = 'DiscountedUsage' THEN ri_eff ELSE sp_eff END) IS NULL
                            THEN line_item_line_item_type || ' line item has no effective cost'
                    END AS problem
                FROM t
                """,
                {"categories": categories, "known": known},
            )
        finally:
            con.unregister("_cur")
        n_read, n_bad = con.execute("SELECT count(*), count(problem) FROM _cur_typed").fetchall()[0]
        result.rows_read += n_read
        for row_number, row_text, reason in con.execute(
            "SELECT _row, CAST(to_json(_cur_typed) AS VARCHAR), problem FROM _cur_typed WHERE problem IS NOT NULL ORDER BY _row"
        ).fetchall():
            bad.append(QuarantinedRow(where, row_number, row_text, reason))
        con.execute(
            """
            INSERT INTO raw.billing_line_items
            SELECT 'cur2', $where, $period,
                -- AWS identity + interval; rows repeating both (distinct rows, e.g. SP recurring fees) get #n
                identity_line_item_id || '|' || coalesce(identity_time_interval, '')
                    || CASE WHEN count(*) OVER (PARTITION BY identity_line_item_id, identity_time_interval) > 1
                            THEN '#' || row_number() OVER (PARTITION BY identity_line_item_id, identity_time_interval ORDER BY _row)
                            ELSE '' END,
                u_start, coalesce(u_end, u_start), 'aws', line_item_line_item_type, category,
                line_item_product_code, line_item_usage_type, line_item_resource_id,
                nullif(trim(resource_tags[$niche_key]), ''), nullif(trim(resource_tags[$service_key]), ''),
                nullif(trim(resource_tags[$env_key]), ''), upper(line_item_currency_code),
                unblended, amortized, NULL, $now
            FROM _cur_typed WHERE problem IS NULL
            """,
            {
                "where": where,
                "period": delivery.period,
                "now": now,
                "niche_key": tags["niche"],
                "service_key": tags["service"],
                "env_key": tags["environment"],
            },
        )
        result.rows_loaded += n_read - n_bad
    con.execute("DROP TABLE IF EXISTS _cur_typed")
    result.rows_quarantined = quarantine(con, "billing", bad)
    con.execute(
        "INSERT INTO ops.billing_deliveries VALUES (?, ?, ?, ?, ?)",
        [delivery.period, delivery.execution_id, storage.describe(delivery.manifest_key), result.rows_loaded, now],
    )
    result.touched_days = before_days | _period_days(con, delivery.period)
    return result


def _period_days(con: duckdb.DuckDBPyConnection, period: str) -> set[date]:
    """AR days covered by the stored rows of a billing period."""
    tz = load_catalog().timezone
    row = con.execute(
        "SELECT min(timezone($tz, usage_start))::DATE, max(timezone($tz, usage_end - INTERVAL 1 MICROSECOND))::DATE "
        "FROM raw.billing_line_items WHERE billing_period = $p",
        {"tz": tz, "p": period},
    ).fetchall()[0]
    if row[0] is None:
        return set()
    first, last = row[0], max(row[0], row[1])
    return {first + timedelta(days=i) for i in range((last - first).days + 1)}


# --- spreading cost over AR days ----------------------------------------------------------------------


def spread_micros(micros: int, start: datetime, end: datetime) -> dict[date, int]:
    """Split an integer amount over the AR days of ``[start, end)`` in proportion to the time in each,
    with the largest-remainder rule so the parts sum to ``micros`` exactly."""
    tz = ar_tz()
    if end <= start:
        return {start.astimezone(tz).date(): micros}
    total = (end - start).total_seconds()
    pieces: list[tuple[date, float]] = []
    cursor = start
    while cursor < end:
        local = cursor.astimezone(tz)
        next_midnight = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(days=1)
        stop = min(end, next_midnight.astimezone(UTC))
        pieces.append((local.date(), (stop - cursor).total_seconds()))
        cursor = stop
    sign = -1 if micros < 0 else 1
    amount = abs(micros)
    # Exact integer shares: floor(amount * seconds / total); seconds are whole here (CUR hours).
    total_i = round(total * 1_000_000)
    shares = []
    for day, secs in pieces:
        num = amount * round(secs * 1_000_000)
        shares.append((day, num // total_i, num % total_i))
    left = amount - sum(s for _, s, _ in shares)
    order = sorted(range(len(shares)), key=lambda i: (-shares[i][2], shares[i][0]))
    out: dict[date, int] = defaultdict(int)
    for rank, i in enumerate(order):
        out[shares[i][0]] += sign * (shares[i][1] + (1 if rank < left else 0))
    return dict(out)


def build_cost_items_daily(con: duckdb.DuckDBPyConnection) -> int:
    """``staging.cost_items_daily(day, niche_tag, service_tag, charge_category, cost_micros)``: every line
    item's amortized cost on the AR days it covers, rebuilt from raw (small).

    Line items are summed, and multi-day items split (largest remainder), in integer 1e-10 USD units, the
    raw layer's scale, so sub-micro-dollar line items add up instead of vanishing. Micro-dollars are then
    taken from the running total of each billing period's series (niche, service, category) over its days:
    each day gets ``round(total through the day) - round(total through the day before)`` (half-even), so a
    day is within one micro-dollar of its exact cost and a billing period's days sum to its exact total
    rounded once; a restated period changes only the days it covers."""
    ensure_billing_tables(con)
    tz = load_catalog().timezone
    # Items inside one AR day (hourly CUR) go straight through in SQL; the rest are split exactly.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _items AS
        SELECT billing_period, niche_tag, service_tag, charge_category, usage_start, usage_end,
               CAST(amortized_cost * $per_usd AS HUGEINT) AS units,
               timezone($tz, usage_start)::DATE AS first_day,
               timezone($tz, greatest(usage_end, usage_start + INTERVAL 1 MICROSECOND) - INTERVAL 1 MICROSECOND)::DATE AS last_day
        FROM raw.billing_line_items
        """,
        {"tz": tz, "per_usd": UNITS_PER_USD},
    )
    multi = con.execute(
        "SELECT billing_period, niche_tag, service_tag, charge_category, usage_start, usage_end, units "
        "FROM _items WHERE first_day <> last_day"
    ).fetchall()
    split_rows = []
    for period, niche, service, category, start, end, units in multi:
        for day, part in spread_micros(int(units), start, end).items():  # any integer amount: here 1e-10 units
            split_rows.append((period, day, niche, service, category, part))
    split = pa.table(
        {
            "billing_period": pa.array([r[0] for r in split_rows], pa.string()),
            "day": pa.array([r[1] for r in split_rows], pa.date32()),
            "niche_tag": pa.array([r[2] for r in split_rows], pa.string()),
            "service_tag": pa.array([r[3] for r in split_rows], pa.string()),
            "charge_category": pa.array([r[4] for r in split_rows], pa.string()),
            # as text: pyarrow has no 128-bit integer, and 1e-10 units pass int64 above ~9e8 USD
            "units": pa.array([str(r[5]) for r in split_rows], pa.string()),
        }
    )
    con.register("_split", split)
    try:
        con.execute(
            """
            CREATE OR REPLACE TABLE staging.cost_items_daily AS
            WITH summed AS (
                SELECT billing_period, day, niche_tag, service_tag, charge_category, sum(units)::HUGEINT AS units
                FROM (
                    SELECT billing_period, first_day AS day, niche_tag, service_tag, charge_category, units
                    FROM _items WHERE first_day = last_day
                    UNION ALL
                    SELECT billing_period, day, niche_tag, service_tag, charge_category, CAST(units AS HUGEINT) FROM _split
                )
                GROUP BY ALL
            ),
            running AS (
                SELECT *, sum(units) OVER (PARTITION BY billing_period, niche_tag, service_tag, charge_category
                                           ORDER BY day ROWS UNBOUNDED PRECEDING)::HUGEINT AS through_day
                FROM summed
            ),
            parts AS (  -- integer division truncates toward zero; the remainder keeps the sign
                SELECT *, through_day // $step AS q, through_day % $step AS r FROM running
            ),
            rounded AS (  -- half-even to the micro-dollar
                SELECT *, q + CASE WHEN 2 * abs(r) > $step OR (2 * abs(r) = $step AND q % 2 <> 0) THEN sign(r) ELSE 0 END
                          AS micros_through_day
                FROM parts
            ),
            per_period AS (
                SELECT day, niche_tag, service_tag, charge_category,
                       micros_through_day - coalesce(lag(micros_through_day) OVER (
                           PARTITION BY billing_period, niche_tag, service_tag, charge_category ORDER BY day), 0) AS micros
                FROM rounded
            )
            SELECT day, niche_tag, service_tag, charge_category, sum(micros)::BIGINT AS cost_micros
            FROM per_period
            GROUP BY ALL
            ORDER BY ALL
            """,
            {"step": UNITS_PER_USD // 1_000_000},
        )
    finally:
        con.unregister("_split")
        con.execute("DROP TABLE IF EXISTS _items")
    return con.execute("SELECT count(*) FROM staging.cost_items_daily").fetchall()[0][0]


def micros_to_usd(micros: int) -> Decimal:
    """Integer micro-USD → exact Decimal USD."""
    return (Decimal(micros) / Decimal(1_000_000)).quantize(Decimal("0.000001"))
