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

from alerts.detection.daily import published_daily_series
from alerts.detection.monitor import Policy, collapse_related, load_policy, scan, to_anomaly
from alerts.detection.operational import Series, build_series, load_operational
from alerts.forecast.forecast import ForecastInputError, capacity_crossings, forecast_month_end, kpi_target_crossings
from alerts.slack.delivery import ENV_VAR, SlackConfigError, SlackWebhookSender
from alerts.slack.notifier import AlertStore
from pipelines.defs.common.resources import published_root
from pipelines.defs.sources.resources import MetricsSourceResource
from pipelines.lib.published import NotPublishedError, PublishedReader, publish
from pipelines.lib.warehouse import ar_day

HISTORY_DAYS = 29  # the detector's 28 days of history plus today


def _now() -> datetime:
    return datetime.now(UTC)


def _notify(con, series: list[Series], policy: Policy, now: datetime, judge_from: datetime | None = None) -> dict:
    """Detect, update the alert state (dedup, cooldown, resolve) and deliver what is due."""
    findings, evaluated = scan(series, policy, judge_from)
    active = collapse_related([to_anomaly(f, policy) for f in findings if f.ongoing])
    store = AlertStore(con, cooldown=policy.cooldown)
    summary = store.process(active, evaluated, now)
    meta: dict = {"series": len(series), "episodes_in_window": len(findings), "active": len(active),
                  "fired": summary.fired, "escalated": summary.escalated, "resolved": summary.resolved,
                  "suppressed_by_cooldown": summary.suppressed, "deduplicated": summary.deduplicated}
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


@dg.asset(group_name="alerts", kinds={"duckdb", "slack"}, pool="duckdb")
def operational_anomalies(context: dg.AssetExecutionContext, duckdb: DuckDBResource,
                          metrics_source: MetricsSourceResource) -> dg.MaterializeResult:
    """Anomalies on 5-minute traffic, 5xx ratio, p95 latency, cache hit ratio and concurrent users
    (total, per niche, per region), announced in Slack and kept in ``alerts.history``."""
    policy = load_policy()
    now = _now()
    today = ar_day(now)
    days = [today - timedelta(days=k) for k in range(HISTORY_DAYS - 1, -1, -1)]
    frames = load_operational(metrics_source.reader(), days, policy.step_minutes)
    series = build_series(frames, policy.step_minutes) if not frames["counts"].is_empty() else []
    with duckdb.get_connection() as con:
        # Only yesterday and today are judged (the rest is history): an episode that began yesterday
        # keeps its start, and a run costs two days of detection, not a month.
        meta = _notify(con, series, policy, now, judge_from=now - timedelta(days=1))
    context.log.info("operational anomalies: %s", {k: v for k, v in meta.items() if k != "delivery"})
    return dg.MaterializeResult(metadata={**meta, "first_day": days[0].isoformat(), "last_day": today.isoformat()})


@dg.asset(group_name="alerts", kinds={"duckdb", "slack"}, pool="duckdb", deps=[dg.AssetKey("published_marts")])
def daily_anomalies(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Anomalies on daily cost (total, niche, niche x service, with AWS-style impact), MercadoPago
    success and bookings, from the published store, announced in Slack."""
    policy = load_policy()
    try:
        series = published_daily_series(PublishedReader(published_root(), tables=["cost_daily", "kpi_daily"]).snapshot())
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
    return dg.MaterializeResult(metadata={"dagster/row_count": rows, "firing_now": firing, "days": len(days),
                                          "manifest_version": version, "webhook_configured": bool(os.environ.get(ENV_VAR))})


ALERT_ASSETS = [operational_anomalies, daily_anomalies, alert_history]


@dg.asset(group_name="alerts", kinds={"python"}, deps=[dg.AssetKey("published_marts")])
def kpi_forecasts(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Where the trend leads, from published ``kpi_daily`` totals: month-end infra cost with a 90 %
    interval, the days peak concurrent users pass each plan capacity, and the day each KPI's trend
    crosses its target (shown in the run metadata)."""
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
        meta |= {"month_end_cost_usd": str(f.total), "month_end_cost_lower_usd": str(f.lower),
                 "month_end_cost_upper_usd": str(f.upper), "month": f.month}
    except (ForecastInputError, IndexError):
        meta["month_end_cost_usd"] = "not enough history"
    users = totals.filter(pl.col("kpi") == "peak_concurrent_users").drop_nulls("value").sort("day")
    try:
        for phase, c in capacity_crossings(users["day"].to_list(), users["value"].to_list()).items():
            meta[f"capacity_{phase}_{int(c.threshold)}_users"] = c.day.isoformat() if c.day else c.status
    except (ForecastInputError, IndexError):
        meta["capacity"] = "not enough history"
    crossings = kpi_target_crossings(kpis)
    lines = ["| kpi | status now | crosses on | projected | target then |", "|---|---|---|---|---|"]
    for r in crossings.iter_rows(named=True):
        lines.append(f"| {r['kpi']} | {r['status_now']} | {r['crossing_day'] or 'not at the current trend'} | "
                     f"{'' if r['projected_value'] is None else round(r['projected_value'], 4)} | "
                     f"{'' if r['target_then'] is None else r['target_then']} |")
    meta["target_crossings"] = dg.MetadataValue.md("\n".join(lines))
    context.log.info("forecasts: %s", {k: v for k, v in meta.items() if k != "target_crossings"})
    return dg.MaterializeResult(metadata=meta)


ALERT_ASSETS = [*ALERT_ASSETS, kpi_forecasts]
