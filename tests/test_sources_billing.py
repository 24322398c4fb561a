"""Legacy CUR CSV and FOCUS 1.0–1.2 parsers: exact totals, categories, tags, nulls and bad rows."""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter, defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from pipelines.lib.sources.billing_formats import (
    LINE_ITEM_SCHEMA,
    BillingFormatError,
    detect_format,
    parse_cur_legacy,
    parse_focus,
    read_billing_file,
)
from pipelines.lib.storage import LocalStorage

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
LEGACY = FIXTURES / "aws-cur-legacy-sample.csv"
FOCUS12 = FIXTURES / "focus-1.2-multi-provider.csv"
Q = Decimal("0.000001")


def _totals(frame: pl.DataFrame, by: str, column: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for key, value in frame.select(by, column).iter_rows():
        out[key] += value if value is not None else Decimal(0)
    return dict(out)


# -- legacy CUR ----------------------------------------------------------------------------------------


def test_legacy_cur_sample_totals_are_exact() -> None:
    parsed = read_billing_file(LocalStorage(FIXTURES), LEGACY.name)
    items = parsed.line_items
    assert parsed.rows_read == 1281 and items.height == 1281 and parsed.rejects.height == 0
    assert dict(items.schema) == LINE_ITEM_SCHEMA

    # Independent computation: the csv module and Decimal straight from the text, nothing rounded.
    expected_by_type: dict[str, Decimal] = defaultdict(Decimal)
    with LEGACY.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        expected_by_type[row["lineItem/LineItemType"]] += Decimal(row["lineItem/UnblendedCost"])
    assert _totals(items, "line_item_type", "unblended_cost") == dict(expected_by_type)
    assert expected_by_type == {"Usage": Decimal("1.60230869740"), "Tax": Decimal("0.08")}
    # exact: AWS bills to 1e-10 and the raw layer keeps 10 decimals (6 decimals lost $0.0000176974 here)
    assert sum(items["unblended_cost"].to_list()) == Decimal("1.68230869740")
    assert sum(Decimal(r["lineItem/UnblendedCost"]).quantize(Q, rounding=ROUND_HALF_EVEN) for r in rows) == Decimal(
        "1.682291"
    )
    # Usage line items carry no SP/RI: amortized = unblended
    assert items["amortized_cost"].to_list() == items["unblended_cost"].to_list()
    assert Counter(items["charge_category"].to_list()) == {"usage": 1269, "tax": 12}
    assert set(items["billing_period"]) == {"2023-11"} and set(items["currency"]) == {"USD"}
    # LineItemId repeats per time interval; the (id, interval) pair is unique
    assert len({r["identity/LineItemId"] for r in rows}) == 388
    assert items["line_item_id"].n_unique() == 1281
    # no tags in this export: every row kept, untagged
    assert items["niche_tag"].null_count() == 1281
    assert str(items["usage_start"].min()) == "2023-11-01 00:00:00+00:00"


def test_legacy_cur_gzip_and_tags(tmp_path: Path) -> None:
    header = (
        "identity/LineItemId,identity/TimeInterval,bill/BillingPeriodStartDate,lineItem/LineItemType,"
        "lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/CurrencyCode,"
        "lineItem/UnblendedCost,savingsPlan/SavingsPlanEffectiveCost,resourceTags/user:niche,"
        "resourceTags/user:service\n"
    )
    span = "2026-11-01T00:00:00Z/2026-11-02T00:00:00Z,2026-11-01T00:00:00Z"
    body = (
        f"a,{span},SavingsPlanCoveredUsage,2026-11-01T00:00:00Z,2026-11-01T01:00:00Z,AmazonEC2,USD,0.5,0.3,barber,api\n"
        f"b,{span},SavingsPlanNegation,2026-11-01T00:00:00Z,2026-11-01T01:00:00Z,AmazonEC2,USD,-0.5,,barber,api\n"
        f"c,{span},Refund,2026-11-01T00:00:00Z,2026-11-01T01:00:00Z,AmazonEC2,USD,-2.25,,,\n"
    )
    parsed = parse_cur_legacy(gzip.compress((header + body).encode()), "cur.csv.gz")
    assert parsed.rejects.height == 0
    rows = parsed.line_items.select(
        "line_item_type", "charge_category", "unblended_cost", "amortized_cost", "niche_tag", "service_tag"
    ).rows()
    assert rows == [
        ("SavingsPlanCoveredUsage", "usage", Decimal("0.5"), Decimal("0.3"), "barber", "api"),
        ("SavingsPlanNegation", "usage", Decimal("-0.5"), Decimal("0"), "barber", "api"),
        ("Refund", "refund", Decimal("-2.25"), Decimal("-2.25"), None, None),
    ]


# -- FOCUS ---------------------------------------------------------------------------------------------


def test_focus_multi_provider_categories_and_tags() -> None:
    parsed = parse_focus(FOCUS12.read_bytes(), str(FOCUS12.name))
    items = parsed.line_items
    assert parsed.rejects.height == 0 and items.height == 9
    # totals by category, by hand from the fixture (0.0000004 is kept: 10 decimals)
    assert _totals(items, "charge_category", "unblended_cost") == {
        "usage": Decimal("22.2790124"),
        "tax": Decimal("1.23"),
        "credit": Decimal("-5"),
        "purchase": Decimal("100"),
        "adjustment": Decimal("-0.5"),
    }
    assert _totals(items, "charge_category", "amortized_cost") == {
        "usage": Decimal("19.9333344"),
        "tax": Decimal("1.23"),
        "credit": Decimal("-5"),
        "purchase": Decimal("0"),
        "adjustment": Decimal("-0.5"),
    }
    assert _totals(items, "provider", "unblended_cost") == {  # ProviderName AWS, Microsoft, Google Cloud
        "aws": Decimal("11.0756794"),
        "azure": Decimal("107.1"),
        "gcp": Decimal("-0.166667"),
    }
    # tags: AWS "user:" keys, plain keys, JSON null, empty and NULL text all handled; untagged kept
    assert items.select("provider", "niche_tag", "service_tag", "environment_tag").rows() == [
        ("aws", "barber", "api", "prod"),
        ("aws", None, None, None),
        ("aws", None, None, None),
        ("aws", "psychology", None, None),
        ("azure", "psychology", "web", None),
        ("azure", None, None, None),
        ("gcp", None, None, None),
        ("gcp", None, None, None),
        ("aws", "shared", None, None),
    ]
    assert items["list_cost"].null_count() == 5  # rows 2, 3, 4, 7, 8: "", NULL and missing ListCost stay NULL, never 0
    assert set(items["billing_period"]) == {"2026-11"}
    assert items["line_item_id"].n_unique() == 9


def test_focus_10_refund_subcategory() -> None:
    items = parse_focus((FIXTURES / "focus-1.0-refund.csv").read_bytes(), "focus-1.0-refund.csv").line_items
    assert items.select("line_item_type", "charge_category", "unblended_cost", "billing_period").rows() == [
        ("Usage", "usage", Decimal("4"), "2026-10"),
        ("Adjustment", "refund", Decimal("-1.5"), "2026-10"),
    ]


def test_focus_parquet_gives_the_same_line_items(tmp_path: Path) -> None:
    csv_items = parse_focus(FOCUS12.read_bytes(), "f").line_items
    table = pa_csv.read_csv(
        FOCUS12,
        convert_options=pa_csv.ConvertOptions(
            column_types={
                c: pa.string() for c in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "Tags")
            },
            null_values=["", "NULL"],
            strings_can_be_null=True,
        ),
    )
    # money as Parquet DECIMAL, periods as real UTC timestamps: the usual FOCUS Parquet shape
    for column in ("BilledCost", "EffectiveCost", "ListCost"):
        values = [None if v is None else Decimal(v) for v in table[column].to_pylist()]
        table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.decimal128(18, 7)))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    parquet_items = parse_focus(buf.getvalue(), "f").line_items
    assert parquet_items.drop("line_item_id").equals(csv_items.drop("line_item_id"))
    assert detect_format(buf.getvalue(), "f") == "focus"
    # typed timestamps without a zone (isAdjustedToUTC unset) are UTC by the spec: same rows
    naive = table.set_column(
        table.schema.get_field_index("ChargePeriodStart"),
        "ChargePeriodStart",
        pa.array([v.replace(tzinfo=None) for v in table["ChargePeriodStart"].to_pylist()], pa.timestamp("us")),
    )
    assert table.schema.field("ChargePeriodStart").type == pa.timestamp("s", tz="UTC")  # csv inferred it, zoned
    buf = io.BytesIO()
    pq.write_table(naive, buf)
    naive_items = parse_focus(buf.getvalue(), "f").line_items
    assert naive_items["usage_start"].to_list() == csv_items["usage_start"].to_list()


def test_focus_duplicate_rows_are_both_kept() -> None:
    text = FOCUS12.read_text()
    header, first = text.splitlines()[:2]
    items = parse_focus(f"{header}\n{first}\n{first}\n".encode(), "dup.csv").line_items
    ids = items["line_item_id"].to_list()
    assert len(ids) == 2 and ids[1] == ids[0] + "#2"
    assert sum(items["unblended_cost"].to_list()) == Decimal("24.691356")


# -- bad input -------------------------------------------------------------------------------------------

_FOCUS_HEADER = FOCUS12.read_text().splitlines()[0]
_GOOD = FOCUS12.read_text().splitlines()[1]


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        (("12.345678,", "12.3x,"), "BilledCost '12.3x' is not a number"),
        ((",USD,", ",XYZ,"), "BillingCurrency 'XYZ' is not a known currency"),
        (
            ("2026-11-03T00:00:00Z,2026-11-04", "2026-11-3 00:00,2026-11-04"),
            "ChargePeriodStart '2026-11-3 00:00' is not an ISO 8601 date/time",
        ),
        ((",Usage,", ",Discount,"), "ChargeCategory 'Discount' is not one of"),
        ((",AWS,AWS,AWS,", ",,AWS,AWS,"), "ProviderName is missing"),
    ],
)
def test_focus_bad_row_is_rejected_with_reason_and_good_rows_kept(replace: tuple[str, str], reason: str) -> None:
    bad = _GOOD.replace(*replace, 1)
    assert bad != _GOOD
    data = f"{_FOCUS_HEADER}\n{_GOOD}\n{bad}\n".encode()
    parsed = parse_focus(data, "s3://bucket/focus.csv")
    assert parsed.line_items.height == 1 and parsed.rejects.height == 1
    reject = parsed.rejects.row(0, named=True)
    assert reject["row_number"] == 3 and reject["source_file"] == "s3://bucket/focus.csv"
    assert reject["reason"].startswith(reason)
    with pytest.raises(BillingFormatError, match=rf"s3://bucket/focus.csv: row 3: {reason[:20]}"):
        parse_focus(data, "s3://bucket/focus.csv", strict=True)


def test_ragged_row_rejected() -> None:
    parsed = parse_focus(f"{_FOCUS_HEADER}\n{_GOOD}\n1.0,2.0\n".encode(), "f.csv")
    assert parsed.rejects["reason"].to_list() == ["has 2 fields, the header has 20"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "f: empty file"),
        (gzip.compress(FOCUS12.read_bytes(), mtime=0)[:40], "f: gzip stream is cut short"),
        (b"PAR1" + b"\x00" * 30, "f: not a readable Parquet file"),
        (
            b"BilledCost,EffectiveCost\n1,1\n",
            "f: not a FOCUS file: missing column(s) ChargeCategory, ChargePeriodStart",
        ),
        (b"\xff\xfe\x00garbage", "f: not UTF-8 text"),
    ],
    ids=["empty", "gzip_cut_short", "truncated_parquet", "missing_columns", "not_utf8"],
)
def test_unreadable_files_name_the_file_and_problem(data: bytes, message: str) -> None:
    with pytest.raises(BillingFormatError) as info:
        parse_focus(data, "f")
    assert str(info.value).startswith(message)
