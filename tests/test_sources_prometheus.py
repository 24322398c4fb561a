"""Prometheus connector against a real Prometheus loaded with history by promtool.

The same samples are written as contract Parquet files and as OpenMetrics blocks; reading them back
through ``/api/v1/query_range`` must give identical rows and identical counter increases.
"""

from __future__ import annotations

import http.server
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.lib.sources.prometheus import (
    LABEL_COLUMNS,
    SAMPLE_SCHEMA,
    PrometheusClient,
    PrometheusError,
    PrometheusSource,
    chunk_range,
    counter_increases,
)
from pipelines.lib.storage import LocalStorage
from tests.fixtures import services
from tests.fixtures.sources.servers import LOOPBACK, free_port, prometheus_server

AR = ZoneInfo("America/Argentina/Buenos_Aires")
DAY1 = datetime(2026, 11, 1, tzinfo=AR)  # 03:00 UTC
MINUTES = 2 * 1440  # two Argentina days


def _series(labels: dict[str, str], values: list[float]) -> pl.DataFrame:
    start = DAY1.astimezone(UTC)
    rows = {
        "ts": [start + timedelta(minutes=i) for i in range(len(values))],
        **{c: [labels.get(c)] * len(values) for c in LABEL_COLUMNS},
        "value": values,
    }
    return pl.DataFrame(rows, schema=SAMPLE_SCHEMA)


def _history() -> dict[str, pl.DataFrame]:
    base = {"country": "AR", "region": "buenos_aires", "service": "api", "route": "/api"}
    ok = [10.0 * i for i in range(MINUTES)]  # +10 per minute
    errors = [float(i // 100) for i in range(MINUTES)]  # +1 every 100 minutes
    # psychology: +5 per minute, process restart at minute 1000 (counter back to 3)
    psy = [5.0 * i if i < 1000 else 5.0 * (i - 1000) + 3 for i in range(MINUTES)]
    requests_total = pl.concat(
        [
            _series({**base, "niche": "barber", "code": "200"}, ok),
            _series({**base, "niche": "barber", "code": "500"}, errors),
            _series({**base, "niche": "psychology", "code": "200"}, psy),
        ]
    )
    probe = _series(
        {"niche": "barber", "country": "AR", "region": "buenos_aires"},
        [0.0 if 600 <= i < 605 else 1.0 for i in range(MINUTES)],
    )
    # a gauge with a 3-minute gap and a series that stops early: no value is invented for missing minutes
    sessions = _series(
        {"niche": "barber", "country": "AR", "region": "cordoba"}, [float(i % 50) for i in range(2000)]
    ).filter(
        ~pl.col("ts").is_between(
            DAY1.astimezone(UTC) + timedelta(minutes=100), DAY1.astimezone(UTC) + timedelta(minutes=102)
        )
    )
    # scraped 30 s after each minute (a real scrape phase): 10 samples, values 0..9
    phased = _series({"niche": "barber", "country": "AR", "region": "rosario"}, [float(i) for i in range(10)])
    phased = phased.with_columns(pl.col("ts") + timedelta(seconds=30))
    return {
        "http_requests_total": requests_total,
        "probe_success": probe,
        "active_sessions": sessions,
        "cache_hits_total": phased,
    }


def _write_files(history: dict[str, pl.DataFrame], root: Path) -> None:
    """The contract layout: metrics/<metric>/date=YYYY-MM-DD/part-0.parquet per Argentina day."""
    for metric, frame in history.items():
        dated = frame.with_columns(pl.col("ts").dt.convert_time_zone(str(AR)).dt.date().alias("_day"))
        for (day,), part in dated.group_by("_day"):
            folder = root / "metrics" / metric / f"date={day.isoformat()}"
            folder.mkdir(parents=True)
            part.drop("_day").sort("ts").write_parquet(folder / "part-0.parquet")


def _read_file(root: Path, metric: str, day: str) -> pl.DataFrame:
    storage = LocalStorage(root)
    import io

    return pl.read_parquet(io.BytesIO(storage.read_bytes(f"metrics/{metric}/date={day}/part-0.parquet")))


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory):
    history = _history()
    work = tmp_path_factory.mktemp("prom")
    _write_files(history, work / "files")
    with prometheus_server(history, work) as url:
        yield url, work / "files", history


def _day_bounds(day: datetime) -> tuple[datetime, datetime]:
    return day.astimezone(UTC), (day + timedelta(days=1)).astimezone(UTC)


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(["ts", *LABEL_COLUMNS], nulls_last=False)


def test_api_samples_equal_the_files_for_each_day(prom) -> None:
    url, files, _ = prom
    source = PrometheusSource(url)
    for day, name in ((DAY1, "2026-11-01"), (DAY1 + timedelta(days=1), "2026-11-02")):
        for metric in ("http_requests_total", "probe_success", "active_sessions"):
            api = source.samples(metric, *_day_bounds(day))
            assert api.schema == pl.Schema(SAMPLE_SCHEMA)
            assert_frame_equal(_sorted(api), _sorted(_read_file(files, metric, name)))
    assert api.height == 2000 - 1440  # sessions on day 2: the series stopped after minute 1999
    day1 = source.samples("active_sessions", *_day_bounds(DAY1))
    assert day1.height == 1440 - 3  # the 3-minute gap stays a gap


def test_scrapes_at_any_phase_land_once_on_the_next_minute(prom) -> None:
    url, _, _ = prom
    start = DAY1.astimezone(UTC)
    got = PrometheusSource(url).samples("cache_hits_total", start, start + timedelta(minutes=20))
    # the sample of 03:00:30 is the value at 03:01, …, the last (03:09:30) at 03:10; nothing repeated after
    assert got.select("ts", "value").rows() == [(start + timedelta(minutes=i + 1), float(i)) for i in range(10)]


def test_increases_through_api_and_files_match_hand_numbers(prom) -> None:
    url, files, _ = prom
    start, end = DAY1.astimezone(UTC), (DAY1 + timedelta(days=2)).astimezone(UTC)
    api = counter_increases(PrometheusSource(url).samples("http_requests_total", start, end))
    from_files = counter_increases(
        pl.concat([_read_file(files, "http_requests_total", d) for d in ("2026-11-01", "2026-11-02")])
    )
    totals = {}
    for name, frame in (("api", api), ("files", from_files)):
        totals[name] = {
            (r["niche"], r["code"]): r["increase"]
            for r in frame.group_by("niche", "code").agg(pl.col("increase").sum()).iter_rows(named=True)
        }
    # barber 200: 10 x 2879 steps; barber 500: floor(2879/100); psychology: 999 x 5 + reset to 3 + 1879 x 5
    expected = {("barber", "200"): 28790.0, ("barber", "500"): 28.0, ("psychology", "200"): 4995 + 3 + 9395.0}
    assert totals["api"] == expected
    assert totals["files"] == expected
    # availability computed from summed counts (good / total), the same either way
    good = totals["api"][("barber", "200")]
    assert good / (good + totals["api"][("barber", "500")]) == pytest.approx(28790 / 28818, abs=0)


def test_long_range_is_chunked_without_gaps_or_overlap(prom) -> None:
    url, files, history = prom
    client = PrometheusClient(url, max_points=500)
    start, end = DAY1.astimezone(UTC), (DAY1 + timedelta(days=2)).astimezone(UTC)
    api = PrometheusSource(url, client=client).samples("http_requests_total", start, end)
    assert client.requests_made == 12  # 2880 minutes / 500 points -> 6 chunks, values and freshness
    assert_frame_equal(_sorted(api), _sorted(history["http_requests_total"]))


def test_chunk_range_covers_every_step_once() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    chunks = chunk_range(start, start + timedelta(minutes=24_999), 60, 11_000)
    assert [(a - start, b - start) for a, b in chunks] == [
        (timedelta(0), timedelta(minutes=10_999)),
        (timedelta(minutes=11_000), timedelta(minutes=21_999)),
        (timedelta(minutes=22_000), timedelta(minutes=24_999)),
    ]


def test_counter_reset_rule_on_a_tiny_series() -> None:
    frame = _series({"niche": "barber"}, [5.0, 7.0, 2.0, 2.0, 9.0])
    assert counter_increases(frame)["increase"].to_list() == [None, 2.0, 2.0, 0.0, 7.0]


def test_bad_query_is_a_clear_error(prom) -> None:
    url, _, _ = prom
    client = PrometheusClient(url)
    start = DAY1.astimezone(UTC)
    with pytest.raises(PrometheusError, match=r"rejected query 'sum\(\(': bad_data: .*parse error"):
        client.query_range("sum((", start, start + timedelta(minutes=5))
    assert client.requests_made == 1  # a 4xx is not retried


def test_unreachable_server_is_retried_then_a_clear_error() -> None:
    delays: list[float] = []
    url = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    client = PrometheusClient(url, max_retries=3, backoff_seconds=0.5, timeout_seconds=2, sleep=delays.append)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(
        PrometheusError, match=rf"{url}/api/v1/query_range unreachable after 4 attempts: cannot connect"
    ):
        client.query_range("up", start, start)
    assert delays == [0.5, 1.0, 2.0]  # exponential backoff


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Answers 503, then hangs past the client timeout, then a valid matrix."""

    script: list[str] = []
    hang = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        form = self.rfile.read(int(self.headers["Content-Length"])).decode()
        action = self.script.pop(0) if "count_over_time" not in form else "ok"
        if action == "hang":
            self.hang.wait(3)
            return
        if action == "503":
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"overloaded")
            return
        body = (
            b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up",'
            b'"niche":"barber"},"values":[[1793502000,"1"]]}]}}'
        )
        if "count_over_time" in form:  # one sample of its own in the last minute
            body = (
                b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{'
                b'"niche":"barber"},"values":[[1793502000,"1"]]}]}}'
            )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_5xx_and_timeouts_are_retried() -> None:
    _FlakyHandler.script = ["503", "hang", "ok"]
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        delays: list[float] = []
        client = PrometheusClient(
            f"http://{LOOPBACK}:{server.server_port}", timeout_seconds=0.3, backoff_seconds=0.1, sleep=delays.append
        )
        frame = PrometheusSource("", client=client).samples(
            "up", datetime.fromtimestamp(1793502000, UTC), datetime.fromtimestamp(1793502060, UTC)
        )
    finally:
        _FlakyHandler.hang.set()
        server.shutdown()
    assert client.requests_made == 4  # 503, timeout, the samples, then their freshness
    assert delays == [0.1, 0.2]
    assert frame.select("niche", "value").rows() == [("barber", 1.0)]


# -- the simulator's history through promtool, Prometheus and the warehouse reader ------------------------


@pytest.mark.slow
def test_simulated_history_through_prometheus_equals_the_files(tmp_path: Path) -> None:
    """The simulator's OpenMetrics (2 h around a counter reset) served by Prometheus = the Parquet files."""
    import subprocess

    from pipelines.lib import simulator
    from pipelines.lib.ingest import metrics as ingest_metrics

    src = tmp_path / "sources"
    result = simulator.simulate("tiny", src, end=datetime(2026, 11, 20).date())
    reset = result.counter_resets[0]
    reset_ts = datetime.fromisoformat(reset["ts"].replace("Z", "+00:00"))
    start = reset_ts.replace(minute=0) - timedelta(hours=1)
    end = start + timedelta(hours=2)
    om = tmp_path / "history.om"
    simulator.write_openmetrics(src, om, start, end)
    files = ingest_metrics.FileMetricsReader(LocalStorage(src / "metrics"))

    tsdb = tmp_path / "tsdb"
    subprocess.run(
        [services.require("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    from tests.fixtures.sources.servers import prometheus_on_tsdb

    with prometheus_on_tsdb(tsdb, tmp_path) as url:
        api = PrometheusSource(url)
        for metric in ingest_metrics.METRICS:
            from_api = _sorted(api.samples(metric, start, end))
            from_files = _sorted(files.samples(metric, start, end))
            assert from_api.height == from_files.height > 0, metric
            assert_frame_equal(from_api, from_files, check_exact=True)
        # the counter that was reset: the same increases, and a ratio from summed counts, both ways
        metric = "http_requests_total"
        inc_api = counter_increases(api.samples(metric, start, end))
        inc_files = counter_increases(files.samples(metric, start, end))
        total_api = inc_api["increase"].sum()
        assert total_api == inc_files["increase"].sum() > 0
        errors = inc_api.filter(pl.col("code").str.starts_with("5"))["increase"].sum()
        assert errors == inc_files.filter(pl.col("code").str.starts_with("5"))["increase"].sum()
        reset_series = inc_api.filter(
            (pl.col("ts") == reset_ts)
            & (pl.col("region") == reset["region"])
            & (pl.col("service") == reset["service"])
            & (pl.col("niche") == reset["niche"])
        )
        # at the reset minute the increase is the sample itself (Prometheus' rule), never negative
        assert reset_series.height > 0
        assert (reset_series["increase"] == reset_series["value"]).all()

        # The warehouse loader over either reader builds identical staging (what every KPI is computed from).
        from pipelines.lib import warehouse

        class Windowed:
            """The file reader limited to the replayed window (Prometheus only holds those 2 hours)."""

            def samples(self, metric: str, a: datetime, b: datetime) -> pl.DataFrame:
                return (
                    files.samples(metric, max(a, start), min(b, end))
                    if a < end and b > start
                    else files.samples(metric, start, start)
                )

        day = warehouse.ar_day(start)
        staged = {}
        for name, reader in (("api", api), ("files", Windowed())):
            con = warehouse.connect(":memory:")
            loaded = ingest_metrics.load_metrics_day(con, reader, day)
            assert loaded.reconciled and loaded.rows_quarantined == 0
            staged[name] = [
                con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()  # noqa: S608
                for t in ("staging.metric_counters_hourly", "staging.metric_gauges_minutely")
            ]
        assert staged["api"] == staged["files"]
        assert len(staged["api"][0]) > 0 and len(staged["api"][1]) > 0


def test_credentials_in_the_url_never_reach_messages() -> None:
    port = free_port()
    client = PrometheusClient(f"http://reader:s3cret-pw@{LOOPBACK}:{port}", max_retries=0, sleep=lambda _: None)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(PrometheusError) as info:
        client.query_range("up", start, start)
    assert "s3cret-pw" not in str(info.value) and "reader" not in str(info.value)
    assert f"http://***@{LOOPBACK}:{port}/api/v1/query_range unreachable after 1 attempts" in str(info.value)


class _PerInstanceHandler(http.server.BaseHTTPRequestHandler):
    """Two series that differ only in ``instance`` (one per pod), for values and freshness alike."""

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        series = [
            {"metric": {"niche": "barber", "instance": pod}, "values": [[1793502000, "1"]]}
            for pod in ("pod-a", "pod-b")
        ]
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": series}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_series_that_differ_only_in_dropped_labels_are_an_error_not_a_sum() -> None:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _PerInstanceHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = PrometheusSource(f"http://{LOOPBACK}:{server.server_port}")
        with pytest.raises(
            PrometheusError,
            match=r"2 rows share the contract labels once \['instance'\] labels "
            r"are dropped; aggregate them with a recording rule first",
        ):
            source.samples("up", datetime.fromtimestamp(1793502000, UTC), datetime.fromtimestamp(1793502060, UTC))
    finally:
        server.shutdown()
