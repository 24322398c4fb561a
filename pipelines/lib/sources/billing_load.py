"""Load legacy CUR and FOCUS files into ``raw.billing_line_items`` beside the CUR 2.0 rows.

The files live in the billing source under ``legacy/`` and ``focus/`` (any depth, CSV, CSV.gz or Parquet;
the format is detected from the columns). Each file is parsed by
:mod:`pipelines.lib.sources.billing_formats`. In AWS's legacy CUR layout a report period folder's
``<report>-Manifest.json`` picks the current report version (:func:`select_billing_files`).

Replacement, never doubling: the rows of a (billing period, format) are always what the current files
hold for it. When the files change (one added, re-delivered with new content or removed), every file is
parsed again and each (period, format) whose content changed is replaced as a whole; unchanged ones are
left alone, so their days are not re-opened. A period no file holds any more is kept (removing files never
deletes billing history). When no file changed since the last load, nothing is parsed; from S3 nothing is
even downloaded (the objects' ETags and sizes tell).

A legacy CUR line item (``LineItemId|TimeInterval``) found in two files of the same period is the same
charge delivered twice (an old report left beside its restatement): the later file's copy is quarantined
with a reason naming both files, never added. Rejected rows and unreadable files go to the quarantine
with their reasons, and the counts are audited in ``ops.loads``. CUR 2.0 rows (``source_format = 'cur2'``)
are never touched here.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import UTC, date, datetime

import duckdb
import polars as pl

from pipelines.lib.ingest.billing import ensure_billing_tables
from pipelines.lib.sources.billing_formats import BillingFormatError, BillingParse, parse_billing_bytes
from pipelines.lib.storage import SourceError, Storage
from pipelines.lib.warehouse import LoadResult, QuarantinedRow, ar_tz, quarantine, record_load

FOLDERS = ("legacy", "focus")
_REPORT_PERIOD = re.compile(r"\d{8}-\d{8}")  # legacy CUR report period folder, e.g. 20231101-20231201
_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def billing_files(storage: Storage) -> list[str]:
    """Keys of the legacy CUR / FOCUS files to load (under ``legacy/`` or ``focus/``); see
    :func:`select_billing_files`."""
    return select_billing_files(storage)[0]


def select_billing_files(storage: Storage) -> tuple[list[str], list[str]]:
    """Keys of the legacy CUR / FOCUS files to load, and warnings.

    Every ``.csv``, ``.csv.gz`` and ``.parquet`` file under ``legacy/`` or ``focus/``, except where AWS's
    legacy CUR layout says otherwise: a report period folder ``…/yyyymmdd-yyyymmdd/`` holding
    ``<report>-Manifest.json`` keeps only the files its ``reportKeys`` list (the current assembly; older
    ``<assemblyId>/`` versions beside it are superseded). A period whose manifest lists a file that is not
    there yet, or whose manifest cannot be read, is skipped with a warning naming it (its stored rows stay
    as they are).
    """
    keys: list[str] = []
    manifests: list[str] = []
    for folder in FOLDERS:
        for key in storage.list(folder):
            if key.lower().endswith(_SUFFIXES):
                keys.append(key)
            elif (
                folder == "legacy"
                and key.endswith("-Manifest.json")
                and _REPORT_PERIOD.fullmatch(key.rsplit("/", 2)[-2] if key.count("/") >= 2 else "")
            ):
                manifests.append(key)
    selected = set(keys)
    warnings: list[str] = []
    for manifest in sorted(manifests):
        folder = manifest.rsplit("/", 1)[0]
        period_dir = folder.rsplit("/", 1)[-1]
        in_folder = {k for k in keys if k.startswith(f"{folder}/")}
        try:
            report_keys = json.loads(storage.read_bytes(manifest))["reportKeys"]
            if not isinstance(report_keys, list) or not report_keys:
                raise ValueError("reportKeys is not a list of files")
        except (SourceError, ValueError, KeyError, TypeError) as exc:
            selected -= in_folder
            warnings.append(
                f"{storage.describe(manifest)}: not a legacy CUR manifest ({exc}); "
                f"period {period_dir} skipped until it is readable"
            )
            continue
        current = set()
        for report_key in map(str, report_keys):
            marker = f"{period_dir}/"
            at = report_key.find(marker)
            current.add(f"{folder}/{report_key[at + len(marker) :] if at >= 0 else report_key.rsplit('/', 1)[-1]}")
        missing = sorted(current - in_folder)
        if missing:
            selected -= in_folder
            warnings.append(
                f"{storage.describe(manifest)}: lists {len(missing)} report file(s) not delivered yet "
                f"(e.g. {storage.describe(missing[0])}); period {period_dir} skipped until they arrive"
            )
            continue
        selected -= in_folder - current  # older assemblies of the period: superseded
    return sorted(selected), warnings


def ensure_file_tables(con: duckdb.DuckDBPyConnection) -> None:
    """``ops.billing_file_sets`` (which files were last loaded) and ``ops.billing_groups`` (the content
    digest of each loaded (period, format))."""
    ensure_billing_tables(con)
    con.execute(
        "CREATE TABLE IF NOT EXISTS ops.billing_file_sets (digest VARCHAR, files BIGINT, loaded_at TIMESTAMPTZ)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS ops.billing_groups (billing_period VARCHAR, source_format VARCHAR, "
        "digest VARCHAR, rows_loaded BIGINT, loaded_at TIMESTAMPTZ)"
    )


def load_billing_files(con: duckdb.DuckDBPyConnection, storage: Storage, *, force: bool = False) -> LoadResult:
    """Parse the legacy CUR / FOCUS files when they changed and replace the (period, format) rows whose
    content changed (all of them with ``force``).

    ``touched_days`` are the Argentina days covered by the replaced and the new rows.
    """
    ensure_file_tables(con)
    result = LoadResult("billing", "legacy+focus")
    keys, notes = select_billing_files(storage)
    result.warnings.extend(notes)
    last = con.execute("SELECT arg_max(digest, loaded_at) FROM ops.billing_file_sets").fetchall()[0][0]
    # S3: the objects' ETags tell an unchanged file set without downloading it; a folder: content hashes.
    stamps = _stamps(storage, keys)
    fileset = hashlib.sha256()
    if stamps is not None:
        for key in keys:
            fileset.update(f"{key}\0stamp {stamps[key]}\n".encode())
        if not force and fileset.hexdigest() == last:
            return _unchanged(con, notes)
    contents: dict[str, bytes] = {}
    bad: list[QuarantinedRow] = []
    for key in keys:
        try:
            data = storage.read_bytes(key)
        except SourceError as exc:  # unreadable or past a size limit: one quarantined row naming it
            if stamps is None:
                fileset.update(f"{key}\0!{exc}\n".encode())
            result.rows_read += 1
            bad.append(QuarantinedRow(storage.describe(key), None, "", str(exc)))
            result.warnings.append(str(exc))
            continue
        if stamps is None:
            fileset.update(f"{key}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        contents[key] = data
    digest = fileset.hexdigest()
    if not force and stamps is None and digest == last:
        return _unchanged(con, notes)

    parsed: list[BillingParse] = []
    for key, data in contents.items():
        where = storage.describe(key)
        try:
            parse = parse_billing_bytes(data, where)
        except (BillingFormatError, SourceError) as exc:
            # A file that cannot be read at all is one quarantined row naming it; the others still load.
            result.rows_read += 1
            bad.append(QuarantinedRow(where, None, "", str(exc)))
            result.warnings.append(str(exc))
            continue
        result.files += 1
        result.rows_read += parse.rows_read
        bad.extend(
            QuarantinedRow(r["source_file"], r["row_number"], r["row"], r["reason"])
            for r in parse.rejects.iter_rows(named=True)
        )
        parsed.append(parse)
    items = pl.concat([p.line_items for p in parsed]) if parsed else None
    if items is not None:
        items, repeated = _drop_repeated_legacy_items(items)
        bad.extend(repeated)
        result.rows_loaded += items.height
        _replace_changed_groups(con, items, result, force)
    result.rows_quarantined = quarantine(con, "billing", bad)
    con.execute("INSERT INTO ops.billing_file_sets VALUES (?, ?, ?)", [digest, len(keys), datetime.now(UTC)])
    record_load(con, result)
    return result


def _stamps(storage: Storage, keys: list[str]) -> dict[str, str] | None:
    """Each key's version stamp when the storage offers one (``S3Storage.fingerprint``), else ``None``."""
    stamp = getattr(storage, "fingerprint", None)
    if not callable(stamp):
        return None
    try:
        return {key: str(stamp(key)) for key in keys}
    except SourceError:
        return None  # read the files: the read names what is wrong


def _unchanged(con: duckdb.DuckDBPyConnection, warnings: list[str]) -> LoadResult:
    """The files are those of the last load: nothing parsed, nothing replaced (the audit says so)."""
    result = LoadResult("billing", "legacy+focus (unchanged)", warnings=list(warnings))
    record_load(con, result)
    return result


def _drop_repeated_legacy_items(items: pl.DataFrame) -> tuple[pl.DataFrame, list[QuarantinedRow]]:
    """Legacy CUR line items already seen in an earlier file (key order) of the same period: quarantined."""
    legacy = pl.col("source_format") == "cur_legacy"
    first_file = pl.col("source_file").first().over("billing_period", "line_item_id")
    ranked = items.with_columns(pl.when(legacy).then(first_file).alias("_first_file"))
    repeated = ranked.filter(legacy & (pl.col("source_file") != pl.col("_first_file")))
    rows = [
        QuarantinedRow(
            r["source_file"],
            None,
            json.dumps({k: v for k, v in r.items() if k != "_first_file"}, default=str),
            f"duplicate line item {r['line_item_id']} of billing period {r['billing_period']}, already in "
            f"{r['_first_file']}: a restated report must replace the old file, not sit beside it",
        )
        for r in repeated.iter_rows(named=True)
    ]
    kept = ranked.filter(~legacy | (pl.col("source_file") == pl.col("_first_file"))).drop("_first_file")
    return kept, rows


def _group_digest(group: pl.DataFrame) -> str:
    """Content digest of one (period, format)'s line items, independent of file order."""
    buffer = io.BytesIO()
    group.sort("source_file", "line_item_id").write_csv(buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _replace_changed_groups(
    con: duckdb.DuckDBPyConnection, items: pl.DataFrame, result: LoadResult, force: bool
) -> None:
    stored = dict(
        ((p, f), d)
        for p, f, d in con.execute(
            "SELECT billing_period, source_format, arg_max(digest, loaded_at) FROM ops.billing_groups GROUP BY ALL"
        ).fetchall()
    )
    now = datetime.now(UTC)
    changed: list[tuple[str, str]] = []
    frames: list[pl.DataFrame] = []
    for (period, fmt), group in sorted(items.group_by("billing_period", "source_format"), key=lambda g: g[0]):
        digest = _group_digest(group)
        if not force and stored.get((period, fmt)) == digest:
            continue
        changed.append((period, fmt))
        frames.append(group)
        con.execute("INSERT INTO ops.billing_groups VALUES (?, ?, ?, ?, ?)", [period, fmt, digest, group.height, now])
    if not changed:
        return
    result.touched_days |= _days(con, changed)
    for period, fmt in changed:
        con.execute("DELETE FROM raw.billing_line_items WHERE billing_period = ? AND source_format = ?", [period, fmt])
    con.register("_billing_items", pl.concat(frames).with_columns(pl.lit(now).alias("_loaded_at")).to_arrow())
    try:
        con.execute("INSERT INTO raw.billing_line_items BY NAME SELECT * FROM _billing_items")
    finally:
        con.unregister("_billing_items")
    result.touched_days |= _days(con, changed)


def _days(con: duckdb.DuckDBPyConnection, periods: list[tuple[str, str]]) -> set[date]:
    """Argentina days covered by the stored rows of the given (period, format) pairs (whole intervals)."""
    if not periods:
        return set()
    rows = con.execute(
        "SELECT DISTINCT unnest(range(timezone($tz, usage_start)::DATE, "
        "timezone($tz, greatest(usage_end, usage_start + INTERVAL 1 MICROSECOND) - INTERVAL 1 MICROSECOND)::DATE "
        "+ INTERVAL 1 DAY, INTERVAL 1 DAY))::DATE FROM raw.billing_line_items "
        "WHERE billing_period || '|' || source_format IN (SELECT unnest($keys))",
        {"tz": str(ar_tz()), "keys": [f"{p}|{f}" for p, f in periods]},
    ).fetchall()
    return {r[0] for r in rows}
