"""Alert assets: detect anomalies, keep the alert state/outbox/history in the warehouse, post to Slack,
publish ``alert_history``.

The logic lives in ``alerts.detection`` / ``alerts.slack``; these assets pick the data, call it and
report metadata. Every DuckDB write is in the ``duckdb`` pool (one writer). Slack's webhook comes only
from ``SLACK_WEBHOOK_URL``; without it messages wait in ``alerts.outbox`` and go out on a later run.
"""

import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from alerts.detection import ops_store
from alerts.detection.daily import published_daily_series
from alerts.detection.monitor import Policy, collapse_related, load_policy, scan, to_anomaly
from alerts.detection.operational import Series, build_series
from alerts.detection.payments import IntradayConfig, build_payment_series, load_intraday
from alerts.forecast.forecast import (
    ForecastInputError,
    capacity_crossings,
    forecast_days,
    forecast_month_end,
    kpi_target_crossings,
)
from alerts.slack.delivery import ENV_VAR, SlackConfigError, SlackWebhookSender
from alerts.slack.notifier import AlertStore
from pipelines.defs.common.resources import published_root
from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from pipelines.defs.warehouse.partitions import daily_partitions
from pipelines.lib.published import NotPublishedError, PublishedReader, publish
from pipelines.lib.storage import SourceError
from pipelines.lib.warehouse import ar_day, day_bounds_utc

HISTORY_DAYS = 29  # the detector's 28 days of history plus today
RETENTION_DAYS = 35  # staging.ops_5m keeps a little more than the history


def _now() -> datetime:
    return datetime.now(UTC)


def _notify(con, series: list[Series], policy: Policy, now: datetime, judge_from: datetime | None = None) -> dict:
    """Detect, update the alert state (dedup, cooldown, resolve) and deliver what is due."""
    findings, evaluated = scan(series, policy, judge_from)
    active = collapse_related([to_anomaly(f, policy) for f in findings if f.ongoing])
    store = AlertStore(con, cooldown=policy.cooldown)
    summary = store.process(active, evaluated, now)
    meta: dict = {
        "series": len(series),
        "episodes_in_window": len(findings),
        "active": len(active),
        "fired": summary.fired,
        "escalated": summary.escalated,
        "resolved": summary.resolved,
        "suppressed_by_cooldown": summary.suppressed,
        "deduplicated": summary.deduplicated,
    }
    try:
        sender = SlackWebhookSender()
    except SlackConfigError:
        sender = None
    if sender is None:
        meta["delivery"] = f"{ENV_VAR} not set: messages kept in alerts.outbox"
        meta["pending"] = len(store.pending())
    else:
        delivery = store.deliver(sender, now)
        meta |= {"delivered": delivery.delivered, "delivery_failures": delivery.failed, "pending": delivery.pending}
    return meta


@dg.asset(group_name="alerts", kinds={"duckdb"}, pool="duckdb", partitions_def=daily_partitions)
def ops_5m(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, metrics_source: MetricsSourceResource
) -> dg.MaterializeResult:
    """5-minute operational counters (``staging.ops_5m``, ``ops_5m_latency``, ``ops_5m_peaks``) for an
    Argentina day, appended incrementally: only the buckets settled since the last run are read from the
    metrics source (``alerts.detection.ops_store``). Today's partition also fills any of the detector's
    history days not stored yet (first run, a gap) and drops days older than the retention."""
    policy = load_policy()
    now = _now()
    day = date.fromisoformat(context.partition_key)
    today = ar_day(now)
    days = [day - timedelta(days=k) for k in range(HISTORY_DAYS - 1, -1, -1)] if day == today else [day]
    with duckdb.get_connection() as con:
        result = ops_store.update(con, metrics_source.reader(), days, now, policy.step_minutes)
        pruned = ops_store.prune(con, today - timedelta(days=RETENTION_DAYS)) if day == today else 0
        through = ops_store.stored_through(con, day)
        rows = con.execute(f"SELECT count(*) FROM {ops_store.COUNTS} WHERE day = ?", [day]).fetchall()[0][0]  # noqa: S608
    meta = {
        "new_buckets": result.buckets,
        "new_rows": result.rows,
        "days_updated": len(result.days),
        "read_from": result.read_from.isoformat() if result.read_from else "nothing new",
        "read_to": result.read_to.isoformat() if result.read_to else "nothing new",
        "stored_through": through.isoformat() if through else "nothing stored",
        "dagster/row_count": rows,
        "pruned_rows": pruned,
        "source": metrics_source.describe(),
    }
    context.log.info("ops_5m %s: %s", day, meta)
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name="alerts", kinds={"duckdb", "slack"}, pool="duckdb", deps=[ops_5m])
def operational_anomalies(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, events_source: SourceResource
) -> dg.MaterializeResult:
    """Anomalies on 5-minute traffic, 5xx ratio, p95 latency, cache hit ratio and concurrent users
    (total, per niche, per region; history from ``staging.ops_5m``) and on the intraday MercadoPago
    success (15-minute decisions from the events source), announced in Slack and kept in ``alerts.history``."""
    policy = load_policy()
    now = _now()
    today = ar_day(now)
    days = [today - timedelta(days=k) for k in range(HISTORY_DAYS - 1, -1, -1)]
    payments = IntradayConfig.from_policy()
    try:
        counts = load_intraday(events_source.storage(), days, now, payments)
    except SourceError as exc:  # the operational series still run; the reason is in the metadata
        context.log.warning("intraday payments unavailable: %s", exc)
        counts = None
    with duckdb.get_connection() as con:
        frames = ops_store.read_frames(con, day_bounds_utc(days[0])[0], now)
        series = build_series(frames, policy.step_minutes) if not frames["counts"].is_empty() else []
        series += build_payment_series(counts, payments) if counts is not None else []
        # Only yesterday and today are judged (the rest is history): an episode that began yesterday
        # keeps its start, and a run costs two days of detection, not a month.
        meta = _notify(con, series, policy, now, judge_from=now - timedelta(days=1))
    context.log.info("operational anomalies: %s", {k: v for k, v in meta.items() if k != "delivery"})
    return dg.MaterializeResult(
        metadata={
            **meta,
            "first_day": days[0].isoformat(),
            "last_day": today.isoformat(),
            "ops_5m_buckets": frames["counts"]["bucket"].n_unique(),
            "payment_decisions": int(counts["decided"].sum()) if counts is not None and not counts.is_empty() else 0,
        }
    )


@dg.asset(group_name="alerts", kinds={"duckdb", "slack"}, pool="duckdb", deps=[dg.AssetKey("published_marts")])
def daily_anomalies(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Anomalies on daily cost (total, niche, niche x service, with AWS-style impact), MercadoPago
    success and bookings, from the published store, announced in Slack."""
    policy = load_policy()
    try:
        series = published_daily_series(
            PublishedReader(published_root(), tables=["cost_daily", "kpi_daily"]).snapshot()
        )
    except NotPublishedError:
        series = []
    with duckdb.get_connection() as con:
        meta = _notify(con, series, policy, _now())
    context.log.info("daily anomalies: %s", {k: v for k, v in meta.items() if k != "delivery"})
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name="alerts", kinds={"parquet"}, pool="duckdb", deps=[operational_anomalies, daily_anomalies])
def alert_history(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Every announced alert (firing/resolved, actual vs expected, top contributors, Slack delivery
    time) published as ``alert_history`` for the executive view (contract section 3)."""
    with duckdb.get_connection() as con:
        AlertStore(con)  # creates the tables on a fresh warehouse
        days: list[date] = [r[0] for r in con.execute("SELECT DISTINCT day FROM alerts.alert_history").fetchall()]
        if days:
            manifest = publish(con, {"alert_history": "alerts.alert_history"}, days, root=published_root())
            version = manifest.version
        else:
            version = None
        rows = con.execute("SELECT count(*) FROM alerts.alert_history").fetchall()[0][0]
        firing = con.execute("SELECT count(*) FROM alerts.alert_history WHERE state = 'firing'").fetchall()[0][0]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "firing_now": firing,
            "days": len(days),
            "manifest_version": version,
            "webhook_configured": bool(os.environ.get(ENV_VAR)),
        }
    )


ALERT_ASSETS = [ops_5m, operational_anomalies, daily_anomalies, alert_history]


@dg.asset(group_name="alerts", kinds={"python"}, deps=[dg.AssetKey("published_marts")])
def kpi_forecasts(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Where the trend leads, from published ``kpi_daily`` totals: month-end infra cost with a 90 %
    interval, the coming week's peak concurrent users, the days they pass each plan capacity, and the
    day each KPI's trend crosses its target (shown in the run metadata)."""
    try:
        con = PublishedReader(published_root(), tables=["kpi_daily"]).snapshot()
    except NotPublishedError:
        return dg.MaterializeResult(metadata={"status": "nothing published yet"})
    kpis = pl.from_arrow(con.sql("SELECT day, kpi, niche, country, region, value FROM kpi_daily").to_arrow_table())
    totals = kpis.filter((pl.col("niche") == "all") & (pl.col("country") == "all") & (pl.col("region") == "all"))
    meta: dict = {}
    cost = totals.filter(pl.col("kpi") == "infra_cost_usd").drop_nulls("value").sort("day")
    try:
        f = forecast_month_end(cost["day"].to_list(), cost["value"].to_list(), cost["day"][-1] + timedelta(days=1))
        meta |= {
            "month_end_cost_usd": str(f.total),
            "month_end_cost_lower_usd": str(f.lower),
            "month_end_cost_upper_usd": str(f.upper),
            "month": f.month,
        }
    except (ForecastInputError, IndexError):
        meta["month_end_cost_usd"] = "not enough history"
    users = totals.filter(pl.col("kpi") == "peak_concurrent_users").drop_nulls("value").sort("day")
    try:
        for phase, c in capacity_crossings(users["day"].to_list(), users["value"].to_list()).items():
            meta[f"capacity_{phase}_{int(c.threshold)}_users"] = c.day.isoformat() if c.day else c.status
    except (ForecastInputError, IndexError):
        meta["capacity"] = "not enough history"
    try:  # the coming week's peak concurrent users (Argentine holidays, calibrated 90 % interval)
        week = forecast_days(users["day"].to_list(), users["value"].to_list(), 7)
        meta["peak_users_next_7_days"] = dg.MetadataValue.md(
            "\n".join(
                ["| day | forecast | 90 % interval |", "|---|---|---|"]
                + [
                    f"| {r['day']} | {r['forecast']:,.0f} | {r['lower']:,.0f} – {r['upper']:,.0f} |"
                    for r in week.iter_rows(named=True)
                ]
            )
        )
    except (ForecastInputError, IndexError):
        meta["peak_users_next_7_days"] = "not enough history"
    crossings = kpi_target_crossings(kpis)
    lines = ["| kpi | status now | crosses on | projected | target then |", "|---|---|---|---|---|"]
    for r in crossings.iter_rows(named=True):
        lines.append(
            f"| {r['kpi']} | {r['status_now']} | {r['crossing_day'] or 'not at the current trend'} | "
            f"{'' if r['projected_value'] is None else round(r['projected_value'], 4)} | "
            f"{'' if r['target_then'] is None else r['target_then']} |"
        )
    meta["target_crossings"] = dg.MetadataValue.md("\n".join(lines))
    context.log.info("forecasts: %s", {k: v for k, v in meta.items() if k != "target_crossings"})
    return dg.MaterializeResult(metadata=meta)


ALERT_ASSETS = [*ALERT_ASSETS, kpi_forecasts]
