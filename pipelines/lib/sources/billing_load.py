"""Load legacy CUR and FOCUS files into ``raw.billing_line_items`` beside the CUR 2.0 rows.

The files live in the billing source under ``legacy/`` and ``focus/`` (any depth, CSV, CSV.gz or Parquet;
the format is detected from the columns), plus the data files of AWS FOCUS exports delivered like CUR 2.0
(``<export>/data/BILLING_PERIOD=…`` listed by ``<export>/metadata/…/Manifest.json``). Each file is parsed
by :mod:`pipelines.lib.sources.billing_formats`. In AWS's legacy CUR layout a report period folder's
``<report>-Manifest.json`` picks the current report version (:func:`select_billing_files`).

A *delivery* is the set of files one manifest lists (a legacy CUR report period, an AWS FOCUS export's
period) or, without a manifest, one folder. Rules, stated in docs/sources.md:

- **Copies count once.** A line item found again in a later file (key order) of the same billing period
  — the same bill as CSV and as typed Parquet, an old legacy report left beside its restatement — is
  quarantined with a reason naming both files, never added. Legacy CUR line items are identified by AWS
  (``LineItemId|TimeInterval``), FOCUS rows by their typed values (:func:`billing_formats.focus_row_identity`).
- **One delivery per account and period.** If, after that, one account's billing period (format,
  provider, billing account, billing period) still has rows from two deliveries (a restated export in a
  second folder), it is *refused*: those rows are quarantined naming the deliveries, the rows loaded
  before stay as they are, and the load's warnings say so until one delivery is removed.
- **Replacement, never doubling.** The rows of a (billing period, format) are always what the current
  files hold for it. When the files change (one added, re-delivered with new content or removed), every
  file is parsed again and each (period, format) whose content changed is replaced as a whole; unchanged
  ones are left alone, so their days are not re-opened. A period no file holds any more is kept (removing
  files never deletes billing history). When no file changed since the last load, nothing is parsed; from
  S3 nothing is even downloaded (the objects' ETags and sizes tell).

Rejected rows and unreadable files go to the quarantine with their reasons; what a parse assumed (times
without a zone read as UTC) or kept untagged (malformed ``Tags``) is in the load's warnings, and the
counts are audited in ``ops.loads``. Every load also reports which source is used where one account's
period is in two formats (:func:`pipelines.lib.ingest.billing.billing_sources`). CUR 2.0 rows
(``source_format = 'cur2'``) are never touched here. ``LoadResult.touched_days`` are the Argentina days
whose rows changed: the days to rebuild.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import UTC, date, datetime

import duckdb
import polars as pl

from pipelines.lib.ingest.billing import billing_sources, ensure_billing_tables, scan_deliveries
from pipelines.lib.sources.billing_formats import BillingFormatError, parse_billing_bytes
from pipelines.lib.storage import SourceError, Storage
from pipelines.lib.warehouse import LoadResult, QuarantinedRow, ar_tz, quarantine, record_load

FOLDERS = ("legacy", "focus")
_REPORT_PERIOD = re.compile(r"\d{8}-\d{8}")  # legacy CUR report period folder, e.g. 20231101-20231201
_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def billing_files(storage: Storage) -> list[str]:
    """Keys of the legacy CUR / FOCUS files to load; see :func:`select_billing_files`."""
    return sorted(select_billing_files(storage)[0])


def select_billing_files(storage: Storage) -> tuple[dict[str, str | None], list[str]]:
    """The legacy CUR / FOCUS files to load (key → the delivery its manifest makes it part of, or ``None``:
    its folder), and warnings.

    Every ``.csv``, ``.csv.gz`` and ``.parquet`` file under ``legacy/`` or ``focus/``, except where AWS's
    legacy CUR layout says otherwise: a report period folder ``…/yyyymmdd-yyyymmdd/`` holding
    ``<report>-Manifest.json`` keeps only the files its ``reportKeys`` list (the current assembly; older
    ``<assemblyId>/`` versions beside it are superseded). Plus, anywhere, the data files an AWS FOCUS export's
    current manifest lists. A period whose manifest lists a file that is not there yet, or whose manifest
    cannot be read, is skipped with a warning naming it (its stored rows stay as they are).
    """
    all_keys = storage.list("")
    keys: list[str] = []
    manifests: list[str] = []
    for folder in FOLDERS:
        for key in (k for k in all_keys if k.startswith(f"{folder}/")):
            if key.lower().endswith(_SUFFIXES):
                keys.append(key)
            elif (
                folder == "legacy"
                and key.endswith("-Manifest.json")
                and _REPORT_PERIOD.fullmatch(key.rsplit("/", 2)[-2] if key.count("/") >= 2 else "")
            ):
                manifests.append(key)
    selected: dict[str, str | None] = dict.fromkeys(keys)
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
            _drop(selected, in_folder)
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
            _drop(selected, in_folder)
            warnings.append(
                f"{storage.describe(manifest)}: lists {len(missing)} report file(s) not delivered yet "
                f"(e.g. {storage.describe(missing[0])}); period {period_dir} skipped until they arrive"
            )
            continue
        _drop(selected, in_folder - current)  # older assemblies of the period: superseded
        for key in current:
            selected[key] = storage.describe(folder)
    _add_focus_exports(storage, set(all_keys), selected, warnings)
    return selected, warnings


def _drop(selected: dict[str, str | None], keys: set[str]) -> None:
    for key in keys:
        selected.pop(key, None)


def _add_focus_exports(
    storage: Storage, present: set[str], selected: dict[str, str | None], warnings: list[str]
) -> None:
    """The files of each AWS FOCUS export's current delivery (Data Exports layout), as one delivery; older
    files in its period's data folder are superseded."""
    # a bad manifest, a period without one: the CUR 2.0 load reports those (raw_billing runs it first)
    deliveries, _notes, _bad = scan_deliveries(storage)
    for delivery in (d for d in deliveries if d.table == "focus"):
        listed = set(delivery.data_keys)
        folder = f"{delivery.root}/data/BILLING_PERIOD={delivery.period}/"
        _drop(selected, {k for k in selected if k.startswith(folder) and k not in listed})
        missing = sorted(listed - present)
        if missing:
            warnings.append(
                f"{storage.describe(delivery.manifest_key)}: lists {len(missing)} data file(s) not delivered yet "
                f"(e.g. {storage.describe(missing[0])}); billing period {delivery.period} skipped until they arrive"
            )
            continue
        for key in listed:
            selected[key] = storage.describe(delivery.root)


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
    content changed (all of them with ``force``), by the rules of this module's docstring.

    ``touched_days`` are the Argentina days covered by the replaced and the new rows (the days a bill
    file affects, for the marts to rebuild); the warnings say what was assumed, refused or not counted.
    """
    ensure_file_tables(con)
    result = LoadResult("billing", "legacy+focus")
    selected, notes = select_billing_files(storage)
    keys = sorted(selected)
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

    parsed: list[pl.DataFrame] = []
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
        result.warnings.extend(parse.warnings)
        bad.extend(
            QuarantinedRow(r["source_file"], r["row_number"], r["row"], r["reason"])
            for r in parse.rejects.iter_rows(named=True)
        )
        items = parse.line_items
        if selected[key] is not None:  # one delivery of a manifest, not its folder
            items = items.with_columns(delivery=pl.lit(selected[key], pl.String()))
        parsed.append(items)
    refused: set[tuple[str, str, str, str]] = set()
    if parsed:
        items, copies, versions = _drop_copies(pl.concat(parsed))
        items, refusals, refused, warnings = _refuse_overlaps(items, versions)
        bad.extend(copies + refusals)
        result.warnings.extend(warnings)
        result.rows_loaded += items.height
        _replace_changed_groups(con, items, result, force, refused)
    result.rows_quarantined = quarantine(con, "billing", bad)
    con.execute("INSERT INTO ops.billing_file_sets VALUES (?, ?, ?)", [digest, len(keys), datetime.now(UTC)])
    result.warnings.extend(billing_sources(con))
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
    """The files are those of the last load: nothing parsed, nothing replaced (the audit says so, with
    which source is used where an account's period is in two formats)."""
    result = LoadResult("billing", "legacy+focus (unchanged)", warnings=[*warnings, *billing_sources(con)])
    record_load(con, result)
    return result


def _row_json(row: dict) -> str:
    return json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, default=str)


def _drop_copies(
    items: pl.DataFrame,
) -> tuple[pl.DataFrame, list[QuarantinedRow], set[tuple[tuple[str, str, str, str], str, str]]]:
    """Line items already seen in an earlier file (key order) of the same format and billing period:
    quarantined naming both files, never added. Also returns (unit, file, earlier file) for every file that
    repeated another's line items: if both still hold other rows of that unit, they are two versions."""
    first_file = pl.col("source_file").first().over("source_format", "billing_period", "line_item_id")
    ranked = items.with_columns(first_file.alias("_first_file"))
    repeated = ranked.filter(pl.col("source_file") != pl.col("_first_file"))
    rows, pairs = [], set()
    for r in repeated.iter_rows(named=True):
        pairs.add((_unit(r), r["source_file"], r["_first_file"]))
        rows.append(
            QuarantinedRow(
                r["source_file"],
                None,
                _row_json(r),
                f"duplicate line item {r['line_item_id']} of billing period {r['billing_period']}, already in "
                f"{r['_first_file']}: the same bill delivered twice counts once; a restated report must replace "
                "the old file, not sit beside it",
            )
        )
    kept = ranked.filter(pl.col("source_file") == pl.col("_first_file")).drop("_first_file")
    return kept, rows, pairs


def _unit(row: dict) -> tuple[str, str, str, str]:
    """One account's billing period in one format: (period, format, provider, account)."""
    return (row["billing_period"], row["source_format"], row["provider"] or "", row["billing_account_id"] or "")


def _listed(names: list[str]) -> str:
    return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + f" and {names[-1]}"


def _refuse_overlaps(
    items: pl.DataFrame, versions: set[tuple[tuple[str, str, str, str], str, str]]
) -> tuple[pl.DataFrame, list[QuarantinedRow], set[tuple[str, str, str, str]], list[str]]:
    """Units (:func:`_unit`) with rows from more than one delivery, or from two files that are versions of
    one bill (one repeats some of the other's line items and differs in others): refused. Returns the rows
    kept, the refused rows as quarantine rows, the refused units and one warning per unit."""
    keys = ["billing_period", "source_format", "provider", "billing_account_id"]
    units = items.group_by(keys).agg(
        pl.col("delivery").unique().sort().alias("deliveries"), pl.col("source_file").unique().alias("files")
    )
    refused: dict[tuple[str, str, str, str], str] = {}
    for r in units.iter_rows(named=True):
        unit, who = _unit(r), f"billing period {r['billing_period']} of {r['provider']} account "
        who += r["billing_account_id"] or "(none)"
        files = set(r["files"])
        if len(r["deliveries"]) > 1:
            names = [str(d) for d in r["deliveries"]]
            count = "two" if len(names) == 2 else str(len(names))
            refused[unit] = f"{who} is in {count} deliveries, {_listed(names)}"
        elif pair := sorted((f, g) for u, f, g in versions if u == unit and f in files and g in files):
            refused[unit] = (
                f"{who} is in two versions of one bill, {pair[0][1]} and {pair[0][0]} (they share line items "
                "and differ in others)"
            )
    if not refused:
        return items, [], set(), []
    for unit, text in refused.items():
        refused[unit] = (
            f"{text}: refused (the rows loaded before stay) until one is removed; a restated bill must replace "
            "the old one"
        )
    unit = pl.concat_str([pl.col(c).fill_null("") for c in keys], separator="\x1f")  # as _unit, in polars
    marked = items.with_columns(unit.is_in(["\x1f".join(u) for u in refused]).alias("_refused"))
    rows = [
        QuarantinedRow(r["source_file"], None, _row_json(r), refused[_unit(r)])
        for r in marked.filter(pl.col("_refused")).iter_rows(named=True)
    ]
    return marked.filter(~pl.col("_refused")).drop("_refused"), rows, set(refused), sorted(set(refused.values()))


def _group_digest(group: pl.DataFrame) -> str:
    """Content digest of one (period, format)'s line items, independent of file order."""
    buffer = io.BytesIO()
    group.sort("source_file", "line_item_id").write_csv(buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _replace_changed_groups(
    con: duckdb.DuckDBPyConnection,
    items: pl.DataFrame,
    result: LoadResult,
    force: bool,
    refused: set[tuple[str, str, str, str]],
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
        # a refused account's rows stay as they were loaded before
        keep = [f"{p}\x1f{a}" for (rp, rf, p, a) in refused if (rp, rf) == (period, fmt)]
        con.execute(
            "DELETE FROM raw.billing_line_items WHERE billing_period = ? AND source_format = ? "
            "AND coalesce(provider, '') || chr(31) || coalesce(billing_account_id, '') NOT IN (SELECT unnest(?::VARCHAR[]))",
            [period, fmt, keep],
        )
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
