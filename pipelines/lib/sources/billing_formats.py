"""Billing files other than CUR 2.0 → the normalized line items of docs/data-contract.md section 4.

- **Legacy AWS CUR** (CSV, optionally gzip): ``identity/LineItemId``, ``lineItem/UnblendedCost``, … headers.
- **FinOps FOCUS 1.0–1.2** (CSV or Parquet), and the pre-1.0 names exporters still write (``Provider``,
  ``Region``, ``ChargeSubCategory``: Oracle's OCI export): ``BilledCost``, ``EffectiveCost``, ``ListCost``,
  ``ChargeCategory``, ``ChargeClass``, ``ChargePeriodStart/End``, ``ProviderName``, ``Tags`` (JSON), … Column
  names are matched case-blind (Athena and Glue write them lower-case). Several providers may share one
  file; nulls may be written empty or as the text ``NULL``.

Every money value goes from its text straight to :class:`~decimal.Decimal` (never through a float) and is
kept at the raw layer's 10 decimals (``DECIMAL(38,10)``: AWS bills line items below a micro-dollar; more
decimals than 10 are rounded half-even). Three cost kinds stay apart: billed (``unblended_cost`` = FOCUS
``BilledCost`` / CUR unblended), effective (``amortized_cost`` = FOCUS ``EffectiveCost`` / the CUR amortized
rule, :func:`cur_effective_rule`) and list (``list_cost``, NULL where the file has none). A cost may have
either sign in every category: FOCUS corrections (``ChargeClass = Correction``), refunds and credit reversals
are bills too and net out exactly.

Times: ISO 8601 with ``Z`` or an offset, fractional seconds, a space instead of ``T``; text without a zone
(the FinOps Foundation's FOCUS 1.0 sample writes ``2024-09-18 23:00:00``) and a date alone are UTC, as the
FOCUS and CUR specifications define them, and the parse's warnings say how many rows were read so.

A file that cannot be read at all raises :class:`BillingFormatError` naming the file and the problem; a row
that cannot be used is returned in ``rejects`` with its row number and reason (the warehouse quarantines
it), so nothing is lost silently. Untagged rows, and rows whose tags are malformed (``Tags=[1,2]``, invalid
JSON) or ambiguous (``niche`` and ``Niche`` with different values), are kept with NULL tags and a warning:
allocation decides where they go, the parser never drops a charge.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
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
    # the dimensions of the cost views (contract section 4)
    "delivery": pl.String(),
    "billing_account_id": pl.String(),
    "sub_account_id": pl.String(),
    "region": pl.String(),
    "service_category": pl.String(),
    "charge_class": pl.String(),
    "charge_frequency": pl.String(),
    "pricing_category": pl.String(),
    "commitment_discount_id": pl.String(),
    "commitment_discount_type": pl.String(),
    "commitment_discount_category": pl.String(),
    "commitment_discount_status": pl.String(),
}

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "source_file": pl.String(),
    "row_number": pl.Int64(),
    "row": pl.String(),
    "reason": pl.String(),
}

# Legacy CUR / CUR 2.0 line item types → contract charge category (an RI's upfront ``Fee`` is a purchase,
# see :func:`cur_effective_rule`).
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
# ... → FOCUS ChargeFrequency (what AWS's own FOCUS export writes for them)
CUR_CHARGE_FREQUENCY = {
    "Usage": "Usage-Based",
    "DiscountedUsage": "Usage-Based",
    "SavingsPlanCoveredUsage": "Usage-Based",
    "SavingsPlanNegation": "Usage-Based",
    "BundledDiscount": "Usage-Based",
    "EdpDiscount": "Usage-Based",
    "PrivateRateDiscount": "Usage-Based",
    "Tax": "One-Time",
    "Credit": "One-Time",
    "Refund": "One-Time",
    "Fee": "One-Time",
    "SavingsPlanUpfrontFee": "One-Time",
    "RIFee": "Recurring",
    "SavingsPlanRecurringFee": "Recurring",
}
# FOCUS ChargeCategory → contract charge category (1.0-preview's ChargeSubcategory "Refund" wins, see below).
FOCUS_CHARGE_CATEGORY = {
    "Usage": "usage",
    "Purchase": "purchase",
    "Tax": "tax",
    "Credit": "credit",
    "Adjustment": "adjustment",
}
# FOCUS 1.0 PricingCategory names → the 1.1+ names (CUR rows get the 1.1 names too)
PRICING_CATEGORY = {
    "standard": "Standard",
    "on-demand": "Standard",
    "dynamic": "Dynamic",
    "spot": "Dynamic",
    "committed": "Committed",
    "commitment-based": "Committed",
    "other": "Other",
}
# ProviderName (any case) → the provider id of the cost views; other names are kept, lower-cased
PROVIDER_IDS = {
    "aws": "aws",
    "amazon web services": "aws",
    "amazon": "aws",
    "microsoft": "azure",
    "microsoft azure": "azure",
    "azure": "azure",
    "google": "gcp",
    "google cloud": "gcp",
    "google cloud platform": "gcp",
    "gcp": "gcp",
    "oracle": "oci",
    "oracle cloud infrastructure": "oci",
    "oci": "oci",
}

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
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BillingCurrency",
    "ServiceName",
    "ProviderName",
)
# Every FOCUS 1.0-1.2 column the parser reads or hashes by name, and the older spellings of some.
FOCUS_COLUMNS = (
    *FOCUS_REQUIRED,
    *"ListCost ContractedCost BillingAccountId BillingAccountName BillingAccountType BillingPeriodStart "
    "BillingPeriodEnd ChargeClass ChargeDescription ChargeFrequency ChargeSubcategory CommitmentDiscountCategory "
    "CommitmentDiscountId CommitmentDiscountName CommitmentDiscountQuantity CommitmentDiscountStatus "
    "CommitmentDiscountType CommitmentDiscountUnit ConsumedQuantity ConsumedUnit ContractedUnitPrice InvoiceId "
    "InvoiceIssuerName ListUnitPrice PricingCategory PricingCurrency PricingQuantity PricingUnit PublisherName "
    "RegionId RegionName ResourceId ResourceName ResourceType ServiceCategory ServiceSubcategory SkuId SkuMeter "
    "SkuPriceDetails SkuPriceId SubAccountId SubAccountName SubAccountType Tags AvailabilityZone "
    "CapacityReservationId CapacityReservationStatus x_UsageType".split(),
)
FOCUS_ALIASES = {  # FOCUS 0.5 / 1.0-preview names (lower-case) → the 1.x column
    "provider": "ProviderName",
    "publisher": "PublisherName",
    "invoiceissuer": "InvoiceIssuerName",
    "region": "RegionId",
    "usagequantity": "ConsumedQuantity",
    "usageunit": "ConsumedUnit",
    "amortizedcost": "EffectiveCost",
}
_NULL_TEXT = {"", "NULL", "null"}
TAGS = ("niche", "service", "environment")


class BillingFormatError(SourceError):
    """A billing file cannot be read at all; the message names the file and the problem."""


class _RowProblem(ValueError):
    """One row cannot be used (becomes a reject with this reason)."""


@dataclass(frozen=True)
class BillingParse:
    """A parsed billing file: usable line items (contract section 4), rejected rows with reasons, and
    warnings about what was assumed or kept untagged (recorded with the load)."""

    source_file: str
    rows_read: int
    line_items: pl.DataFrame
    rejects: pl.DataFrame
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Nothing lost: every row read is either a line item or a reject.
        if self.rows_read != self.line_items.height + self.rejects.height:
            raise BillingFormatError(
                f"{self.source_file}: {self.rows_read} rows read but "
                f"{self.line_items.height} parsed + {self.rejects.height} rejected"
            )


class _Notes:
    """What one file's parse assumed (zone-less times) or could not use (malformed tags), for its warnings."""

    def __init__(self, source_file: str) -> None:
        self.source_file = source_file
        self.zone_less_rows = 0
        self.zone_example: str | None = None
        self.untagged: list[tuple[int, str]] = []
        self._row_zone_less = False

    def start_row(self) -> None:
        self._row_zone_less = False

    def zone_less(self, text: str) -> None:
        if not self._row_zone_less:
            self.zone_less_rows += 1
            self._row_zone_less = True
        if self.zone_example is None:
            self.zone_example = text

    def warnings(self) -> list[str]:
        out = []
        if self.zone_less_rows:
            out.append(
                f"{self.source_file}: {self.zone_less_rows} rows' times have no time zone "
                f"(e.g. {self.zone_example!r}): read as UTC, as the FOCUS and AWS CUR specifications define them"
            )
        if self.untagged:
            shown = "; ".join(f"row {n}: {why}" for n, why in self.untagged[:5])
            more = f"; and {len(self.untagged) - 5} more" if len(self.untagged) > 5 else ""
            out.append(
                f"{self.source_file}: {len(self.untagged)} rows kept untagged: their cost-allocation tags are "
                f"malformed or ambiguous ({shown}{more})"
            )
        return out


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


def timestamp(value: Any, column: str, notes: _Notes | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 text or a Parquet timestamp.

    Text with ``Z`` or an offset is converted to UTC; text without a zone, and a date alone (00:00), are UTC
    (FOCUS and CUR datetimes are UTC by their specifications) and counted in ``notes`` so the load says so.
    A typed Parquet timestamp without a zone (``isAdjustedToUTC`` unset) is UTC for the same reason."""
    if value is None:
        raise _RowProblem(f"{column} is missing")
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip()
    parsed = _parse_iso(text)
    if parsed is None:
        raise _RowProblem(f"{column} {text!r} is not an ISO 8601 date/time")
    moment, zoned = parsed
    if not zoned and notes is not None:
        notes.zone_less(text)
    return moment


_ISO_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?", re.IGNORECASE)


@functools.lru_cache(maxsize=65_536)
def _parse_iso(text: str) -> tuple[datetime, bool] | None:
    """ISO text → (UTC datetime, whether it carried a zone), cached: bills repeat the same few bounds."""
    if not _ISO_SHAPE.fullmatch(text):  # refuse what fromisoformat would guess at (week dates, 2026-11-3)
        return None
    try:
        parsed = datetime.fromisoformat(text.upper())
    except (ValueError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC), False
    try:
        return parsed.astimezone(UTC), True
    except OverflowError:  # UTC of a zoned time at the calendar's edge
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


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _named(value: Any, names: dict[str, str]) -> str | None:
    """A value from an allowed-values list, matched case-blind (``usage-based`` → ``Usage-Based``)."""
    text = _text(value)
    return None if text is None else names.get(text.lower(), text)


def provider_id(name: Any) -> str | None:
    """``AWS`` → ``aws``, ``Microsoft`` → ``azure``, ``Google Cloud`` → ``gcp``, ``Oracle`` → ``oci``;
    another provider's name, lower-cased."""
    text = _text(name)
    return None if text is None else PROVIDER_IDS.get(text.lower(), text.lower())


def tag_keys(logical: str, catalog: Catalog | None = None) -> tuple[str, ...]:
    """Spellings of a cost-allocation tag across formats, in priority order: ``user_niche`` (CUR 2.0),
    ``user:niche`` (legacy CUR, AWS's FOCUS export), ``niche``. They are matched case-blind."""
    catalog = catalog or load_catalog()
    cur2_key = catalog.section("cost_allocation")["tags"][logical]  # e.g. user_niche
    prefix, _, name = cur2_key.partition("_")
    return (cur2_key, f"{prefix}:{name}", name) if name else (cur2_key,)


def _tag_spellings(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    return {logical: tuple(k.lower() for k in tag_keys(logical, catalog)) for logical in TAGS}


def match_tags(
    pairs: list[tuple[str, Any]], spellings: dict[str, tuple[str, ...]], what: str = "Tags"
) -> tuple[dict[str, str | None], str | None]:
    """The allocation tags of one row from its (key, value) pairs: keys matched case-blind in the order of
    ``spellings``, values lower-cased. Two keys of one spelling with different values (``niche`` and
    ``Niche``) are ambiguous: that tag stays NULL and the reason is returned."""
    by_key: dict[str, list[tuple[str, str]]] = {}
    for key, value in pairs:
        text = _text(value if not isinstance(value, (dict, list)) else None)
        if text is not None:
            by_key.setdefault(str(key).strip().lower(), []).append((str(key).strip(), text.lower()))
    out: dict[str, str | None] = {}
    problem = None
    for logical, keys in spellings.items():
        out[f"{logical}_tag"] = None
        for spelling in keys:
            found = by_key.get(spelling)
            if not found:
                continue
            if len({v for _, v in found}) > 1:
                names = " and ".join(repr(k) for k, _ in found[:2])
                problem = problem or f"{what} has {names} with different values"
            else:
                out[f"{logical}_tag"] = found[0][1]
            break
    return out, problem


def _untagged() -> dict[str, str | None]:
    return {f"{logical}_tag": None for logical in TAGS}


# --------------------------------------------------------------------------------------------------
# Parsers


def _finish(
    source_file: str,
    rows_read: int,
    items: list[dict[str, Any]],
    rejects: list[dict[str, Any]],
    strict: bool,
    notes: _Notes,
) -> BillingParse:
    if strict and rejects:
        first = rejects[0]
        raise BillingFormatError(
            f"{source_file}: row {first['row_number']}: {first['reason']}"
            + (f" (and {len(rejects) - 1} more bad rows)" if len(rejects) > 1 else "")
        )
    # column lists build much faster than a list of row dicts
    frame = pl.DataFrame({c: [it.get(c) for it in items] for c in LINE_ITEM_SCHEMA}, schema=LINE_ITEM_SCHEMA)
    for r in rejects:
        r.update(source="billing", source_file=source_file)
    rej = pl.DataFrame(rejects, schema=REJECT_SCHEMA) if rejects else pl.DataFrame(schema=REJECT_SCHEMA)
    return BillingParse(source_file, rows_read, frame, rej, notes.warnings())


def _raw_json(row: dict[str, Any]) -> str:
    if "__raw__" in row:
        return json.dumps({"raw": row["__raw__"]})
    return json.dumps({k: v for k, v in row.items() if v is not None}, default=str, sort_keys=True)


def _missing(header: list[str], required: tuple[str, ...], source_file: str, what: str) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise BillingFormatError(f"{source_file}: not a {what} file: missing column(s) {', '.join(missing)}")


def _folder(source_file: str) -> str:
    """The delivery a file belongs to when no manifest says otherwise: its folder."""
    return source_file.rsplit("/", 1)[0] if "/" in source_file else ""


def cur_effective_rule(kind: str) -> str:
    """Which CUR amount is a line item's effective (amortized) cost, as AWS Cost Explorer amortizes:

    ``SavingsPlanCoveredUsage`` → the Savings Plan effective cost; ``DiscountedUsage`` → the RI effective
    cost; ``SavingsPlanRecurringFee`` → its unused part (total commitment to date − used commitment);
    ``RIFee`` → its unused part (unused amortized upfront fee + unused recurring fee); the
    ``SavingsPlanNegation`` and the upfront fees (``SavingsPlanUpfrontFee``, an RI's ``Fee``) → 0, already
    spread over the covered usage; anything else → the unblended cost. Returns the rule's name."""
    return {
        "SavingsPlanCoveredUsage": "sp_effective",
        "DiscountedUsage": "ri_effective",
        "SavingsPlanRecurringFee": "sp_unused",
        "RIFee": "ri_unused",
        "SavingsPlanNegation": "zero",
        "SavingsPlanUpfrontFee": "zero",
    }.get(kind, "unblended")


def cur_pricing_category(kind: str, usage_type: str | None, term: str | None) -> str | None:
    """FOCUS PricingCategory of a CUR usage line: commitment-covered → ``Committed``, spot → ``Dynamic``,
    on-demand (``pricing/term`` OnDemand) → ``Standard``; NULL for fees, tax, credits and negations."""
    if kind in ("SavingsPlanCoveredUsage", "DiscountedUsage"):
        return "Committed"
    if kind != "Usage":
        return None
    if usage_type and "spotusage" in usage_type.lower():
        return "Dynamic"
    return "Standard" if (term or "").lower() == "ondemand" else None


def parse_cur_legacy(
    data: bytes, source_file: str, *, strict: bool = False, catalog: Catalog | None = None
) -> BillingParse:
    """Parse a legacy AWS CUR CSV (``lineItem/…`` headers, plain or gzip) to normalized line items.

    ``line_item_id`` is ``identity/LineItemId|identity/TimeInterval``: AWS repeats a LineItemId for each
    time interval, so the pair is the identity. The effective cost follows :func:`cur_effective_rule`;
    ``list_cost`` is ``pricing/publicOnDemandCost``. Accounts are ``bill/PayerAccountId`` (billing account)
    and ``lineItem/UsageAccountId`` (sub-account); the region is ``product/regionCode``, else ``product/region``.
    """
    catalog = catalog or load_catalog()
    header, rows = _rows(data, source_file)
    _missing(header, LEGACY_REQUIRED, source_file, "legacy CUR")
    known = known_currencies(catalog)
    # resourceTags/user:niche and resourceTags/user:Niche are one key (AWS keeps case-variants as columns)
    tag_columns = {
        logical: [
            [c for c in header if c.lower() == f"resourcetags/{spelling}"]
            for spelling in _tag_spellings(catalog)[logical]
        ]
        for logical in TAGS
    }
    notes = _Notes(source_file)
    items, rejects, read = [], [], 0
    first_row: dict[str, int] = {}  # line item identity -> row it was first seen on
    for number, row in rows:
        read += 1
        notes.start_row()
        try:
            if "__error__" in row:
                raise _RowProblem(row["__error__"])
            kind = _text(row["lineItem/LineItemType"])
            if kind not in CUR_CHARGE_CATEGORY:
                raise _RowProblem(f"lineItem/LineItemType {kind!r} is not a known CUR line item type")
            unblended = money(row["lineItem/UnblendedCost"], "lineItem/UnblendedCost")
            if unblended is None:
                raise _RowProblem("lineItem/UnblendedCost is missing")
            sp_arn = _text(row.get("savingsPlan/SavingsPlanARN"))
            ri_arn = _text(row.get("reservation/ReservationARN"))
            category = CUR_CHARGE_CATEGORY[kind]
            rule = cur_effective_rule(kind)
            if kind == "Fee" and ri_arn:  # an RI's upfront fee: a purchase, amortized into the covered usage
                category, rule = "purchase", "zero"
            effective = _legacy_effective(row, rule, unblended, kind)
            identity = _text(row["identity/LineItemId"])
            if identity is None:
                raise _RowProblem("identity/LineItemId is missing")
            line_item_id = f"{identity}|{_text(row['identity/TimeInterval']) or ''}"
            if line_item_id in first_row:  # the same charge twice in one report would double its cost
                raise _RowProblem(f"duplicate line item {line_item_id} (first on row {first_row[line_item_id]})")
            period_start = timestamp(row["bill/BillingPeriodStartDate"], "bill/BillingPeriodStartDate", notes)
            usage_type = _text(row.get("lineItem/UsageType"))
            tags, problem = _legacy_tags(row, tag_columns)
            if problem:
                notes.untagged.append((number, problem))
            commitment = _cur_commitment(kind, sp_arn, ri_arn, effective, rule)
            first_row[line_item_id] = number
            items.append(
                {
                    "source_format": "cur_legacy",
                    "source_file": source_file,
                    "delivery": _folder(source_file),
                    "billing_period": period_start.strftime("%Y-%m"),
                    "line_item_id": line_item_id,
                    "usage_start": timestamp(row["lineItem/UsageStartDate"], "lineItem/UsageStartDate", notes),
                    "usage_end": timestamp(row["lineItem/UsageEndDate"], "lineItem/UsageEndDate", notes),
                    "provider": "aws",
                    "billing_account_id": _text(row.get("bill/PayerAccountId")),
                    "sub_account_id": _text(row.get("lineItem/UsageAccountId")),
                    "region": _text(row.get("product/regionCode")) or _text(row.get("product/region")),
                    "line_item_type": kind,
                    "charge_category": category,
                    "charge_frequency": CUR_CHARGE_FREQUENCY[kind],
                    "pricing_category": cur_pricing_category(kind, usage_type, _text(row.get("pricing/term"))),
                    "service_code": _text(row["lineItem/ProductCode"]),
                    "usage_type": usage_type,
                    "resource_id": _text(row.get("lineItem/ResourceId")),
                    **tags,
                    **commitment,
                    "currency": _currency(row["lineItem/CurrencyCode"], known, "lineItem/CurrencyCode"),
                    "unblended_cost": unblended,
                    "amortized_cost": effective,
                    "list_cost": money(row.get("pricing/publicOnDemandCost"), "pricing/publicOnDemandCost"),
                }
            )
        except _RowProblem as problem:
            rejects.append({"row_number": number, "row": _raw_json(row), "reason": str(problem)})
    return _finish(source_file, read, items, rejects, strict, notes)


_ZERO = Decimal(0).quantize(_QUANTUM)


def _legacy_effective(row: dict[str, Any], rule: str, unblended: Decimal, kind: str) -> Decimal:
    def amount(column: str) -> Decimal:
        return money(row.get(column), column) or _ZERO

    if rule == "sp_effective" or rule == "ri_effective":
        column = "savingsPlan/SavingsPlanEffectiveCost" if rule == "sp_effective" else "reservation/EffectiveCost"
        value = money(row.get(column), column)
        if value is None:
            raise _RowProblem(f"{kind} line item has no effective cost ({column} is missing)")
        return value
    if rule == "sp_unused":  # AWS: TotalCommitmentToDate - UsedCommitment (0 when the columns are absent)
        return amount("savingsPlan/TotalCommitmentToDate") - amount("savingsPlan/UsedCommitment")
    if rule == "ri_unused":
        return amount("reservation/UnusedAmortizedUpfrontFeeForBillingPeriod") + amount(
            "reservation/UnusedRecurringFee"
        )
    if rule == "zero":
        return _ZERO
    return unblended


def _cur_commitment(
    kind: str, sp_arn: str | None, ri_arn: str | None, effective: Decimal, rule: str
) -> dict[str, str | None]:
    """FOCUS CommitmentDiscount* of a CUR line item: the SP / RI ARN, type, category (Spend / Usage) and
    status: ``Used`` on covered usage, ``Unused`` on a recurring fee with an unused part."""
    arn, kind_name, category = (
        (sp_arn, "Savings Plan", "Spend")
        if sp_arn
        else (ri_arn, "Reserved Instance", "Usage")
        if ri_arn
        else (None,) * 3
    )
    status = None
    if arn and kind in ("SavingsPlanCoveredUsage", "DiscountedUsage"):
        status = "Used"
    elif arn and rule in ("sp_unused", "ri_unused") and effective != 0:
        status = "Unused"
    return {
        "commitment_discount_id": arn,
        "commitment_discount_type": kind_name,
        "commitment_discount_category": category,
        "commitment_discount_status": status,
    }


def _legacy_tags(row: dict[str, Any], columns: dict[str, list[list[str]]]) -> tuple[dict[str, str | None], str | None]:
    out: dict[str, str | None] = {}
    problem = None
    for logical, spellings in columns.items():
        out[f"{logical}_tag"] = None
        for group in spellings:
            found = [(c, v.lower()) for c in group if (v := _text(row.get(c))) is not None]
            if not found:
                continue
            if len({v for _, v in found}) > 1:
                problem = problem or f"{found[0][0]} and {found[1][0]} have different values"
            else:
                out[f"{logical}_tag"] = found[0][1]
            break
    return out, problem


def _tag_pairs(value: Any) -> list[tuple[str, Any]]:
    """FOCUS ``Tags`` as (key, value) pairs: JSON object text, a dict, or a Parquet MAP ([(key, value), …])."""
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list):
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value):
            return [(str(k), v) for k, v in value]
        raise _RowProblem("Tags must be a JSON object or a map of key/value pairs")
    return list(_tags_json(str(value)))


@functools.lru_cache(maxsize=65_536)
def _tags_json(text: str) -> tuple[tuple[str, Any], ...]:
    """Tags JSON text → pairs, cached: most rows of a bill share a handful of tag sets."""
    if not text.strip():
        return ()
    try:
        tags = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _RowProblem(f"Tags is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if tags is None:  # JSON null: untagged
        return ()
    if not isinstance(tags, dict):
        raise _RowProblem(f"Tags must be a JSON object (got {type(tags).__name__})")
    return tuple((str(k), v) for k, v in tags.items())


def _canonical(value: Any) -> str | None:
    """One value as typed text for the row identity: the same in a CSV and a typed Parquet of one bill."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return format(number.normalize(), "f") if number.is_finite() else str(number)
    if isinstance(value, (datetime, date)):
        return timestamp(value, "").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dict):
        return json.dumps({str(k): _canonical(v) for k, v in value.items()}, sort_keys=True)
    if isinstance(value, list):
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value):  # a Parquet MAP
            return _canonical({str(k): v for k, v in value})
        return json.dumps([_canonical(v) for v in value])
    return _canonical_text(str(value).strip())


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@functools.lru_cache(maxsize=65_536)
def _canonical_text(text: str) -> str | None:
    if not text:
        return None
    if _NUMBER.fullmatch(text):
        return _canonical(Decimal(text))
    if text[:1].isdigit() and (parsed := _parse_iso(text)) is not None:
        return parsed[0].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if text[:1] in "{[":
        try:
            return _canonical(json.loads(text))
        except (json.JSONDecodeError, RecursionError):
            return text
    return text


# The columns a FOCUS row's identity is made of: what the charge is in every FOCUS version and exporter
# (costs, quantities, periods, account, service, SKU, resource, region, commitment, tags), not the extra
# columns one exporter writes and another does not (InvoiceId, SkuMeter, x_ columns, display names).
FOCUS_IDENTITY = tuple(
    sorted(
        "BilledCost EffectiveCost ListCost ContractedCost BillingCurrency BillingAccountId SubAccountId "
        "BillingPeriodStart BillingPeriodEnd ChargePeriodStart ChargePeriodEnd ChargeCategory ChargeSubcategory "
        "ChargeClass ChargeDescription ChargeFrequency PricingCategory PricingQuantity PricingUnit "
        "ConsumedQuantity ConsumedUnit ProviderName ServiceName SkuId SkuPriceId ResourceId RegionId "
        "AvailabilityZone CommitmentDiscountId CommitmentDiscountStatus Tags".split()
    )
)


def focus_row_identity(row: dict[str, Any]) -> str:
    """A FOCUS row's identity (FOCUS has no row id): a hash of its *typed* values in
    :data:`FOCUS_IDENTITY`, nulls left out, text case-blind. ``12.50`` and DECIMAL 12.5,
    ``2024-09-18 23:00:00`` and a UTC timestamp, Tags JSON with its keys in another order, PricingCategory
    ``On-Demand`` (1.0) and ``Standard`` (1.1), ProviderName ``AWS`` and ``Amazon Web Services`` are the same
    value, so one bill delivered as CSV and as typed Parquet, or by two FOCUS versions, has the same ids."""
    parts = []
    for column in FOCUS_IDENTITY:
        value = row.get(column)
        if column == "PricingCategory":
            value = _named(value, PRICING_CATEGORY)
        elif column == "ProviderName":
            value = provider_id(value)
        text = _canonical(value)
        if text is not None:
            parts.append(f"{column}\x1e{text.lower()}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _focus_header(header: list[str]) -> dict[str, str]:
    """Each column → its FOCUS 1.x name: case-blind (``billedcost``), and the 1.0-preview spellings
    (``Provider``, ``Region``, …) when the 1.x column is not there too."""
    canonical = {c.lower(): c for c in FOCUS_COLUMNS}
    present = {h.lower() for h in header}
    out = {}
    for h in header:
        low = h.lower()
        if low in canonical:
            out[h] = canonical[low]
        elif low in FOCUS_ALIASES and FOCUS_ALIASES[low].lower() not in present:
            out[h] = FOCUS_ALIASES[low]
        else:
            out[h] = h
    return out


def parse_focus(data: bytes, source_file: str, *, strict: bool = False, catalog: Catalog | None = None) -> BillingParse:
    """Parse a FinOps FOCUS 1.0–1.2 file (CSV, CSV.gz or Parquet) to normalized line items.

    ``unblended_cost`` = ``BilledCost``, ``amortized_cost`` = ``EffectiveCost``, ``list_cost`` = ``ListCost``;
    ``provider`` = :func:`provider_id` of ``ProviderName`` (one file may hold several providers);
    ``billing_account_id`` / ``sub_account_id`` = ``BillingAccountId`` / ``SubAccountId``; ``region`` =
    ``RegionId``; the ``ChargeClass``, ``ChargeFrequency``, ``PricingCategory`` and ``CommitmentDiscount*``
    columns as written (PricingCategory in the 1.1 names). ``line_item_id`` is :func:`focus_row_identity`, with
    ``#2``, ``#3`` … on identical rows so none collapses.
    """
    catalog = catalog or load_catalog()
    header, rows = _rows(data, source_file)
    names = _focus_header(header)
    _missing(list(names.values()), FOCUS_REQUIRED, source_file, "FOCUS")
    known = known_currencies(catalog)
    spellings = _tag_spellings(catalog)
    categories = {k.lower(): v for k, v in FOCUS_CHARGE_CATEGORY.items()}
    notes = _Notes(source_file)
    items, rejects, read = [], [], 0
    seen_ids: dict[str, int] = {}
    rename = any(k != v for k, v in names.items())
    for number, raw in rows:
        read += 1
        notes.start_row()
        row = {names.get(k, k): v for k, v in raw.items()} if rename and "__error__" not in raw else raw
        try:
            if "__error__" in row:
                raise _RowProblem(row["__error__"])
            kind = _text(row["ChargeCategory"])
            if kind is None or kind.lower() not in categories:
                raise _RowProblem(f"ChargeCategory {kind!r} is not one of {', '.join(FOCUS_CHARGE_CATEGORY)}")
            category = categories[kind.lower()]
            if (_text(row.get("ChargeSubcategory")) or "").lower() == "refund":  # FOCUS 1.0-preview's refund
                category = "refund"
            billed = money(row["BilledCost"], "BilledCost")
            effective = money(row["EffectiveCost"], "EffectiveCost")
            if billed is None or effective is None:
                raise _RowProblem("BilledCost and EffectiveCost are required")
            start = timestamp(row["ChargePeriodStart"], "ChargePeriodStart", notes)
            end = timestamp(row["ChargePeriodEnd"], "ChargePeriodEnd", notes)
            period_source = row.get("BillingPeriodStart")
            period = timestamp(period_source, "BillingPeriodStart", notes) if period_source is not None else start
            if row.get("BillingPeriodEnd") is not None:
                timestamp(row["BillingPeriodEnd"], "BillingPeriodEnd", notes)
            provider = provider_id(row["ProviderName"])
            if provider is None:
                raise _RowProblem("ProviderName is missing")
            currency = _currency(row["BillingCurrency"], known, "BillingCurrency")
            try:
                tags, problem = match_tags(_tag_pairs(row.get("Tags")), spellings)
            except _RowProblem as malformed:
                tags, problem = _untagged(), str(malformed)
            if problem:
                notes.untagged.append((number, problem))
            row_id = focus_row_identity(row)
            seen_ids[row_id] = seen_ids.get(row_id, 0) + 1
            if seen_ids[row_id] > 1:
                row_id = f"{row_id}#{seen_ids[row_id]}"
            items.append(
                {
                    "source_format": "focus",
                    "source_file": source_file,
                    "delivery": _folder(source_file),
                    "billing_period": period.strftime("%Y-%m"),
                    "line_item_id": row_id,
                    "usage_start": start,
                    "usage_end": end,
                    "provider": provider,
                    "billing_account_id": _text(row.get("BillingAccountId")),
                    "sub_account_id": _text(row.get("SubAccountId")),
                    "region": _text(row.get("RegionId")) or _text(row.get("RegionName")),
                    "line_item_type": kind,
                    "charge_category": category,
                    "charge_class": _named(row.get("ChargeClass"), {"correction": "Correction"}),
                    "charge_frequency": _named(
                        row.get("ChargeFrequency"),
                        {"one-time": "One-Time", "recurring": "Recurring", "usage-based": "Usage-Based"},
                    ),
                    "pricing_category": _named(row.get("PricingCategory"), PRICING_CATEGORY),
                    "service_code": _text(row["ServiceName"]),
                    "service_category": _text(row.get("ServiceCategory")),
                    "usage_type": _text(row.get("x_UsageType") or row.get("SkuId")),
                    "resource_id": _text(row.get("ResourceId")),
                    "commitment_discount_id": _text(row.get("CommitmentDiscountId")),
                    "commitment_discount_type": _text(row.get("CommitmentDiscountType")),
                    "commitment_discount_category": _named(
                        row.get("CommitmentDiscountCategory"), {"spend": "Spend", "usage": "Usage"}
                    ),
                    "commitment_discount_status": _named(
                        row.get("CommitmentDiscountStatus"), {"used": "Used", "unused": "Unused"}
                    ),
                    **tags,
                    "currency": currency,
                    "unblended_cost": billed,
                    "amortized_cost": effective,
                    "list_cost": money(row.get("ListCost"), "ListCost"),
                }
            )
        except _RowProblem as problem:
            rejects.append({"row_number": number, "row": _raw_json(raw), "reason": str(problem)})
    return _finish(source_file, read, items, rejects, strict, notes)


def detect_format(data: bytes, source_file: str) -> str:
    """``cur_legacy``, ``focus`` or ``cur2`` from the file's columns (raises on anything else)."""
    header, _ = _rows(data, source_file)
    return format_of_columns(header, source_file)


def format_of_columns(columns: list[str], where: str) -> str:
    """``cur_legacy``, ``focus`` or ``cur2`` from a list of column names (a header, a manifest's columns)."""
    lower = {c.lower() for c in columns}
    if "lineitem/unblendedcost" in lower:
        return "cur_legacy"
    if "billedcost" in lower:
        return "focus"
    if "line_item_unblended_cost" in lower:
        return "cur2"
    raise BillingFormatError(
        f"{where}: unknown billing format (no lineItem/UnblendedCost, BilledCost or line_item_unblended_cost column)"
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
