"""Jobs, schedules and the late-data sensor of the warehouse.

- ``warehouse_job``: every warehouse asset for a day (or a range: one run).
- ``intraday_refresh`` (hourly, AR time): refreshes today's partition while the day is in progress.
- ``nightly_finalize`` (00:30 AR): rebuilds yesterday's partition once its last data is in
  (``complete_through`` moves to it).
- ``late_data_sensor``: when a raw_events / raw_billing materialization reports days it changed
  outside its own run (late events, a restated month), requests one run of ``marts_job`` over those
  days only (from the earliest to the latest touched day).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from pipelines.defs.warehouse.assets import WAREHOUSE_ASSETS
from pipelines.defs.warehouse.partitions import daily_partitions
from pipelines.lib.catalog import load_catalog

TZ = load_catalog().timezone
RAW_WITH_LATE_DATA = ("raw_events", "raw_billing")

warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=dg.AssetSelection.assets(*WAREHOUSE_ASSETS),
    partitions_def=daily_partitions,
    description="Load every source and rebuild staging, marts and the published data for the selected days.",
)
marts_job = dg.define_asset_job(
    "marts_job",
    selection=dg.AssetSelection.groups("staging", "marts", "published"),
    partitions_def=daily_partitions,
    description="Rebuild staging, marts and published data for days whose inputs changed (no source reads).",
)


def _today(now: datetime | None = None) -> date:
    return (now or datetime.now(ZoneInfo(TZ))).astimezone(ZoneInfo(TZ)).date()


@dg.schedule(job=warehouse_job, cron_schedule="15 * * * *", execution_timezone=TZ)
def intraday_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every hour: today's partition with the data so far (marts and published data stay current)."""
    day = _today(context.scheduled_execution_time)
    return dg.RunRequest(run_key=None, partition_key=day.isoformat(), tags={"pulso/kind": "intraday"})


@dg.schedule(job=warehouse_job, cron_schedule="30 0 * * *", execution_timezone=TZ)
def nightly_finalize(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """After midnight AR: yesterday's partition, now complete, rebuilt one last time."""
    day = _today(context.scheduled_execution_time) - timedelta(days=1)
    return dg.RunRequest(
        run_key=f"finalize-{day.isoformat()}", partition_key=day.isoformat(), tags={"pulso/kind": "finalize"}
    )


def days_to_reopen(records: list[tuple[str, str | None, str]], published: set[str] | None = None) -> list[date]:
    """Days to rebuild from ``(run_id, partition_key, touched_days_csv)`` materialization records:
    days a run touched that are not among that run's own partitions, less the days ``published`` since
    (a run re-opens the dirty days it finds itself; the sensor only catches what no run published)."""
    own: dict[str, set[str]] = {}
    touched: dict[str, set[str]] = {}
    for run_id, partition, days_csv in records:
        if partition:
            own.setdefault(run_id, set()).add(partition)
        touched.setdefault(run_id, set()).update(d for d in (days_csv or "").split(",") if d)
    first = daily_partitions.start.date()
    out = set()
    for run_id, days in touched.items():
        for d in days - own.get(run_id, set()) - (published or set()):
            day = date.fromisoformat(d)
            if day >= first:
                out.add(day)
    return sorted(out)


@dg.sensor(job=marts_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def late_data_sensor(context: dg.SensorEvaluationContext):
    """Re-open only the days touched by late events or a restated billing month."""
    cursor = int(context.cursor) if context.cursor else 0
    records: list[tuple[str, str | None, str]] = []
    newest = cursor
    for key in RAW_WITH_LATE_DATA:
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), after_storage_id=cursor), limit=1000, ascending=True
        )
        for rec in result.records:
            newest = max(newest, rec.storage_id)
            mat = rec.asset_materialization
            if mat is None:
                continue
            value = mat.metadata.get("touched_days")
            text = value.value if value is not None else ""
            records.append((rec.run_id, mat.partition, str(text)))
    published: set[str] = set()
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("published_marts"), after_storage_id=cursor),
        limit=1000,
        ascending=True,
    )
    for rec in result.records:
        mat = rec.asset_materialization
        if mat is None:
            continue
        value = mat.metadata.get("reopened_days")
        published.update(d for d in str(value.value if value is not None else "").split(",") if d)
        if mat.partition:
            published.add(mat.partition)
    context.update_cursor(str(newest))
    days = days_to_reopen(records, published)
    if not days:
        return dg.SkipReason("no late data outside the runs that loaded it")
    start, end = days[0].isoformat(), days[-1].isoformat()
    return dg.RunRequest(
        run_key=f"late-{start}-{end}-{newest}",
        tags={
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": end,
            "pulso/kind": "late-data",
            "pulso/days": ",".join(d.isoformat() for d in days)[:1000],
        },
    )
