"""Alerts wired into Dagster: definitions, and a daily cost spike from a published store to Slack and back
into the published ``alert_history`` -- plus the evaluation's matching and report writing."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from dagster_duckdb import DuckDBResource

from alerts.detection.detector import Episode
from alerts.detection.monitor import Finding, collapse_related, load_policy
from alerts.detection.operational import Series
from alerts.evaluate import Incident, match, render, write_section
from alerts.slack.messages import Anomaly
from pipelines.lib.published import PublishedReader, publish
from tests.test_slack import Receiver

FIRST = date(2026, 9, 1)
DAYS = [FIRST + timedelta(days=k) for k in range(60)]
BASE = {("barber", "web"): "500", ("barber", "api"): "300", ("psychology", "web"): "200", ("psychology", "api"): "100"}


def test_definitions_load_alert_assets_schedules_and_sensor():
    from pipelines.definitions import defs

    d = defs()
    dg.Definitions.validate_loadable(d)
    keys = {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}
    assert {"operational_anomalies", "daily_anomalies", "alert_history"} <= keys
    schedules = {s.name: s for s in d.schedules}
    assert schedules["operational_alerts"].cron_schedule == "*/15 * * * *"
    assert schedules["daily_cost_alerts"].cron_schedule == "0 10 * * *"
    assert schedules["daily_cost_alerts"].execution_timezone == "America/Argentina/Buenos_Aires"
    assert "published_data_alert_sensor" in {s.name for s in d.sensors}


@pytest.fixture
def published_cost(tmp_path, monkeypatch):
    """60 days of cost in 4 (niche, service) cells with 1 % noise; the last day psychology/web is 4x."""
    rng = random.Random(3)
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE cost_daily (day DATE, niche VARCHAR, service VARCHAR, charge_category VARCHAR, "
        "allocation VARCHAR, cost_usd DECIMAL(18,6))"
    )
    rows = []
    for d in DAYS:
        for (niche, service), base in BASE.items():
            cost = float(base) * (1 + 0.01 * rng.uniform(-1, 1))
            if d == DAYS[-1] and (niche, service) == ("psychology", "web"):
                cost = 800.0
            rows.append((d, niche, service, "usage", "tagged", f"{cost:.6f}"))
    con.executemany("INSERT INTO cost_daily VALUES (?, ?, ?, ?, ?, ?)", rows)
    root = tmp_path / "published"
    publish(con, {"cost_daily": "cost_daily"}, DAYS, root=root)
    last_day_total = con.execute("SELECT sum(cost_usd) FROM cost_daily WHERE day = ?", [DAYS[-1]]).fetchone()[0]
    monkeypatch.setenv("PULSO_PUBLISHED", str(root))
    return root, last_day_total


def test_daily_cost_spike_reaches_slack_once_and_is_published(tmp_path, published_cost, monkeypatch):
    from pipelines.defs.alerts.assets import alert_history, daily_anomalies

    root, last_total = published_cost
    receiver = Receiver()
    try:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
        resources = {"duckdb": DuckDBResource(database=str(tmp_path / "warehouse.duckdb"))}
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([daily_anomalies, alert_history], resources=resources, instance=instance)
        assert result.success
        meta = result.asset_materializations_for_node("daily_anomalies")[0].metadata
        # total, niche=psychology and psychology/web all break; one message (the total) names the others.
        assert meta["active"].value == 1 and meta["fired"].value == 1 and meta["delivered"].value == 1
        assert len(receiver.requests) == 1
        message = receiver.requests[0][1]
        header = message["blocks"][0]["text"]["text"]
        assert header.endswith("anomaly: Infrastructure cost up — all of BarberPro")
        impact = message["blocks"][2]["text"]["text"]
        assert f"actual spend ${last_total:,.2f}" in impact
        contributors = message["blocks"][3]["text"]["text"]
        first_line = contributors.split("\n")[1]
        assert first_line.startswith("• niche *psychology*: +$") or first_line.startswith("• service *web*: +$")
        assert "secret-token" not in json.dumps(message)

        history = (
            PublishedReader(root)
            .snapshot()
            .execute("SELECT day, kpi, state, actual, message_ts FROM alert_history")
            .fetchall()
        )
        assert len(history) == 1
        day, kpi, state, actual, message_ts = history[0]
        assert (day, kpi, state) == (DAYS[-1], "infra_cost_usd", "firing")
        assert actual == pytest.approx(float(last_total), abs=1e-6)
        assert message_ts is not None

        # The next scheduled run sees the same anomaly: nothing new is posted.
        again = dg.materialize([daily_anomalies, alert_history], resources=resources, instance=instance)
        assert again.asset_materializations_for_node("daily_anomalies")[0].metadata["deduplicated"].value == 1
        assert len(receiver.requests) == 1
    finally:
        receiver.down()


def test_without_a_webhook_alerts_wait_in_the_outbox(tmp_path, published_cost, monkeypatch):
    from pipelines.defs.alerts.assets import daily_anomalies

    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    result = dg.materialize(
        [daily_anomalies], resources={"duckdb": DuckDBResource(database=str(tmp_path / "w.duckdb"))}
    )
    meta = result.asset_materializations_for_node("daily_anomalies")[0].metadata
    assert meta["pending"].value == 1
    assert meta["delivery"].value == "SLACK_WEBHOOK_URL not set: messages kept in alerts.outbox"


def _anomaly(key: str, scope: dict[str, str], started: datetime, metric: str = "requests") -> Anomaly:
    return Anomaly(
        key,
        metric,
        {"en": "Traffic", "es": "Tráfico"},
        "count",
        scope,
        "warning",
        "up",
        started,
        started,
        1.0,
        1.0,
        1.0,
        1.0,
        0.9,
    )


def test_collapse_keeps_the_broadest_related_anomaly():
    t = datetime(2026, 10, 31, 18, 30, tzinfo=UTC)
    total = _anomaly("requests|all", {"niche": "all", "region": "all"}, t + timedelta(minutes=5))
    niche = _anomaly("requests|psy", {"niche": "psychology", "region": "all"}, t)
    other_metric = _anomaly("latency|psy", {"niche": "psychology", "region": "all"}, t, metric="latency_p95_ms")
    later = _anomaly("requests|barber", {"niche": "barber", "region": "all"}, t + timedelta(hours=3))
    assert [a.key for a in collapse_related([total, niche, other_metric, later])] == [
        "requests|all",
        "latency|psy",
        "requests|barber",
    ]


def _finding(metric: str, scope: dict[str, str], start: datetime) -> Finding:
    series = Series(metric, scope, [start], np.array([1.0]))
    return Finding(series, Episode(start, start, None, 0.9, "up", 2.0, 1.0, 0.5, 1.5, start), ongoing=False)


def test_matching_recall_delay_precision_and_false_alerts_per_week(tmp_path):
    t0 = datetime(2026, 9, 15, 13, 37, tzinfo=UTC)
    incidents = [
        Incident(
            "inc-001",
            "outage",
            t0,
            t0 + timedelta(minutes=29),
            {"niche": "psychology", "country": "AR", "region": None, "service": None},
        ),
        Incident(
            "inc-002",
            "latency_regression",
            t0 + timedelta(days=5),
            t0 + timedelta(days=5, hours=3),
            {"niche": None, "country": "AR", "region": "rosario", "service": None},
        ),
    ]
    findings = [
        # Bucket 13:35-13:40 holds the start: known at 13:40, 3 minutes after the outage began.
        _finding("error_ratio", {"niche": "psychology", "country": "all", "region": "all"}, t0 - timedelta(minutes=2)),
        # Wrong niche: cannot reveal the outage -> a false alert.
        _finding("error_ratio", {"niche": "barber", "country": "all", "region": "all"}, t0),
        # The latency regression seen 20 minutes late in its own region.
        _finding(
            "latency_p95_ms", {"niche": "all", "country": "AR", "region": "rosario"}, t0 + timedelta(days=5, minutes=15)
        ),
    ]
    report = match(findings, incidents, timedelta(minutes=5), weeks=2.0)
    outage, latency = report["per_type"]["outage"], report["per_type"]["latency_regression"]
    assert (outage["detected"], outage["delays"], outage["within_goal"]) == (1, [timedelta(minutes=3)], 1)
    assert (latency["detected"], latency["delays"], latency["within_goal"]) == (1, [timedelta(minutes=20)], 0)
    assert report["per_metric"]["error_ratio"] == {
        "alerts": 2,
        "true": 1,
        "false": 1,
        "precision": 0.5,
        "false_per_week": 0.5,
    }
    assert report["false_alerts"] == [
        {
            "key": "error_ratio|niche=barber|country=all|region=all",
            "start": "2026-09-15T13:37:00+00:00",
            "direction": "up",
            "actual": 2.0,
            "expected": 1.0,
            "minutes": 0.0,
        }
    ]
    meta = {
        "profile": "demo",
        "days": 90,
        "incidents": 2,
        "seed": 7,
        "series": 3,
        "seconds": 1.0,
        "first_day": "2026-08-30",
        "last_day": "2026-11-27",
    }
    text = render(report, meta)
    assert text.startswith("### demo\n")
    assert "| outage | 1 | 1 | 100% | 3 min | 1/1 (goal 15 min) |" in text
    assert "| latency_regression | 1 | 1 | 100% | 20 min | 0/1 (goal 15 min) |" in text
    assert "| outage | error_ratio | 1/1 | 3 min |" in text
    bench = tmp_path / "benchmarks.md"
    bench.write_text(
        "# Pulso benchmarks\n\n## Warehouse\nkeep me\n\n## Anomaly detection and forecasts\nold\n\n"
        "## Exporter\nkeep me too\n",
        encoding="utf-8",
    )
    write_section(bench, text)
    out = bench.read_text(encoding="utf-8")
    assert "old" not in out and out.count("keep me") == 2 and "| outage |" in out
    assert out.index("## Warehouse") < out.index("## Anomaly detection") < out.index("## Exporter")
    # Another run (clean, no incidents) adds its own subsection; re-running demo replaces only demo's.
    clean = render(
        match([findings[1]], [], timedelta(minutes=5), weeks=2.0),
        {**meta, "incidents": 0, "clean": True, "seconds": 5.0},
    )
    assert clean.startswith("### demo, clean (no incidents)\n") and "| error_ratio | 1 | 0 | — | 0.50 |" in clean
    write_section(bench, clean)
    write_section(bench, text.replace("evaluated in 1 s", "evaluated in 2 s"))
    out = bench.read_text(encoding="utf-8")
    assert out.count("### demo\n") == 1 and out.count("### demo, clean (no incidents)\n") == 1
    assert "evaluated in 2 s" in out and "evaluated in 1 s" not in out
    assert out.index("### demo\n") < out.index("### demo, clean") < out.index("Goals: ") < out.index("## Exporter")


def test_policy_reads_names_and_units_from_the_catalog(tmp_path):
    policy = load_policy()
    assert policy.metrics["latency_p95_ms"].unit == "ms"
    assert policy.metrics["latency_p95_ms"].name["en"] == "Response time p95"
    assert policy.metrics["infra_cost_usd"].daily and policy.metrics["infra_cost_usd"].config.holidays_country is None
    bad = tmp_path / "policy.yaml"
    bad.write_text("metrics:\n  x:\n    kpi: no_such_kpi\n", encoding="utf-8")
    with pytest.raises(ValueError, match="policy.yaml: metric 'x': unknown KPI 'no_such_kpi'"):
        load_policy(Path(bad))


def test_a_series_confined_to_one_country_gets_that_countrys_calendar():
    from alerts.detection.monitor import series_config

    policy = load_policy()
    requests, payments = policy.metrics["requests"], policy.metrics["mercadopago_success_ratio"]
    ar = "America/Argentina/Buenos_Aires"
    assert requests.config.timezone == ar and requests.config.holidays_country == "AR"
    chile = series_config(requests, {"niche": "all", "country": "CL", "region": "santiago"})
    assert (chile.timezone, chile.holidays_country) == ("America/Santiago", "CL")
    assert chile.z_threshold == requests.config.z_threshold and chile.min_rel_change == requests.config.min_rel_change
    colombia = series_config(policy.metrics["mercadopago_success_intraday"], {"country": "CO"})
    assert (colombia.timezone, colombia.holidays_country) == ("America/Bogota", "CO")
    # Mixed scopes keep Argentina's calendar; a daily series keeps Argentina's clock (its points are AR days).
    assert series_config(requests, {"niche": "barber", "country": "all", "region": "all"}) is requests.config
    daily = series_config(payments, {"country": "UY"})
    assert (daily.timezone, daily.holidays_country) == (ar, "UY")
    # A metric that ignores holidays keeps ignoring them; an unknown country keeps the default.
    assert series_config(policy.metrics["infra_cost_usd"], {"country": "BR"}).holidays_country is None
    assert series_config(requests, {"country": "XX"}) is requests.config
    # `scan` applies it: Santiago's traffic across Chile's DST switch and Fiestas Patrias alerts nothing
    # as the Santiago series, and dozens of times were it judged on Argentina's calendar.
    from alerts.detection.monitor import scan
    from tests.test_detection import local_traffic

    ts, values = local_traffic(56, "America/Santiago", "CL", date(2026, 8, 3))
    region = Series("requests", {"niche": "all", "country": "CL", "region": "santiago"}, ts, values)
    assert scan([region], policy)[0] == []
    assert (
        len(scan([Series("requests", {"niche": "all", "country": "all", "region": "all"}, ts, values)], policy)[0]) > 50
    )


# --- series from the sources and the published store ------------------------------------------------


def _write_metric(root: Path, metric: str, day: date, rows: list[dict]) -> None:
    import polars as pl

    folder = root / "metrics" / metric / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    labels = ("niche", "country", "region", "service", "route", "code", "le", "group")
    frame = pl.DataFrame(
        [{**{k: None for k in labels}, **r} for r in rows],
        schema={"ts": pl.Datetime("us", "UTC"), **{k: pl.String for k in labels}, "value": pl.Float64},
    )
    frame.write_parquet(folder / "part-0.parquet")


def test_operational_series_merge_counts_buckets_and_sessions(tmp_path):
    from alerts.detection.operational import build_series, load_operational
    from pipelines.lib.ingest.metrics import FileMetricsReader
    from pipelines.lib.storage import LocalStorage

    day = date(2026, 11, 2)
    start = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # local midnight
    seg = {"niche": "barber", "country": "AR", "region": "cordoba"}
    req, hist, sess = [], [], []
    for m in range(60):
        ts = start + timedelta(minutes=m)
        ok = 30 * (m + 1) if m < 40 else 30 * (m - 39)  # the 200 counter resets at minute 40
        req += [
            {**seg, "service": "web", "route": "/", "code": "200", "ts": ts, "value": float(ok)},
            {**seg, "service": "web", "route": "/", "code": "500", "ts": ts, "value": float(m + 1)},
        ]
        for le, per_min in (("0.1", 20), ("0.2", 30), ("+Inf", 31)):
            hist.append({**seg, "service": "web", "route": "/", "le": le, "ts": ts, "value": float(per_min * (m + 1))})
        sess.append({**seg, "ts": ts, "value": float(40 + m % 5)})
    _write_metric(tmp_path, "http_requests_total", day, req)
    _write_metric(tmp_path, "http_request_duration_seconds_bucket", day, hist)
    _write_metric(tmp_path, "active_sessions", day, sess)
    reader = FileMetricsReader(LocalStorage(tmp_path / "metrics"))
    frames = load_operational(reader, [day], step_minutes=5)
    series = {s.key: s for s in build_series(frames, 5)}
    total = "|niche=all|country=all|region=all"
    requests = series["requests" + total]
    # Bucket 0 lacks its first increase (no earlier sample); bucket 1 is minutes 5-9: 5 x (30 + 1).
    assert requests.ts[1] == start + timedelta(minutes=5)
    assert requests.values[1] == 155.0
    # Bucket 8 (minutes 40-44) holds the reset: 30 (reset rule: the value itself) + 4 x 30 + 5 errors.
    assert requests.values[8] == 30 + 4 * 30 + 5
    assert series["error_ratio" + total].values[1] == pytest.approx(5 / 155)
    # p95 of bucket 1: rank 0.95 x 155 = 147.25 between le 0.1 (100) and le 0.2 (150): 0.1 + 0.1 x 47.25 / 50.
    assert series["latency_p95_ms" + total].values[1] == pytest.approx(194.5)
    assert series["concurrent_users" + total].values[1] == 44.0
    assert "requests|niche=barber|country=all|region=all" in series
    assert "requests|niche=all|country=AR|region=cordoba" in series


def test_published_daily_series_reads_cost_and_kpis(tmp_path):
    from alerts.detection.daily import published_daily_series

    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE cost_daily AS SELECT CAST(DATE '2026-11-01' + INTERVAL (i) DAY AS DATE) AS day, 'barber' AS niche, "
        "'web' AS service, 'usage' AS charge_category, 'tagged' AS allocation, "
        "CAST(100.25 AS DECIMAL(18,6)) AS cost_usd FROM range(3) t(i)"
    )
    con.execute(
        "CREATE TABLE kpi_daily AS SELECT CAST(DATE '2026-11-01' + INTERVAL (i) DAY AS DATE) AS day, "
        "'mercadopago_success_ratio' AS kpi, 'all' AS niche, 'all' AS country, 'all' AS region, "
        "CASE WHEN i = 1 THEN NULL ELSE 0.97 END AS value FROM range(3) t(i)"
    )
    series = {s.key: s for s in published_daily_series(con)}
    assert series["infra_cost_usd|niche=all"].values.tolist() == [100.25, 100.25, 100.25]
    assert series["infra_cost_usd|niche=barber|service=web"].ts[0] == datetime(2026, 11, 1, 3, tzinfo=UTC)
    ratio = series["mercadopago_success_ratio|niche=all"].values
    assert ratio[0] == 0.97 and np.isnan(ratio[1]) and ratio[2] == 0.97  # no data stays no data


def test_kpi_forecasts_asset_month_end_cost_and_capacity(tmp_path, monkeypatch):
    import math

    from pipelines.defs.alerts.assets import kpi_forecasts

    as_of = date(2026, 11, 10)
    days = [as_of - timedelta(days=k) for k in range(40, 0, -1)]
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE kpi_daily (day DATE, kpi VARCHAR, niche VARCHAR, country VARCHAR, region VARCHAR, value DOUBLE)"
    )
    rows = [(d, "infra_cost_usd", "all", "all", "all", 2000.0) for d in days]
    rows += [(d, "peak_concurrent_users", "all", "all", "all", 1000 * math.exp(0.01 * (d - as_of).days)) for d in days]
    con.executemany("INSERT INTO kpi_daily VALUES (?, ?, ?, ?, ?, ?)", rows)
    root = tmp_path / "published"
    publish(con, {"kpi_daily": "kpi_daily"}, days, root=root)
    monkeypatch.setenv("PULSO_PUBLISHED", str(root))
    meta = dg.materialize([kpi_forecasts]).asset_materializations_for_node("kpi_forecasts")[0].metadata
    # 9 days of November at $2,000 + 21 forecast days at $2,000; a flat bill has no spread.
    assert meta["month_end_cost_usd"].value == "60000.000000"
    assert meta["month_end_cost_lower_usd"].value == meta["month_end_cost_upper_usd"].value == "60000.000000"
    # 1000 users growing 1 %/day: 1,400 after ceil(ln 1.4 / 0.01) = 34 days, 5,000 after 161, 15,000 after 271.
    assert meta["capacity_now_1400_users"].value == (as_of + timedelta(days=34)).isoformat()
    assert meta["capacity_month_3_5000_users"].value == (as_of + timedelta(days=161)).isoformat()
    assert meta["capacity_month_6_15000_users"].value == (as_of + timedelta(days=271)).isoformat()
    assert "| peak_concurrent_users | breach |" in meta["target_crossings"].value
    # The coming week of exact 1 %/day growth: 1000 x e^(0.01 h), an exact fit leaves a zero-width interval.
    week = meta["peak_users_next_7_days"].value.splitlines()
    assert week[2] == f"| {as_of} | 1,000 | 1,000 – 1,000 |" and len(week) == 9
    assert week[8] == f"| {as_of + timedelta(days=6)} | 1,062 | 1,062 – 1,062 |"  # 1000 x e^0.06 = 1061.8
