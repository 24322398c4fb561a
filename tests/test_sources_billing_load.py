"""Legacy CUR and FOCUS files into raw.billing_line_items: totals, replacement, quarantine, audit."""

from __future__ import annotations

import io
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib import warehouse
from pipelines.lib.ingest import billing as ingest_billing
from pipelines.lib.quality.runner import run_suite
from pipelines.lib.quality.suites import suite_for
from pipelines.lib.sources.billing_load import billing_files, load_billing_files
from pipelines.lib.storage import LocalStorage

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(":memory:")
    ingest_billing.ensure_billing_tables(c)
    yield c
    c.close()


def _source(root: Path) -> LocalStorage:
    (root / "legacy" / "2023-11").mkdir(parents=True)
    shutil.copy(FIXTURES / "aws-cur-legacy-sample.csv", root / "legacy" / "2023-11" / "cur.csv")
    (root / "focus").mkdir()
    shutil.copy(FIXTURES / "focus-1.2-multi-provider.csv", root / "focus" / "november.csv")
    shutil.copy(FIXTURES / "focus-1.0-refund.csv", root / "focus" / "october.csv")
    return LocalStorage(root)


def _totals(con) -> dict[tuple[str, str], tuple[Decimal, int]]:
    rows = con.execute(
        "SELECT source_format, billing_period, sum(unblended_cost), count(*) FROM raw.billing_line_items GROUP BY ALL"
    ).fetchall()
    return {(f, p): (total, n) for f, p, total, n in rows}


def test_legacy_and_focus_land_with_exact_totals_and_replace_on_reload(tmp_path: Path, con) -> None:
    storage = _source(tmp_path)
    assert billing_files(storage) == ["focus/november.csv", "focus/october.csv", "legacy/2023-11/cur.csv"]
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined, result.files) == (1292, 1292, 0, 3)
    expected = {
        ("cur_legacy", "2023-11"): (Decimal("1.68230869740"), 1281),  # exact: the CSV text summed
        ("focus", "2026-11"): (Decimal("118.0090124"), 9),  # 22.2790124 + 1.23 - 5 + 100 - 0.5
        ("focus", "2026-10"): (Decimal("2.5"), 2),  # 4 - 1.5 refund
    }
    assert _totals(con) == expected
    assert (
        date(2026, 11, 3) in result.touched_days and date(2023, 10, 31) in result.touched_days
    )  # UTC 00:00 = AR 21:00
    # loading the same files again: nothing parsed, nothing replaced, no day re-opened
    again = load_billing_files(con, storage)
    assert (again.rows_read, again.files, again.touched_days) == (0, 0, set())
    assert _totals(con) == expected
    # forced: every group replaced, never doubled
    forced = load_billing_files(con, storage, force=True)
    assert (forced.rows_read, forced.rows_loaded) == (1292, 1292)
    assert _totals(con) == expected
    assert run_suite(con, suite_for("raw_billing")).failures == []
    loads = con.execute(
        "SELECT scope, rows_read, rows_loaded, rows_quarantined FROM ops.loads ORDER BY loaded_at"
    ).fetchall()
    assert loads == [
        ("legacy+focus", 1292, 1292, 0),
        ("legacy+focus (unchanged)", 0, 0, 0),
        ("legacy+focus", 1292, 1292, 0),
    ]


def test_restated_focus_file_replaces_only_its_period(tmp_path: Path, con) -> None:
    storage = _source(tmp_path)
    load_billing_files(con, storage)
    # October re-delivered at the same key: usage 4 -> 6, refund unchanged
    october = tmp_path / "focus" / "october.csv"
    october.write_text(october.read_text().replace("4.000000,4.000000,4.000000", "6.000000,6.000000,6.000000"))
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.files) == (1292, 1292, 3)  # the file set changed: all parsed
    assert _totals(con) == {
        ("cur_legacy", "2023-11"): (Decimal("1.68230869740"), 1281),
        ("focus", "2026-11"): (Decimal("118.0090124"), 9),
        ("focus", "2026-10"): (Decimal("4.5"), 2),  # 6 - 1.5, not 2.5 + 4.5
    }
    # only October's rows were replaced: its AR days (2026-10-29 21:00 .. 2026-10-30 21:00 AR), nothing else
    assert result.touched_days == {date(2026, 10, 29), date(2026, 10, 30)}
    # the restatement under a new name, the old file removed: the rows now name the new file, nothing doubles
    october.rename(tmp_path / "focus" / "october-v2.csv")
    load_billing_files(con, storage)
    assert _totals(con)[("focus", "2026-10")] == (Decimal("4.5"), 2)
    files = con.execute(
        "SELECT DISTINCT source_file FROM raw.billing_line_items WHERE billing_period = '2026-10'"
    ).fetchall()
    assert [f[0].rsplit("/", 1)[-1] for f in files] == ["october-v2.csv"]
    # a period no file holds any more is kept: removing files never deletes billing history
    (tmp_path / "focus" / "october-v2.csv").unlink()
    gone = load_billing_files(con, storage)
    assert gone.touched_days == set() and _totals(con)[("focus", "2026-10")] == (Decimal("4.5"), 2)


def test_legacy_report_left_beside_its_copy_is_not_doubled(tmp_path: Path, con) -> None:
    storage = _source(tmp_path)
    shutil.copy(FIXTURES / "aws-cur-legacy-sample.csv", tmp_path / "legacy" / "2023-11" / "cur-copy.csv")
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (1292 + 1281, 1292, 1281)
    assert _totals(con)[("cur_legacy", "2023-11")] == (Decimal("1.68230869740"), 1281)
    ((n, file, reason),) = con.execute(
        "SELECT count(*), any_value(source_file), any_value(reason) FROM quarantine.rows"
    ).fetchall()
    assert n == 1281 and file.endswith("legacy/2023-11/cur.csv")  # key order: cur-copy.csv is first
    assert "already in" in reason and reason.rstrip().endswith("must replace the old file, not sit beside it")
    assert "cur-copy.csv" in reason


def test_older_warehouse_money_columns_are_widened_and_bills_reread(tmp_path: Path) -> None:
    from tests.fixtures.sources import broken

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    warehouse.prepare(old)
    ddl = ingest_billing.LINE_ITEMS_DDL.replace("DECIMAL(38,10)", "DECIMAL(18,6)")
    old.execute(ddl)
    old.execute(
        "CREATE TABLE ops.billing_deliveries (billing_period VARCHAR, execution_id VARCHAR, manifest VARCHAR, "
        "rows_loaded BIGINT, loaded_at TIMESTAMPTZ)"
    )
    broken.write_cur2_delivery(
        tmp_path / "billing", "2026-11", "nov-1", {"00001": broken.cur2_parquet([broken.cur2_row(1)])}
    )
    old.execute(
        "INSERT INTO raw.billing_line_items (source_format, billing_period, line_item_id, unblended_cost, "
        "amortized_cost) VALUES ('cur2', '2026-11', 'x', 1.5, 1.5)"
    )
    old.execute("INSERT INTO ops.billing_deliveries VALUES ('2026-11', 'nov-1', 'm', 1, now())")
    old.close()

    con = warehouse.connect(path)
    ingest_billing.ensure_billing_tables(con)
    types = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' "
        "AND table_name = 'billing_line_items' AND column_name LIKE '%cost' ORDER BY 1"
    ).fetchall()
    assert types == [
        ("amortized_cost", "DECIMAL(38,10)"),
        ("list_cost", "DECIMAL(38,10)"),
        ("unblended_cost", "DECIMAL(38,10)"),
    ]
    assert con.execute("SELECT unblended_cost FROM raw.billing_line_items").fetchall() == [(Decimal("1.5"),)]
    # the delivery memory is forgotten: the next load re-reads the period (replacing it, not doubling)
    assert con.execute("SELECT count(*) FROM ops.billing_deliveries").fetchall() == [(0,)]
    result = ingest_billing.load_cur2(con, LocalStorage(tmp_path / "billing"))
    assert result.rows_loaded == 1
    assert _totals(con) == {("cur2", "2026-11"): (Decimal("1.5"), 1)}
    assert ingest_billing.migrate_money_columns(con) == []  # once only
    con.close()


def test_bad_rows_and_unreadable_files_are_quarantined_the_rest_lands(tmp_path: Path, con) -> None:
    storage = _source(tmp_path)
    good = (FIXTURES / "focus-1.2-multi-provider.csv").read_text().splitlines()
    (tmp_path / "focus" / "november.csv").write_text("\n".join([*good, good[1].replace(",USD,", ",XYZ,", 1)]) + "\n")
    (tmp_path / "focus" / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    result = load_billing_files(con, storage)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (1294, 1292, 2)
    reasons = sorted(
        con.execute("SELECT source_file, row_number, reason FROM quarantine.rows").fetchall(), key=lambda r: r[0]
    )
    assert reasons[0][0].endswith("focus/broken.csv.gz") and "gzip stream is cut short or corrupt" in reasons[0][2]
    assert reasons[1][0].endswith("focus/november.csv") and reasons[1][1] == 11
    assert reasons[1][2].startswith("BillingCurrency 'XYZ' is not a known currency")
    assert _totals(con)[("focus", "2026-11")] == (Decimal("118.0090124"), 9)


def test_cur2_rows_are_never_touched(tmp_path: Path, con) -> None:
    from tests.fixtures.sources import broken

    broken.write_cur2_delivery(tmp_path, "2026-11", "nov-1", {"00001": broken.cur2_parquet([broken.cur2_row(1)])})
    ingest_billing.load_cur2(con, LocalStorage(tmp_path))
    storage = _source(tmp_path)
    load_billing_files(con, storage)
    assert _totals(con)[("cur2", "2026-11")] == (Decimal("1.5"), 1)
    assert _totals(con)[("focus", "2026-11")] == (Decimal("118.0090124"), 9)


def test_legacy_cur_report_versions_follow_the_period_manifest(tmp_path: Path, con) -> None:
    import csv
    import json

    period = tmp_path / "legacy" / "pulso-cur" / "20231101-20231201"
    sample = (FIXTURES / "aws-cur-legacy-sample.csv").read_text()
    lines = sample.splitlines(keepends=True)
    restated = "".join(lines[:-1])  # the restatement drops the last line item

    def deliver(assembly: str, text: str | None) -> None:
        if text is not None:
            (period / assembly).mkdir(parents=True)
            (period / assembly / "pulso-cur-1.csv").write_text(text)
        (period / "pulso-cur-Manifest.json").write_text(
            json.dumps(
                {
                    "assemblyId": assembly,
                    "reportKeys": [f"cur/pulso-cur/20231101-20231201/{assembly}/pulso-cur-1.csv"],
                    "billingPeriod": {"start": "20231101T000000.000Z", "end": "20231201T000000.000Z"},
                }
            )
        )

    def exact(text: str) -> Decimal:
        return sum((Decimal(r["lineItem/UnblendedCost"]) for r in csv.DictReader(io.StringIO(text))), Decimal(0))

    storage = LocalStorage(tmp_path)
    deliver("asm-1", sample)
    first = load_billing_files(con, storage)
    assert (first.rows_read, first.rows_loaded, first.rows_quarantined, first.warnings) == (1281, 1281, 0, [])
    # a new version beside the old one: only the manifest's files are read, the old assembly is superseded
    deliver("asm-2", restated)
    assert billing_files(storage) == ["legacy/pulso-cur/20231101-20231201/asm-2/pulso-cur-1.csv"]
    second = load_billing_files(con, storage)
    assert (second.rows_read, second.rows_loaded, second.rows_quarantined) == (1280, 1280, 0)
    assert _totals(con) == {("cur_legacy", "2023-11"): (exact(restated), 1280)}
    assert exact(restated) == Decimal("1.68230869740") - Decimal(lines[-1].split(",")[22])  # lineItem/UnblendedCost
    # the manifest of a delivery in progress (its file not there yet): the period is skipped, rows kept
    deliver("asm-3", None)
    third = load_billing_files(con, storage)
    assert third.rows_read == 0 and third.touched_days == set()
    assert [w.rsplit("/", 1)[-1] for w in third.warnings] == [
        "pulso-cur-1.csv); period 20231101-20231201 skipped until they arrive"
    ]
    assert "lists 1 report file(s) not delivered yet" in third.warnings[0]
    assert _totals(con) == {("cur_legacy", "2023-11"): (exact(restated), 1280)}
    # a 0-byte manifest: named, the period skipped, nothing lost
    (period / "pulso-cur-Manifest.json").write_bytes(b"")
    fourth = load_billing_files(con, storage)
    assert "pulso-cur-Manifest.json: not a legacy CUR manifest" in fourth.warnings[0]
    assert _totals(con) == {("cur_legacy", "2023-11"): (exact(restated), 1280)}
    assert con.execute("SELECT count(*) FROM quarantine.rows").fetchall() == [(0,)]


def test_make_evals_cost_series_includes_legacy_cur_files(tmp_path: Path) -> None:
    """``make eval`` reads cost through the same loaders as ``raw_billing``: a legacy CUR delivery counts.
    The sample's November 2023 (Usage 1.6023087 + Tax 0.08, AR days) in staging's micro-dollars."""
    from alerts.evaluate import cost_series

    root = tmp_path / "sources"
    (root / "billing" / "legacy" / "2023-11").mkdir(parents=True)
    shutil.copy(FIXTURES / "aws-cur-legacy-sample.csv", root / "billing" / "legacy" / "2023-11" / "cur.csv")
    _, frame = cost_series(root, "America/Argentina/Buenos_Aires")
    assert frame["micros"].sum() == 1_682_309  # 1.682309 USD: the exact 1.68230869740, rounded once per month


# -- the same bill twice, overlapping deliveries, CUR 2.0 beside an AWS FOCUS export ----------------------


def _focus_bill(**changes) -> list[dict]:
    from tests.test_sources_billing_focus import november_bill

    rows = november_bill()
    for index, values in changes.items():
        rows[int(index[1:])] = {**rows[int(index[1:])], **values}
    return rows


def _raw(con) -> dict[tuple[str, str], Decimal]:
    return dict(
        ((p, a), t)
        for p, a, t in con.execute(
            "SELECT provider, billing_account_id, sum(amortized_cost) FROM raw.billing_line_items GROUP BY ALL"
        ).fetchall()
    )


NOVEMBER_EFFECTIVE = {  # tests/test_sources_billing_focus.py, by hand
    ("aws", "111111111111"): Decimal("-5.876121099"),
    ("azure", "azure-ba-1"): Decimal("7.35"),
    ("gcp", "01ABCD-2345EF-6789GH"): Decimal("2.933333233"),
    ("oci", "ocid1.tenancy.oc1..aaaa"): Decimal("3.21"),
}


def test_the_same_bill_as_csv_and_typed_parquet_counts_once(tmp_path: Path, con) -> None:
    from tests.fixtures.sources.focus import focus_csv, focus_parquet

    folder = tmp_path / "focus" / "2026-11"
    folder.mkdir(parents=True)
    (folder / "bill.csv").write_bytes(focus_csv(_focus_bill(), timestamps="space", null="NULL"))
    (folder / "bill.parquet").write_bytes(focus_parquet(_focus_bill()))
    result = load_billing_files(con, LocalStorage(tmp_path))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (32, 16, 16)
    assert _raw(con) == NOVEMBER_EFFECTIVE  # once, exact
    reasons = {r[0] for r in con.execute("SELECT reason FROM quarantine.rows").fetchall()}
    assert len(reasons) == 16  # one per line item, each naming the file that already holds it
    assert all(f", already in {folder}/bill.csv: the same bill delivered twice counts once" in r for r in reasons)
    files = {r[0] for r in con.execute("SELECT source_file FROM quarantine.rows").fetchall()}
    assert [f.rsplit("/", 1)[-1] for f in files] == ["bill.parquet"]
    # the load's record says what it assumed about the CSV's zone-less times
    (warnings,) = con.execute("SELECT warnings FROM ops.loads").fetchall()[0]
    assert any("bill.csv: 16 rows' times have no time zone" in w and "read as UTC" in w for w in warnings), warnings


def test_one_accounts_period_from_two_deliveries_is_refused_by_name_and_the_stored_rows_stay(
    tmp_path: Path, con
) -> None:
    from tests.fixtures.sources.focus import focus_csv

    (tmp_path / "focus" / "a").mkdir(parents=True)
    (tmp_path / "focus" / "a" / "nov.csv").write_bytes(focus_csv(_focus_bill()))
    storage = LocalStorage(tmp_path)
    load_billing_files(con, storage)
    assert _raw(con) == NOVEMBER_EFFECTIVE
    # a restated export in another folder: the AWS tax line changed, everything else identical
    (tmp_path / "focus" / "b").mkdir()
    (tmp_path / "focus" / "b" / "nov-restated.csv").write_bytes(
        focus_csv(_focus_bill(r6={"BilledCost": "12.5", "EffectiveCost": "12.5"}))
    )
    result = load_billing_files(con, storage)
    assert result.reconciled and result.rows_read == 32
    assert _raw(con) == NOVEMBER_EFFECTIVE  # AWS refused: the rows loaded before stay; nothing doubled
    (note,) = [w for w in result.warnings if "refused" in w]
    assert note == (
        f"billing period 2026-11 of aws account 111111111111 is in two deliveries, {tmp_path}/focus/a and "
        f"{tmp_path}/focus/b: refused (the rows loaded before stay) until one is removed; a restated bill must "
        "replace the old one"
    )
    # b's other rows are exact copies of a's: counted once; a's 8 AWS rows and b's changed one
    # are quarantined with the reason, so nothing is lost
    quarantined = con.execute(
        "SELECT count(*) FILTER (WHERE reason LIKE '%refused%'), count(*) FROM quarantine.rows"
    ).fetchall()
    assert quarantined == [(8 + 1, 8 + 1 + 15)]
    # the old folder removed: the restatement is the bill
    shutil.rmtree(tmp_path / "focus" / "a")
    after = load_billing_files(con, storage)
    assert not [w for w in after.warnings if "refused" in w]
    assert _raw(con)[("aws", "111111111111")] == NOVEMBER_EFFECTIVE[("aws", "111111111111")] + Decimal("0.154321099")


def _focus_export(root: Path, export: str, period: str, rows: list[dict]) -> None:
    """An AWS Data Exports FOCUS export: Parquet parts under data/, the manifest (with columns) under metadata/."""
    import json

    from tests.fixtures.sources.focus import FOCUS_10, focus_parquet

    base = root / "cur" / export
    key = f"data/BILLING_PERIOD={period}/{export}-00001.snappy.parquet"
    (base / key).parent.mkdir(parents=True)
    (base / key).write_bytes(focus_parquet(rows, version="1.0"))
    manifest = base / "metadata" / f"BILLING_PERIOD={period}" / f"{export}-Manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps(
            {
                "executionId": "focus-exec-1",
                "exportArn": f"arn:aws:bcm-data-exports:us-east-1:111111111111:export/{export}",
                "columns": [{"name": c, "type": "string"} for c in FOCUS_10],
                "dataFiles": [f"s3://example-bucket/cur/{export}/{key}"],
                "billingPeriod": {"start": f"{period}-01T00:00:00Z"},
            }
        )
    )


def test_aws_focus_export_beside_cur2_of_the_same_account_uses_cur2_and_says_so(tmp_path: Path, con) -> None:
    from pipelines.lib.ingest.billing import build_cost_items_daily, load_cur2
    from tests.fixtures.sources import broken
    from tests.fixtures.sources.focus import focus_row

    payer = {"bill_payer_account_id": "111111111111"}
    broken.write_cur2_delivery(
        tmp_path,
        "2026-11",
        "nov-1",
        {"00001": broken.cur2_parquet([{**broken.cur2_row(i, cost="2.5"), **payer} for i in range(3)])},
    )
    account = {"ProviderName": "AWS", "BillingAccountId": "111111111111", "SubAccountId": "111111111111"}
    other = {"ProviderName": "AWS", "BillingAccountId": "999999999999", "SubAccountId": "999999999999"}
    _focus_export(
        tmp_path,
        "pulso-focus",
        "2026-11",
        [focus_row(**account, BilledCost="2.5") for _ in range(2)] + [focus_row(**other, BilledCost="0.125")],
    )
    storage = LocalStorage(tmp_path)
    cur = load_cur2(con, storage)
    assert (cur.rows_read, cur.rows_loaded) == (3, 3)  # the FOCUS manifest no longer hides the CUR 2.0 month
    files = load_billing_files(con, storage)
    assert (files.rows_read, files.rows_loaded, files.files) == (3, 3, 1)
    (note,) = [w for w in files.warnings if "both" in w]
    assert note.startswith("billing period 2026-11 of aws account 111111111111 is in both ")
    assert "CUR 2.0 export" in note and f"{tmp_path}/cur/pulso-cur" in note and f"{tmp_path}/cur/pulso-focus" in note
    assert note.endswith(
        "the CUR 2.0 rows are used (rule: CUR 2.0, then legacy CUR, then FOCUS, per account and billing period); "
        "2 FOCUS line items ($5.0000000000 effective) are not counted"
    )
    build_cost_items_daily(con)
    # staging: CUR 2.0's 3 x 2.5 for account 111..., plus the FOCUS export's other account (0.125)
    assert con.execute("SELECT sum(cost_micros) FROM staging.cost_items_daily").fetchall() == [(7_625_000,)]
    by_account = dict(
        con.execute("SELECT billing_account_id, sum(cost_micros) FROM staging.cost_items_daily GROUP BY ALL").fetchall()
    )
    assert by_account == {"111111111111": 7_500_000, "999999999999": 125_000}
    # every run says so again (the overlap is still there), even when no file changed
    again = load_billing_files(con, storage)
    assert again.rows_read == 0 and any("is in both" in w for w in again.warnings)


def test_duplicate_check_names_both_files_and_the_empty_load_names_the_quarantine(tmp_path: Path, con) -> None:
    import polars as pl

    from pipelines.lib.sources.billing_formats import parse_cur_legacy

    legacy = parse_cur_legacy((FIXTURES / "aws-cur-legacy-sample.csv").read_bytes(), "s3://b/legacy/a.csv").line_items
    copy = legacy.head(2).with_columns(source_file=pl.lit("s3://b/legacy/b.csv"))
    con.register("_items", pl.concat([legacy, copy]).to_arrow())
    con.execute("INSERT INTO raw.billing_line_items BY NAME SELECT * FROM _items")
    warehouse.record_load(con, warehouse.LoadResult("billing", "t", rows_read=1283, rows_loaded=1283))
    failures = run_suite(con, suite_for("raw_billing")).failures
    (unique,) = [f for f in failures if "unique" in f]
    first = min(legacy["line_item_id"].head(2))  # the first duplicated key, in key order
    assert f"e.g. {first} in s3://b/legacy/a.csv and s3://b/legacy/b.csv" in unique, unique

    # a load where every row was quarantined: the empty table's error says why
    empty = warehouse.connect(":memory:")
    ingest_billing.ensure_billing_tables(empty)
    (tmp_path / "focus").mkdir()
    rows = (FIXTURES / "focus-1.2-multi-provider.csv").read_text().splitlines()
    (tmp_path / "focus" / "eur.csv").write_text(
        "\n".join([rows[0], *(r.replace(",USD,", ",XYZ,") for r in rows[1:]), ""])
    )
    load_billing_files(empty, LocalStorage(tmp_path))
    (message,) = [f for f in run_suite(empty, suite_for("raw_billing")).failures if "min_rows" in f]
    assert message.startswith("raw.billing_line_items: min_rows: 0 rows, expected at least 1")
    assert "9 rows quarantined by the billing loads" in message
    assert "BillingCurrency 'XYZ' is not a known currency" in message and "eur.csv row 2" in message


@pytest.mark.xfail(strict=True, reason="quarantine replace-on-reload is the build engineer's fix (warehouse.py)")
def test_quarantine_does_not_pile_up_on_reloads(tmp_path: Path, con) -> None:
    storage = _source(tmp_path)
    good = (FIXTURES / "focus-1.2-multi-provider.csv").read_text().splitlines()
    (tmp_path / "focus" / "november.csv").write_text("\n".join([*good, good[1].replace(",USD,", ",XYZ,", 1)]) + "\n")
    for _ in range(3):
        load_billing_files(con, storage, force=True)
    assert con.execute("SELECT count(*) FROM quarantine.rows").fetchall() == [(1,)]


def test_two_cur2_exports_of_one_period_never_hide_each_other(tmp_path: Path, con) -> None:
    """Two Data Exports in one billing source (two payer accounts; or an hourly and a daily export of one):
    both are read; one account's period in both counts once, from the export whose name sorts first."""
    from pipelines.lib.ingest.billing import build_cost_items_daily, load_cur2
    from tests.fixtures.sources import broken

    def export(name: str, rows: list[dict]) -> None:
        broken.write_cur2_delivery(tmp_path / "tmp", "2026-11", "nov-1", {"00001": broken.cur2_parquet(rows)})
        (tmp_path / "cur").mkdir(exist_ok=True)
        shutil.move(tmp_path / "tmp" / "cur" / broken.EXPORT, tmp_path / "cur" / name)
        for manifest in (tmp_path / "cur" / name).rglob("*Manifest.json"):
            manifest.rename(manifest.with_name(f"{name}-Manifest.json"))

    one = [{**broken.cur2_row(i, cost="1.25"), "bill_payer_account_id": "111111111111"} for i in range(2)]
    two = [{**broken.cur2_row(i, cost="4"), "bill_payer_account_id": "222222222222"} for i in range(3)]
    export("a-hourly", one + two)
    export("b-daily", [{**r, "identity_line_item_id": f"daily-{i}"} for i, r in enumerate(one)])
    result = load_cur2(con, LocalStorage(tmp_path))
    assert (result.rows_read, result.rows_loaded) == (7, 7)
    # loading again: each export's delivery is remembered on its own, nothing re-read
    assert load_cur2(con, LocalStorage(tmp_path)).rows_read == 0
    notes = load_billing_files(con, LocalStorage(tmp_path)).warnings
    (note,) = [n for n in notes if "is in both" in n]
    assert note.startswith("billing period 2026-11 of aws account 111111111111 is in both the CUR 2.0 export ")
    assert f"the CUR 2.0 rows of {tmp_path}/cur/a-hourly are used" in note
    assert note.endswith("2 CUR 2.0 line items ($2.5000000000 effective) are not counted")
    build_cost_items_daily(con)
    assert con.execute("SELECT sum(cost_micros) FROM staging.cost_items_daily").fetchall() == [
        (14_500_000,)
    ]  # 2.5 + 12


def test_a_cur2_line_item_in_two_data_files_of_one_delivery_counts_once(tmp_path: Path, con) -> None:
    from pipelines.lib.ingest.billing import load_cur2
    from tests.fixtures.sources import broken

    rows = [broken.cur2_row(i, cost="2.5") for i in range(3)]
    broken.write_cur2_delivery(
        tmp_path,
        "2026-11",
        "nov-1",
        {"00001": broken.cur2_parquet(rows), "00002": broken.cur2_parquet([rows[1], broken.cur2_row(7, cost="1")])},
    )
    result = load_cur2(con, LocalStorage(tmp_path))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (5, 4, 1)
    assert con.execute("SELECT sum(unblended_cost), count(*) FROM raw.billing_line_items").fetchall() == [
        (Decimal("8.5"), 4)
    ]
    ((file, reason),) = con.execute("SELECT source_file, reason FROM quarantine.rows").fetchall()
    assert file.endswith("nov-1-00002.snappy.parquet") and "already in" in reason and "nov-1-00001" in reason
    assert run_suite(con, suite_for("raw_billing")).failures == []


def test_older_warehouse_gets_the_dimension_columns_and_its_bills_reread(tmp_path: Path) -> None:
    """A warehouse from before the accounts/region/commitment columns: they are added in place, the bills
    are read again (filling them), replacing the old rows, never doubling; the staging and mart tables get
    their new columns too."""
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    warehouse.prepare(old)
    old.execute(  # the table as the first warehouses had it
        "CREATE TABLE raw.billing_line_items (source_format VARCHAR, source_file VARCHAR, billing_period VARCHAR, "
        "line_item_id VARCHAR, usage_start TIMESTAMPTZ, usage_end TIMESTAMPTZ, provider VARCHAR, "
        "line_item_type VARCHAR, charge_category VARCHAR, service_code VARCHAR, usage_type VARCHAR, "
        "resource_id VARCHAR, niche_tag VARCHAR, service_tag VARCHAR, environment_tag VARCHAR, currency VARCHAR, "
        "unblended_cost DECIMAL(38,10), amortized_cost DECIMAL(38,10), list_cost DECIMAL(38,10), "
        "_loaded_at TIMESTAMPTZ)"
    )
    old.execute(
        "CREATE TABLE ops.billing_deliveries (billing_period VARCHAR, execution_id VARCHAR, manifest VARCHAR, "
        "rows_loaded BIGINT, loaded_at TIMESTAMPTZ)"
    )
    old.execute(
        "CREATE TABLE staging.cost_items_daily (day DATE, niche_tag VARCHAR, service_tag VARCHAR, "
        "charge_category VARCHAR, cost_micros BIGINT)"
    )
    old.execute(
        "INSERT INTO raw.billing_line_items (source_format, billing_period, line_item_id, unblended_cost, "
        "amortized_cost) VALUES ('cur_legacy', '2023-11', 'x', 1.5, 1.5)"
    )
    old.close()
    root = tmp_path / "billing"
    (root / "legacy").mkdir(parents=True)
    shutil.copy(FIXTURES / "aws-cur-legacy-sample.csv", root / "legacy" / "cur.csv")
    con = warehouse.connect(path)
    ingest_billing.ensure_billing_tables(con)
    columns = {r[0] for r in con.execute("DESCRIBE raw.billing_line_items").fetchall()}
    assert {"billing_account_id", "region", "commitment_discount_status", "delivery"} <= columns
    staging = {r[0] for r in con.execute("DESCRIBE staging.cost_items_daily").fetchall()}
    assert {"provider", "billed_micros", "list_micros", "region"} <= staging
    load_billing_files(con, LocalStorage(root))
    assert _totals(con) == {("cur_legacy", "2023-11"): (Decimal("1.68230869740"), 1281)}  # the old row replaced
    assert con.execute("SELECT count(DISTINCT billing_account_id) FROM raw.billing_line_items").fetchall() == [(1,)]
    assert ingest_billing.migrate_dimension_columns(con) == []  # once only
    con.close()


def test_a_focus_export_listing_a_file_not_delivered_yet_is_skipped_with_a_warning(tmp_path: Path, con) -> None:
    from tests.fixtures.sources.focus import focus_row

    _focus_export(tmp_path, "pulso-focus", "2026-11", [focus_row(BilledCost="1")])
    manifest = next((tmp_path / "cur" / "pulso-focus" / "metadata").rglob("*Manifest.json"))
    import json

    body = json.loads(manifest.read_text())
    body["dataFiles"].append(body["dataFiles"][0].replace("00001", "00002"))
    manifest.write_text(json.dumps(body))
    result = load_billing_files(con, LocalStorage(tmp_path))
    assert result.rows_read == 0
    assert any("lists 1 data file(s) not delivered yet" in w and "2026-11 skipped" in w for w in result.warnings)


def test_a_restated_file_beside_the_old_one_in_one_folder_is_refused_as_two_versions(tmp_path: Path, con) -> None:
    """Parts of one export share no line item; two files that share some and differ in others are two
    versions of one bill: that account's period is refused (not half of each counted)."""
    from tests.fixtures.sources.focus import focus_csv

    folder = tmp_path / "focus" / "2026-11"
    folder.mkdir(parents=True)
    (folder / "bill.csv").write_bytes(focus_csv(_focus_bill()))
    load_billing_files(con, LocalStorage(tmp_path))
    (folder / "bill-v2.csv").write_bytes(focus_csv(_focus_bill(r6={"BilledCost": "12.5", "EffectiveCost": "12.5"})))
    result = load_billing_files(con, LocalStorage(tmp_path))
    assert _raw(con) == NOVEMBER_EFFECTIVE  # the rows loaded before stay
    (note,) = [w for w in result.warnings if "refused" in w]
    assert note.startswith(
        f"billing period 2026-11 of aws account 111111111111 is in two versions of one bill, {folder}/bill-v2.csv "
        f"and {folder}/bill.csv (they share line items and differ in others): refused"
    )
    # parts of one export (no line item in common) are one delivery: both load
    shutil.rmtree(folder)
    folder.mkdir()
    rows = _focus_bill()
    (folder / "part-1.csv").write_bytes(focus_csv(rows[:8]))
    (folder / "part-2.csv").write_bytes(focus_csv(rows[8:]))
    parts = load_billing_files(con, LocalStorage(tmp_path))
    assert not [w for w in parts.warnings if "refused" in w] and _raw(con) == NOVEMBER_EFFECTIVE


def test_one_bill_from_two_exporters_focus_10_csv_and_12_parquet_counts_once(tmp_path: Path, con) -> None:
    """The same charges as a FOCUS 1.0 CSV (1.0 PricingCategory names, ``NULL``s, no-T times) and a FOCUS 1.2
    Parquet with the columns 1.0 lacks (InvoiceId, SkuMeter, an x_ column): the same line items, once."""
    from tests.fixtures.sources.focus import focus_csv, focus_parquet

    old_names = {"Standard": "On-Demand", "Committed": "Commitment-Based", "Dynamic": "Spot"}
    v10 = [
        {**r, "PricingCategory": old_names.get(r.get("PricingCategory"), r.get("PricingCategory"))}
        for r in _focus_bill()
    ]
    v12 = [
        {**r, "InvoiceId": "INV-2026-11", "SkuMeter": "Compute", "x_Operation": "RunInstances"} for r in _focus_bill()
    ]
    folder = tmp_path / "focus" / "2026-11"
    folder.mkdir(parents=True)
    (folder / "bill-1.0.csv").write_bytes(focus_csv(v10, version="1.0", timestamps="space", null="NULL"))
    (folder / "bill-1.2.parquet").write_bytes(focus_parquet(v12, version="1.2"))
    result = load_billing_files(con, LocalStorage(tmp_path))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (32, 16, 16)
    assert _raw(con) == NOVEMBER_EFFECTIVE
