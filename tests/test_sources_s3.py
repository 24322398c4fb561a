"""S3Storage against a moto S3 server on loopback, through the same boto3 code path production uses."""

from __future__ import annotations

import gzip
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from pipelines.lib.sources.billing_formats import read_billing_file
from pipelines.lib.sources.config import storage_for
from pipelines.lib.sources.s3 import S3Storage, parse_s3_url
from pipelines.lib.storage import LocalStorage, SourceError
from tests.fixtures.sources.servers import LOOPBACK, free_port, moto_endpoint, new_bucket, s3_env, upload_tree

__all__ = ["moto_endpoint", "s3_env"]  # pytest fixtures used by name below

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def _bucket() -> str:
    return f"pulso-{uuid.uuid4().hex[:12]}"


def _source_tree(root: Path) -> None:
    """A small sources folder: events in two day folders, a legacy CUR file, the FX csv."""
    for day, n in (("2026-11-01", 2), ("2026-11-02", 1)):
        folder = root / "events" / f"date={day}"
        folder.mkdir(parents=True)
        lines = [json.dumps({"event_id": f"{day}-{i}", "type": "user.signed_up"}) for i in range(n)]
        (folder / "part-0000.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    (root / "billing" / "legacy").mkdir(parents=True)
    (root / "billing" / "legacy" / "cur.csv").write_bytes((FIXTURES / "aws-cur-legacy-sample.csv").read_bytes())
    (root / "fx").mkdir()
    (root / "fx" / "ars_usd.csv").write_text("date,ars_per_usd\n2026-11-01,1000.5\n")


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="missing bucket"):
        parse_s3_url("s3:///x")


def test_s3_storage_behaves_like_the_local_folder(s3_env: str, tmp_path: Path) -> None:
    _source_tree(tmp_path)
    bucket = _bucket()
    new_bucket(bucket)
    uploaded = upload_tree(tmp_path, bucket, "pulso/demo")
    local, s3 = LocalStorage(tmp_path), S3Storage.from_url(f"s3://{bucket}/pulso/demo/")
    assert len(uploaded) == 4
    for prefix in ("", "events", "events/date=2026-11-01", "billing/legacy/cur.csv", "nothing-here"):
        assert s3.list(prefix) == local.list(prefix), prefix
    for key in uploaded:
        assert s3.read_bytes(key) == local.read_bytes(key)
        assert s3.exists(key)
    assert not s3.exists("events/date=2026-11-03/part-0000.jsonl.gz")
    assert s3.describe("fx/ars_usd.csv") == f"s3://{bucket}/pulso/demo/fx/ars_usd.csv"
    # a sibling prefix that merely starts with the same letters is not listed
    S3Storage(bucket, "pulso").write_bytes("demo-old/x.txt", b"x")
    assert "x.txt" not in "".join(s3.list(""))


def test_storage_for_reads_billing_from_s3_by_configuration_only(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _source_tree(tmp_path)
    bucket = _bucket()
    new_bucket(bucket)
    upload_tree(tmp_path / "billing", bucket, "cur")
    monkeypatch.setenv("PULSO_BILLING_SOURCE", f"s3://{bucket}/cur")
    storage = storage_for("billing")
    assert isinstance(storage, S3Storage)
    parsed = read_billing_file(storage, "legacy/cur.csv")
    assert parsed.line_items.height == 1281
    assert sum(parsed.line_items["unblended_cost"].to_list()) == Decimal("1.68230869740")  # exact
    assert set(parsed.line_items["source_file"]) == {f"s3://{bucket}/cur/legacy/cur.csv"}
    # the same file from the local folder gives the same rows (only where they came from differs)
    monkeypatch.setenv("PULSO_BILLING_SOURCE", str(tmp_path / "billing"))
    local = read_billing_file(storage_for("billing"), "legacy/cur.csv")
    assert local.line_items.drop("source_file", "delivery").equals(parsed.line_items.drop("source_file", "delivery"))


def test_missing_object_and_bucket_are_clear_errors(s3_env: str) -> None:
    bucket = _bucket()
    new_bucket(bucket)
    storage = S3Storage(bucket, "p")
    with pytest.raises(SourceError, match=rf"^s3://{bucket}/p/none.csv: no such object$"):
        storage.read_bytes("none.csv")
    with pytest.raises(SourceError, match=r"^s3://no-such-bucket-pulso/x: no such bucket$"):
        S3Storage("no-such-bucket-pulso").list("x")


def test_unreachable_endpoint_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSO_S3_ENDPOINT_URL", f"http://{LOOPBACK}:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(SourceError, match=r"^s3://b/k: cannot reach S3 \(EndpointConnectionError") as info:
        S3Storage("b").read_bytes("k")
    assert "testing" not in str(info.value)  # credentials never appear in messages


# -- the warehouse loaders over S3 (same code path as a local folder) ---------------------------------------


def _warehouse():
    from pipelines.lib import warehouse

    return warehouse.connect(":memory:")


def _cur_tree(root: Path) -> None:
    from tests.fixtures.sources import broken

    broken.write_cur2_delivery(
        root,
        "2026-10",
        "oct-1",
        {"00001": broken.cur2_parquet([broken.cur2_row(i, cost=f"{i}.25", day="2026-10-15") for i in range(1, 4)])},
    )
    broken.write_cur2_delivery(
        root,
        "2026-11",
        "nov-1",
        {"00001": broken.cur2_parquet([broken.cur2_row(i, cost="2.000001") for i in range(1, 3)])},
    )
    # December: data delivered, manifest not yet written
    data = root / "cur" / broken.EXPORT / "data" / "BILLING_PERIOD=2026-12" / "part.snappy.parquet"
    data.parent.mkdir(parents=True)
    data.write_bytes(broken.cur2_parquet([broken.cur2_row(1, day="2026-12-01")]))


def _billing_rows(con) -> list[tuple]:
    return con.execute(
        "SELECT * EXCLUDE (source_file, delivery, _loaded_at) FROM raw.billing_line_items "
        "ORDER BY billing_period, line_item_id"
    ).fetchall()


def test_cur2_from_s3_via_manifest_matches_the_local_folder(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.lib.ingest import billing as ingest_billing
    from tests.fixtures.sources import broken

    _cur_tree(tmp_path / "billing")
    bucket = _bucket()
    new_bucket(bucket)
    upload_tree(tmp_path / "billing", bucket, "exports")
    monkeypatch.setenv("PULSO_BILLING_SOURCE", f"s3://{bucket}/exports")

    s3_con, local_con = _warehouse(), _warehouse()
    result = ingest_billing.load_cur2(s3_con, storage_for("billing"))
    ingest_billing.load_cur2(local_con, LocalStorage(tmp_path / "billing"))
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (5, 5, 0)
    assert any("2026-12" in w and "no manifest" in w for w in result.warnings)
    assert _billing_rows(s3_con) == _billing_rows(local_con)
    totals = dict(
        s3_con.execute("SELECT billing_period, sum(amortized_cost) FROM raw.billing_line_items GROUP BY ALL").fetchall()
    )
    assert totals == {"2026-10": Decimal("6.75"), "2026-11": Decimal("4.000002")}  # 1.25+2.25+3.25; 2 x 2.000001
    files = {r[0] for r in s3_con.execute("SELECT DISTINCT source_file FROM raw.billing_line_items").fetchall()}
    assert all(f.startswith(f"s3://{bucket}/exports/cur/pulso-cur/data/BILLING_PERIOD=") for f in files)

    # A restated November: new execution, new data file, new manifest; the old file stays in the bucket.
    restated = tmp_path / "restated"
    broken.write_cur2_delivery(
        restated,
        "2026-11",
        "nov-2",
        {"00001": broken.cur2_parquet([broken.cur2_row(i, cost="3") for i in range(1, 4)])},
    )
    upload_tree(restated, bucket, "exports")
    again = ingest_billing.load_cur2(s3_con, storage_for("billing"))
    assert again.rows_loaded == 3  # only November is re-read
    totals = dict(
        s3_con.execute("SELECT billing_period, sum(amortized_cost) FROM raw.billing_line_items GROUP BY ALL").fetchall()
    )
    assert totals == {"2026-10": Decimal("6.75"), "2026-11": Decimal("9")}  # replaced, never doubled


def test_events_from_s3_match_the_local_folder(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date

    from pipelines.lib.ingest import events as ingest_events
    from tests.fixtures.sources import broken

    folder = tmp_path / "events" / "date=2026-11-02"
    folder.mkdir(parents=True)
    (folder / "part-0000.jsonl.gz").write_bytes(broken.jsonl_gz([*broken.GOOD_EVENTS, '{"broken']))
    (folder / "part-0001.jsonl.gz").write_bytes(broken.jsonl_gz([broken.event("late-1"), broken.GOOD_EVENTS[0]]))
    bucket = _bucket()
    new_bucket(bucket)
    upload_tree(tmp_path / "events", bucket, "app/events")
    monkeypatch.setenv("PULSO_EVENTS_SOURCE", f"s3://{bucket}/app/events")
    key = b"k" * 32
    s3_con, local_con = _warehouse(), _warehouse()
    s3_storage = storage_for("events")
    assert ingest_events.event_arrival_days(s3_storage) == [date(2026, 11, 2)]
    result = ingest_events.load_events_day(s3_con, s3_storage, date(2026, 11, 2), key)
    ingest_events.load_events_day(local_con, LocalStorage(tmp_path / "events"), date(2026, 11, 2), key)
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined, result.duplicates) == (6, 5, 1, 1)
    sql = "SELECT * EXCLUDE (_source_file, _loaded_at) FROM raw.events ORDER BY event_id"
    assert s3_con.execute(sql).fetchall() == local_con.execute(sql).fetchall()
    assert len(s3_con.execute(sql).fetchall()) == 4
    (where,) = s3_con.execute("SELECT source_file FROM quarantine.rows").fetchone()
    assert where == f"s3://{bucket}/app/events/date=2026-11-02/part-0000.jsonl.gz"


def test_metric_files_from_s3_through_the_metrics_resource(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    import polars as pl

    from pipelines.defs.sources.resources import MetricsSourceResource
    from pipelines.lib.sources.prometheus import SAMPLE_SCHEMA

    start = datetime(2026, 11, 2, 3, tzinfo=UTC)  # 00:00 in Argentina
    frame = pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=i) for i in range(3)],
            "niche": ["barber"] * 3,
            "country": ["AR"] * 3,
            "region": ["cordoba"] * 3,
            "value": [3.0, 4.0, 5.0],
        }
    )
    frame = frame.with_columns([pl.lit(None, pl.String).alias(c) for c in ("service", "route", "code", "le", "group")])
    frame = frame.select(list(SAMPLE_SCHEMA)).cast(SAMPLE_SCHEMA)
    folder = tmp_path / "metrics" / "active_sessions" / "date=2026-11-02"
    folder.mkdir(parents=True)
    frame.write_parquet(folder / "part-0.parquet")
    bucket = _bucket()
    new_bucket(bucket)
    upload_tree(tmp_path / "metrics", bucket, "prom-archive")
    monkeypatch.setenv("PULSO_METRICS_SOURCE", f"s3://{bucket}/prom-archive")
    reader = MetricsSourceResource().reader()
    assert isinstance(reader.storage, S3Storage)
    got = reader.samples("active_sessions", start, start + timedelta(days=1))
    assert got.equals(frame)
    assert reader.samples("probe_success", start, start + timedelta(days=1)).height == 0  # no file: no rows


def test_unchanged_billing_files_in_s3_are_not_downloaded_again(s3_env: str, tmp_path: Path) -> None:
    import duckdb

    from pipelines.lib import warehouse
    from pipelines.lib.sources.billing_load import load_billing_files

    class Counting(S3Storage):
        reads = 0

        def read_bytes(self, key: str) -> bytes:
            Counting.reads += 1
            return super().read_bytes(key)

    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "cur.csv").write_bytes((FIXTURES / "aws-cur-legacy-sample.csv").read_bytes())
    (tmp_path / "focus").mkdir()
    (tmp_path / "focus" / "october.csv").write_bytes((FIXTURES / "focus-1.0-refund.csv").read_bytes())
    bucket = _bucket()
    new_bucket(bucket)
    upload_tree(tmp_path, bucket, "billing")
    con: duckdb.DuckDBPyConnection = warehouse.connect(":memory:")

    def total() -> list[tuple]:
        return con.execute(
            "SELECT source_format, sum(unblended_cost), count(*) FROM raw.billing_line_items GROUP BY ALL ORDER BY ALL"
        ).fetchall()

    first = load_billing_files(con, Counting.from_url(f"s3://{bucket}/billing"))
    assert (first.rows_read, first.rows_loaded, Counting.reads) == (1283, 1283, 2)
    assert total() == [("cur_legacy", Decimal("1.68230869740"), 1281), ("focus", Decimal("2.5"), 2)]
    again = load_billing_files(con, Counting.from_url(f"s3://{bucket}/billing"))
    assert (again.rows_read, again.scope, Counting.reads) == (0, "legacy+focus (unchanged)", 2)  # no download
    # October re-delivered to the same key: a new ETag, the files are read again and October replaced
    restated = (
        (FIXTURES / "focus-1.0-refund.csv")
        .read_text()
        .replace("4.000000,4.000000,4.000000", "6.000000,6.000000,6.000000")
    )
    S3Storage.from_url(f"s3://{bucket}/billing").write_bytes("focus/october.csv", restated.encode())
    third = load_billing_files(con, Counting.from_url(f"s3://{bucket}/billing"))
    assert (third.rows_read, Counting.reads) == (1283, 4)
    assert total() == [("cur_legacy", Decimal("1.68230869740"), 1281), ("focus", Decimal("4.5"), 2)]
    con.close()
