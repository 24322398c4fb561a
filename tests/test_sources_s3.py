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
    assert sum(parsed.line_items["unblended_cost"].to_list()) == Decimal("1.682291")
    assert set(parsed.line_items["source_file"]) == {f"s3://{bucket}/cur/legacy/cur.csv"}
    # the same file from the local folder gives the same rows (only source_file differs)
    monkeypatch.setenv("PULSO_BILLING_SOURCE", str(tmp_path / "billing"))
    local = read_billing_file(storage_for("billing"), "legacy/cur.csv")
    assert local.line_items.drop("source_file").equals(parsed.line_items.drop("source_file"))


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
