"""The 5-minute operational table (alerts/detection/ops_store.py) on a tiny hand-computed fixture, and its
Dagster asset materialized twice through ``dg.materialize``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from alerts.detection import ops_store
from alerts.detection.operational import build_series, load_operational
from pipelines.lib.ingest.metrics import FileMetricsReader
from pipelines.lib.storage import LocalStorage

DAY = date(2026, 11, 2)
START = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # Argentine midnight
A = {"niche": "barber", "country": "AR", "region": "cordoba"}
B = {"niche": "psychology", "country": "AR", "region": "rosario"}
LABELS = ("niche", "country", "region", "service", "route", "code", "le", "group")
TOTAL = "|niche=all|country=all|region=all"


def _write(root: Path, metric: str, rows: list[dict]) -> None:
    folder = root / "metrics" / metric / f"date={DAY.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        [{**{k: None for k in LABELS}, **r} for r in rows],
        schema={"ts": pl.Datetime("us", "UTC"), **{k: pl.String for k in LABELS}, "value": pl.Float64},
    ).write_parquet(folder / "part-0.parquet")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """20 minutes (4 buckets) of two cells.

    A (barber/cordoba, web): 200s +10/min (the counter resets at minute 12: the reset rule keeps +10),
    500s +1/min; latency le 0.1 +10/min, 0.5 +11, +Inf +11; sessions 30 + m % 5.
    B (psychology/rosario, api): 200s +20/min; le 0.1 +2/min, 0.5 +19, +Inf +20; sessions 50 - m % 5.
    """
    req, hist, sess = [], [], []
    for m in range(20):
        ts = START + timedelta(minutes=m)
        ok_a = 10 * (m + 1) if m < 12 else 10 * (m - 11)
        req += [
            {**A, "service": "web", "route": "/", "code": "200", "ts": ts, "value": float(ok_a)},
            {**A, "service": "web", "route": "/", "code": "500", "ts": ts, "value": float(m + 1)},
            {**B, "service": "api", "route": "/api", "code": "200", "ts": ts, "value": float(20 * (m + 1))},
        ]
        for cell, service, per_min in ((A, "web", (10, 11, 11)), (B, "api", (2, 19, 20))):
            for le, n in zip(("0.1", "0.5", "+Inf"), per_min, strict=True):
                hist.append({**cell, "service": service, "route": "/", "le": le, "ts": ts, "value": float(n * (m + 1))})
        sess += [{**A, "ts": ts, "value": float(30 + m % 5)}, {**B, "ts": ts, "value": float(50 - m % 5)}]
    _write(tmp_path, "http_requests_total", req)
    _write(tmp_path, "http_request_duration_seconds_bucket", hist)
    _write(tmp_path, "active_sessions", sess)
    return tmp_path / "metrics"


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {
        t: con.execute(f"SELECT * EXCLUDE (day) FROM {t} ORDER BY ALL").fetchall()  # noqa: S608
        for t in (ops_store.COUNTS, ops_store.LATENCY, ops_store.PEAKS)
    }


def test_counts_merged_p95_and_peak_sessions_by_hand(source):
    con = duckdb.connect(":memory:")
    result = ops_store.update(con, FileMetricsReader(LocalStorage(source)), [DAY], START + timedelta(minutes=22))
    assert result.buckets == 4 and result.days == (DAY,)
    rows = {
        (r[0].astimezone(UTC), r[2]): r[4:]
        for r in con.execute(
            f"SELECT bucket, niche, region, country, requests, errors, cache_hits, cache_requests, sessions_peak "  # noqa: S608
            f"FROM {ops_store.COUNTS}"
        ).fetchall()
    }
    b1 = START + timedelta(minutes=5)
    # Bucket 0 has no increase for its first minute (no earlier sample): 4 x (10 + 1) and 4 x 20.
    assert rows[(START, "cordoba")] == (44.0, 4.0, 0.0, 0.0, 34.0)
    assert rows[(START, "rosario")] == (80.0, 0.0, 0.0, 0.0, 50.0)
    assert rows[(b1, "cordoba")] == (55.0, 5.0, 0.0, 0.0, 34.0)
    # Bucket 2 holds A's reset (minute 12): still +10 a minute.
    assert rows[(START + timedelta(minutes=10), "cordoba")] == (55.0, 5.0, 0.0, 0.0, 34.0)
    # Peak concurrent users: the highest per-minute *sum* (A + B = 80 every minute), not 34 + 50.
    peaks = {
        (r[0].astimezone(UTC), r[1], r[3]): r[4]
        for r in con.execute(
            f"SELECT bucket, niche, country, region, concurrent_users FROM {ops_store.PEAKS}"  # noqa: S608
        ).fetchall()
    }  # noqa: S608
    assert peaks[(b1, "all", "all")] == 80.0
    assert peaks[(b1, "barber", "all")] == 34.0 and peaks[(b1, "all", "rosario")] == 50.0

    series = {s.key: s for s in build_series(ops_store.read_frames(con, START, START + timedelta(days=1)), 5)}
    assert series["requests" + TOTAL].values.tolist() == [124.0, 155.0, 155.0, 155.0]
    assert series["error_ratio" + TOTAL].values[1] == pytest.approx(5 / 155)
    # Merged buckets of bucket 1: le 0.1 = 50 + 10 = 60, le 0.5 = 55 + 95 = 150, +Inf = 155; rank
    # 0.95 x 155 = 147.25 lies in (0.1, 0.5]: 0.1 + 0.4 x (147.25 - 60) / (150 - 60) s = 487.78 ms.
    assert series["latency_p95_ms" + TOTAL].values[1] == pytest.approx(1000 * (0.1 + 0.4 * 87.25 / 90))
    assert series["concurrent_users" + TOTAL].values.tolist() == [80.0] * 4


def test_incremental_updates_read_only_new_buckets_and_match_a_full_build(source):
    reader = FileMetricsReader(LocalStorage(source))
    con = duckdb.connect(":memory:")
    first = ops_store.update(con, reader, [DAY], START + timedelta(minutes=12, seconds=30))
    # Settled means ended 2 minutes ago: at 03:12:30 buckets 0 and 1 (to 03:10) are in, bucket 2 is not.
    assert (first.buckets, first.read_from, first.read_to) == (2, START, START + timedelta(minutes=10))
    second = ops_store.update(con, reader, [DAY], START + timedelta(minutes=22))
    # Two new buckets, read with the last 10 minutes of stored ones (restated for late samples).
    assert (second.buckets, second.read_from, second.read_to) == (2, START, START + timedelta(minutes=20))
    again = ops_store.update(con, reader, [DAY], START + timedelta(minutes=22))
    assert (again.buckets, again.rows, again.days) == (0, 0, ())  # nothing new: nothing read, nothing written
    full = duckdb.connect(":memory:")
    ops_store.update(full, reader, [DAY], START + timedelta(minutes=22))
    assert _tables(con) == _tables(full)
    # The detector sees the same series from the table as from the samples.
    stored = {s.key: s for s in build_series(ops_store.read_frames(con, START, START + timedelta(minutes=20)), 5)}
    direct = {s.key: s for s in build_series(load_operational(reader, [DAY], 5), 5)}
    assert stored.keys() == direct.keys()
    for key, s in stored.items():
        np.testing.assert_allclose(s.values, direct[key].values[: len(s.values)], rtol=1e-12, err_msg=key)


def test_prune_and_settled_until():
    con = duckdb.connect(":memory:")
    ops_store.ensure_tables(con)
    con.execute(
        f"INSERT INTO {ops_store.COUNTS} VALUES ('2026-10-01', '2026-10-01 12:00+00', 'barber', 'AR', "  # noqa: S608
        "'cordoba', 1, 0, 0, 0, 1), ('2026-11-01', '2026-11-01 12:00+00', 'barber', 'AR', 'cordoba', 1, 0, 0, 0, 1)"
    )
    assert ops_store.prune(con, date(2026, 10, 15)) == 1
    assert con.execute(f"SELECT count(*) FROM {ops_store.COUNTS}").fetchall()[0][0] == 1  # noqa: S608
    assert ops_store.settled_until(datetime(2026, 11, 2, 3, 16, 59, tzinfo=UTC), 5) == datetime(
        2026, 11, 2, 3, 10, tzinfo=UTC
    )
    assert ops_store.settled_until(datetime(2026, 11, 2, 3, 17, tzinfo=UTC), 5) == datetime(
        2026, 11, 2, 3, 15, tzinfo=UTC
    )


def test_ops_5m_asset_materialized_twice_is_identical(source, tmp_path):
    from pipelines.defs.alerts.assets import ops_5m
    from pipelines.defs.sources.resources import MetricsSourceResource

    db = tmp_path / "warehouse.duckdb"
    resources = {
        "duckdb": DuckDBResource(database=str(db)),
        "metrics_source": MetricsSourceResource(location=str(source)),
    }
    instance = dg.DagsterInstance.ephemeral()
    first = dg.materialize([ops_5m], partition_key=DAY.isoformat(), resources=resources, instance=instance)
    assert first.success
    meta = first.asset_materializations_for_node("ops_5m")[0].metadata
    # A past day: every bucket of it (288) is settled; 4 hold data, 2 cells each.
    assert meta["new_buckets"].value == 288 and meta["dagster/row_count"].value == 8
    with duckdb.connect(str(db)) as con:
        before = _tables(con)
    second = dg.materialize([ops_5m], partition_key=DAY.isoformat(), resources=resources, instance=instance)
    assert second.asset_materializations_for_node("ops_5m")[0].metadata["new_buckets"].value == 0
    with duckdb.connect(str(db)) as con:
        assert _tables(con) == before
        assert len(before[ops_store.COUNTS]) == 8 and len(before[ops_store.LATENCY]) == 24


def test_operational_job_reads_the_table_and_the_day_s_payments(tmp_path, monkeypatch):
    """Today's partition end to end: ops_5m stores the last hour's buckets, operational_anomalies reads them
    from the table (not the samples) and counts the intraday MercadoPago decisions from the events source."""
    import gzip
    import json

    from pipelines.defs.alerts.assets import operational_anomalies, ops_5m
    from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
    from pipelines.lib.warehouse import ar_day, day_bounds_utc

    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    now = datetime.now(UTC)
    today = ar_day(now)
    first = (now - timedelta(minutes=60)).replace(second=0, microsecond=0)  # the last hour (may span AR midnight)
    rows = [
        {**A, "service": "web", "route": "/", "code": "200", "ts": first + timedelta(minutes=m), "value": 10.0 * m}
        for m in range(int((now - first).total_seconds() // 60))
    ]
    for day in {ar_day(r["ts"]) for r in rows}:
        folder = tmp_path / "metrics" / "http_requests_total" / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        lo, hi = day_bounds_utc(day)
        pl.DataFrame(
            [{**{k: None for k in LABELS}, **r} for r in rows if lo <= r["ts"] < hi],
            schema={"ts": pl.Datetime("us", "UTC"), **{k: pl.String for k in LABELS}, "value": pl.Float64},
        ).write_parquet(folder / "part-0.parquet")
    events = tmp_path / "events" / f"date={now.date().isoformat()}"
    events.mkdir(parents=True)
    at = (now - timedelta(minutes=40)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    lines = [
        json.dumps(
            {
                "event_id": f"e{k}",
                "type": "payment.updated",
                "occurred_at": at,
                **A,
                "payload": {
                    "provider": "mercadopago",
                    "payment": {
                        "id": k,
                        "status": "approved" if k % 4 else "rejected",
                        "date_approved": at if k % 4 else None,
                        "date_last_updated": at,
                    },
                },
            }
        )
        for k in range(12)
    ]
    (events / "part-0000.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    resources = {
        "duckdb": DuckDBResource(database=str(tmp_path / "w.duckdb")),
        "metrics_source": MetricsSourceResource(location=str(tmp_path / "metrics")),
        "events_source": SourceResource(source="events", location=str(tmp_path / "events")),
    }
    result = dg.materialize([ops_5m, operational_anomalies], partition_key=today.isoformat(), resources=resources)
    assert result.success
    stored = result.asset_materializations_for_node("ops_5m")[0].metadata
    meta = result.asset_materializations_for_node("operational_anomalies")[0].metadata
    assert stored["new_buckets"].value >= 1
    # One cell, so one row per bucket: the last hour's settled buckets (ended 2 minutes ago) are all read back.
    assert 9 <= meta["ops_5m_buckets"].value <= 12
    # 12 decisions 40 minutes ago, in a settled 15-minute bucket: counted (too few and too little history to judge).
    assert meta["payment_decisions"].value == 12 and meta["fired"].value == 0


def test_samples_landing_after_their_bucket_was_stored_are_counted_by_the_next_update(source):
    """Cell B's samples of minutes 5-9 arrive late (the day's file is rewritten with them after bucket 1 was
    stored): the next update re-reads the last 10 stored minutes, so the table ends equal to one built
    from all samples."""
    complete = {}
    for metric_dir in source.iterdir():
        path = metric_dir / f"date={DAY.isoformat()}" / "part-0.parquet"
        frame = pl.read_parquet(path)
        is_late = (
            (pl.col("region") == "rosario")
            & (pl.col("ts") >= START + timedelta(minutes=5))
            & (pl.col("ts") < START + timedelta(minutes=10))
        )
        frame.filter(~is_late).write_parquet(path)
        complete[path] = frame

    def reader() -> FileMetricsReader:  # one per run, as the job makes it (a reader caches what it read)
        return FileMetricsReader(LocalStorage(source))

    con = duckdb.connect(":memory:")
    ops_store.update(con, reader(), [DAY], START + timedelta(minutes=12, seconds=30))
    b1 = START + timedelta(minutes=5)
    requests_b1 = f"SELECT requests FROM {ops_store.COUNTS} WHERE bucket = ? AND region = 'rosario'"  # noqa: S608
    assert con.execute(requests_b1, [b1]).fetchall() == []  # B's bucket 1 had no samples yet
    for path, frame in complete.items():
        frame.write_parquet(path)
    ops_store.update(con, reader(), [DAY], START + timedelta(minutes=22))
    assert con.execute(requests_b1, [b1]).fetchall() == [(100.0,)]  # 5 minutes x 20
    full = duckdb.connect(":memory:")
    ops_store.update(full, reader(), [DAY], START + timedelta(minutes=22))
    assert _tables(con) == _tables(full)
