"""AWS CUR 2.0 (Data Exports, Parquet) → ``raw.billing_line_items`` (docs/data-contract.md sections 1.2, 4).

Manifest-driven, like AWS intends: for each export's ``<export>/metadata/BILLING_PERIOD=YYYY-MM/
<export>-Manifest.json`` only the files its ``dataFiles`` list are read (older deliveries left in ``data/``
are ignored). Each export is its own delivery: two exports in one billing source (a CUR 2.0 and an AWS FOCUS
export, or the CUR 2.0 of two payer accounts) never hide each other. :func:`find_deliveries` tells their
table from the manifest's ``columns``: CUR 2.0 deliveries are loaded here,
FOCUS ones by :mod:`pipelines.lib.sources.billing_load` with the other FOCUS files. A period without a
manifest is skipped with a warning (a delivery in progress). A delivery whose manifest names a new
``executionId`` (a restated month) *replaces* that export's rows of the period: never doubled.
``ops.billing_deliveries`` remembers which execution of each manifest is loaded, so an unchanged delivery is
not re-read. A line item found identical in two data files of one delivery counts once (the copy is
quarantined naming both files).

Money is ``DECIMAL(38,10)`` in the raw layer (AWS bills line items below a micro-dollar); a warehouse
created with older columns is migrated in place by :func:`ensure_billing_tables` and its bills re-read on
the next load.

Then :func:`build_cost_items_daily` spreads each line item's cost (effective, billed and list) over the
Argentina days its usage interval covers, exactly, into ``staging.cost_items_daily``, using one source per
(provider, billing account, billing period) (:func:`billing_sources`).
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
from pipelines.lib.sources.billing_formats import (
    CUR_CHARGE_CATEGORY,
    CUR_CHARGE_FREQUENCY,
    MONEY_SQL,
    BillingFormatError,
    format_of_columns,
    known_currencies,
)
from pipelines.lib.storage import SourceError, Storage, check_parquet
from pipelines.lib.warehouse import LoadResult, QuarantinedRow, ar_tz, quarantine, record_load

log = logging.getLogger(__name__)
_PERIOD = re.compile(r"BILLING_PERIOD=(\d{4}-\d{2})")
MONEY_COLUMNS = ("unblended_cost", "amortized_cost", "list_cost")
# Columns added after the first warehouses: appended, so an old table migrated in place has the new layout.
DIMENSION_COLUMNS = (
    "delivery",
    "billing_account_id",
    "sub_account_id",
    "region",
    "service_category",
    "charge_class",
    "charge_frequency",
    "pricing_category",
    "commitment_discount_id",
    "commitment_discount_type",
    "commitment_discount_category",
    "commitment_discount_status",
)
LINE_ITEMS_DDL = f"""
CREATE TABLE IF NOT EXISTS raw.billing_line_items (
    source_format VARCHAR, source_file VARCHAR, billing_period VARCHAR, line_item_id VARCHAR,
    usage_start TIMESTAMPTZ, usage_end TIMESTAMPTZ, provider VARCHAR, line_item_type VARCHAR,
    charge_category VARCHAR, service_code VARCHAR, usage_type VARCHAR, resource_id VARCHAR,
    niche_tag VARCHAR, service_tag VARCHAR, environment_tag VARCHAR, currency VARCHAR,
    unblended_cost {MONEY_SQL}, amortized_cost {MONEY_SQL}, list_cost {MONEY_SQL},
    _loaded_at TIMESTAMPTZ, {", ".join(f"{c} VARCHAR" for c in DIMENSION_COLUMNS)})
"""
UNITS_PER_USD = 10**10  # staging arithmetic in integer units of the raw scale (1e-10 USD)
CUR2_REQUIRED = (
    "identity_line_item_id",
    "identity_time_interval",
    "bill_billing_period_start_date",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_line_item_type",
    "line_item_product_code",
    "line_item_currency_code",
    "line_item_unblended_cost",
)
# Read when present (an export's query may leave them out): NULL otherwise.
CUR2_OPTIONAL = (
    "line_item_usage_type",
    "line_item_resource_id",
    "savings_plan_savings_plan_effective_cost",
    "reservation_effective_cost",
    "bill_payer_account_id",
    "line_item_usage_account_id",
    "product_region_code",
    "pricing_public_on_demand_cost",
    "pricing_term",
    "savings_plan_savings_plan_a_r_n",
    "savings_plan_total_commitment_to_date",
    "savings_plan_used_commitment",
    "reservation_reservation_a_r_n",
    "reservation_unused_amortized_upfront_fee_for_billing_period",
    "reservation_unused_recurring_fee",
)
CUR2_COLUMNS = (*CUR2_REQUIRED, *CUR2_OPTIONAL, "resource_tags")
# Staging: the cost views' dimensions, then the three cost kinds in micro-dollars (contract section 4).
COST_ITEM_DIMENSIONS = (
    "provider",
    "billing_account_id",
    "sub_account_id",
    "region",
    "service_category",
    "niche_tag",
    "service_tag",
    "environment_tag",
    "charge_category",
    "charge_frequency",
    "pricing_category",
    "commitment_discount_type",
    "commitment_discount_status",
)
# The series each billing period's running total is rounded on (a period's total per series is exact,
# rounded once); the finer dimensions share each day's micro-dollars by the largest remainder.
COST_SERIES = ("provider", "niche_tag", "service_tag", "charge_category")
COST_KINDS = {"eff": "amortized_cost", "billed": "unblended_cost", "list": "list_cost"}
COST_ITEMS_COLUMNS = {
    "day": "DATE",
    "niche_tag": "VARCHAR",
    "service_tag": "VARCHAR",
    "charge_category": "VARCHAR",
    "cost_micros": "BIGINT",  # effective (amortized) cost: what the KPIs use
    **{c: "VARCHAR" for c in COST_ITEM_DIMENSIONS if c not in ("niche_tag", "service_tag", "charge_category")},
    "billed_micros": "BIGINT",
    "list_micros": "BIGINT",  # NULL where no line item of the row has a list cost
}
FORMAT_RANK = {"cur2": 1, "cur_legacy": 2, "focus": 3}
FORMAT_NAME = {"cur2": "CUR 2.0", "cur_legacy": "legacy CUR", "focus": "FOCUS"}
DELIVERY_NAME = {"cur2": "CUR 2.0 export", "cur_legacy": "legacy CUR report", "focus": "FOCUS export"}


@dataclass(frozen=True)
class Delivery:
    """One export's current delivery of a billing period, as its manifest describes it."""

    period: str
    manifest_key: str
    execution_id: str
    data_keys: tuple[str, ...]
    root: str = ""  # the export's key prefix (``cur/<export>``)
    table: str = "cur2"  # ``cur2`` or ``focus`` (an AWS FOCUS export)


def find_deliveries(storage: Storage, table: str | None = "cur2") -> tuple[list[Delivery], list[str]]:
    """Current deliveries (one per export and period, from manifests) of ``table`` (``None``: all), and
    warnings for periods without a manifest. A manifest that cannot be read raises :class:`SourceError`."""
    deliveries, warnings, bad = scan_deliveries(storage)
    if bad and table in (None, "cur2"):
        raise bad[0]
    return [d for d in deliveries if table is None or d.table == table], warnings


def scan_deliveries(storage: Storage) -> tuple[list[Delivery], list[str], list[SourceError]]:
    """Every export's current delivery per period, warnings, and the manifests that could not be read."""
    keys = storage.list("")
    deliveries: dict[tuple[str, str], Delivery] = {}
    warnings: list[str] = []
    bad: list[SourceError] = []
    data_periods: set[tuple[str, str]] = set()
    for key in keys:
        m = _PERIOD.search(key)
        if not m:
            continue
        if "/metadata/" in f"/{key}" and key.endswith("Manifest.json"):
            period = m.group(1)
            root = key[: key.index("metadata/")] if "metadata/" in key else ""
            where = storage.describe(key)
            try:
                manifest = json.loads(storage.read_bytes(key))
                files = manifest["dataFiles"]
                execution = str(manifest.get("executionId") or manifest.get("assemblyId") or "")
            except (json.JSONDecodeError, KeyError, TypeError, SourceError) as exc:
                bad.append(SourceError(f"{where}: not a CUR 2.0 manifest ({exc})"))
                continue
            data_keys = []
            for f in files:
                f = str(f)
                idx = f.find("data/BILLING_PERIOD=")
                data_keys.append(root + f[idx:] if idx >= 0 else f)
            table = _delivery_table(manifest)
            deliveries[(root, period)] = Delivery(period, key, execution, tuple(data_keys), root.rstrip("/"), table)
        elif "/data/" in f"/{key}":
            data_periods.add((key[: key.index("data/")] if "data/" in key else "", m.group(1)))
    for root, period in sorted(data_periods - set(deliveries)):
        where = f" of {storage.describe(root.rstrip('/'))}" if root else ""
        warnings.append(
            f"billing period {period}{where}: data files but no manifest yet; skipped until it is delivered"
        )
    return [deliveries[k] for k in sorted(deliveries)], warnings, bad


def _delivery_table(manifest: dict) -> str:
    """``cur2`` or ``focus``, from the manifest's ``columns`` (AWS writes them); a manifest without columns
    is taken as CUR 2.0 (nothing else is read to tell)."""
    columns = [str(c.get("name", "")) for c in manifest.get("columns", []) if isinstance(c, dict)]
    try:
        return "focus" if columns and format_of_columns(columns, "manifest") == "focus" else "cur2"
    except BillingFormatError:
        return "cur2"


def ensure_billing_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``raw.billing_line_items``, ``ops.billing_deliveries`` and ``staging.cost_items_daily`` if
    missing; migrate older warehouses (money columns, the dimension columns) in place."""
    con.execute(LINE_ITEMS_DDL)
    con.execute(
        "CREATE TABLE IF NOT EXISTS ops.billing_deliveries (billing_period VARCHAR, execution_id VARCHAR, "
        "manifest VARCHAR, rows_loaded BIGINT, loaded_at TIMESTAMPTZ)"
    )
    migrate_money_columns(con)
    migrate_dimension_columns(con)
    ensure_cost_items_table(con)


def _forget_loaded_bills(con: duckdb.DuckDBPyConnection) -> None:
    """The next billing load re-reads every current delivery and file (and replaces what they hold)."""
    con.execute("DELETE FROM ops.billing_deliveries")
    con.execute("DROP TABLE IF EXISTS ops.billing_file_sets")
    con.execute("DROP TABLE IF EXISTS ops.billing_groups")


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    return dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchall()
    )


def migrate_money_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Widen ``raw.billing_line_items`` money columns of an older warehouse (``DECIMAL(18,6)``) to
    ``DECIMAL(38,10)`` in place (lossless), and forget which bills were loaded so the next billing load
    re-reads every current delivery and file at full precision (rows stored at 6 decimals already lost
    their sub-micro-dollar part). Returns the columns changed (none on a current warehouse)."""
    types = _columns(con, "raw", "billing_line_items")
    old = [c for c in MONEY_COLUMNS if types.get(c, MONEY_SQL) != MONEY_SQL]
    if not old:
        return []
    for column in old:
        con.execute(f"ALTER TABLE raw.billing_line_items ALTER COLUMN {column} TYPE {MONEY_SQL}")
    _forget_loaded_bills(con)
    log.warning(
        "raw.billing_line_items: money columns %s widened from %s to %s; every bill is re-read on the "
        "next billing load",
        ", ".join(old),
        types[old[0]],
        MONEY_SQL,
    )
    return old


def migrate_dimension_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Add the cost views' dimension columns (accounts, region, commitments, …) to an older
    ``raw.billing_line_items`` and forget which bills were loaded, so the next load fills them. Returns the
    columns added."""
    present = _columns(con, "raw", "billing_line_items")
    added = [c for c in DIMENSION_COLUMNS if c not in present]
    for column in added:
        con.execute(f"ALTER TABLE raw.billing_line_items ADD COLUMN {column} VARCHAR")
    if added:
        _forget_loaded_bills(con)
        log.warning("raw.billing_line_items: columns %s added; every bill is re-read on the next load", added)
    return added


def ensure_cost_items_table(con: duckdb.DuckDBPyConnection) -> None:
    """``staging.cost_items_daily`` with every column (an older, narrower table gets the new ones, NULL until
    :func:`build_cost_items_daily` rebuilds it)."""
    columns = ", ".join(f"{c} {t}" for c, t in COST_ITEMS_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS staging.cost_items_daily ({columns})")
    present = _columns(con, "staging", "cost_items_daily")
    for column, kind in COST_ITEMS_COLUMNS.items():
        if column not in present:
            con.execute(f"ALTER TABLE staging.cost_items_daily ADD COLUMN {column} {kind}")


def load_cur2(con: duckdb.DuckDBPyConnection, storage: Storage, force: bool = False) -> LoadResult:
    """Load every CUR 2.0 delivery not loaded yet (or all with ``force``).

    ``touched_days`` are the AR days covered by the replaced and the new rows of each loaded period: the
    days whose marts must be rebuilt (the late-data sensor re-opens them).
    """
    ensure_billing_tables(con)
    result = LoadResult("billing", "cur2")
    deliveries, warnings = find_deliveries(storage)
    result.warnings.extend(warnings)
    loaded = dict(
        con.execute(
            "SELECT manifest, arg_max(execution_id, loaded_at) FROM ops.billing_deliveries GROUP BY ALL"
        ).fetchall()
    )
    for delivery in deliveries:
        if not force and loaded.get(storage.describe(delivery.manifest_key)) == delivery.execution_id:
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
        missing = [c for c in CUR2_REQUIRED if c not in table.column_names]
        if missing:
            result.rows_read += 1
            bad.append(QuarantinedRow(where, None, "", f"not a CUR 2.0 file: missing {', '.join(missing)}"))
            continue
        result.files += 1
        for column in (*CUR2_OPTIONAL, "resource_tags"):  # absent from this export: NULL
            if column not in table.column_names:
                kind = pa.map_(pa.string(), pa.string()) if column == "resource_tags" else pa.string()
                table = table.append_column(column, pa.nulls(table.num_rows, kind))
        table = table.select(list(CUR2_COLUMNS))
        # File row numbers for the quarantine (SQL row order is not guaranteed).
        tables.append((where, table.append_column("_row", pa.array(range(1, table.num_rows + 1), pa.int64()))))
    return tables


# One pass types every row of one data file and names what is wrong with it (NULL problem = good row).
_TYPED_SQL = """
CREATE OR REPLACE TEMP TABLE {name} AS
WITH tagged AS (  -- the tags' keys and values once, lower-cased, empty values left out
    SELECT *, list_filter(list_transform(map_entries(resource_tags),
                  lambda e: {{'key': e.key, 'k': lower(trim(e.key)), 'v': lower(trim(e.value))}}),
              lambda e: e.v IS NOT NULL AND e.v <> '') AS _tags
    FROM _cur
),
tag_values AS (SELECT *, {tag_values} FROM tagged),
t AS (
    SELECT * EXCLUDE (_tags),
        TRY_CAST(line_item_unblended_cost AS DECIMAL(38,10)) AS unblended,
        TRY_CAST(savings_plan_savings_plan_effective_cost AS DECIMAL(38,10)) AS sp_eff,
        TRY_CAST(reservation_effective_cost AS DECIMAL(38,10)) AS ri_eff,
        TRY_CAST(savings_plan_total_commitment_to_date AS DECIMAL(38,10)) AS sp_total,
        TRY_CAST(savings_plan_used_commitment AS DECIMAL(38,10)) AS sp_used,
        TRY_CAST(reservation_unused_amortized_upfront_fee_for_billing_period AS DECIMAL(38,10)) AS ri_unused_upfront,
        TRY_CAST(reservation_unused_recurring_fee AS DECIMAL(38,10)) AS ri_unused_recurring,
        TRY_CAST(pricing_public_on_demand_cost AS DECIMAL(38,10)) AS list_cost,
        TRY_CAST(line_item_usage_start_date AS TIMESTAMPTZ) AS u_start,
        TRY_CAST(line_item_usage_end_date AS TIMESTAMPTZ) AS u_end,
        nullif(trim(CAST(savings_plan_savings_plan_a_r_n AS VARCHAR)), '') AS sp_arn,
        nullif(trim(CAST(reservation_reservation_a_r_n AS VARCHAR)), '') AS ri_arn,
        {category} AS category,
        {tags}
        $where AS _file, $file_index AS _file_index
    FROM tag_values
)
SELECT *,
    CASE line_item_line_item_type  -- pipelines.lib.sources.billing_formats.cur_effective_rule
        WHEN 'SavingsPlanCoveredUsage' THEN sp_eff
        WHEN 'DiscountedUsage' THEN ri_eff
        WHEN 'SavingsPlanRecurringFee' THEN coalesce(sp_total, 0) - coalesce(sp_used, 0)
        WHEN 'RIFee' THEN coalesce(ri_unused_upfront, 0) + coalesce(ri_unused_recurring, 0)
        WHEN 'SavingsPlanNegation' THEN 0
        WHEN 'SavingsPlanUpfrontFee' THEN 0
        WHEN 'Fee' THEN CASE WHEN ri_arn IS NOT NULL THEN 0 ELSE unblended END
        ELSE unblended END::DECIMAL(38,10) AS amortized,
    CASE
        WHEN identity_line_item_id IS NULL THEN 'identity_line_item_id is missing'
        WHEN category IS NULL THEN 'line_item_line_item_type ' || coalesce(line_item_line_item_type, 'NULL') || ' is not a known CUR line item type'
        WHEN unblended IS NULL THEN 'line_item_unblended_cost missing or not a number'
        WHEN greatest(abs(unblended), abs(coalesce(sp_eff, 0)), abs(coalesce(ri_eff, 0)), abs(coalesce(sp_total, 0)),
                      abs(coalesce(list_cost, 0))) >= 1000000000000
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
"""


def _case(column: str, mapping: dict[str, str]) -> str:
    """``CASE column WHEN 'k' THEN 'v' … END`` from one of this package's constant mappings."""
    return f"CASE {column} " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items()) + " END"


def _tag_sql(tags: dict[str, str]) -> tuple[str, str]:
    """Each allocation tag from ``resource_tags``, its key matched case-blind (``user_Niche``); two keys of
    one tag with different values leave it NULL and say why in ``tag_problem``. Returns the SQL of the
    per-tag value lists (over ``_tags``) and of the tag and problem columns."""
    lists, parts, problems = [], [], []
    for logical in ("niche", "service", "environment"):
        key = tags[logical].lower().replace("'", "''")
        lists.append(
            f"list_distinct(list_transform(list_filter(_tags, lambda e: e.k = '{key}'), lambda e: e.v)) AS _{logical}"
        )
        parts.append(f"CASE WHEN len(_{logical}) = 1 THEN _{logical}[1] END AS {logical}_tag,")
        keys = f"list_transform(list_filter(_tags, lambda e: e.k = '{key}'), lambda e: chr(39) || e.key || chr(39))"
        problems.append(
            f"CASE WHEN len(_{logical}) > 1 THEN 'resource_tags has ' || "
            f"list_aggregate({keys}[1:2], 'string_agg', ' and ') || ' with different values' END"
        )
    columns = "\n        ".join(parts) + f"\n        coalesce({', '.join(problems)}) AS tag_problem,"
    return ", ".join(lists), columns


def _load_delivery(con: duckdb.DuckDBPyConnection, storage: Storage, delivery: Delivery) -> LoadResult:
    result = LoadResult("billing", delivery.period)
    bad: list[QuarantinedRow] = []
    tags = load_catalog().section("cost_allocation")["tags"]
    params = {"known": sorted(known_currencies())}
    tag_values, tag_columns = _tag_sql(tags)
    export = storage.describe(delivery.root) if delivery.root else storage.describe(delivery.manifest_key)
    before_days = _period_days(con, delivery.period)
    con.execute(
        "DELETE FROM raw.billing_line_items WHERE billing_period = ? AND source_format = 'cur2' "
        "AND (delivery = ? OR delivery IS NULL)",
        [delivery.period, export],
    )
    now = datetime.now(UTC)
    typed = []
    for index, (where, table) in enumerate(_read_tables(storage, delivery, result, bad)):
        name = f"_cur_typed_{index}"
        con.register("_cur", table)
        try:
            con.execute(
                _TYPED_SQL.format(
                    name=name,
                    tag_values=tag_values,
                    tags=tag_columns,
                    category=_case("line_item_line_item_type", CUR_CHARGE_CATEGORY),
                ),
                {**params, "where": where, "file_index": index},
            )
        finally:
            con.unregister("_cur")
        typed.append(name)
    if typed:
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {n}" for n in typed)  # noqa: S608 - temp tables
        con.execute(f"CREATE OR REPLACE TEMP VIEW _cur_typed AS {union}")  # noqa: S608
        _insert_delivery(con, delivery, export, now, result, bad, several_files=len(typed) > 1)
        con.execute("DROP VIEW IF EXISTS _cur_typed")
    for name in typed:
        con.execute(f"DROP TABLE IF EXISTS {name}")
    result.rows_quarantined = quarantine(con, "billing", bad)
    con.execute(
        "INSERT INTO ops.billing_deliveries VALUES (?, ?, ?, ?, ?)",
        [delivery.period, delivery.execution_id, storage.describe(delivery.manifest_key), result.rows_loaded, now],
    )
    result.touched_days = before_days | _period_days(con, delivery.period)
    return result


def _insert_delivery(
    con: duckdb.DuckDBPyConnection,
    delivery: Delivery,
    export: str,
    now: datetime,
    result: LoadResult,
    bad: list[QuarantinedRow],
    several_files: bool,
) -> None:
    """Good rows of the delivery's files into raw; bad rows, and copies of a line item already in an earlier
    file of the delivery (same identity and content), into ``bad``."""
    if not several_files:  # one data file: nothing to compare across files
        con.execute(
            "CREATE OR REPLACE TEMP VIEW _cur_ranked AS SELECT *, _file_index AS _first_index, "
            "_file AS _first_file FROM _cur_typed WHERE problem IS NULL"
        )
    else:  # content compared only for identities found in more than one file
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _cur_ranked AS
            WITH good AS (
                SELECT *, min(_file_index) OVER id <> max(_file_index) OVER id AS _in_several
                FROM _cur_typed WHERE problem IS NULL
                WINDOW id AS (PARTITION BY identity_line_item_id, identity_time_interval)
            ),
            keyed AS (
                SELECT *, CASE WHEN _in_several THEN md5(concat_ws('|', line_item_line_item_type, u_start, u_end,
                          line_item_product_code, line_item_usage_type, line_item_resource_id, unblended, amortized,
                          list_cost, CAST(resource_tags AS VARCHAR))) END AS _content
                FROM good
            )
            SELECT * EXCLUDE (_in_several, _content),
                min(_file_index) OVER same AS _first_index, arg_min(_file, _file_index) OVER same AS _first_file
            FROM keyed
            WINDOW same AS (PARTITION BY identity_line_item_id, identity_time_interval, _content)
            """
        )
    n_read, n_bad = con.execute("SELECT count(*), count(problem) FROM _cur_typed").fetchall()[0]
    result.rows_read += n_read
    for row_number, where, row_text, reason in con.execute(
        "SELECT _row, _file, CAST(to_json(_cur_typed) AS VARCHAR), problem FROM _cur_typed "
        "WHERE problem IS NOT NULL ORDER BY _file_index, _row"
    ).fetchall():
        bad.append(QuarantinedRow(where, row_number, row_text, reason))
    copies = con.execute(
        "SELECT _row, _file, CAST(to_json(_cur_ranked) AS VARCHAR), identity_line_item_id || '|' || "
        "coalesce(identity_time_interval, ''), _first_file FROM _cur_ranked WHERE _file_index > _first_index "
        "ORDER BY _file_index, _row"
    ).fetchall()
    for row_number, where, row_text, identity, first in copies:
        bad.append(
            QuarantinedRow(
                where,
                row_number,
                row_text,
                f"duplicate line item {identity} of billing period {delivery.period}, already in {first}: "
                "the same bill delivered twice counts once",
            )
        )
    con.execute(
        """
        INSERT INTO raw.billing_line_items BY NAME
        SELECT 'cur2' AS source_format, _file AS source_file, $period AS billing_period,
            -- AWS identity + interval; rows repeating both (distinct rows, e.g. SP recurring fees) get #n
            identity_line_item_id || '|' || coalesce(identity_time_interval, '')
                || CASE WHEN count(*) OVER (PARTITION BY identity_line_item_id, identity_time_interval) > 1
                        THEN '#' || row_number() OVER (PARTITION BY identity_line_item_id, identity_time_interval
                                                       ORDER BY _file_index, _row)
                        ELSE '' END AS line_item_id,
            u_start AS usage_start, coalesce(u_end, u_start) AS usage_end, 'aws' AS provider,
            line_item_line_item_type AS line_item_type,
            CASE WHEN line_item_line_item_type = 'Fee' AND ri_arn IS NOT NULL THEN 'purchase' ELSE category END
                AS charge_category,
            line_item_product_code AS service_code, line_item_usage_type AS usage_type,
            line_item_resource_id AS resource_id, niche_tag, service_tag, environment_tag,
            upper(line_item_currency_code) AS currency, unblended AS unblended_cost, amortized AS amortized_cost,
            list_cost, $now AS _loaded_at, $export AS delivery,
            nullif(trim(CAST(bill_payer_account_id AS VARCHAR)), '') AS billing_account_id,
            nullif(trim(CAST(line_item_usage_account_id AS VARCHAR)), '') AS sub_account_id,
            nullif(trim(CAST(product_region_code AS VARCHAR)), '') AS region,
            {frequency} AS charge_frequency,
            CASE  -- billing_formats.cur_pricing_category
                WHEN line_item_line_item_type IN ('SavingsPlanCoveredUsage', 'DiscountedUsage') THEN 'Committed'
                WHEN line_item_line_item_type <> 'Usage' THEN NULL
                WHEN lower(line_item_usage_type) LIKE '%spotusage%' THEN 'Dynamic'
                WHEN lower(CAST(pricing_term AS VARCHAR)) = 'ondemand' THEN 'Standard'
            END AS pricing_category,
            coalesce(sp_arn, ri_arn) AS commitment_discount_id,
            CASE WHEN sp_arn IS NOT NULL THEN 'Savings Plan' WHEN ri_arn IS NOT NULL THEN 'Reserved Instance' END
                AS commitment_discount_type,
            CASE WHEN sp_arn IS NOT NULL THEN 'Spend' WHEN ri_arn IS NOT NULL THEN 'Usage' END
                AS commitment_discount_category,
            CASE WHEN coalesce(sp_arn, ri_arn) IS NULL THEN NULL
                 WHEN line_item_line_item_type IN ('SavingsPlanCoveredUsage', 'DiscountedUsage') THEN 'Used'
                 WHEN line_item_line_item_type IN ('SavingsPlanRecurringFee', 'RIFee') AND amortized <> 0 THEN 'Unused'
            END AS commitment_discount_status
        FROM _cur_ranked WHERE _file_index = _first_index
        """.replace("{frequency}", _case("line_item_line_item_type", CUR_CHARGE_FREQUENCY)),
        {"period": delivery.period, "now": now, "export": export},
    )
    loaded = con.execute("SELECT count(*) FROM _cur_ranked WHERE _file_index = _first_index").fetchall()[0][0]
    result.rows_loaded += loaded
    if len(copies) + loaded + n_bad != n_read:  # every row is loaded, a copy or bad
        raise RuntimeError(f"{export} {delivery.period}: {n_read} rows read, {loaded} + {len(copies)} + {n_bad}")
    untagged = con.execute(
        "SELECT _file, _row, tag_problem FROM _cur_ranked WHERE tag_problem IS NOT NULL AND _file_index = _first_index "
        "ORDER BY _file_index, _row"
    ).fetchall()
    if untagged:
        shown = "; ".join(f"row {r}: {why}" for _, r, why in untagged[:5])
        more = f"; and {len(untagged) - 5} more" if len(untagged) > 5 else ""
        result.warnings.append(
            f"{untagged[0][0]}: {len(untagged)} rows kept untagged: their cost-allocation tags are malformed or "
            f"ambiguous ({shown}{more})"
        )
    con.execute("DROP VIEW IF EXISTS _cur_ranked" if not several_files else "DROP TABLE IF EXISTS _cur_ranked")


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


# --- one source per account and billing period --------------------------------------------------------

_SOURCES_SQL = """
    SELECT provider, billing_account_id, billing_period, source_format, delivery,
           CASE source_format WHEN 'cur2' THEN 1 WHEN 'cur_legacy' THEN 2 ELSE 3 END AS rank,
           count(*) AS items, sum(amortized_cost) AS effective
    FROM raw.billing_line_items WHERE billing_account_id IS NOT NULL
    GROUP BY ALL
"""
_USED_ROWS_SQL = """
    SELECT * EXCLUDE (_own, _best) FROM (
        SELECT *, min(_own) OVER (PARTITION BY provider, billing_account_id, billing_period) AS _best
        FROM (
            SELECT *, CASE source_format WHEN 'cur2' THEN '1' WHEN 'cur_legacy' THEN '2' ELSE '3' END
                      || chr(31) || coalesce(delivery, chr(127)) AS _own
            FROM raw.billing_line_items
        )
    )
    WHERE billing_account_id IS NULL OR _own = _best
"""


def billing_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Where one account's billing period is in more than one delivery (a CUR 2.0 and an AWS FOCUS export of
    the same account, a legacy CUR beside its CUR 2.0, two CUR 2.0 exports): which one staging uses and why,
    as warnings for the load's record. The rule: per (provider, billing account, billing period), CUR 2.0,
    then legacy CUR, then FOCUS; within one format, the delivery whose name sorts first. Rows without a
    billing account are never matched (always used)."""
    ensure_billing_tables(con)
    rows = con.execute(
        f"SELECT * FROM ({_SOURCES_SQL}) ORDER BY billing_period, provider, billing_account_id, rank, delivery"  # noqa: S608
    ).fetchall()
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for provider, account, period, fmt, delivery, _rank, items, effective in rows:
        groups[(provider, account, period)].append((fmt, delivery, items, effective))
    notes = []
    for (provider, account, period), found in groups.items():
        if len(found) < 2:
            continue
        (fmt, delivery, _, _), others = found[0], found[1:]
        where = " and the ".join(f"{DELIVERY_NAME[f]} {d}" for f, d, _, _ in found)
        both = "both" if len(found) == 2 else f"{len(found)} deliveries:"
        same = any(f == fmt for f, _, _, _ in others)
        used = f"the {FORMAT_NAME[fmt]} rows" + (f" of {delivery}" if same else "")
        rule = "rule: CUR 2.0, then legacy CUR, then FOCUS, per account and billing period"
        if same:
            rule += "; within one format, the delivery whose name sorts first"
        left = "; ".join(f"{n} {FORMAT_NAME[f]} line items (${e} effective)" for f, _, n, e in others)
        notes.append(
            f"billing period {period} of {provider} account {account} is in {both} the {where}: {used} are used "
            f"({rule}); {left} are not counted"
        )
    return notes


# --- days outside the built partitions ---------------------------------------------------------------


def cost_outside(con: duckdb.DuckDBPyConnection, first: date, last: date) -> tuple[list[date], int]:
    """Days of ``staging.cost_items_daily`` before ``first`` or after ``last`` (the partitions), and their
    effective cost in micro-dollars: billing cost that no mart or KPI will show unless those days are built."""
    rows = con.execute(
        "SELECT day, sum(cost_micros) FROM staging.cost_items_daily WHERE day < ? OR day > ? GROUP BY day ORDER BY day",
        [first, last],
    ).fetchall()
    return [r[0] for r in rows], int(sum(r[1] or 0 for r in rows))


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
    """``staging.cost_items_daily``: every used line item's cost on the AR days it covers, rebuilt from raw
    (small), per day and the cost views' dimensions (:data:`COST_ITEM_DIMENSIONS`), with the three cost kinds
    kept apart: ``cost_micros`` (effective, what the KPIs use), ``billed_micros`` and ``list_micros``.

    Used line items: one source per (provider, billing account, billing period), :func:`billing_sources`.
    Line items are summed, and multi-day items split (largest remainder), in integer 1e-10 USD units, the
    raw layer's scale, so sub-micro-dollar line items add up instead of vanishing. Micro-dollars are then
    taken from the running total of each billing period's series (provider, niche, service, category) over
    its days: each day gets ``round(total through the day) - round(total through the day before)``
    (half-even), so a series' day is within one micro-dollar of its exact cost and a billing period's days
    sum to its exact total rounded once; a restated period changes only the days it covers. The finer
    dimensions of a series' day (account, region, frequency, pricing, commitment, …) each get their own cost
    rounded half-even, the difference to the series' day going to those with the largest remainders, so
    they sum to it exactly."""
    ensure_billing_tables(con)
    tz = load_catalog().timezone
    dims = ", ".join(COST_ITEM_DIMENSIONS)
    kinds = ", ".join(f"CAST({column} * $per_usd AS HUGEINT) AS {kind}" for kind, column in COST_KINDS.items())
    # Items inside one AR day (hourly CUR) go straight through in SQL; the rest are split exactly.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _items AS
        SELECT billing_period, {dims}, usage_start, usage_end, {kinds},
               timezone($tz, usage_start)::DATE AS first_day,
               timezone($tz, greatest(usage_end, usage_start + INTERVAL 1 MICROSECOND) - INTERVAL 1 MICROSECOND)::DATE AS last_day
        FROM ({_USED_ROWS_SQL})
        """,  # noqa: S608 - column names from this module
        {"tz": tz, "per_usd": UNITS_PER_USD},
    )
    multi = con.execute(
        f"SELECT billing_period, {dims}, usage_start, usage_end, {', '.join(COST_KINDS)} FROM _items "  # noqa: S608
        "WHERE first_day <> last_day"
    ).fetchall()
    width = 1 + len(COST_ITEM_DIMENSIONS)
    split_rows = []
    for row in multi:
        key, start, end, amounts = row[:width], row[width], row[width + 1], row[width + 2 :]
        parts = [spread_micros(int(a), start, end) if a is not None else None for a in amounts]
        for day in parts[0]:  # the effective cost is never NULL; the days are the interval's, whatever the amount
            split_rows.append((*key, day, *(None if p is None else p.get(day, 0) for p in parts)))
    columns = ["billing_period", *COST_ITEM_DIMENSIONS, "day", *COST_KINDS]
    split = pa.table(
        {
            name: pa.array(
                [r[i] for r in split_rows],
                pa.date32() if name == "day" else pa.string(),
            )
            if name not in COST_KINDS
            # as text: pyarrow has no 128-bit integer, and 1e-10 units pass int64 above ~9e8 USD
            else pa.array([None if r[i] is None else str(r[i]) for r in split_rows], pa.string())
            for i, name in enumerate(columns)
        }
    )
    series = ", ".join(f"coalesce({c}, chr(0))" for c in COST_SERIES)
    per_kind = {
        k: {
            "through": f"_half_even(sum({k}) OVER w, $step) AS {k}_through",
            "day": f"{k}_through - coalesce(lag({k}_through) OVER (PARTITION BY _series ORDER BY day), 0) AS {k}_day",
            "naive": f"_half_even(f.{k}, $step) AS {k}_naive, c.{k}_day",
            "resid": f"{k}_day - sum({k}_naive) OVER p AS {k}_r, {k} - {k}_naive * $step AS {k}_rem",
            "rank": f"row_number() OVER (PARTITION BY _series, day ORDER BY sign({k}_r) * {k}_rem DESC, _fid) AS {k}_rank",
            "final": f"{k}_naive + sign({k}_r) * (abs({k}_r) // n + CASE WHEN {k}_rank <= abs({k}_r) % n THEN 1 ELSE 0 END)",
        }
        for k in COST_KINDS
    }

    def each(step: str) -> str:
        return ", ".join(per_kind[k][step] for k in COST_KINDS)

    con.execute(
        "CREATE OR REPLACE TEMP MACRO _half_even(x, s) AS (x // s) + CASE WHEN 2 * abs(x % s) > s "
        "OR (2 * abs(x % s) = s AND (x // s) % 2 <> 0) THEN sign(x % s) ELSE 0 END"
    )
    con.register("_split", split)
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TABLE staging.cost_items_daily AS
            WITH pieces AS (
                SELECT billing_period, first_day AS day, {dims}, eff, billed, list FROM _items WHERE first_day = last_day
                UNION ALL
                SELECT billing_period, day, {dims}, CAST(eff AS HUGEINT), CAST(billed AS HUGEINT), CAST(list AS HUGEINT)
                FROM _split
            ),
            fine AS (
                SELECT billing_period, day, {dims}, sum(eff)::HUGEINT AS eff, sum(billed)::HUGEINT AS billed,
                       coalesce(sum(list), 0)::HUGEINT AS list, count(list) AS list_known,
                       concat_ws(chr(31), billing_period, {series}) AS _series
                FROM pieces GROUP BY ALL
            ),
            coarse AS (SELECT _series, day, sum(eff) AS eff, sum(billed) AS billed, sum(list) AS list FROM fine GROUP BY ALL),
            running AS (
                SELECT _series, day, {each("through")} FROM coarse
                WINDOW w AS (PARTITION BY _series ORDER BY day ROWS UNBOUNDED PRECEDING)
            ),
            series_day AS (SELECT _series, day, {each("day")} FROM running),
            naive AS (
                SELECT f.*, {each("naive")}, row_number() OVER (ORDER BY f._series, f.day, {dims}) AS _fid
                FROM fine f JOIN series_day c USING (_series, day)
            ),
            resid AS (SELECT *, {each("resid")}, count(*) OVER p AS n FROM naive WINDOW p AS (PARTITION BY _series, day)),
            ranked AS (SELECT *, {each("rank")} FROM resid)
            SELECT day, niche_tag, service_tag, charge_category,
                   sum({per_kind["eff"]["final"]})::BIGINT AS cost_micros,
                   {", ".join(c for c in COST_ITEMS_COLUMNS if c in COST_ITEM_DIMENSIONS and c not in ("niche_tag", "service_tag", "charge_category"))},
                   sum({per_kind["billed"]["final"]})::BIGINT AS billed_micros,
                   CASE WHEN sum(list_known) > 0 THEN sum({per_kind["list"]["final"]})::BIGINT END AS list_micros
            FROM ranked
            GROUP BY ALL
            ORDER BY ALL
            """,  # noqa: S608 - column names from this module
            {"step": UNITS_PER_USD // 1_000_000},
        )
    finally:
        con.unregister("_split")
        con.execute("DROP TABLE IF EXISTS _items")
    return con.execute("SELECT count(*) FROM staging.cost_items_daily").fetchall()[0][0]


def micros_to_usd(micros: int) -> Decimal:
    """Integer micro-USD → exact Decimal USD."""
    return (Decimal(micros) / Decimal(1_000_000)).quantize(Decimal("0.000001"))
