"""Alert automation (picked up by ``load_from_defs_folder``).

- ``operational_alerts`` schedule: every 15 minutes, today's ``ops_5m`` partition (only the new 5-minute
  buckets are read from the metrics source), the operational detector on it plus the intraday
  MercadoPago success from the events source, then ``alert_history``.
- ``daily_cost_alerts`` schedule: every day at 10:00 Argentina time, after the day's bill has landed
  and the nightly finalize published it, the daily detector (cost, payments, bookings).
- ``published_data_alert_sensor``: whenever the warehouse publishes a new version (late data, a
  restated bill), the daily detector runs on it at once.
An alert that could not be delivered stays in ``alerts.outbox`` and is retried on every run.
"""

from zoneinfo import ZoneInfo

import dagster as dg

from pipelines.defs.alerts.assets import (
    ALERT_ASSETS,
    alert_history,
    daily_anomalies,
    kpi_forecasts,
    operational_anomalies,
    ops_5m,
)
from pipelines.defs.common.resources import published_root
from pipelines.defs.warehouse.partitions import daily_partitions
from pipelines.lib.catalog import load_catalog
from pipelines.lib.published import NotPublishedError, read_manifest

TZ = load_catalog().timezone

operational_alerts_job = dg.define_asset_job(
    "operational_alerts_job",
    selection=dg.AssetSelection.assets(ops_5m, operational_anomalies, alert_history),
    partitions_def=daily_partitions,
    description="Append the new 5-minute buckets (today's partition), detect operational anomalies, post to "
    "Slack, publish alert_history.",
)
daily_alerts_job = dg.define_asset_job(
    "daily_alerts_job",
    selection=dg.AssetSelection.assets(daily_anomalies, alert_history, kpi_forecasts),
    description="Detect daily cost/payment/booking anomalies, post to Slack, publish alert_history.",
)


@dg.schedule(
    job=operational_alerts_job,
    cron_schedule="*/15 * * * *",
    execution_timezone=TZ,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def operational_alerts(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every 15 minutes: today's (Argentina) ``ops_5m`` partition, then the operational detector."""
    day = context.scheduled_execution_time.astimezone(ZoneInfo(TZ)).date()
    return dg.RunRequest(run_key=None, partition_key=day.isoformat())


daily_cost_alerts = dg.ScheduleDefinition(
    name="daily_cost_alerts",
    job=daily_alerts_job,
    cron_schedule="0 10 * * *",
    execution_timezone=TZ,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


def published_version() -> int | None:
    """The published store's manifest version (None before the first publish)."""
    try:
        return read_manifest(published_root()).version
    except NotPublishedError:
        return None


@dg.sensor(job=daily_alerts_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING)
def published_data_alert_sensor(context: dg.SensorEvaluationContext):
    """Run the daily detector when the warehouse has published something new."""
    version = published_version()
    if version is None:
        return dg.SkipReason("nothing published yet")
    if context.cursor and int(context.cursor) >= version:
        return dg.SkipReason(f"published version {version} already checked")
    context.update_cursor(str(version))
    return dg.RunRequest(run_key=f"published-{version}")


@dg.definitions
def alerts() -> dg.Definitions:
    """Alert assets, jobs, schedules and sensor."""
    return dg.Definitions(
        assets=ALERT_ASSETS,
        jobs=[operational_alerts_job, daily_alerts_job],
        schedules=[operational_alerts, daily_cost_alerts],
        sensors=[published_data_alert_sensor],
    )
