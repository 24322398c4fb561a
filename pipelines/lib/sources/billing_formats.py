"""Billing files other than CUR 2.0 → the normalized line items of docs/data-contract.md section 4.

- **Legacy AWS CUR** (CSV, optionally gzip): ``identity/LineItemId``, ``lineItem/UnblendedCost``, … headers.
- **FinOps FOCUS 1.0–1.2** (CSV or Parquet): ``BilledCost``, ``EffectiveCost``, ``ListCost``,
  ``ChargeCategory``, ``ChargePeriodStart/End``, ``ServiceName``, ``ProviderName``, ``Tags`` (JSON); several
  providers may share one file; nulls may be written empty or as the text ``NULL``.

Every money value goes from its text straight to :class:`~decimal.Decimal` (never through a float) and is
kept at the raw layer's 10 decimals (``DECIMAL(38,10)``: AWS bills line items below a micro-dollar; more
decimals than 10 are rounded half-even). A file that cannot be read at all raises
:class:`BillingFormatError` naming the file and the problem; a row that cannot be used is returned in
``rejects`` with its row number and reason (the warehouse quarantines it), so nothing is lost silently.
Untagged rows are kept with NULL tags: allocation decides where they go, the parser never drops them.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import polars as pl

from pipelines.lib.catalog import Catalog, load_catalog
from pipelines.lib.storage import SourceError, Storage, check_columns, check_parquet, gunzip_limited

MONEY = pl.Decimal(38, 10)  # raw billing money (docs/data-contract.md section 4)
MONEY_SQL = "DECIMAL(38,10)"
_QUANTUM = Decimal("1e-10")
# A sanity bound, far inside DECIMAL(38,10)'s 28 integer digits: sums of millions of line items and the
# staging arithmetic (integer 1e-10 units) never overflow.
_MAX_MONEY = Decimal("1e12")

LINE_ITEM_SCHEMA: dict[str, pl.DataType] = {
    "source_format": pl.String(),
    "source_file": pl.String(),
    "billing_period": pl.String(),
    "line_item_id": pl.String(),
    "usage_start": pl.Datetime("us", "UTC"),
    "usage_end": pl.Datetime("us", "UTC"),
    "provider": pl.String(),
    "line_item_type": pl.String(),
    "charge_category": pl.String(),
    "service_code": pl.String(),
    "usage_type": pl.String(),
    "resource_id": pl.String(),
    "niche_tag": pl.String(),
    "service_tag": pl.String(),
    "environment_tag": pl.String(),
    "currency": pl.String(),
    "unblended_cost": MONEY,
    "amortized_cost": MONEY,
    "list_cost": MONEY,
}

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "row": pl.String(),
    "reason": pl.String(),
}

# Legacy CUR line item types → contract charge category.
CUR_CHARGE_CATEGORY = {
    "Usage": "usage",
    "DiscountedUsage": "usage",
    "SavingsPlanCoveredUsage": "usage",
    "SavingsPlanNegation": "usage",
    "Tax": "tax",
    "Credit": "credit",
    "BundledDiscount": "credit",
    "EdpDiscount": "credit",
    "PrivateRateDiscount": "credit",
    "Refund": "refund",
    "Fee": "fee",
    "RIFee": "fee",
    "SavingsPlanRecurringFee": "fee",
    "SavingsPlanUpfrontFee": "purchase",
}
# FOCUS ChargeCategory → contract charge category (1.0's ChargeSubcategory "Refund" wins, see below).
FOCUS_CHARGE_CATEGORY = {
    "Usage": "usage",
    "Purchase": "purchase",
    "Tax": "tax",
    "Credit": "credit",
    "Adjustment": "adjustment",
}
# Categories whose cost must not be negative / positive (anything else may be either sign).
_NON_NEGATIVE = {"usage", "tax", "fee", "purchase"}
_NON_POSITIVE = {"credit", "refund"}

LEGACY_REQUIRED = (
    "identity/LineItemId",
    "identity/TimeInterval",
    "bill/BillingPeriodStartDate",
    "lineItem/LineItemType",
    "lineItem/UsageStartDate",
    "lineItem/UsageEndDate",
    "lineItem/ProductCode",
    "lineItem/CurrencyCode",
    "lineItem/UnblendedCost",
)
FOCUS_REQUIRED = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BillingCurrency",
    "ServiceName",
    "ProviderName",
)
_NULL_TEXT = {"", "NULL", "null"}


class BillingFormatError(SourceError):
    """A billing file cannot be read at all; the message names the file and the problem."""


class _RowProblem(ValueError):
    """One row cannot be used (becomes a reject with this reason)."""


@dataclass(frozen=True)
class BillingParse:
    """A parsed billing file: usable line items (contract section 4) and rejected rows with reasons."""

    source_file: str
    rows_read: int
    line_items: pl.DataFrame
    rejects: pl.DataFrame

    def __post_init__(self) -> None:
        # Nothing lost: every row read is either a line item or a reject.
        if self.rows_read != self.line_items.height + self.rejects.height:
            raise BillingFormatError(
                f"{self.source_file}: {self.rows_read} rows read but "
                f"{self.line_items.height} parsed + {self.rejects.height} rejected"
            )


# --------------------------------------------------------------------------------------------------
# Reading bytes


def _maybe_gunzip(data: bytes, source_file: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    text, problem = gunzip_limited(data, source_file)  # bounded: a gzip bomb raises InputTooLarge
    if problem:
        raise BillingFormatError(f"{source_file}: gzip stream is cut short or corrupt ({problem})")
    return text


def _csv_rows(data: bytes, source_file: str) -> tuple[list[str], Iterator[tuple[int, dict[str, str | None]]]]:
    if not data.strip():
        raise BillingFormatError(f"{source_file}: empty file (no header, no rows)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BillingFormatError(f"{source_file}: not UTF-8 text at byte {exc.start}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise BillingFormatError(f"{source_file}: unreadable CSV header ({exc})") from exc
    check_columns(len(header), source_file)
    header = [h.strip() for h in header]

    def rows() -> Iterator[tuple[int, dict[str, str | None]]]:
        line = 1
        try:
            for line, values in enumerate(reader, start=2):  # row_number = line in the file (header is 1)
                if not values:
                    continue
                if len(values) != len(header):
                    yield (
                        line,
                        {
                            "__error__": f"has {len(values)} fields, the header has {len(header)}",
                            "__raw__": ",".join(values),
                        },
                    )
                    continue
                yield (
                    line,
                    {h: (None if v.strip() in _NULL_TEXT else v.strip()) for h, v in zip(header, values, strict=True)},
                )
        except csv.Error as exc:
            raise BillingFormatError(f"{source_file}: malformed CSV after line {line} ({exc})") from exc

    return header, rows()


def _parquet_rows(data: bytes, source_file: str) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_parquet(data, source_file)  # row/row-group/column limits, before decoding
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise BillingFormatError(f"{source_file}: not a readable Parquet file, truncated or corrupt ({exc})") from exc

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        number = 0  # Parquet rows are numbered 1.. in file order
        for batch in table.to_batches(max_chunksize=65_536):
            for record in batch.to_pylist():
                number += 1
                yield (
                    number,
                    {k: (None if isinstance(v, str) and v.strip() in _NULL_TEXT else v) for k, v in record.items()},
                )

    return list(table.column_names), rows()


def _rows(data: bytes, source_file: str) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    data = _maybe_gunzip(data, source_file)
    if data[:4] == b"PAR1":
        return _parquet_rows(data, source_file)
    return _csv_rows(data, source_file)


# --------------------------------------------------------------------------------------------------
# Values


def money(value: Any, column: str) -> Decimal | None:
    """Exact money from text/Decimal/int (floats via their shortest repr), rounded half-even to 1e-10."""
    if value is None:
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise _RowProblem(f"{column} {value!r} is not a number") from None
    if not amount.is_finite():
        raise _RowProblem(f"{column} {value!r} is not a finite number")
    if abs(amount) >= _MAX_MONEY:
        raise _RowProblem(f"{column} {value!r} is out of range (a line item of 1e12 or more)")
    return amount.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def timestamp(value: Any, column: str) -> datetime:
    """An aware UTC datetime from ISO text or a Parquet timestamp; ISO text without a zone is refused."""
    if value is None:
        raise _RowProblem(f"{column} is missing")
    if isinstance(value, datetime):
        # A typed Parquet timestamp without a zone is UTC by the FOCUS and CUR specs (writers often leave
        # isAdjustedToUTC unset); only *text* without a zone is ambiguous and refused.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    parsed = _parse_iso(str(value).strip())
    if parsed is None:
        raise _RowProblem(f"{column} {str(value).strip()!r} is not an ISO timestamp")
    if parsed.tzinfo is None:
        raise _RowProblem(f"{column} {value!s} has no time zone (expected UTC, e.g. ...Z)")
    return parsed


@functools.lru_cache(maxsize=65_536)
def _parse_iso(text: str) -> datetime | None:
    """ISO text to a datetime (UTC when zoned), cached: billing files repeat the same few period bounds."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed
    except (ValueError, OverflowError):  # OverflowError: UTC of a zoned time at the calendar's edge
        return None


def known_currencies(catalog: Catalog | None = None) -> frozenset[str]:
    """Currencies the catalog knows: reporting and local currency, every country's, payments'."""
    catalog = catalog or load_catalog()
    known = {catalog.section("currency")["reporting"], catalog.section("currency")["local"]}
    known |= {c.currency for c in catalog.countries}
    known |= set(catalog.section("payments").get("currencies", []))
    return frozenset(known)


def _currency(value: Any, known: frozenset[str], column: str) -> str:
    if value is None:
        raise _RowProblem(f"{column} is missing")
    code = str(value).strip().upper()
    if code not in known:
        raise _RowProblem(f"{column} {value!r} is not a known currency ({', '.join(sorted(known))})")
    return code


def _check_sign(category: str, cost: Decimal | None, column: str) -> None:
    if cost is None:
        return
    if category in _NON_NEGATIVE and cost < 0:
        raise _RowProblem(f"{column} {_plain(cost)} is negative for a {category} charge")
    if category in _NON_POSITIVE and cost > 0:
        raise _RowProblem(f"{column} {_plain(cost)} is positive for a {category} charge")


def _plain(amount: Decimal) -> str:
    """A decimal for messages, without the trailing zeros of the raw scale (``-12.345678``, ``100``)."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def tag_keys(logical: str, catalog: Catalog | None = None) -> tuple[str, ...]:
    """Spellings of a cost-allocation tag across formats: ``user_niche`` (CUR 2.0), ``user:niche``, ``niche``."""
    catalog = catalog or load_catalog()
    cur2_key = catalog.section("cost_allocation")["tags"][logical]  # e.g. user_niche
    prefix, _, name = cur2_key.partition("_")
    return (cur2_key, f"{prefix}:{name}", name) if name else (cur2_key,)


# --------------------------------------------------------------------------------------------------
# Parsers


def _finish(
    source_file: str, rows_read: int, items: list[dict[str, Any]], rejects: list[dict[str, Any]], strict: bool
) -> BillingParse:
    if strict and rejects:
        first = rejects[0]
        raise BillingFormatError(
            f"{source_file}: row {first['row_number']}: {first['reason']}"
            + (f" (and {len(rejects) - 1} more bad rows)" if len(rejects) > 1 else "")
        )
    # column lists build much faster than a list of row dicts
    frame = pl.DataFrame({c: [it[c] for it in items] for c in LINE_ITEM_SCHEMA}, schema=LINE_ITEM_SCHEMA)
    for r in rejects:
        r.update(source="billing", source_file=source_file)
    rej = pl.DataFrame(rejects, schema=REJECT_SCHEMA) if rejects else pl.DataFrame(schema=REJECT_SCHEMA)
    return BillingParse(source_file, rows_read, frame, rej)


def _raw_json(row: dict[str, Any]) -> str:
    if "__raw__" in row:
        return json.dumps({"raw": row["__raw__"]})
    return json.dumps({k: v for k, v in row.items() if v is not None}, default=str, sort_keys=True)


def _missing(header: list[str], required: tuple[str, ...], source_file: str, what: str) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise BillingFormatError(f"{source_file}: not a {what} file: missing column(s) {', '.join(missing)}")


def parse_cur_legacy(
    data: bytes, source_file: str, *, strict: bool = False, catalog: Catalog | None = None
) -> BillingParse:
    """Parse a legacy AWS CUR CSV (``lineItem/…`` headers, plain or gzip) to normalized line items.

    ``line_item_id`` is ``identity/LineItemId|identity/TimeInterval``: AWS repeats a LineItemId for each
    time interval, so the pair is the identity. Amortized cost follows the contract (section 1.2);
    ``list_cost`` is ``pricing/publicOnDemandCost``.
    """
    catalog = catalog or load_catalog()
    header, rows = _rows(data, source_file)
    _missing(header, LEGACY_REQUIRED, source_file, "legacy CUR")
    known = known_currencies(catalog)
    tag_columns = {
        logical: next((f"resourceTags/{k}" for k in tag_keys(logical, catalog) if f"resourceTags/{k}" in header), None)
        for logical in ("niche", "service", "environment")
    }
    items, rejects, read = [], [], 0
    first_row: dict[str, int] = {}  # line item identity -> row it was first seen on
    for number, row in rows:
        read += 1
        try:
            if "__error__" in row:
                raise _RowProblem(row["__error__"])
            kind = _text(row["lineItem/LineItemType"])
            if kind not in CUR_CHARGE_CATEGORY:
                raise _RowProblem(f"lineItem/LineItemType {kind!r} is not a known CUR line item type")
            category = CUR_CHARGE_CATEGORY[kind]
            unblended = money(row["lineItem/UnblendedCost"], "lineItem/UnblendedCost")
            if unblended is None:
                raise _RowProblem("lineItem/UnblendedCost is missing")
            if kind != "SavingsPlanNegation":  # negative by design: it offsets covered usage
                _check_sign(category, unblended, "lineItem/UnblendedCost")
            if kind == "SavingsPlanCoveredUsage":
                amortized = money(
                    row.get("savingsPlan/SavingsPlanEffectiveCost"), "savingsPlan/SavingsPlanEffectiveCost"
                )
            elif kind == "DiscountedUsage":
                amortized = money(row.get("reservation/EffectiveCost"), "reservation/EffectiveCost")
            elif kind in ("SavingsPlanRecurringFee", "SavingsPlanNegation", "RIFee"):
                amortized = Decimal(0).quantize(_QUANTUM)
            else:
                amortized = unblended
            if amortized is None:
                raise _RowProblem(f"{kind} line item has no effective cost")
            period_start = timestamp(row["bill/BillingPeriodStartDate"], "bill/BillingPeriodStartDate")
            identity = _text(row["identity/LineItemId"])
            if identity is None:
                raise _RowProblem("identity/LineItemId is missing")
            line_item_id = f"{identity}|{_text(row['identity/TimeInterval']) or ''}"
            if line_item_id in first_row:  # the same charge twice in one report would double its cost
                raise _RowProblem(f"duplicate line item {line_item_id} (first on row {first_row[line_item_id]})")
            first_row[line_item_id] = number
            items.append(
                {
                    "source_format": "cur_legacy",
                    "source_file": source_file,
                    "billing_period": period_start.strftime("%Y-%m"),
                    "line_item_id": line_item_id,
                    "usage_start": timestamp(row["lineItem/UsageStartDate"], "lineItem/UsageStartDate"),
                    "usage_end": timestamp(row["lineItem/UsageEndDate"], "lineItem/UsageEndDate"),
                    "provider": "aws",
                    "line_item_type": kind,
                    "charge_category": category,
                    "service_code": _text(row["lineItem/ProductCode"]),
                    "usage_type": _text(row.get("lineItem/UsageType")),
                    "resource_id": _text(row.get("lineItem/ResourceId")),
                    **{f"{logical}_tag": _text(row.get(col)) if col else None for logical, col in tag_columns.items()},
                    "currency": _currency(row["lineItem/CurrencyCode"], known, "lineItem/CurrencyCode"),
                    "unblended_cost": unblended,
                    "amortized_cost": amortized,
                    "list_cost": money(row.get("pricing/publicOnDemandCost"), "pricing/publicOnDemandCost"),
                }
            )
        except _RowProblem as problem:
            rejects.append({"row_number": number, "row": _raw_json(row), "reason": str(problem)})
    return _finish(source_file, read, items, rejects, strict)


def _focus_tags(value: Any, keys: dict[str, tuple[str, ...]]) -> dict[str, str | None]:
    if isinstance(value, str):
        return dict(_focus_tags_text(value, tuple(keys.items())))
    if value is None:
        tags: dict[str, Any] = {}
    elif isinstance(value, dict):
        tags = value
    elif isinstance(value, list):  # Parquet MAP columns arrive as [(key, value), ...]
        try:
            tags = dict(value)
        except (TypeError, ValueError):
            raise _RowProblem("Tags must be a JSON object or a map of key/value pairs") from None
    else:
        try:
            tags = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise _RowProblem(f"Tags is not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(tags, dict):
            raise _RowProblem("Tags must be a JSON object")
    out: dict[str, str | None] = {}
    for logical, spellings in keys.items():
        found = next((tags[k] for k in spellings if k in tags), None)
        out[f"{logical}_tag"] = _text(found)
    return out


@functools.lru_cache(maxsize=65_536)
def _focus_tags_text(value: str, keys: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[tuple[str, str | None], ...]:
    """Tags JSON text → tag columns, cached: most rows of a bill share a handful of tag sets."""
    try:
        tags = json.loads(value)
    except json.JSONDecodeError as exc:
        raise _RowProblem(f"Tags is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if tags is None:  # JSON null: untagged
        tags = {}
    return tuple(_focus_tags(tags if isinstance(tags, dict) else _not_an_object(), dict(keys)).items())


def _not_an_object() -> dict[str, Any]:
    raise _RowProblem("Tags must be a JSON object")


def _focus_row_id(row: dict[str, Any]) -> str:
    # The row's values in the file's column order: stable for the same file, cheap to build.
    canonical = "\x1f".join("" if v is None else str(v) for v in row.values())
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def parse_focus(data: bytes, source_file: str, *, strict: bool = False, catalog: Catalog | None = None) -> BillingParse:
    """Parse a FinOps FOCUS 1.0–1.2 file (CSV, CSV.gz or Parquet) to normalized line items.

    ``unblended_cost`` = ``BilledCost``, ``amortized_cost`` = ``EffectiveCost``, ``list_cost`` = ``ListCost``;
    ``provider`` = ``ProviderName`` (one file may hold several providers); ``line_item_id`` is a hash of the
    row's content (FOCUS has no row id), with ``#2``, ``#3`` … on identical rows so none collapses.
    """
    catalog = catalog or load_catalog()
    header, rows = _rows(data, source_file)
    _missing(header, FOCUS_REQUIRED, source_file, "FOCUS")
    known = known_currencies(catalog)
    tag_spellings = {logical: tag_keys(logical, catalog) for logical in ("niche", "service", "environment")}
    items, rejects, read = [], [], 0
    seen_ids: dict[str, int] = {}
    for number, row in rows:
        read += 1
        try:
            if "__error__" in row:
                raise _RowProblem(row["__error__"])
            kind = _text(row["ChargeCategory"])
            if kind not in FOCUS_CHARGE_CATEGORY:
                raise _RowProblem(f"ChargeCategory {kind!r} is not one of {', '.join(FOCUS_CHARGE_CATEGORY)}")
            category = FOCUS_CHARGE_CATEGORY[kind]
            if _text(row.get("ChargeSubcategory")) == "Refund":  # FOCUS 1.0 spelling of a refund
                category = "refund"
            billed = money(row["BilledCost"], "BilledCost")
            effective = money(row["EffectiveCost"], "EffectiveCost")
            if billed is None or effective is None:
                raise _RowProblem("BilledCost and EffectiveCost are required")
            _check_sign(category, billed, "BilledCost")
            start = timestamp(row["ChargePeriodStart"], "ChargePeriodStart")
            period_source = row.get("BillingPeriodStart")
            period = timestamp(period_source, "BillingPeriodStart") if period_source is not None else start
            provider = _text(row["ProviderName"])
            if provider is None:
                raise _RowProblem("ProviderName is missing")
            row_id = _focus_row_id(row)
            seen_ids[row_id] = seen_ids.get(row_id, 0) + 1
            if seen_ids[row_id] > 1:
                row_id = f"{row_id}#{seen_ids[row_id]}"
            items.append(
                {
                    "source_format": "focus",
                    "source_file": source_file,
                    "billing_period": period.strftime("%Y-%m"),
                    "line_item_id": row_id,
                    "usage_start": start,
                    "usage_end": timestamp(row["ChargePeriodEnd"], "ChargePeriodEnd"),
                    "provider": provider.lower() if provider.upper() in ("AWS", "AMAZON WEB SERVICES") else provider,
                    "line_item_type": kind,
                    "charge_category": category,
                    "service_code": _text(row["ServiceName"]),
                    "usage_type": _text(row.get("x_UsageType") or row.get("SkuId")),
                    "resource_id": _text(row.get("ResourceId")),
                    **_focus_tags(row.get("Tags"), tag_spellings),
                    "currency": _currency(row["BillingCurrency"], known, "BillingCurrency"),
                    "unblended_cost": billed,
                    "amortized_cost": effective,
                    "list_cost": money(row.get("ListCost"), "ListCost"),
                }
            )
        except _RowProblem as problem:
            rejects.append({"row_number": number, "row": _raw_json(row), "reason": str(problem)})
    return _finish(source_file, read, items, rejects, strict)


def detect_format(data: bytes, source_file: str) -> str:
    """``cur_legacy``, ``focus`` or ``cur2`` from the file's columns (raises on anything else)."""
    header, _ = _rows(data, source_file)
    columns = set(header)
    if "lineItem/UnblendedCost" in columns:
        return "cur_legacy"
    if "BilledCost" in columns:
        return "focus"
    if "line_item_unblended_cost" in columns:
        return "cur2"
    raise BillingFormatError(
        f"{source_file}: unknown billing format (no lineItem/UnblendedCost, BilledCost or line_item_unblended_cost column)"
    )


def read_billing_file(storage: Storage, key: str, *, strict: bool = False) -> BillingParse:
    """Read a legacy CUR or FOCUS file through any :class:`Storage` (local folder or S3)."""
    return parse_billing_bytes(storage.read_bytes(key), storage.describe(key), strict=strict)


def parse_billing_bytes(data: bytes, source_file: str, *, strict: bool = False) -> BillingParse:
    """Parse a legacy CUR or FOCUS file's bytes (the format detected from its columns)."""
    fmt = detect_format(data, source_file)
    if fmt == "cur_legacy":
        return parse_cur_legacy(data, source_file, strict=strict)
    if fmt == "focus":
        return parse_focus(data, source_file, strict=strict)
    raise BillingFormatError(f"{source_file}: CUR 2.0 files are loaded through their manifest (pipelines.lib.ingest)")
