"""Source resources: the same asset reads a local folder, S3 or Prometheus by configuration only."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from pipelines.defs.sources.resources import SourceResource, resources, source_resources
from pipelines.lib.sources.billing_formats import read_billing_file
from pipelines.lib.sources.prometheus import PrometheusSource
from pipelines.lib.sources.s3 import S3Storage
from pipelines.lib.storage import LocalStorage
from tests.fixtures.sources.servers import moto_endpoint, new_bucket, s3_env, upload_tree

__all__ = ["moto_endpoint", "s3_env"]  # pytest fixtures used by name below

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for source in ("METRICS", "BILLING", "EVENTS", "FX"):
        monkeypatch.delenv(f"PULSO_{source}_SOURCE", raising=False)
    monkeypatch.setenv("PULSO_SOURCES", str(tmp_path / "sources"))
    return tmp_path / "sources"


def test_default_is_the_local_folder(clean_env: Path) -> None:
    res = source_resources()
    assert set(res) == {"metrics_source", "billing_source", "events_source", "fx_source"}
    storage = res["events_source"].storage()
    assert isinstance(storage, LocalStorage) and storage.root == clean_env / "events"
    reader = res["metrics_source"].reader()
    assert type(reader).__name__ == "FileMetricsReader" and reader.storage.root == clean_env / "metrics"


def test_environment_switches_each_source(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSO_METRICS_SOURCE", "http://127.0.0.1:9090/prom/")
    monkeypatch.setenv("PULSO_BILLING_SOURCE", "s3://billing-bucket/cur/exports")
    res = source_resources()
    reader = res["metrics_source"].reader()
    assert isinstance(reader, PrometheusSource)
    assert reader.client.query_range_url == "http://127.0.0.1:9090/prom/api/v1/query_range"
    with pytest.raises(ValueError, match="is a Prometheus server, not files"):
        res["metrics_source"].storage()
    billing = res["billing_source"].storage()
    assert isinstance(billing, S3Storage) and (billing.bucket, billing.prefix) == ("billing-bucket", "cur/exports")
    # an explicit location (run config) wins over the environment
    assert isinstance(SourceResource(source="billing", location=str(clean_env)).storage(), LocalStorage)
    with pytest.raises(ValueError, match="only metrics can come from a Prometheus URL"):
        SourceResource(source="events", location="http://127.0.0.1:9090").storage()


def test_an_asset_reads_billing_from_s3_by_environment_only(
    s3_env: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dg.asset
    def legacy_bill(billing_source: SourceResource) -> dg.MaterializeResult:
        parsed = read_billing_file(billing_source.storage(), "legacy/cur.csv")
        total = sum(parsed.line_items["unblended_cost"].to_list())
        return dg.MaterializeResult(
            metadata={"rows": parsed.line_items.height, "total_usd": str(total), "source": billing_source.describe()}
        )

    local = clean_env / "billing" / "legacy"
    local.mkdir(parents=True)
    (local / "cur.csv").write_bytes((FIXTURES / "aws-cur-legacy-sample.csv").read_bytes())
    defs_resources = resources().resources
    runs = {}
    for where in ("local", "s3"):
        if where == "s3":
            new_bucket("pulso-billing-res")
            upload_tree(clean_env / "billing", "pulso-billing-res", "exports")
            monkeypatch.setenv("PULSO_BILLING_SOURCE", "s3://pulso-billing-res/exports")
        result = dg.materialize([legacy_bill], resources=defs_resources)
        (event,) = result.get_asset_materialization_events()
        runs[where] = {k: v.value for k, v in event.materialization.metadata.items()}
    assert runs["local"]["rows"] == runs["s3"]["rows"] == 1281
    assert Decimal(runs["local"]["total_usd"]) == Decimal(runs["s3"]["total_usd"]) == Decimal("1.68230869740")
    assert runs["s3"]["source"] == "s3://pulso-billing-res/exports"


def test_project_definitions_load_with_source_resources_and_quality_checks() -> None:
    from pipelines.definitions import defs

    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    checks = {(k.asset_key.to_user_string(), k.name) for k in definitions.resolve_asset_graph().asset_check_keys}
    assert {
        ("raw_metrics", "raw_metrics_quality"),
        ("raw_metrics", "raw_metrics_gauges_quality"),
        ("raw_billing", "raw_billing_quality"),
        ("raw_events", "raw_events_quality"),
        ("raw_events", "raw_events_payments_quality"),
        ("raw_fx", "raw_fx_quality"),
        ("kpi_daily", "kpi_daily_quality"),
    } <= checks
    assert {"metrics_source", "billing_source", "events_source", "fx_source"} <= set(definitions.resources)
