"""Idempotency: re-materializing gives the same warehouse and published data; restated bills and duplicate
events never double-count.

The Dagster graph (``dg.materialize`` of every warehouse asset) runs on the simulator's ``tiny`` profile:

1. the whole partition range three times: every table of raw, staging, psychology and marts
   (``table_checksums``) and every published table (read back row for row) identical after runs 1, 2, 3;
2. one partition (the middle day) re-materialized: the whole warehouse still identical (the per-day
   digest of ``tests/test_pipeline.py::test_rematerialized_partition_is_identical``, widened to every table);
3. the billing month restated (``--before-restatement`` first, then the full delivery): cost equals the
   restated delivery, not the sum of both, and the warehouse equals a fresh build of the final sources;
4. every event file delivered twice (again in its folder, and late in the next folder): marts unchanged,
   the copies counted as duplicates.

Late events re-opening only their day: ``tests/test_pipeline.py::test_late_event_reopens_only_its_day``;
loader-level restatement and duplicates: ``tests/test_ingest.py`` (``test_cur_restated_month_replaces_never_doubles``,
``test_events_dedupe_pseudonymize_ar_day_and_drop_personal_data``), ``tests/test_sources_billing_load.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from pipelines.defs.warehouse.assets import WAREHOUSE_ASSETS
from pipelines.lib.kpis import PUBLISHED_TABLES
from pipelines.lib.published import read_manifest
from pipelines.lib.warehouse import table_checksums

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability")]
REPO = Path(__file__).resolve().parents[1]
END = "2026-11-27"
DAYS = [date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)]
RANGE = {
    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
    "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
}


@dataclass
class Warehouse:
    """One warehouse + published store over one sources folder, materialized in process."""

    root: Path
    sources: Path
    instance: dg.DagsterInstance

    @property
    def published(self) -> Path:
        return self.root / "published"

    def materialize(self, **kw) -> dg.ExecuteInProcessResult:
        os.environ["PULSO_PUBLISHED"] = str(self.published)  # read by the publish asset at run time
        self.root.mkdir(parents=True, exist_ok=True)
        resources = {
            "duckdb": DuckDBResource(database=str(self.root / "warehouse.duckdb")),
            "metrics_source": MetricsSourceResource(location=str(self.sources / "metrics")),
            "billing_source": SourceResource(source="billing", location=str(self.sources / "billing")),
            "events_source": SourceResource(source="events", location=str(self.sources / "events")),
            "fx_source": SourceResource(source="fx", location=str(self.sources / "fx")),
        }
        result = dg.materialize(WAREHOUSE_ASSETS, resources=resources, instance=self.instance, **kw)
        assert result.success
        return result

    def content(self) -> dict[str, tuple[int, str]]:
        """Checksums of every warehouse table, plus every published table read back from its manifest's files."""
        con = duckdb.connect(str(self.root / "warehouse.duckdb"), read_only=True)
        try:
            out = table_checksums(con)
        finally:
            con.close()
        manifest = read_manifest(self.published)
        reader = duckdb.connect()
        for table in PUBLISHED_TABLES:
            files = [str(f) for f in manifest.files(table)]
            rows = reader.execute("SELECT * FROM read_parquet($f) ORDER BY ALL", {"f": files}).fetchall()
            out[f"published.{table}"] = (len(rows), str(hash(repr(rows))))
        return out

    def query(self, sql: str) -> list[tuple]:
        con = duckdb.connect(str(self.root / "warehouse.duckdb"), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


def simulate(out: Path, *extra: str) -> dict:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.simulate",
            "--profile",
            "tiny",
            "--out",
            str(out),
            "--end",
            END,
            "--quiet",
            *extra,
        ],
        check=True,
        cwd=REPO,
    )
    return json.loads((out / "profile.json").read_text())


def diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@dataclass
class History:
    runs: list[dict]  # content after full-range runs 1, 2, 3 (first billing delivery)
    partition_runs: list[dict]  # content after the middle day alone
    before_restatement_cost: Decimal
    restated: dict  # content after the restated delivery landed
    restated_cost: Decimal
    fresh: dict  # a fresh build of the restated sources
    profile: dict
    duplicated: dict  # content after every event file was delivered twice
    duplicates_before: int
    duplicates_after: int
    copied_lines: int


def _duplicates(result: dg.ExecuteInProcessResult) -> int:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == "raw_events":
            return int(mat.metadata["duplicates"].value)
    raise AssertionError("raw_events not materialized")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    base = tmp_path_factory.mktemp("idempotency")
    saved = {k: os.environ.get(k) for k in ("PULSO_PUBLISHED", "PULSO_PSEUDONYM_KEY")}
    os.environ["PULSO_PSEUDONYM_KEY"] = "reliability-test-key"
    try:
        sources = base / "sources"
        first_profile = simulate(sources, "--before-restatement")
        wh = Warehouse(base / "incremental", sources, dg.DagsterInstance.ephemeral())
        runs, seconds = [], []
        for _ in range(3):
            t0 = time.monotonic()
            wh.materialize(tags=RANGE)
            seconds.append(time.monotonic() - t0)
            runs.append(wh.content())
        print("full-range runs: " + ", ".join(f"{x:.1f}s" for x in seconds))
        wh.materialize(partition_key=DAYS[1].isoformat())
        partition_runs = [wh.content()]
        before_cost = wh.query("SELECT sum(cost_usd) FROM marts.cost_daily")[0][0]
        assert str(before_cost) == first_profile["billing"]["deliveries"][0]["amortized_usd"]

        profile = simulate(sources)  # the restated delivery lands beside the first one
        dup_before = _duplicates(wh.materialize(tags=RANGE))
        restated = wh.content()
        restated_cost = wh.query("SELECT sum(cost_usd) FROM marts.cost_daily")[0][0]
        # Same sources folder (raw rows name their source file), a new warehouse and published store.
        fresh = Warehouse(base / "fresh", sources, dg.DagsterInstance.ephemeral())
        fresh.materialize(tags=RANGE)

        # Every event file delivered twice: once more in its own folder, once late in the next one.
        events = sources / "events"
        folders = sorted(p for p in events.iterdir() if p.name.startswith("date="))
        copied_lines = 0
        for folder, later in zip(folders, folders[1:], strict=False):
            for part in sorted(folder.glob("part-*.jsonl.gz")):
                shutil.copy(part, folder / f"resent-{part.name}")
                shutil.copy(part, later / f"late-{folder.name[5:]}-{part.name}")
                with gzip.open(part, "rt") as fh:
                    copied_lines += 2 * sum(1 for line in fh if line.strip())
        duplicated_result = wh.materialize(tags=RANGE)
        return History(
            runs,
            partition_runs,
            before_cost,
            restated,
            restated_cost,
            fresh.content(),
            profile,
            wh.content(),
            dup_before,
            _duplicates(duplicated_result),
            copied_lines,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_three_full_runs_give_identical_warehouse_and_published_data(history: History) -> None:
    first, second, third = history.runs
    assert diff(first, second) == [] and diff(second, third) == []
    # The comparison covers every layer, with data in it.
    assert {
        "raw.events",
        "psychology.events",
        "raw.billing_line_items",
        "staging.metric_counters_hourly",
        "staging.user_days",
        "marts.kpi_daily",
        "marts.cost_daily",
        "published.kpi_daily",
    } <= set(first)
    assert all(first[t][0] > 0 for t in ("raw.events", "marts.kpi_daily", "marts.slo_daily", "published.cost_daily"))


def check_one_partition_rerun_changes_nothing(history: History) -> None:
    for content in history.partition_runs:
        assert diff(history.runs[0], content) == []


def check_restated_month_replaces_never_doubles(history: History) -> None:
    restated = history.profile["billing"]
    assert str(history.restated_cost) == restated["deliveries"][0]["amortized_usd"]  # the restated delivery alone
    assert str(history.before_restatement_cost) == restated["restated"]["superseded_amortized_usd"]
    assert history.restated_cost != history.before_restatement_cost
    assert history.restated["raw.billing_line_items"][0] == restated["deliveries"][0]["rows"]
    # Costs changed where the restatement changed them.
    assert "marts.cost_daily" in diff(history.runs[0], history.restated)


def check_history_equals_a_fresh_build_of_the_final_sources(history: History) -> None:
    assert diff(history.restated, history.fresh) == []
    assert history.fresh["raw.billing_line_items"] == history.restated["raw.billing_line_items"]


def check_duplicate_event_deliveries_never_double_count(history: History) -> None:
    assert history.copied_lines > 1000
    assert history.duplicates_after - history.duplicates_before == history.copied_lines
    assert diff(history.restated, history.duplicated) == []


# The checks below run from one test, so the builds above run once however the suite is distributed
# (with or without xdist groups, which tests/conftest.py makes hold under pytest 9.2).


def test_reruns_restatement_and_duplicate_events_leave_the_data_identical(history: History) -> None:
    check_three_full_runs_give_identical_warehouse_and_published_data(history)
    check_one_partition_rerun_changes_nothing(history)
    check_restated_month_replaces_never_doubles(history)
    check_history_equals_a_fresh_build_of_the_final_sources(history)
    check_duplicate_event_deliveries_never_double_count(history)
