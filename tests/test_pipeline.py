"""The Dagster graph end to end on the simulator's ``tiny`` profile (3 days), through ``dg.materialize``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from pipelines.defs.warehouse.assets import WAREHOUSE_ASSETS
from pipelines.defs.warehouse.automation import days_to_reopen, late_data_sensor
from pipelines.lib.catalog import load_catalog
from pipelines.lib.kpis import PUBLISHED_RELATIONS, PUBLISHED_TABLES
from pipelines.lib.published import PublishedReader, read_manifest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("warehouse_pipeline")]
END = "2026-11-27"
DAYS = [date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)]
CANARY_NAME = "Zzyzx Canarywoman"
CANARY_EMAIL = "zzyzx.canary@pulso.invalid"


class Built:
    def __init__(self, root: Path, sources: Path, instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult):
        self.root, self.sources, self.instance, self.result = root, sources, instance, result

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def published(self) -> Path:
        return self.root / "published"

    def resources(self) -> dict:
        return {
            "duckdb": DuckDBResource(database=str(self.warehouse)),
            "metrics_source": MetricsSourceResource(location=str(self.sources / "metrics")),
            "billing_source": SourceResource(source="billing", location=str(self.sources / "billing")),
            "events_source": SourceResource(source="events", location=str(self.sources / "events")),
            "fx_source": SourceResource(source="fx", location=str(self.sources / "fx")),
        }

    def materialize(self, **kw) -> dg.ExecuteInProcessResult:
        return dg.materialize(WAREHOUSE_ASSETS, resources=self.resources(), instance=self.instance, **kw)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("pipeline")
    sources = root / "sources"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.simulate",
            "--profile",
            "tiny",
            "--out",
            str(sources),
            "--end",
            END,
            "--quiet",
            "--canary",
            f"name={CANARY_NAME}",
            "--canary",
            f"email={CANARY_EMAIL}",
        ],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    saved = {k: os.environ.get(k) for k in ("PULSO_PUBLISHED", "PULSO_PSEUDONYM_KEY")}
    os.environ["PULSO_PUBLISHED"] = str(root / "published")
    os.environ["PULSO_PSEUDONYM_KEY"] = "pipeline-test-key"
    instance = dg.DagsterInstance.ephemeral()
    b = Built(root, sources, instance, None)  # type: ignore[arg-type]
    b.result = b.materialize(
        tags={
            "dagster/asset_partition_range_start": DAYS[0].isoformat(),
            "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
        }
    )
    yield b
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_definitions_load() -> None:
    from pipelines.definitions import defs

    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    keys = {k.to_user_string() for k in definitions.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "raw_metrics",
        "raw_billing",
        "raw_events",
        "raw_fx",
        "kpi_daily",
        "published_marts",
        "event_staging",
        "cost_items_daily",
        "fx_daily",
    } <= keys
    assert {s.name for s in definitions.schedules} >= {"intraday_refresh", "nightly_finalize"}
    assert "late_data_sensor" in {s.name for s in definitions.sensors}


def test_whole_graph_on_tiny(built: Built) -> None:
    assert built.result.success
    profile = json.loads((built.sources / "profile.json").read_text())
    # every load reconciles; nothing quarantined in clean data; all event lines read
    loads = built.query(
        "SELECT source, sum(rows_read), sum(rows_loaded), sum(rows_quarantined) FROM ops.loads GROUP BY ALL"
    )
    assert all(read == loaded + q for _, read, loaded, q in loads)
    by_source = {s: (r, q) for s, r, _, q in loads}
    assert by_source["events"] == (profile["events"]["lines"], 0)
    stored = built.query(
        "SELECT count(*) FROM (SELECT event_id FROM raw.events UNION ALL SELECT event_id FROM psychology.events)"
    )
    assert stored == [(profile["events"]["events"],)]  # duplicates stored once
    # the bill: the current (restated) delivery, exactly, allocated to niches without loss
    cost = built.query("SELECT sum(cost_usd) FROM marts.cost_daily")[0][0]
    assert str(cost) == profile["billing"]["deliveries"][0]["amortized_usd"]
    # every KPI on every day at the total grain
    got = built.query("SELECT day, kpi FROM marts.kpi_daily WHERE niche = 'all' AND country = 'all' AND region = 'all'")
    assert sorted(got) == sorted((d, k) for d in DAYS for k in load_catalog().kpi_ids)
    assert built.query("SELECT count(*) FROM marts.kpi_daily WHERE isnan(value) OR isinf(value)") == [(0,)]


def test_injected_incidents_are_found(built: Built) -> None:
    truth = {i["id"]: i for i in json.loads((built.sources / "incidents.json").read_text())}
    outage = truth["inc-001"]  # all of psychology in AR down
    rows = built.query(
        "SELECT region, recovery_minutes FROM marts.incidents WHERE niche = 'psychology' ORDER BY region"
    )
    assert [r[1] for r in rows] == [outage["expected_effect"]["recovery_minutes"]] * 4
    value, status = built.query(
        "SELECT value, status FROM marts.kpi_daily WHERE kpi = 'scaling_time_minutes' AND day = '2026-11-27'"
    )[0]
    assert value >= truth["inc-005"]["expected_effect"]["scaling_time_minutes_min"] and status == "breach"
    mp = built.query(
        "SELECT value, status FROM marts.kpi_daily WHERE kpi = 'mercadopago_success_ratio' AND day = '2026-11-26' "
        "AND niche = 'all' AND country = 'all' AND region = 'all'"
    )[0]
    assert mp[0] < 0.97 and mp[1] in ("warn", "breach")


def test_published_with_freshness(built: Built) -> None:
    manifest = read_manifest(built.published)
    assert manifest.data["complete_through"] == END and manifest.data["data_through"] == END
    con = PublishedReader(built.published).snapshot()
    for table in PUBLISHED_TABLES:
        assert con.execute(f'SELECT count(DISTINCT day) FROM "{table}"').fetchall()[0][0] >= 1, table  # noqa: S608


def test_no_personal_data_anywhere(built: Built) -> None:
    """The simulator planted a known name and e-mail: no warehouse text column and no published file has them."""
    con = duckdb.connect(str(built.warehouse), read_only=True)
    try:
        cols = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE data_type = 'VARCHAR'"
        ).fetchall()
        for schema, table, column in cols:
            hits = con.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" WHERE contains("{column}", ?) OR contains("{column}", ?)',  # noqa: S608
                [CANARY_NAME, CANARY_EMAIL],
            ).fetchall()[0][0]
            assert hits == 0, f"{schema}.{table}.{column}"
    finally:
        con.close()
    for path in built.published.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert CANARY_EMAIL.encode() not in data and CANARY_NAME.encode() not in data


def _marts_digest(built: Built, day: str) -> dict[str, str]:
    out = {}
    for table in PUBLISHED_TABLES:
        rows = built.query(f"SELECT * FROM {PUBLISHED_RELATIONS[table]} WHERE day = ? ORDER BY ALL", [day])  # noqa: S608
        out[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    manifest = read_manifest(built.published)
    for table in PUBLISHED_TABLES:
        rel = manifest.tables[table]["files"].get(day)
        out[f"published/{table}"] = hashlib.sha256((built.published / rel).read_bytes()).hexdigest() if rel else ""
    return out


def test_rematerialized_partition_is_identical(built: Built) -> None:
    before = _marts_digest(built, "2026-11-26")
    result = built.materialize(partition_key="2026-11-26")
    assert result.success
    assert _marts_digest(built, "2026-11-26") == before


def test_late_event_reopens_only_its_day(built: Built) -> None:
    import gzip

    # a booking of the 26th arrives late, in the folder after the last day
    late = {
        "event_id": "late-1",
        "type": "booking.created",
        "occurred_at": "2026-11-26T15:00:00Z",
        "niche": "barber",
        "country": "AR",
        "region": "rosario",
        "user": {"id": "u_late"},
        "payload": {"booking_id": "bk_late", "professional_id": "p", "scheduled_for": None, "price_ars": 100},
    }
    folder = built.sources / "events" / "date=2026-11-28"
    with gzip.open(folder / "part-9999.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(late) + "\n")
    before = built.query(
        "SELECT value FROM marts.kpi_daily WHERE kpi = 'bookings' AND day = '2026-11-26' AND niche = 'all' "
        "AND country = 'all' AND region = 'all'"
    )[0][0]
    assert built.materialize(partition_key="2026-11-27").success
    # the 27th's run re-opened and published the 26th itself: the sensor has nothing left to do
    context = dg.build_sensor_context(instance=built.instance)
    assert isinstance(late_data_sensor(context), dg.SkipReason)
    after = built.query(
        "SELECT value FROM marts.kpi_daily WHERE kpi = 'bookings' AND day = '2026-11-26' AND niche = 'all' "
        "AND country = 'all' AND region = 'all'"
    )[0][0]
    assert after == before + 1


def test_days_to_reopen_ignores_own_partitions_and_published_days() -> None:
    records = [
        ("r1", "2026-11-27", "2026-11-26,2026-11-27"),
        ("r1", "2026-11-28", "2026-11-24,2026-11-26,2026-11-27"),
        ("r2", "2026-11-27", "2026-11-27"),
    ]
    assert days_to_reopen(records) == [date(2026, 11, 24), date(2026, 11, 26)]
    # a run that failed before publishing leaves its touched days to the sensor; published ones are done
    assert days_to_reopen(records, published={"2026-11-26"}) == [date(2026, 11, 24)]


def test_sensor_requests_a_run_when_touched_days_were_not_published() -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "raw_events", partition="2026-11-27", metadata={"touched_days": "2026-11-20,2026-11-27"}
        )
    )
    request = late_data_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(request, dg.RunRequest)
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        "2026-11-20",
        "2026-11-20",
    )
