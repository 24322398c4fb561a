"""FOCUS files in the shapes the spec and real exporters write: every timestamp shape, corrections and
negative rows netting out, four providers, FOCUS 1.0 / 1.1 / 1.2 / 1.0-preview column sets, CSV and typed
Parquet of one bill with the same row identity, malformed and odd-cased Tags, and the dimensions the cost
views need (accounts, region, service category, charge class and frequency, pricing, commitments).

The November 2026 bill below is a hand-made multi-provider FOCUS 1.2 file; every expected total is computed
by hand in the comments and checked against an independent Decimal sum of the rows.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import polars as pl
import pytest

from pipelines.lib.sources.billing_formats import LINE_ITEM_SCHEMA, parse_focus
from tests.fixtures.sources.focus import focus_csv, focus_parquet, focus_row, utc

AWS = {
    "ProviderName": "AWS",
    "BillingAccountId": "111111111111",
    "SubAccountId": "222222222222",
    "RegionId": "sa-east-1",
    "RegionName": "South America (Sao Paulo)",
}
AZURE = {
    "ProviderName": "Microsoft",
    "PublisherName": "Microsoft",
    "InvoiceIssuerName": "Microsoft",
    "BillingAccountId": "azure-ba-1",
    "SubAccountId": "sub-1",
    "RegionId": "brazilsouth",
    "ServiceName": "Virtual Machines",
}
GCP = {
    "ProviderName": "Google Cloud",
    "PublisherName": "Google",
    "InvoiceIssuerName": "Google",
    "BillingAccountId": "01ABCD-2345EF-6789GH",
    "SubAccountId": "proj-1",
    "RegionId": "southamerica-east1",
    "ServiceName": "Cloud Storage",
    "ServiceCategory": "Storage",
}
OCI = {
    "ProviderName": "Oracle",
    "PublisherName": "Oracle",
    "InvoiceIssuerName": "Oracle",
    "BillingAccountId": "ocid1.tenancy.oc1..aaaa",
    "RegionId": "us-ashburn-1",
    "ServiceName": "Oracle Compute",
}
SP = {
    "CommitmentDiscountId": "arn:aws:savingsplans::111111111111:savingsplan/sp-1",
    "CommitmentDiscountType": "Savings Plan",
    "CommitmentDiscountCategory": "Spend",
    "CommitmentDiscountName": "Compute SP 1yr",
}
BARBER_API = {"user:niche": "barber", "user:service": "api", "user:environment": "prod"}
OCT_20 = {"ChargePeriodStart": "2026-10-20T00:00:00Z", "ChargePeriodEnd": "2026-10-21T00:00:00Z"}


def november_bill() -> list[dict[str, Any]]:
    """FOCUS 1.2, billing period 2026-11, four providers (the ``#`` comments name each row)."""
    correction = {"ChargeClass": "Correction", "ChargeDescription": "reallocation of i-0abc", **OCT_20}
    return [
        # a2-a4: a closed-period correction (spec scenario 1): October's +1500 charge to barber/api is reversed
        # and reallocated 1200 barber + 300 psychology; charge period October, billing period November.
        focus_row(**AWS, **correction, BilledCost="-1500.00", ListCost="-1800.00", ResourceId="i-0abc", Tags=BARBER_API),
        focus_row(**AWS, **correction, BilledCost="1200.00", ListCost="1440.00", ResourceId="i-0abc", Tags=BARBER_API),
        focus_row(**AWS, **correction, BilledCost="300.00", ListCost="360.00", ResourceId="i-0abc", Tags={"user:niche": "psychology"}),
        # a5-a7: a Savings Plan: covered usage (billed 0), the unused part, the recurring purchase (effective 0)
        focus_row(
            **AWS, **SP, BilledCost="0", EffectiveCost="6.4032", ListCost="9.60", CommitmentDiscountStatus="Used",
            PricingCategory="Committed", ResourceId="i-0def", Tags={"user:niche": "barber"},
        ),
        focus_row(
            **AWS, **SP, BilledCost="0", EffectiveCost="0.5", CommitmentDiscountStatus="Unused",
            PricingCategory="Committed", ResourceId=SP["CommitmentDiscountId"],
        ),
        focus_row(
            **AWS, **SP, ChargeCategory="Purchase", ChargeFrequency="Recurring", BilledCost="6.9032",
            EffectiveCost="0", PricingCategory=None, ResourceId=SP["CommitmentDiscountId"],
        ),
        focus_row(**AWS, ChargeCategory="Tax", ChargeFrequency="One-Time", BilledCost="12.345678901", PricingCategory=None),
        focus_row(**AWS, ChargeCategory="Credit", ChargeFrequency="One-Time", BilledCost="-25.125", PricingCategory=None),
        # z1-z3 Azure: odd-cased tag keys and values; Tags that is JSON but not an object; a refund correction
        focus_row(**AZURE, BilledCost="7.10", ListCost="8.00", Tags={"Niche": "Psychology", "Service": "WEB"}),
        focus_row(**AZURE, BilledCost="1.00", Tags="[1,2]"),
        focus_row(
            **AZURE, ChargeClass="Correction", BilledCost="-0.75", ChargeDescription="SLA refund",
            ChargePeriodStart="2026-10-30T00:00:00Z", ChargePeriodEnd="2026-10-31T00:00:00Z",
        ),
        # g1-g4 Google Cloud: invalid Tags JSON, a sub-micro rounding adjustment, upper-case key, conflicting keys
        focus_row(**GCP, BilledCost="0.333333333", Tags='{"niche": "barber"'),
        focus_row(**GCP, ChargeCategory="Adjustment", ChargeFrequency="One-Time", BilledCost="-0.0000001", PricingCategory=None),
        focus_row(**GCP, BilledCost="2.5", Tags={"NICHE": "barber"}),
        focus_row(**GCP, BilledCost="0.1", Tags={"niche": "barber", "Niche": "psychology"}),
        # o1 Oracle
        focus_row(**OCI, BilledCost="3.21", PricingCategory="Dynamic"),
    ]  # fmt: skip


def _totals(items: pl.DataFrame, by: str, column: str) -> dict[Any, Decimal]:
    out: dict[Any, Decimal] = defaultdict(Decimal)
    for key, value in items.select(by, column).iter_rows():
        if value is not None:
            out[key] += value
    return dict(out)


def _independent(rows: list[dict[str, Any]], key, column: str) -> dict[Any, Decimal]:
    """The same totals straight from the row dicts (Decimal from the text, nothing shared with the parser)."""
    out: dict[Any, Decimal] = defaultdict(Decimal)
    for r in rows:
        if r.get(column) is not None:
            out[key(r)] += Decimal(str(r[column]))
    return dict(out)


PROVIDER_IDS = {"AWS": "aws", "Microsoft": "azure", "Google Cloud": "gcp", "Oracle": "oci"}


def test_multi_provider_bill_exact_per_provider_category_cost_kind_and_tag() -> None:
    rows = november_bill()
    parsed = parse_focus(focus_csv(rows), "focus/2026-11/bill.csv")
    items = parsed.line_items
    assert parsed.rejects.height == 0 and items.height == len(rows) == 16
    assert dict(items.schema) == LINE_ITEM_SCHEMA
    # billed (BilledCost) per provider, by hand:
    # aws   -1500 + 1200 + 300 + 0 + 0 + 6.9032 + 12.345678901 - 25.125 = -5.876121099
    # azure  7.10 + 1.00 - 0.75 = 7.35; gcp 0.333333333 - 0.0000001 + 2.5 + 0.1 = 2.933333233; oci 3.21
    billed = {
        "aws": Decimal("-5.876121099"),
        "azure": Decimal("7.35"),
        "gcp": Decimal("2.933333233"),
        "oci": Decimal("3.21"),
    }
    assert _totals(items, "provider", "unblended_cost") == billed
    assert billed == _independent(rows, lambda r: PROVIDER_IDS[r["ProviderName"]], "BilledCost")
    # effective (EffectiveCost): the SP purchase is 0, its used 6.4032 + unused 0.5 carry it: the same totals
    assert _totals(items, "provider", "amortized_cost") == billed
    # list (ListCost), NULL where the file has none: aws -1800 + 1440 + 360 + 9.60 = 9.60; azure 8.00
    assert _totals(items, "provider", "list_cost") == {"aws": Decimal("9.60"), "azure": Decimal("8.00")}
    assert items["list_cost"].null_count() == 11
    # per charge category, billed and effective
    assert _totals(items, "charge_category", "unblended_cost") == {
        "usage": Decimal("13.493333333"),  # 0 (aws corrections) + 7.35 + 2.933333333 + 3.21
        "purchase": Decimal("6.9032"),
        "tax": Decimal("12.345678901"),
        "credit": Decimal("-25.125"),
        "adjustment": Decimal("-0.0000001"),
    }
    assert _totals(items, "charge_category", "amortized_cost") == {
        "usage": Decimal("20.396533333"),  # + the SP's 6.4032 used and 0.5 unused
        "purchase": Decimal("0"),
        "tax": Decimal("12.345678901"),
        "credit": Decimal("-25.125"),
        "adjustment": Decimal("-0.0000001"),
    }
    # per niche tag (effective): barber -1500 + 1200 + 6.4032 + 2.5 = -291.0968; psychology 300 + 7.10;
    # untagged 0.5 + 0 + 12.345678901 - 25.125 + 1.00 - 0.75 + 0.333333333 - 0.0000001 + 0.1 + 3.21
    assert _totals(items, "niche_tag", "amortized_cost") == {
        "barber": Decimal("-291.0968"),
        "psychology": Decimal("307.10"),
        None: Decimal("-8.385987866"),
    }
    assert sum(_totals(items, "niche_tag", "amortized_cost").values()) == Decimal("7.617212134")


def test_corrections_and_negative_rows_load_and_net_out_exactly() -> None:
    """ChargeClass = Correction rows of any sign load (FOCUS: every category may be positive or negative)."""
    items = parse_focus(focus_csv(november_bill()), "bill.csv").line_items
    corrections = items.filter(pl.col("charge_class") == "Correction")
    assert corrections.height == 4
    aws = corrections.filter(pl.col("provider") == "aws")
    assert aws["unblended_cost"].to_list() == [Decimal("-1500"), Decimal("1200"), Decimal("300")]
    assert sum(aws["unblended_cost"].to_list()) == 0 and sum(aws["list_cost"].to_list()) == 0  # nets out exactly
    assert _totals(aws, "niche_tag", "amortized_cost") == {"barber": Decimal("-300"), "psychology": Decimal("300")}
    # the charge period is October (when the cost was incurred), the billing period November (when invoiced)
    assert set(aws["billing_period"]) == {"2026-11"} and aws["usage_start"].to_list()[0] == utc("2026-10-20T00:00:00Z")
    refund = corrections.filter(pl.col("provider") == "azure").row(0, named=True)
    assert (refund["charge_category"], refund["unblended_cost"]) == ("usage", Decimal("-0.75"))
    # a positive credit (a credit reversed) and a negative tax (a tax refund) are bills too: kept
    odd = parse_focus(
        focus_csv([
            focus_row(**AWS, ChargeCategory="Credit", BilledCost="4.00", ChargeClass="Correction"),
            focus_row(**AWS, ChargeCategory="Tax", BilledCost="-0.24"),
        ]),
        "odd.csv",
    )  # fmt: skip
    assert odd.rejects.height == 0
    assert odd.line_items["unblended_cost"].to_list() == [Decimal("4"), Decimal("-0.24")]


@pytest.mark.parametrize(
    ("style", "zone_assumed"),
    [("z", False), ("space", True), ("offset", False), ("fraction", False)],
    ids=["spec_Z", "sample_no_T_no_zone", "utc_offset", "seven_fraction_digits"],
)
def test_every_timestamp_shape_is_the_same_utc_instant(style: str, zone_assumed: bool) -> None:
    rows = november_bill()
    reference = parse_focus(focus_csv(rows), "ref.csv").line_items
    parsed = parse_focus(focus_csv(rows, timestamps=style), f"{style}.csv")
    assert parsed.rejects.height == 0
    for column in ("usage_start", "usage_end", "billing_period"):
        assert parsed.line_items[column].to_list() == reference[column].to_list()
    assert parsed.line_items["usage_start"].to_list()[0] == utc("2026-10-20T00:00:00Z")
    notes = [w for w in parsed.warnings if "no time zone" in w]
    if zone_assumed:  # the load says what it assumed: FOCUS datetimes are UTC
        assert len(notes) == 1 and "16 rows" in notes[0] and "e.g. '2026-10-20 00:00:00'" in notes[0]
        assert notes[0].startswith(f"{style}.csv: ") and "read as UTC" in notes[0]
    else:
        assert notes == []
    # the row identity does not depend on how the text spelled the instant
    assert parsed.line_items["line_item_id"].to_list() == reference["line_item_id"].to_list()


def test_foundation_focus_10_sample_shape_loads_every_row() -> None:
    """The FinOps Foundation's FOCUS 1.0 sample writes ``2024-09-18 23:00:00`` and ``NULL``: all rows load."""
    rows = [
        focus_row(
            **AWS,
            BillingPeriodStart="2024-09-01T00:00:00Z",
            BillingPeriodEnd="2024-10-01T00:00:00Z",
            ChargePeriodStart=f"2024-09-18T{h:02d}:00:00Z",
            ChargePeriodEnd=f"2024-09-18T{h + 1:02d}:00:00Z",
            BilledCost=f"0.{h:02d}1",
        )
        for h in range(23)
    ]
    parsed = parse_focus(focus_csv(rows, version="1.0", timestamps="space", null="NULL"), "focus_sample.csv")
    assert (parsed.rows_read, parsed.line_items.height, parsed.rejects.height) == (23, 23, 0)
    assert parsed.line_items["usage_end"].max() == utc("2024-09-18T23:00:00Z")
    assert sum(parsed.line_items["unblended_cost"].to_list()) == Decimal("2.553")  # 0.001 + ... + 0.221 = 23 x 0.111


def test_date_only_bounds_and_unreadable_times() -> None:
    text = focus_csv([focus_row(**AWS, BilledCost="1")]).decode()
    dated = text.replace("2026-11-01T00:00:00Z", "2026-11-01").replace("2026-12-01T00:00:00Z", "2026-12-01")
    bad = text.splitlines()[1].replace("2026-11-03T00:00:00Z", "2026-11-3 00:00", 1)
    parsed = parse_focus(f"{dated}{bad}\n".encode(), "dates.csv")
    assert parsed.line_items["billing_period"].to_list() == ["2026-11"]
    assert any("no time zone" in w for w in parsed.warnings)  # a date alone is 00:00 UTC, and said so
    (reason,) = parsed.rejects["reason"].to_list()
    assert reason == "ChargePeriodStart '2026-11-3 00:00' is not an ISO 8601 date/time"


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_focus_10_11_12_column_sets_give_the_same_line_items(version: str) -> None:
    rows = november_bill()
    reference = parse_focus(focus_csv(rows), "ref.csv").line_items.drop("source_file", "line_item_id")
    items = parse_focus(focus_csv(rows, version=version), f"{version}.csv").line_items
    assert items.drop("source_file", "line_item_id").equals(reference)


def test_focus_10_preview_names_oracle_export() -> None:
    """OCI writes pre-1.0 names (``Provider``, ``Region``, ``ChargeSubCategory``, ``UsageQuantity``)."""
    rows = [
        focus_row(**OCI, BilledCost="3.21", x_oci_CompartmentName="prod"),
        focus_row(**OCI, ChargeCategory="Adjustment", ChargeSubcategory="Refund", BilledCost="-1.00"),
    ]
    parsed = parse_focus(focus_csv(rows, version="1.0-preview"), "oci.csv")
    assert parsed.rejects.height == 0
    assert parsed.line_items.select("provider", "region", "charge_category", "unblended_cost").rows() == [
        ("oci", "us-ashburn-1", "usage", Decimal("3.21")),
        ("oci", "us-ashburn-1", "refund", Decimal("-1")),
    ]


def test_csv_and_typed_parquet_of_one_bill_have_the_same_rows_and_ids() -> None:
    rows = november_bill()
    csv_items = parse_focus(focus_csv(rows), "bill.csv").line_items
    parquet = parse_focus(focus_parquet(rows), "bill.parquet")
    assert parquet.rejects.height == 0
    assert parquet.line_items.drop("source_file").equals(csv_items.drop("source_file"))
    assert parquet.line_items["line_item_id"].n_unique() == 16
    # the id is the row's typed content: changing one cost changes that row's id only
    changed = [dict(r) for r in rows]
    changed[0]["BilledCost"] = "-1500.01"
    ids = parse_focus(focus_csv(changed), "b.csv").line_items["line_item_id"].to_list()
    assert ids[1:] == csv_items["line_item_id"].to_list()[1:] and ids[0] != csv_items["line_item_id"][0]


def test_tags_malformed_values_keep_the_cost_untagged_with_a_warning_and_keys_are_case_blind() -> None:
    parsed = parse_focus(focus_csv(november_bill()), "focus/bill.csv")
    items = parsed.line_items
    tags = items.select("provider", "unblended_cost", "niche_tag", "service_tag").rows()
    assert ("azure", Decimal("7.10"), "psychology", "web") in tags  # {"Niche": "Psychology", "Service": "WEB"}
    assert ("gcp", Decimal("2.5"), "barber", None) in tags  # {"NICHE": "barber"}
    # [1,2], invalid JSON, and two spellings of one key with different values: untagged, never dropped
    for cost in ("1.00", "0.333333333", "0.1"):
        assert [t[2] for t in tags if t[1] == Decimal(cost)] == [None]
    notes = [w for w in parsed.warnings if "Tags" in w]
    assert len(notes) == 1
    assert notes[0].startswith("focus/bill.csv: 3 rows kept untagged")
    assert "row 11: Tags must be a JSON object" in notes[0]
    assert "row 13: Tags is not valid JSON" in notes[0]
    assert "row 16: Tags has 'niche' and 'Niche' with different values" in notes[0]


def test_dimensions_for_the_cost_views() -> None:
    items = parse_focus(focus_csv(november_bill()), "bill.csv").line_items
    first = items.row(0, named=True)
    assert {
        k: first[k] for k in ("provider", "billing_account_id", "sub_account_id", "region", "service_category")
    } == {
        "provider": "aws",
        "billing_account_id": "111111111111",
        "sub_account_id": "222222222222",
        "region": "sa-east-1",
        "service_category": "Compute",
    }
    assert (first["charge_class"], first["charge_frequency"], first["pricing_category"]) == (
        "Correction",
        "Usage-Based",
        "Standard",
    )
    sp = items.filter(pl.col("commitment_discount_id").is_not_null()).select(
        "charge_category", "commitment_discount_type", "commitment_discount_category", "commitment_discount_status",
        "pricing_category", "unblended_cost", "amortized_cost", "list_cost",
    )  # fmt: skip
    assert sp.rows() == [
        ("usage", "Savings Plan", "Spend", "Used", "Committed", Decimal("0"), Decimal("6.4032"), Decimal("9.60")),
        ("usage", "Savings Plan", "Spend", "Unused", "Committed", Decimal("0"), Decimal("0.5"), None),
        ("purchase", "Savings Plan", "Spend", None, None, Decimal("6.9032"), Decimal("0"), None),
    ]
    assert set(items["provider"]) == {"aws", "azure", "gcp", "oci"}
    assert items.filter(pl.col("provider") == "oci")["pricing_category"].to_list() == ["Dynamic"]


def test_focus_10_pricing_category_names_map_to_the_11_names() -> None:
    rows = [
        focus_row(**AWS, BilledCost="1", PricingCategory=p) for p in ("On-Demand", "Spot", "Commitment-Based", "Other")
    ]
    items = parse_focus(focus_csv(rows, version="1.0"), "p.csv").line_items
    assert items["pricing_category"].to_list() == ["Standard", "Dynamic", "Committed", "Other"]
