"""AWS CUR (legacy CSV and CUR 2.0 Parquet): the dimensions and cost kinds the cost views need, the
amortized (effective) rule for commitments as AWS Cost Explorer computes it, negative rows, and cost
allocation tags matched case-blind (``resourceTags/user:Niche``, ``resource_tags['user_NICHE']``).

Real data: the FinOps Foundation's anonymized legacy CUR sample (``tests/fixtures/sources``, MIT). The
commitment rows are hand-made in the column names of the AWS CUR data dictionaries.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib import warehouse
from pipelines.lib.ingest.billing import ensure_billing_tables, load_cur2
from pipelines.lib.sources.billing_formats import parse_cur_legacy
from pipelines.lib.storage import LocalStorage
from tests.fixtures.sources import broken

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
LEGACY = FIXTURES / "aws-cur-legacy-sample.csv"
SP_ARN = "arn:aws:savingsplans::123456789012:savingsplan/sp-1"
RI_ARN = "arn:aws:ec2:sa-east-1:123456789012:reserved-instances/ri-1"


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    ensure_billing_tables(c)
    yield c
    c.close()


def test_legacy_sample_accounts_regions_and_pricing_exact_per_region() -> None:
    items = parse_cur_legacy(LEGACY.read_bytes(), "cur.csv").line_items
    assert set(items["billing_account_id"]) == {"123412340534"} and set(items["sub_account_id"]) == {"123412340534"}
    # region: product/regionCode, else product/region (AWS left regionCode empty on 472 of the rows)
    expected: dict[str, Decimal] = defaultdict(Decimal)
    with LEGACY.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            region = row["product/regionCode"] or row["product/region"] or None
            expected[region] += Decimal(row["lineItem/UnblendedCost"])
    got: dict[str, Decimal] = defaultdict(Decimal)
    for region, cost in items.select("region", "unblended_cost").iter_rows():
        got[region] += cost
    assert dict(got) == dict(expected) and len(got) == 19
    assert sum(got.values()) == Decimal("1.68230869740")
    # pricing/term OnDemand usage is Standard pricing; tax has none; usage-based vs one-time charges
    assert items.group_by("line_item_type", "pricing_category", "charge_frequency").len().sort("len").rows() == [
        ("Tax", None, "One-Time", 12),
        ("Usage", None, "Usage-Based", 368),
        ("Usage", "Standard", "Usage-Based", 901),
    ]
    assert items["provider"].unique().to_list() == ["aws"] and items["commitment_discount_id"].null_count() == 1281


LEGACY_HEADER = (
    "identity/LineItemId,identity/TimeInterval,bill/PayerAccountId,bill/BillingPeriodStartDate,lineItem/UsageAccountId,"
    "lineItem/LineItemType,lineItem/UsageStartDate,lineItem/UsageEndDate,lineItem/ProductCode,lineItem/UsageType,"
    "lineItem/CurrencyCode,lineItem/UnblendedCost,pricing/publicOnDemandCost,pricing/term,product/regionCode,"
    "savingsPlan/SavingsPlanARN,savingsPlan/SavingsPlanEffectiveCost,savingsPlan/TotalCommitmentToDate,"
    "savingsPlan/UsedCommitment,reservation/ReservationARN,reservation/EffectiveCost,"
    "reservation/UnusedAmortizedUpfrontFeeForBillingPeriod,reservation/UnusedRecurringFee,"
    "resourceTags/user:niche,resourceTags/user:Niche\n"
)


def _legacy(rows: list[str]) -> bytes:
    span = "2026-11-02T12:00:00Z/2026-11-02T13:00:00Z,123456789012,2026-11-01T00:00:00Z,210987654321"
    hour = "2026-11-02T12:00:00Z,2026-11-02T13:00:00Z"
    return (LEGACY_HEADER + "".join(r.format(span=span, hour=hour) + "\n" for r in rows)).encode()


COMMITMENT_ROWS = [
    # id, type, product, usage type, unblended, list, term, region, SP ARN, SP eff, SP total, SP used,
    # RI ARN, RI eff, RI unused upfront, RI unused recurring, niche, Niche
    "a,{span},SavingsPlanCoveredUsage,{hour},AmazonEC2,SAE1-BoxUsage:m6i.large,USD,0.5,0.5,Reserved,sa-east-1,"
    + SP_ARN
    + ",0.3,,,,,,,barber,",
    "b,{span},SavingsPlanNegation,{hour},AmazonEC2,SAE1-BoxUsage:m6i.large,USD,-0.5,,,sa-east-1," + SP_ARN + ",,,,,,,,barber,",
    "c,{span},SavingsPlanRecurringFee,{hour},ComputeSavingsPlans,ComputeSP:1yrNoUpfront,USD,0.4,,,," + SP_ARN + ",,0.4,0.3,,,,,,",
    "d,{span},SavingsPlanUpfrontFee,{hour},ComputeSavingsPlans,ComputeSP:1yrAllUpfront,USD,50,,,," + SP_ARN + ",,,,,,,,,",
    "e,{span},DiscountedUsage,{hour},AmazonRDS,SAE1-InstanceUsage:db.r6g.xlarge,USD,1.0,1.2,Reserved,sa-east-1,,,,,"
    + RI_ARN
    + ",0.8,,,,psychology",
    "f,{span},RIFee,{hour},AmazonRDS,SAE1-HeavyUsage:db.r6g.xlarge,USD,2.0,,,sa-east-1,,,,," + RI_ARN + ",,0.25,0.5,,",
    "g,{span},Fee,{hour},AmazonRDS,SAE1-HeavyUsage:db.r6g.xlarge,USD,100,,,sa-east-1,,,,," + RI_ARN + ",,,,,",
    "h,{span},Usage,{hour},AmazonEC2,SAE1-SpotUsage:m5.large,USD,0.2,0.6,,sa-east-1,,,,,,,,,BARBER,barber",
    "i,{span},Usage,{hour},AmazonEC2,SAE1-BoxUsage:m5.large,USD,1.0,1.0,OnDemand,sa-east-1,,,,,,,,,barber,psychology",
    "j,{span},Fee,{hour},AWSSupportBusiness,Dollar,USD,29,,,,,,,,,,,,,",
    "k,{span},Usage,{hour},AmazonEC2,SAE1-BoxUsage:m5.large,USD,-0.3,-0.3,OnDemand,sa-east-1,,,,,,,,,,Psychology",
]  # fmt: skip


def test_legacy_commitments_effective_cost_as_cost_explorer_amortizes() -> None:
    parsed = parse_cur_legacy(_legacy(COMMITMENT_ROWS), "legacy/cur.csv")
    assert parsed.rejects.height == 0  # the negative usage correction (k) loads
    got = parsed.line_items.select(
        "line_item_type", "charge_category", "unblended_cost", "amortized_cost", "list_cost", "pricing_category",
        "commitment_discount_type", "commitment_discount_category", "commitment_discount_status", "charge_frequency",
    ).rows()  # fmt: skip
    D = Decimal
    assert got == [
        ("SavingsPlanCoveredUsage", "usage", D("0.5"), D("0.3"), D("0.5"), "Committed", "Savings Plan", "Spend", "Used", "Usage-Based"),
        ("SavingsPlanNegation", "usage", D("-0.5"), D("0"), None, None, "Savings Plan", "Spend", None, "Usage-Based"),
        # the recurring fee's unused part is amortized cost: TotalCommitmentToDate 0.4 - UsedCommitment 0.3
        ("SavingsPlanRecurringFee", "fee", D("0.4"), D("0.1"), None, None, "Savings Plan", "Spend", "Unused", "Recurring"),
        ("SavingsPlanUpfrontFee", "purchase", D("50"), D("0"), None, None, "Savings Plan", "Spend", None, "One-Time"),
        ("DiscountedUsage", "usage", D("1.0"), D("0.8"), D("1.2"), "Committed", "Reserved Instance", "Usage", "Used", "Usage-Based"),
        # RIFee: unused upfront 0.25 + unused recurring 0.5
        ("RIFee", "fee", D("2.0"), D("0.75"), None, None, "Reserved Instance", "Usage", "Unused", "Recurring"),
        # the RI's upfront fee is a purchase, amortized into the covered usage (effective 0)
        ("Fee", "purchase", D("100"), D("0"), None, None, "Reserved Instance", "Usage", None, "One-Time"),
        ("Usage", "usage", D("0.2"), D("0.2"), D("0.6"), "Dynamic", None, None, None, "Usage-Based"),
        ("Usage", "usage", D("1.0"), D("1.0"), D("1.0"), "Standard", None, None, None, "Usage-Based"),
        ("Fee", "fee", D("29"), D("29"), None, None, None, None, None, "One-Time"),
        ("Usage", "usage", D("-0.3"), D("-0.3"), D("-0.3"), "Standard", None, None, None, "Usage-Based"),
    ]  # fmt: skip
    # effective total by hand: 0.3 + 0 + 0.1 + 0 + 0.8 + 0.75 + 0 + 0.2 + 1.0 + 29 - 0.3 = 31.85
    assert sum(parsed.line_items["amortized_cost"].to_list()) == Decimal("31.85")
    # billed total: 0.5 - 0.5 + 0.4 + 50 + 1.0 + 2.0 + 100 + 0.2 + 1.0 + 29 - 0.3 = 183.3
    assert sum(parsed.line_items["unblended_cost"].to_list()) == Decimal("183.3")
    ids = parsed.line_items["commitment_discount_id"].to_list()
    assert ids[:4] == [SP_ARN] * 4 and ids[4:7] == [RI_ARN] * 3 and ids[7:] == [None] * 4
    first = parsed.line_items.row(0, named=True)
    assert (first["billing_account_id"], first["sub_account_id"], first["region"]) == (
        "123456789012",
        "210987654321",
        "sa-east-1",
    )


def test_legacy_tag_columns_are_matched_case_blind() -> None:
    parsed = parse_cur_legacy(_legacy(COMMITMENT_ROWS), "legacy/cur.csv")
    tags = dict(zip(parsed.line_items["line_item_id"].str.slice(0, 1), parsed.line_items["niche_tag"], strict=True))
    # resourceTags/user:niche and resourceTags/user:Niche are one key: h has BARBER and barber (the same, any
    # case); k has only the capitalised column; i has barber and psychology: ambiguous, kept untagged
    assert (tags["a"], tags["e"], tags["h"], tags["k"], tags["i"]) == (
        "barber",
        "psychology",
        "barber",
        "psychology",
        None,
    )
    (note,) = [w for w in parsed.warnings if "untagged" in w]
    assert note == (
        "legacy/cur.csv: 1 rows kept untagged: their cost-allocation tags are malformed or ambiguous "
        "(row 10: resourceTags/user:niche and resourceTags/user:Niche have different values)"
    )


def _cur2(rows: list[dict]) -> list[dict]:
    base = broken.cur2_row
    return [{**base(i, niche=None), **r} for i, r in enumerate(rows)]


def test_cur2_dimensions_commitments_and_case_blind_tags(tmp_path: Path, con) -> None:
    common = {"bill_payer_account_id": "123456789012", "line_item_usage_account_id": "210987654321"}
    rows = _cur2(
        [
            {**common, "line_item_line_item_type": "SavingsPlanCoveredUsage", "line_item_unblended_cost": "0.5",
             "savings_plan_savings_plan_effective_cost": "0.3", "savings_plan_savings_plan_a_r_n": SP_ARN,
             "pricing_public_on_demand_cost": "0.5", "product_region_code": "sa-east-1",
             "tags": {"user_NICHE": "Barber", "user_service": "api"}},
            {**common, "line_item_line_item_type": "SavingsPlanRecurringFee", "line_item_unblended_cost": "0.4",
             "savings_plan_savings_plan_a_r_n": SP_ARN, "savings_plan_total_commitment_to_date": "0.4",
             "savings_plan_used_commitment": "0.3"},
            {**common, "line_item_line_item_type": "RIFee", "line_item_unblended_cost": "2.0",
             "reservation_reservation_a_r_n": RI_ARN, "reservation_unused_amortized_upfront_fee_for_billing_period": "0.25",
             "reservation_unused_recurring_fee": "0.5"},
            {**common, "line_item_line_item_type": "Fee", "line_item_unblended_cost": "100", "reservation_reservation_a_r_n": RI_ARN},
            {**common, "line_item_line_item_type": "SavingsPlanUpfrontFee", "line_item_unblended_cost": "50",
             "savings_plan_savings_plan_a_r_n": SP_ARN},
            {**common, "line_item_usage_type": "SAE1-SpotUsage:m5.large", "line_item_unblended_cost": "0.2",
             "tags": {"user_niche": "barber", "user_Niche": "psychology"}},
            {**common, "line_item_unblended_cost": "-0.3", "pricing_term": "OnDemand", "tags": {"user_Niche": "psychology"}},
        ]
    )  # fmt: skip
    broken.write_cur2_delivery(tmp_path, "2026-11", "nov-1", {"00001": broken.cur2_parquet(rows)})
    result = load_cur2(con, LocalStorage(tmp_path))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (7, 7, 0)
    got = con.execute(
        "SELECT line_item_type, charge_category, unblended_cost, amortized_cost, list_cost, pricing_category, "
        "commitment_discount_type, commitment_discount_status, charge_frequency, niche_tag, service_tag "
        "FROM raw.billing_line_items ORDER BY line_item_id"
    ).fetchall()
    D = Decimal
    assert got == [
        ("SavingsPlanCoveredUsage", "usage", D("0.5"), D("0.3"), D("0.5"), "Committed", "Savings Plan", "Used", "Usage-Based", "barber", "api"),
        ("SavingsPlanRecurringFee", "fee", D("0.4"), D("0.1"), None, None, "Savings Plan", "Unused", "Recurring", None, None),
        ("RIFee", "fee", D("2.0"), D("0.75"), None, None, "Reserved Instance", "Unused", "Recurring", None, None),
        ("Fee", "purchase", D("100"), D("0"), None, None, "Reserved Instance", None, "One-Time", None, None),
        ("SavingsPlanUpfrontFee", "purchase", D("50"), D("0"), None, None, "Savings Plan", None, "One-Time", None, None),
        ("Usage", "usage", D("0.2"), D("0.2"), None, "Dynamic", None, None, "Usage-Based", None, None),
        ("Usage", "usage", D("-0.3"), D("-0.3"), None, "Standard", None, None, "Usage-Based", "psychology", None),
    ]  # fmt: skip
    accounts = con.execute(
        "SELECT DISTINCT provider, billing_account_id, sub_account_id, delivery FROM raw.billing_line_items"
    ).fetchall()
    assert [a[:3] for a in accounts] == [("aws", "123456789012", "210987654321")]
    assert accounts[0][3].endswith("cur/pulso-cur")
    assert con.execute(
        "SELECT region FROM raw.billing_line_items WHERE line_item_id LIKE 'li-2026-11-02-0|%'"
    ).fetchall() == [("sa-east-1",)]
    assert any("1 rows kept untagged" in w and "user_niche" in w for w in result.warnings), result.warnings
    # effective total by hand: 0.3 + 0.1 + 0.75 + 0 + 0 + 0.2 - 0.3 = 1.05
    assert con.execute("SELECT sum(amortized_cost) FROM raw.billing_line_items").fetchall() == [(D("1.05"),)]


def test_cur2_without_the_optional_columns_still_loads(tmp_path: Path, con) -> None:
    """A CUR 2.0 export without accounts, region, commitments or even tags: those columns are NULL."""
    broken.write_cur2_delivery(
        tmp_path, "2026-11", "nov-1", {"00001": broken.cur2_parquet([broken.cur2_row(1)], drop=("resource_tags",))}
    )
    result = load_cur2(con, LocalStorage(tmp_path))
    assert (result.rows_loaded, result.rows_quarantined) == (1, 0)
    row = con.execute(
        "SELECT billing_account_id, region, commitment_discount_id, niche_tag, amortized_cost FROM raw.billing_line_items"
    ).fetchall()
    assert row == [(None, None, None, None, Decimal("1.5"))]


def test_legacy_zone_less_times_are_utc_and_said_so() -> None:
    text = _legacy([COMMITMENT_ROWS[8]]).decode().replace("T12:00:00Z", " 12:00:00").replace("T13:00:00Z", " 13:00:00")
    parsed = parse_cur_legacy(text.encode(), "legacy/cur.csv")
    assert parsed.rejects.height == 0
    assert str(parsed.line_items["usage_start"][0]) == "2026-11-02 12:00:00+00:00"
    assert any("no time zone" in w and "read as UTC" in w for w in parsed.warnings)
    assert str(parsed.line_items["usage_end"][0]) == "2026-11-02 13:00:00+00:00"
