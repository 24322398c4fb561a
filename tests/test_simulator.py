"""The source simulator: determinism, contract formats, and that the injected incidents are in the data."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.lib.catalog import load_catalog
from pipelines.lib.simulator import Canaries, simulate, write_openmetrics
from pipelines.lib.simulator.fx import quote_days
from pipelines.lib.simulator.metrics import CODES, METRICS, _le
from pipelines.lib.simulator.world import traffic_shape
from pipelines.simulate import main as cli_main
from tests.fixtures import services

END = date(2026, 11, 27)  # a Friday; the window is Wed 25 .. Fri 27 November 2026
SEED = 7
CANARIES = Canaries(
    name="Zoltan Quibbleworth",
    email="zoltan.canary@example.org",
    phone="+54 9 11 0000-4242",
    dni="99888777",
    license_number="MN 424242",
)
TZ = ZoneInfo("America/Argentina/Buenos_Aires")
CONTRACT_LABELS = ["niche", "country", "region", "service", "route", "code", "le", "group"]
CUR_COLUMNS = [
    "identity_line_item_id",
    "identity_time_interval",
    "bill_billing_period_start_date",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_line_item_type",
    "line_item_product_code",
    "line_item_usage_type",
    "line_item_operation",
    "line_item_resource_id",
    "line_item_usage_amount",
    "line_item_currency_code",
    "line_item_unblended_cost",
    "savings_plan_savings_plan_effective_cost",
    "reservation_effective_cost",
    "resource_tags",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("tiny")
    result = simulate("tiny", out, end=END, seed=SEED, canaries=CANARIES)
    return out, result


@pytest.fixture(scope="module")
def con(tiny) -> duckdb.DuckDBPyConnection:
    out, _ = tiny
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    for metric in METRICS:
        c.execute(
            f"CREATE VIEW {metric} AS SELECT * FROM read_parquet('{out}/metrics/{metric}/*/part-0.parquet', hive_partitioning = true)"  # noqa: S608
        )  # noqa: S608 - SQL over the test's own files
    c.execute(
        f"CREATE VIEW ev AS SELECT * FROM read_json('{out}/events/*/*.jsonl.gz', format = 'newline_delimited', filename = true)"  # noqa: S608
    )  # noqa: S608 - SQL over the test's own files
    c.execute(f"CREATE VIEW cur AS SELECT * FROM read_parquet('{out}/billing/**/*.parquet', filename = true)")  # noqa: S608 - SQL over the test's own files
    return c


def _incidents(out: Path, kind: str) -> list[dict]:
    return [i for i in json.loads((out / "incidents.json").read_text()) if i["type"] == kind]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- determinism --------------------------------------------------------------------------------------------


def test_same_profile_seed_and_end_give_identical_bytes_through_the_cli(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    args = ["--profile", "tiny", "--out", str(again), "--end", END.isoformat(), "--seed", str(SEED), "--quiet"]
    for key in ("name", "email", "phone", "dni", "license_number"):
        args += ["--canary", f"{key}={getattr(CANARIES, key)}"]
    assert cli_main(args) == 0
    first, second = _tree_digest(out), _tree_digest(again)
    assert len(first) > 30
    assert first == second


def test_another_seed_gives_other_data(tiny, tmp_path):
    out, _ = tiny
    other = tmp_path / "other"
    simulate("tiny", other, end=END, seed=SEED + 1)
    a = pq.read_table(out / "metrics/active_sessions/date=2026-11-26/part-0.parquet")["value"].to_pylist()
    b = pq.read_table(other / "metrics/active_sessions/date=2026-11-26/part-0.parquet")["value"].to_pylist()
    assert len(a) == len(b) and a != b


def test_cli_rejects_a_bad_canary(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["--profile", "tiny", "--out", str(tmp_path), "--canary", "password=x"])
    assert "KEY=VALUE" in capsys.readouterr().err


# --- layout and contract columns ----------------------------------------------------------------------------


def test_profile_json_and_layout(tiny):
    out, result = tiny
    prof = json.loads((out / "profile.json").read_text())
    cat = load_catalog()
    assert prof["profile"] == "tiny" and prof["seed"] == SEED
    assert (prof["start"], prof["end"]) == ("2026-11-25", "2026-11-27")
    assert prof["niches"] == [n.id for n in cat.live_niches("now")]
    assert prof["countries"] == [c.id for c in cat.live_countries("now")]
    for metric in METRICS:
        days = sorted(p.name for p in (out / "metrics" / metric).iterdir())
        assert days == ["date=2026-11-25", "date=2026-11-26", "date=2026-11-27"]
    assert (out / "fx/ars_usd.csv").exists() and (out / "incidents.json").exists()


def test_metric_files_have_the_contract_columns_and_types(tiny):
    out, _ = tiny
    for metric in METRICS:
        schema = pq.read_schema(out / "metrics" / metric / "date=2026-11-26" / "part-0.parquet")
        assert schema.names == ["ts", *CONTRACT_LABELS, "value"], metric
        assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
        assert schema.field("value").type == pa.float64()
        assert all(schema.field(c).type == pa.string() for c in CONTRACT_LABELS)


def test_label_sets_follow_the_contract_and_catalog(con):
    cat = load_catalog()
    le = [_le(b) for b in cat.latency_buckets_seconds] + ["+Inf"]
    assert le[:3] == ["0.025", "0.05", "0.1"] and "1" in le
    got = [r[0] for r in con.execute("SELECT DISTINCT le FROM http_request_duration_seconds_bucket").fetchall()]
    assert sorted(got) == sorted(le)
    codes = {r[0] for r in con.execute("SELECT DISTINCT code FROM http_requests_total").fetchall()}
    assert codes == set(CODES)
    services = {(s.id, s.route) for s in cat.services}
    assert set(con.execute("SELECT DISTINCT service, route FROM http_requests_total").fetchall()) == services
    regions = {r.id for r in cat.country("AR").regions}
    assert {r[0] for r in con.execute("SELECT DISTINCT region FROM probe_success").fetchall()} == regions
    groups = {(g.id, "AR") for g in cat.autoscaling_groups}
    assert (
        set(con.execute('SELECT DISTINCT "group", country FROM autoscaling_group_desired_capacity').fetchall())
        == groups
    )
    # Labels a family does not have are NULL, e.g. db_connections_in_use has none at all.
    row = con.execute('SELECT count(*), count(niche), count("group"), count(le) FROM db_connections_in_use').fetchone()
    assert row == (3 * 1440, 0, 0, 0)


def test_an_ar_day_folder_holds_exactly_the_minutes_of_that_local_day(con):
    rows = con.execute("""
        SELECT date, min(ts), max(ts), count(DISTINCT ts) FROM http_requests_total GROUP BY date ORDER BY date
    """).fetchall()
    assert len(rows) == 3
    for day, lo, hi, n in rows:
        local_midnight = datetime(day.year, day.month, day.day, tzinfo=TZ)
        assert lo == local_midnight.astimezone(UTC)
        assert hi == (local_midnight + timedelta(days=1) - timedelta(minutes=1)).astimezone(UTC)
        assert lo.hour == 3 and n == 1440  # AR is UTC-3: the day starts at 03:00 UTC


# --- metric semantics ---------------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_inf_equals_the_requests_counter(con):
    bad = con.execute("""
        WITH b AS (
            SELECT niche, region, service, ts, TRY_CAST(replace(le, '+Inf', 'inf') AS DOUBLE) AS le_num, value
            FROM http_request_duration_seconds_bucket)
        SELECT count(*) FROM (
            SELECT value < lag(value) OVER (PARTITION BY niche, region, service, ts ORDER BY le_num) AS down FROM b)
        WHERE down
    """).fetchone()[0]
    assert bad == 0
    # Every request is observed once: the +Inf bucket moves exactly like the sum over status codes.
    mismatches = con.execute("""
        WITH inf AS (
            SELECT niche, region, service, ts, value - lag(value) OVER w AS d FROM http_request_duration_seconds_bucket
            WHERE le = '+Inf' WINDOW w AS (PARTITION BY niche, region, service ORDER BY ts)),
        req AS (
            SELECT niche, region, service, ts, sum(value) AS v FROM http_requests_total GROUP BY ALL),
        req_d AS (SELECT *, v - lag(v) OVER (PARTITION BY niche, region, service ORDER BY ts) AS d FROM req)
        SELECT count(*), count(*) FILTER (WHERE inf.d IS DISTINCT FROM req_d.d)
        FROM inf JOIN req_d USING (niche, region, service, ts) WHERE inf.d >= 0 AND req_d.d >= 0
    """).fetchone()
    assert mismatches[0] > 60_000 and mismatches[1] == 0


def test_counters_only_decrease_at_the_injected_restarts(tiny, con):
    out, result = tiny
    resets = json.loads((out / "profile.json").read_text())["counter_resets"]
    assert resets == result.counter_resets
    found = set()
    for metric, keys in (
        ("http_requests_total", "niche, region, service, code"),
        ("http_request_duration_seconds_bucket", "niche, region, service, le"),
        ("cache_hits_total", "niche, region"),
        ("cache_requests_total", "niche, region"),
    ):
        rows = con.execute(f"""
            SELECT * FROM (SELECT niche, region, {"service" if "service" in keys else "NULL"} AS service, ts,
                                  value < lag(value) OVER (PARTITION BY {keys} ORDER BY ts) AS down
                           FROM {metric}) WHERE down
        """).fetchall()  # noqa: S608 - SQL over the test's own files
        for niche, region, service, ts, _ in rows:
            found.add((metric, niche, region, service, ts.strftime("%Y-%m-%dT%H:%M:%SZ")))
    expected = set()
    for r in resets:
        for metric in r["metrics"]:
            expected.add(
                (metric, r["niche"], r["region"], r["service"] if metric.startswith("http") else None, r["ts"])
            )
    # Every decrease is a recorded restart (a restart of an idle series may show no decrease).
    assert found <= expected
    assert found, "tiny should contain at least one visible counter reset"


def test_gauges_stay_in_their_bounds(con):
    cat = load_catalog()
    pool = cat.section("capacity")["db_pool_size"]
    assert con.execute("SELECT min(value), max(value) FROM db_connections_in_use").fetchone()[1] <= pool
    for g in cat.autoscaling_groups:
        lo, hi = con.execute(f"""SELECT min(value), max(value) FROM autoscaling_group_in_service_instances
                             WHERE "group" = '{g.id}'""").fetchone()  # noqa: S608 - SQL over the test's own files
        assert g.min <= lo and hi <= g.max
    assert set(r[0] for r in con.execute("SELECT DISTINCT value FROM probe_success").fetchall()) == {0.0, 1.0}


def test_normal_latency_p95_is_under_target_and_cache_hit_near_93_percent(con):
    # Day 2026-11-25 in buenos_aires has no latency incident: p95 from the day's merged buckets.
    rows = con.execute("""
        SELECT le, max(value) - min(value) AS inc FROM http_request_duration_seconds_bucket
        WHERE date = '2026-11-25' AND region = 'buenos_aires' GROUP BY le
    """).fetchall()
    p95 = _p95_ms(dict(rows))
    target = load_catalog().target("latency_p95_ms", END)
    assert 40 < p95 < target
    hits, lookups = con.execute("""
        SELECT sum(h.value), sum(r.value) FROM
          (SELECT niche, region, max(value) - min(value) AS value FROM cache_hits_total
           WHERE date = '2026-11-26' AND region = 'buenos_aires' GROUP BY ALL) h
        JOIN (SELECT niche, region, max(value) - min(value) AS value FROM cache_requests_total
              WHERE date = '2026-11-26' AND region = 'buenos_aires' GROUP BY ALL) r USING (niche, region)
    """).fetchone()
    assert 0.91 < hits / lookups < 0.95


def _p95_ms(increments: dict[str, float]) -> float:
    """Prometheus histogram_quantile(0.95) over cumulative bucket increments (linear within a bucket)."""
    bounds = sorted((float(k.replace("+Inf", "inf")), v) for k, v in increments.items())
    total = bounds[-1][1]
    rank = 0.95 * total
    prev_b, prev_c = 0.0, 0.0
    for b, c in bounds:
        if c >= rank:
            if b == float("inf"):
                return prev_b * 1000
            return 1000 * (prev_b + (b - prev_b) * (rank - prev_c) / (c - prev_c))
        prev_b, prev_c = b, c
    raise AssertionError("unreachable")


def test_p95_helper_on_a_hand_computed_histogram():
    # 100 requests: 50 <= 0.1 s, 90 <= 0.2 s, 100 <= 0.3 s -> rank 95 is halfway into (0.2, 0.3] -> 250 ms.
    assert _p95_ms({"0.1": 50, "0.2": 90, "0.3": 100, "+Inf": 100}) == pytest.approx(250.0)


def test_daily_peaks_are_in_the_catalog_peak_hours(con):
    cat = load_catalog()
    for niche in cat.live_niches("now"):
        # Thursday 26th: a plain weekday; take the hour with the most sessions (summed over regions).
        rows = con.execute(f"""
            SELECT hour(ts AT TIME ZONE 'America/Argentina/Buenos_Aires') AS h, avg(v) FROM (
                SELECT ts, sum(value) AS v FROM active_sessions WHERE date = '2026-11-26' AND niche = '{niche.id}'
                GROUP BY ts) GROUP BY h ORDER BY h
        """).fetchall()  # noqa: S608 - SQL over the test's own files
        by_hour = dict(rows)
        peak_hour = max(by_hour, key=by_hour.get)
        in_peak = [h for h in by_hour if any(a <= h < b for a, b in niche.peak_hours)]
        assert peak_hour in in_peak, (niche.id, peak_hour, niche.peak_hours)
        night = np.mean([by_hour[h] for h in range(2, 6)])
        assert by_hour[peak_hour] > 10 * night


def test_shape_function_peaks_inside_each_window():
    hours = np.arange(0, 24, 1 / 60)
    shape = traffic_shape(hours, ((9, 12), (17, 20)))
    assert shape[int(10.5 * 60)] > 0.95 and shape[int(18.5 * 60)] > 0.95
    assert shape[int(14.5 * 60)] < 0.4 and shape[int(3 * 60)] < 0.06


# --- incidents ----------------------------------------------------------------------------------------------


def test_tiny_injects_all_six_incident_types_inside_the_window(tiny):
    out, _ = tiny
    incidents = json.loads((out / "incidents.json").read_text())
    assert Counter(i["type"] for i in incidents) == Counter(
        {
            "outage": 1,
            "latency_regression": 1,
            "cost_spike": 1,
            "payment_rejection_surge": 1,
            "traffic_spike": 1,
            "cache_degradation": 1,
        }
    )
    lo, hi = datetime(2026, 11, 25, 3, tzinfo=UTC), datetime(2026, 11, 28, 3, tzinfo=UTC)
    for inc in incidents:
        assert set(inc) >= {"id", "type", "start", "end", "niche", "country", "region", "service", "expected_effect"}
        assert lo <= _ts(inc["start"]) < _ts(inc["end"]) <= hi


def test_outage_probes_are_down_exactly_during_it_and_return_5xx(tiny, con):
    out, _ = tiny
    (inc,) = _incidents(out, "outage")
    start, end = _ts(inc["start"]), _ts(inc["end"])
    minutes = int((end - start).total_seconds() // 60)
    assert 20 <= minutes <= 40 and inc["expected_effect"]["recovery_minutes"] == minutes
    down = con.execute(f"""
        SELECT region, count(*), min(ts), max(ts) FROM probe_success
        WHERE niche = '{inc["niche"]}' AND value = 0 AND ts >= '{inc["start"]}' AND ts < '{inc["end"]}' GROUP BY region
    """).fetchall()  # noqa: S608 - SQL over the test's own files
    regions = {r.id for r in load_catalog().country(inc["country"]).regions}
    assert {r[0] for r in down} == regions
    for _, n, lo, hi in down:
        assert n == minutes and lo == start and hi == end - timedelta(minutes=1)
    # Outside incidents a probe only ever fails for an isolated minute (below incidents.min_failed_minutes).
    runs = con.execute(f"""
        WITH p AS (SELECT niche, region, ts, value,
                          lag(value) OVER w AS prev, lead(value) OVER w AS next
                   FROM probe_success WINDOW w AS (PARTITION BY niche, region ORDER BY ts))
        SELECT count(*) FROM p WHERE value = 0 AND (prev = 0 OR next = 0)
          AND NOT (niche = '{inc["niche"]}' AND ts >= '{inc["start"]}' AND ts < '{inc["end"]}')
    """).fetchone()[0]  # noqa: S608 - SQL over the test's own files
    assert runs == 0
    share_5xx = con.execute(f"""
        WITH d AS (SELECT code, max(value) - min(value) AS inc FROM http_requests_total
                   WHERE niche = '{inc["niche"]}' AND ts >= '{inc["start"]}'::TIMESTAMPTZ - INTERVAL 1 MINUTE
                     AND ts < '{inc["end"]}' GROUP BY niche, region, service, code)
        SELECT sum(inc) FILTER (WHERE code LIKE '5%') / sum(inc) FROM d
    """).fetchone()[0]  # noqa: S608 - SQL over the test's own files
    assert share_5xx >= inc["expected_effect"]["http_5xx_share_min"]
    normal = con.execute("""
        WITH d AS (SELECT code, max(value) - min(value) AS inc FROM http_requests_total
                   WHERE date = '2026-11-26' AND niche = 'psychology' GROUP BY niche, region, service, code)
        SELECT sum(inc) FILTER (WHERE code LIKE '5%') / sum(inc) FROM d
    """).fetchone()[0]
    assert 0.0002 < normal < 0.0012  # ~0.05% 5xx on a normal day


def test_latency_regression_pushes_p95_well_over_target(tiny, con):
    out, _ = tiny
    (inc,) = _incidents(out, "latency_regression")
    rows = con.execute(f"""
        SELECT le, sum(inc) FROM (
            SELECT le, max(value) - min(value) AS inc FROM http_request_duration_seconds_bucket
            WHERE region = '{inc["region"]}' AND ts >= '{inc["start"]}' AND ts < '{inc["end"]}'
            GROUP BY niche, service, le) GROUP BY le
    """).fetchall()  # noqa: S608 - SQL over the test's own files
    assert _p95_ms(dict(rows)) > inc["expected_effect"]["latency_p95_ms_min"]


def test_cache_degradation_drops_the_hit_ratio_to_about_60_percent(tiny, con):
    out, _ = tiny
    (inc,) = _incidents(out, "cache_degradation")

    def ratio(where: str) -> float:
        return con.execute(f"""
            SELECT sum(h) / sum(r) FROM (
                SELECT (SELECT max(value) - min(value) FROM cache_hits_total c WHERE c.niche = x.niche AND c.region = x.region AND {where}) h,
                       (SELECT max(value) - min(value) FROM cache_requests_total c WHERE c.niche = x.niche AND c.region = x.region AND {where}) r
                FROM (SELECT DISTINCT niche, region FROM probe_success WHERE region = '{inc["region"]}') x)
        """).fetchone()[0]  # noqa: S608 - SQL over the test's own files

    during = ratio(f"ts >= '{inc['start']}'::TIMESTAMPTZ - INTERVAL 1 MINUTE AND ts < '{inc['end']}'")
    assert abs(during - inc["expected_effect"]["cache_hit_ratio"]) < 0.03


def test_traffic_spike_multiplies_sessions_and_scale_out_is_slow(tiny, con):
    out, _ = tiny
    (inc,) = _incidents(out, "traffic_spike")
    start = _ts(inc["start"])
    before, during = con.execute(f"""
        SELECT sum(value) FILTER (WHERE ts = '{start - timedelta(minutes=1)}'),
               sum(value) FILTER (WHERE ts = '{start + timedelta(minutes=5)}')
        FROM active_sessions WHERE niche = '{inc["niche"]}'
    """).fetchone()  # noqa: S608 - SQL over the test's own files
    assert 3.5 < during / before < 6.5
    cap_group = load_catalog().section("capacity")["capacity_group"]
    rows = con.execute(f"""
        SELECT ts, d.value, i.value FROM autoscaling_group_desired_capacity d
        JOIN autoscaling_group_in_service_instances i USING (ts, "group", country)
        WHERE "group" = '{cap_group}' AND ts >= '{start}' AND ts < '{start + timedelta(minutes=30)}' ORDER BY ts
    """).fetchall()  # noqa: S608 - SQL over the test's own files
    rise = next(k for k, (_, d, i) in enumerate(rows) if d > i)
    ready = next(k for k in range(rise, len(rows)) if rows[k][2] >= rows[rise][1])
    assert ready - rise >= inc["expected_effect"]["scaling_time_minutes_min"] > 5


def test_normal_scale_out_reaches_capacity_within_three_minutes(con):
    rows = con.execute("""
        SELECT "group", ts, d.value, i.value FROM autoscaling_group_desired_capacity d
        JOIN autoscaling_group_in_service_instances i USING (ts, "group", country)
        WHERE d.date = '2026-11-26' ORDER BY "group", ts
    """).fetchall()
    lags = []
    for k in range(1, len(rows)):
        g, _, d, _ = rows[k]
        if rows[k - 1][0] == g and d > rows[k - 1][2]:  # desired rose at k
            ready = next(j for j in range(k, len(rows)) if rows[j][3] >= d)
            lags.append(ready - k)
    assert lags and max(lags) <= 3 and min(lags) >= 1


def test_payment_rejection_surge_shows_high_risk_rejections(tiny, con):
    out, _ = tiny
    (inc,) = _incidents(out, "payment_rejection_surge")

    def attempts(lo: str, hi: str) -> tuple[int, int]:
        return con.execute(f"""
            WITH p AS (SELECT payload.payment.id AS id, arg_max(payload.payment.status_detail, payload.payment.date_last_updated) AS detail,
                              min(payload.payment.date_created) AS created
                       FROM ev WHERE type = 'payment.updated' AND payload.provider = 'mercadopago'
                       GROUP BY 1)
            SELECT count(*), count(*) FILTER (WHERE detail = 'cc_rejected_high_risk') FROM p
            WHERE created >= '{lo}' AND created < '{hi}'
        """).fetchone()  # noqa: S608 - SQL over the test's own files

    n, high_risk = attempts(inc["start"], inc["end"])
    assert n > 30 and high_risk / n > 0.15
    n0, high_risk0 = attempts("2026-11-25T03:00:00Z", "2026-11-26T03:00:00Z")
    assert high_risk0 / n0 < 0.01


def test_cost_spike_multiplies_the_service_ec2_cost(tiny, con):
    out, _ = tiny
    (inc,) = _incidents(out, "cost_spike")
    manifest = json.loads(next((out / "billing").rglob("*Manifest.json")).read_text())
    files = ", ".join(f"'{out / 'billing' / f}'" for f in manifest["dataFiles"])
    ec2 = dict(
        con.execute(f"""
        SELECT (line_item_usage_start_date AT TIME ZONE 'America/Argentina/Buenos_Aires')::DATE AS day,
               sum(line_item_unblended_cost) FROM read_parquet([{files}])
        WHERE line_item_product_code = 'AmazonEC2' AND line_item_line_item_type IN ('Usage', 'SavingsPlanCoveredUsage')
          AND resource_tags['user_niche'] = '{inc["niche"]}' AND resource_tags['user_service'] = '{inc["service"]}'
        GROUP BY day
    """).fetchall()  # noqa: S608
    )  # noqa: S608 - SQL over the test's own files
    spike_day = _ts(inc["start"]).astimezone(TZ).date()
    assert ec2[spike_day] / ec2[spike_day - timedelta(days=1)] > 3.0


# --- billing ------------------------------------------------------------------------------------------------


def test_cur_files_are_listed_by_their_manifest_and_the_restated_month_replaces(tiny):
    out, result = tiny
    manifests = sorted((out / "billing").rglob("*Manifest.json"))
    assert [m.relative_to(out / "billing").as_posix() for m in manifests] == [
        "cur/barberpro-cur2/metadata/BILLING_PERIOD=2026-11/barberpro-cur2-Manifest.json"
    ]
    manifest = json.loads(manifests[0].read_text())
    assert manifest["billingPeriod"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    listed = manifest["dataFiles"]
    assert all((out / "billing" / f).exists() for f in listed)
    all_files = sorted(p.relative_to(out / "billing").as_posix() for p in (out / "billing").rglob("*.parquet"))
    restated = result.billing["restated"]
    # Two deliveries exist for the restated month; the manifest names only the current one.
    assert sorted(listed + restated["superseded_data_files"]) == all_files
    assert manifest["executionId"] != restated["superseded_execution_id"]
    assert manifest["totalRecords"] == pq.read_metadata(out / "billing" / listed[0]).num_rows
    new = pq.read_table(out / "billing" / listed[0]).to_pylist()
    old = pq.read_table(out / "billing" / restated["superseded_data_files"][0]).to_pylist()
    assert len(new) == len(old)
    assert sum(r["line_item_unblended_cost"] for r in new) > sum(r["line_item_unblended_cost"] for r in old)


def test_before_restatement_writes_only_the_first_delivery(tmp_path):
    from pipelines.lib.simulator import get_profile
    from pipelines.lib.simulator.profiles import Profile

    one_day = Profile(**{**get_profile("tiny").__dict__, "name": "one-day", "days": 1})
    result = simulate(one_day, tmp_path, end=END, seed=SEED, restate_billing=False)
    files = sorted(p.name for p in (tmp_path / "billing").rglob("*.parquet"))
    assert files == ["barberpro-cur2-00001.snappy.parquet"] and result.billing["restated"] is None


def test_cur_columns_types_tags_and_amortization(tiny):
    out, result = tiny
    manifest = json.loads(next((out / "billing").rglob("*Manifest.json")).read_text())
    table = pq.read_table(out / "billing" / manifest["dataFiles"][0])
    assert set(CUR_COLUMNS) <= set(table.schema.names)
    for money in ("line_item_unblended_cost", "savings_plan_savings_plan_effective_cost", "reservation_effective_cost"):
        assert table.schema.field(money).type == pa.decimal128(18, 6)
    assert table.schema.field("resource_tags").type == pa.map_(pa.string(), pa.string())
    rows = table.to_pylist()
    kinds = Counter(r["line_item_line_item_type"] for r in rows)
    assert {
        "Usage",
        "Tax",
        "Credit",
        "Refund",
        "Fee",
        "SavingsPlanCoveredUsage",
        "SavingsPlanRecurringFee",
        "SavingsPlanNegation",
    } <= set(kinds)
    assert all(isinstance(r["line_item_unblended_cost"], Decimal) for r in rows)
    tags = load_catalog().section("cost_allocation")["tags"]
    niche_values = Counter(dict(r["resource_tags"] or []).get(tags["niche"]) for r in rows)
    assert niche_values[None] > 0 and niche_values["shared"] > 0  # untagged and shared cost exist
    assert {"barber", "psychology"} <= set(niche_values)
    # The Savings Plan nets out: negation cancels covered on-demand, the fee equals the effective cost.
    covered = [r for r in rows if r["line_item_line_item_type"] == "SavingsPlanCoveredUsage"]
    negation = sum(
        r["line_item_unblended_cost"] for r in rows if r["line_item_line_item_type"] == "SavingsPlanNegation"
    )
    fee = sum(r["line_item_unblended_cost"] for r in rows if r["line_item_line_item_type"] == "SavingsPlanRecurringFee")
    assert negation == -sum(r["line_item_unblended_cost"] for r in covered)
    assert fee == sum(r["savings_plan_savings_plan_effective_cost"] for r in covered)


def test_daily_amortized_cost_is_near_the_target_and_matches_the_ground_truth(tiny, con):
    out, result = tiny
    first = result.billing["restated"]["superseded_data_files"][0]
    rows = con.execute(f"""
        SELECT (line_item_usage_start_date AT TIME ZONE 'America/Argentina/Buenos_Aires')::DATE AS day,
               sum(CASE WHEN line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN savings_plan_savings_plan_effective_cost
                        WHEN line_item_line_item_type IN ('SavingsPlanRecurringFee', 'SavingsPlanNegation', 'RIFee') THEN 0
                        ELSE line_item_unblended_cost END)
        FROM read_parquet('{out / "billing" / first}') GROUP BY day ORDER BY day
    """).fetchall()  # noqa: S608 - SQL over the test's own files
    truth = result.billing["daily_amortized_usd_first_delivery"]
    assert {d.isoformat(): str(v) for d, v in rows} == truth
    target = load_catalog().target("infra_cost_usd", END)
    # 26th: a weekday without the cost spike (the refund after the outage lands that day).
    assert 0.8 * target < float(truth["2026-11-26"]) < 1.05 * target


# --- events -------------------------------------------------------------------------------------------------


def _event_lines(out: Path) -> list[tuple[str, dict]]:
    lines = []
    for path in sorted((out / "events").rglob("*.jsonl.gz")):
        assert re.fullmatch(r"part-\d{4}\.jsonl\.gz", path.name)
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines += [(path.parent.name, json.loads(line)) for line in fh]
    return lines


def test_events_parse_with_the_envelope_and_include_late_and_duplicate_events(tiny):
    out, result = tiny
    lines = _event_lines(out)
    assert len(lines) == result.event_stats["lines"]
    for _, ev in lines[:2000]:
        assert set(ev) == {"event_id", "type", "occurred_at", "niche", "country", "region", "user", "payload"}
        assert set(ev["user"]) == {"id", "name", "email", "phone", "dni"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ev["occurred_at"])
    ids = Counter(ev["event_id"] for _, ev in lines)
    dups = sum(1 for n in ids.values() if n > 1)
    assert dups == result.event_stats["duplicates"] and 0.002 < dups / len(ids) < 0.01
    late = 0
    for folder, ev in lines:
        arrival_day = date.fromisoformat(folder.removeprefix("date="))
        occurred = _ts(ev["occurred_at"])
        assert arrival_day >= occurred.date()  # nothing arrives before it happens
        # Normal delivery takes seconds, so a later folder means late unless it happened in the day's last minute.
        single = ids[ev["event_id"]] == 1
        late += single and arrival_day > occurred.date() and occurred.hour * 60 + occurred.minute < 1439
    # Late events that were also delivered twice are not counted here (~0.5% of them).
    assert result.event_stats["late"] - 3 <= late <= result.event_stats["late"]
    assert late > 0.002 * len(lines)
    types = Counter(ev["type"] for _, ev in lines)
    for kind in (
        "session.started",
        "user.signed_up",
        "booking.created",
        "booking.confirmed",
        "booking.cancelled",
        "booking.completed",
        "professional.onboarded",
        "payment.updated",
    ):
        assert types[kind] > 0, kind


def test_payments_follow_the_mercadopago_object_with_a_realistic_status_mix(tiny):
    out, _ = tiny
    cat = load_catalog()
    latest: dict[int, dict] = {}
    for _, ev in _event_lines(out):
        if ev["type"] != "payment.updated":
            continue
        pay = ev["payload"]["payment"]
        assert ev["payload"]["provider"] in cat.section("payments")["providers"]
        assert pay["status"] in cat.section("payments")["statuses"]
        assert pay["currency_id"] == "ARS" and pay["transaction_amount"] > 0
        assert set(pay["payer"]) >= {"email", "first_name", "identification"}
        assert pay["payer"]["identification"]["type"] == "DNI"
        if ev["payload"]["provider"] == "mercadopago" and (
            pay["id"] not in latest or pay["date_last_updated"] > latest[pay["id"]]["date_last_updated"]
        ):
            latest[pay["id"]] = pay
    final = [p for p in latest.values() if p["status"] in cat.section("payments")["final_statuses"]]
    success = [p for p in final if p["status"] in cat.section("payments")["success_statuses"]]
    # Day 25 has no rejection surge: MercadoPago success close to 97.5%.
    day25 = [p for p in final if p["date_created"] < "2026-11-26T03:00"]
    ok25 = [p for p in day25 if p["status"] in cat.section("payments")["success_statuses"]]
    assert 0.96 < len(ok25) / len(day25) < 0.995
    assert len(success) < len(final)
    assert any(p["status"] == "refunded" and p["transaction_amount_refunded"] == p["transaction_amount"] for p in final)
    assert any(p["status"] == "approved" and p["date_approved"] for p in final)


def test_revenue_is_about_five_times_the_infra_cost(tiny):
    out, result = tiny
    rates = dict(line.split(",") for line in (out / "fx/ars_usd.csv").read_text().splitlines()[1:])
    latest: dict[int, tuple[str, dict]] = {}
    for _, ev in _event_lines(out):
        if ev["type"] == "payment.updated":
            pay = ev["payload"]["payment"]
            if pay["id"] not in latest or pay["date_last_updated"] > latest[pay["id"]][1]["date_last_updated"]:
                latest[pay["id"]] = (ev["occurred_at"], pay)
    day = "2026-11-25"
    revenue_ars = sum(
        p["transaction_amount"]
        for _, p in latest.values()
        if p["status"] == "approved" and _ts(p["date_created"]).astimezone(TZ).date().isoformat() == day
    )
    cost = float(result.billing["daily_amortized_usd_first_delivery"][day])
    assert 3.5 < revenue_ars / float(rates[day]) / cost < 7.0


def test_people_have_personal_data_and_the_canaries_are_planted(tiny):
    out, _ = tiny
    text = "\n".join(json.dumps(ev, ensure_ascii=False) for _, ev in _event_lines(out))
    for value in (CANARIES.name.split()[0], CANARIES.email, CANARIES.phone, CANARIES.dni, CANARIES.license_number):
        assert value in text, value
    sample = next(ev for _, ev in _event_lines(out) if ev["type"] == "session.started")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z.]+", sample["user"]["email"])
    assert re.fullmatch(r"\d{8}", sample["user"]["dni"]) and sample["user"]["phone"].startswith("+54 9 ")
    onboarded = [
        ev for _, ev in _event_lines(out) if ev["type"] == "professional.onboarded" and ev["niche"] == "psychology"
    ]
    assert onboarded and all(ev["payload"]["license_verified"] and ev["payload"]["license_number"] for ev in onboarded)


# --- FX -----------------------------------------------------------------------------------------------------


def test_fx_has_business_days_only_with_plausible_rates(tiny):
    out, _ = tiny
    lines = (out / "fx/ars_usd.csv").read_text().splitlines()
    assert lines[0] == "date,ars_per_usd"
    days = [date.fromisoformat(line.split(",")[0]) for line in lines[1:]]
    rates = [float(line.split(",")[1]) for line in lines[1:]]
    assert days == sorted(days) and days[-1] == END
    assert all(d.weekday() < 5 for d in days)
    assert date(2026, 11, 23) not in days  # Día de la Soberanía Nacional (holiday Monday)
    assert all(1000 < r < 1500 for r in rates)
    assert quote_days(date(2026, 11, 21), date(2026, 11, 24)) == {date(2026, 11, 24)}


# --- OpenMetrics ------------------------------------------------------------------------------------------


@services.skip_unless("promtool")
def test_promtool_accepts_the_openmetrics_of_a_few_hours(tiny, tmp_path):
    out, _ = tiny
    om = tmp_path / "tiny.om"
    n = write_openmetrics(out, om, "2026-11-25T13:00:00Z", "2026-11-25T16:00:00Z")
    text = om.read_text()
    assert text.endswith("# EOF\n")
    assert "# TYPE http_request_duration_seconds histogram" in text and "# TYPE http_requests counter" in text
    assert re.search(r'^http_requests_total\{niche="barber",.*code="503"\} \d+ \d{10}$', text, re.M)
    assert n == 3 * 60 * (2 * 4 * (3 * 11 + 3 * 4 + 4) + 2 * 2 + 1)
    proc = subprocess.run(
        [services.find("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(om), str(tmp_path / "tsdb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    samples = sum(int(line.split()[4]) for line in proc.stdout.splitlines() if re.match(r"^[0-9A-Z]{26}\s", line))
    assert samples == n


def test_openmetrics_rejects_an_empty_range_and_an_unknown_source(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        write_openmetrics(tmp_path, tmp_path / "x.om", "2026-11-25T16:00:00Z", "2026-11-25T13:00:00Z")
    with pytest.raises(FileNotFoundError, match="neither"):
        write_openmetrics(tmp_path / "nope", tmp_path / "x.om", "2026-11-25T13:00:00Z", "2026-11-25T16:00:00Z")


# --- small pure helpers, checked by hand --------------------------------------------------------------------


def test_bucket_bounds_are_formatted_like_prometheus():
    assert [_le(b) for b in (0.025, 0.1, 1.0, 2.5, 5.0)] == ["0.025", "0.1", "1", "2.5", "5"]


def test_amortized_cost_rule_of_the_contract():
    from pipelines.lib.simulator.billing import amortized

    def row(kind: str) -> dict:
        return {
            "line_item_line_item_type": kind,
            "line_item_unblended_cost": Decimal("10.000000"),
            "savings_plan_savings_plan_effective_cost": Decimal("7.200000"),
            "reservation_effective_cost": Decimal("6.500000"),
        }

    got = {
        k: amortized(row(k))
        for k in (
            "Usage",
            "Tax",
            "Credit",
            "SavingsPlanCoveredUsage",
            "DiscountedUsage",
            "SavingsPlanRecurringFee",
            "SavingsPlanNegation",
            "RIFee",
        )
    }
    assert got == {
        "Usage": Decimal("10"),
        "Tax": Decimal("10"),
        "Credit": Decimal("10"),
        "SavingsPlanCoveredUsage": Decimal("7.2"),
        "DiscountedUsage": Decimal("6.5"),
        "SavingsPlanRecurringFee": 0,
        "SavingsPlanNegation": 0,
        "RIFee": 0,
    }


def test_default_end_is_yesterday_in_argentina():
    from pipelines.lib.simulator import yesterday_in

    # 02:00 UTC on the 28th is still 23:00 on the 27th in Buenos Aires, so "yesterday" is the 26th.
    assert yesterday_in("America/Argentina/Buenos_Aires", datetime(2026, 11, 28, 2, tzinfo=UTC)) == date(2026, 11, 26)
    assert yesterday_in("America/Argentina/Buenos_Aires", datetime(2026, 11, 28, 3, tzinfo=UTC)) == date(2026, 11, 27)


def test_weekday_and_holiday_follow_each_segments_local_date():
    """Bogotá's clock is 2 h behind Argentina's: the AR day's first two hours are still the local previous
    day there, so a Colombian Monday holiday lasts until 02:00 AR on Tuesday (and not into Tuesday's
    afternoon), while an Argentine segment's factor is the AR day's all day."""
    import holidays as holiday_calendars

    from pipelines.lib.simulator.profiles import get_profile
    from pipelines.lib.simulator.world import World

    catalog = load_catalog()
    world = World(catalog, get_profile("m6-year"), date(2026, 11, 27), seed=1)
    monday = next(
        d
        for d in sorted(holiday_calendars.Colombia(years=2026))
        if d.weekday() == 0 and world.start < d < world.end and not world.is_holiday("AR", d + timedelta(days=1))
    )
    tuesday = monday + timedelta(days=1)
    bogota = next(s for s in world.segments if s.country == "CO")
    factors = world.day_factors(bogota, tuesday)
    assert world.day_factor(bogota, monday) < world.day_factor(bogota, tuesday)  # the holiday rests
    assert (factors[:120] == world.day_factor(bogota, monday)).all()  # 00:00-02:00 AR = 22:00-24:00 Monday
    assert (factors[120:] == world.day_factor(bogota, tuesday)).all()
    buenos_aires = next(s for s in world.segments if s.country == "AR")
    assert (world.day_factors(buenos_aires, tuesday) == world.day_factor(buenos_aires, tuesday)).all()
