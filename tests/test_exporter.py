"""The exporter over a hand-made published store, scraped through its real HTTP server."""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import UTC, date, datetime

import duckdb
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import exporters.collector as collector_module
from exporters.collector import PublishedCollector, metric_names
from exporters.naming import kpi_metric
from exporters.serve import ExporterApp, start
from pipelines.lib.catalog import load_catalog
from pipelines.lib.published import publish, read_manifest

D1, D2 = date(2026, 11, 26), date(2026, 11, 27)
TABLES = {"kpi_daily": "kpi_daily", "slo_daily": "slo_daily", "cost_daily": "cost_daily", "incidents": "incidents"}


def hand_made_warehouse(p95_total_ms: float = 180.0) -> duckdb.DuckDBPyConnection:
    """Contract-shaped rows; D1 holds values that must never be served (only the newest day is)."""
    con = duckdb.connect()
    con.execute("""CREATE TABLE kpi_daily (day DATE, kpi VARCHAR, niche VARCHAR, country VARCHAR, region VARCHAR,
                   value DOUBLE, unit VARCHAR, target DOUBLE, status VARCHAR)""")
    con.executemany(
        "INSERT INTO kpi_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (D1, "latency_p95_ms", "all", "all", "all", 999.0, "ms", 200.0, "breach"),
            (D2, "latency_p95_ms", "all", "all", "all", p95_total_ms, "ms", 200.0, "ok"),
            (D2, "latency_p95_ms", "barber", "AR", "cordoba", 250.0, "ms", 200.0, "breach"),
            (D2, "availability_ratio", "all", "all", "all", 0.9995, "ratio", 0.999, "ok"),
            (D2, "infra_cost_usd", "barber", "all", "all", 1234.5, "usd", 2000.0, "ok"),
            (D2, "revenue_per_infra_usd", "all", "all", "all", 6.5, "usd_per_usd", 5.0, "ok"),
            (D2, "mttr_minutes", "all", "all", "all", 12.0, "minutes", 15.0, "ok"),
            (D2, "bookings", "all", "all", "all", None, "count", None, "no_data"),
            (D2, "peak_concurrent_users", "all", "all", "all", float("nan"), "users", 1400.0, "no_data"),
            # Not served: a KPI the catalog does not know, and a label value outside the catalog.
            (D2, "made_up_kpi", "all", "all", "all", 1.0, "count", None, "ok"),
            (D2, "bookings", "u_1234", "AR", "cordoba", 3.0, "count", None, "ok"),
        ],
    )
    con.execute("""CREATE TABLE slo_daily (day DATE, slo VARCHAR, niche VARCHAR, country VARCHAR, region VARCHAR,
                   objective DOUBLE, period_days INTEGER, good BIGINT, total BIGINT, sli_ratio DOUBLE,
                   error_budget_remaining_ratio DOUBLE, burn_rate_1h DOUBLE, burn_rate_6h DOUBLE,
                   burn_rate_1d DOUBLE, burn_rate_3d DOUBLE)""")
    con.executemany(
        "INSERT INTO slo_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (D1, "availability", "all", "all", "all", 0.999, 30, 1, 1, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0),
            (D2, "availability", "all", "all", "all", 0.999, 30, 999250, 1000000, 0.99925, 0.25, 2.0, 1.5, 0.5, 0.75),
            (D2, "availability", "psychology", "AR", "mendoza", 0.999, 30, 989, 1000, 0.989, -10.0, 4.0, 3.0, 2.0, 1.0),
            (D2, "latency", "all", "all", "all", 0.95, 30, 1000, 1000, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0),
        ],
    )
    con.execute("""CREATE TABLE cost_daily (day DATE, niche VARCHAR, service VARCHAR, charge_category VARCHAR,
                   allocation VARCHAR, cost_usd DECIMAL(18,6))""")
    con.executemany(
        "INSERT INTO cost_daily VALUES (?, ?, ?, ?, ?, ?)",
        [
            (D1, "barber", "api", "usage", "tagged", "99.000000"),
            (D2, "barber", "api", "usage", "tagged", "10.500000"),
            (D2, "barber", "api", "usage", "shared_split", "2.250001"),
            (D2, "barber", "api", "credit", "tagged", "-1.500000"),
            # Shared (untagged) cost and a service tag outside the catalog are kept, under bounded names.
            (D2, "barber", "shared", "usage", "shared_split", "4.000000"),
            (D2, "barber", None, "usage", "shared_split", "0.500000"),
            (D2, "barber", "legacy-batch", "fee", "tagged", "0.250000"),
        ],
    )
    con.execute("""CREATE TABLE incidents (day DATE, incident_id VARCHAR, niche VARCHAR, country VARCHAR,
                   region VARCHAR, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, recovery_minutes DOUBLE)""")
    con.executemany(
        "INSERT INTO incidents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (D2, "i1", "barber", "AR", "rosario", datetime(2026, 11, 27, 12, tzinfo=UTC), None, None),
            (
                D2,
                "i2",
                "barber",
                "AR",
                "rosario",
                datetime(2026, 11, 27, 9, tzinfo=UTC),
                datetime(2026, 11, 27, 9, 7, tzinfo=UTC),
                7.0,
            ),
        ],
    )
    return con


def publish_store(root, p95_total_ms: float = 180.0):
    return publish(hand_made_warehouse(p95_total_ms), TABLES, [D1, D2], root)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def place(niche="all", country="all", region="all", **extra):
    return tuple(sorted({"niche": niche, "country": country, "region": region, **extra}.items()))


@pytest.fixture
def served(tmp_path):
    """Start the real HTTP exporter on a free loopback port; yields (port, published root)."""
    servers = []

    def _start(root, **kwargs):
        server, _ = start(0, "127.0.0.1", root, **kwargs)
        servers.append(server)
        return server.server_port

    yield _start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_serves_newest_day_in_base_units_with_targets_and_status(tmp_path, served):
    manifest = publish_store(tmp_path)
    m = scrape(served(tmp_path))
    assert m[("pulso_up", ())] == 1.0
    assert m[("pulso_published_version", ())] == 1.0
    assert m[("pulso_published_timestamp_seconds", ())] == manifest.published_at.timestamp()
    # End of 2026-11-27 in Argentina (UTC-3) = 2026-11-28T03:00Z.
    assert m[("pulso_data_through_timestamp_seconds", ())] == datetime(2026, 11, 28, 3, tzinfo=UTC).timestamp()
    # ms -> seconds, minutes -> seconds; the D1 value 999 ms is never served.
    assert m[("pulso_latency_p95_seconds", place())] == pytest.approx(0.18, abs=1e-12)
    assert m[("pulso_latency_p95_seconds_target", place())] == pytest.approx(0.2, abs=1e-12)
    assert m[("pulso_latency_p95_seconds", place("barber", "AR", "cordoba"))] == pytest.approx(0.25, abs=1e-12)
    assert m[("pulso_mttr_seconds", place())] == 720.0
    assert m[("pulso_mttr_seconds_target", place())] == 900.0
    assert m[("pulso_availability_ratio", place())] == 0.9995
    assert m[("pulso_infra_cost_usd", place("barber"))] == 1234.5
    assert m[("pulso_revenue_per_infra_usd_ratio", place())] == 6.5
    status = {k[1]: v for k, v in m.items() if k[0] == "pulso_kpi_status"}
    assert (
        status[
            tuple(
                sorted({**dict(place("barber", "AR", "cordoba")), "kpi": "latency_p95_ms", "status": "breach"}.items())
            )
        ]
        == 1.0
    )
    # NULL and NaN values are no data: no sample (never NaN), but the status row is there.
    assert not any(k[0] in ("pulso_bookings", "pulso_peak_concurrent_users") for k in m)
    assert (
        m[("pulso_kpi_status", tuple(sorted({**dict(place()), "kpi": "bookings", "status": "no_data"}.items())))] == 1.0
    )
    # The unknown KPI and the out-of-catalog label value are dropped and counted, never served.
    assert m[("pulso_published_rows_dropped", ())] == 2.0
    assert not any("u_1234" in str(k) for k in m)


def test_serves_slo_budget_burn_and_time_to_exhaustion(tmp_path, served):
    publish_store(tmp_path)
    m = scrape(served(tmp_path))
    total = place(slo="availability")
    assert m[("pulso_slo_objective_ratio", total)] == 0.999
    assert m[("pulso_slo_sli_ratio", total)] == 0.99925
    assert m[("pulso_slo_error_budget_remaining_ratio", total)] == 0.25
    assert m[("pulso_slo_period_seconds", total)] == 30 * 86400
    burn = {
        dict(k[1])["window"]: v
        for k, v in m.items()
        if k[0] == "pulso_slo_burn_rate" and dict(k[1])["niche"] == "all" and dict(k[1])["slo"] == "availability"
    }
    assert burn == {"1h": 2.0, "6h": 1.5, "1d": 0.5, "3d": 0.75}
    # 25% of the budget left, burning 0.5 budgets per 30 days -> 0.5 periods = 15 days.
    assert m[("pulso_slo_error_budget_exhaustion_seconds", total)] == 15 * 86400
    # Overspent: 0 seconds; not burning (latency, burn 0): no sample rather than Inf.
    assert (
        m[("pulso_slo_error_budget_exhaustion_seconds", place("psychology", "AR", "mendoza", slo="availability"))]
        == 0.0
    )
    assert ("pulso_slo_error_budget_exhaustion_seconds", place(slo="latency")) not in m


def test_serves_cost_per_service_and_open_incidents(tmp_path, served):
    publish_store(tmp_path)
    m = scrape(served(tmp_path))
    usage = tuple(sorted({"niche": "barber", "service": "api", "charge_category": "usage"}.items()))
    credit = tuple(sorted({"niche": "barber", "service": "api", "charge_category": "credit"}.items()))
    assert m[("pulso_cost_usd", usage)] == 12.750001  # 10.5 tagged + 2.250001 shared, summed exactly
    assert m[("pulso_cost_usd", credit)] == -1.5
    shared = tuple(sorted({"niche": "barber", "service": "shared", "charge_category": "usage"}.items()))
    other = tuple(sorted({"niche": "barber", "service": "other", "charge_category": "fee"}.items()))
    assert m[("pulso_cost_usd", shared)] == 4.5
    assert m[("pulso_cost_usd", other)] == 0.25
    # Every dollar of the day is served: 12.750001 - 1.5 + 4.5 + 0.25
    assert sum(v for k, v in m.items() if k[0] == "pulso_cost_usd") == pytest.approx(16.000001, abs=1e-9)
    assert m[("pulso_incidents_open", place("barber", "AR", "rosario"))] == 1.0


def test_nothing_published_gives_up_0_not_an_error(tmp_path, served):
    m = scrape(served(tmp_path / "empty"))
    assert m[("pulso_up", ())] == 0.0
    assert ("pulso_published_age_seconds", ()) not in m


def test_stale_store_gives_up_0_with_its_age(tmp_path):
    manifest = publish_store(tmp_path)
    published = manifest.published_at.timestamp()
    collector = PublishedCollector(tmp_path, stale_after_seconds=3600, clock=lambda: published + 7200)
    samples = {s.name: s.value for f in collector.collect() for s in f.samples if not s.labels}
    assert samples["pulso_up"] == 0.0
    assert samples["pulso_published_age_seconds"] == 7200.0
    fresh = PublishedCollector(tmp_path, stale_after_seconds=3600, clock=lambda: published + 60)
    assert {s.name: s.value for f in fresh.collect() for s in f.samples if not s.labels}["pulso_up"] == 1.0


def test_a_new_publish_is_served_once_loaded(tmp_path, served):
    publish_store(tmp_path, p95_total_ms=180.0)
    port = served(tmp_path)
    assert scrape(port)[("pulso_latency_p95_seconds", place())] == pytest.approx(0.18, abs=1e-12)
    publish_store(tmp_path, p95_total_ms=120.0)
    deadline = time.monotonic() + 30
    while (m := scrape(port))[("pulso_published_version", ())] != 2.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m[("pulso_published_version", ())] == 2.0
    assert m[("pulso_latency_p95_seconds", place())] == pytest.approx(0.12, abs=1e-12)


def test_a_slow_load_of_a_new_publish_does_not_hold_the_scrape(tmp_path, monkeypatch):
    """While a new version loads, scrapes get the previous complete version (not a wait, not a mix)."""
    publish_store(tmp_path, p95_total_ms=180.0)
    collector = PublishedCollector(tmp_path, reload_wait_seconds=0.01)
    assert collector.refresh()[0].version == 1
    release = threading.Event()
    real_load_state = collector_module.load_state

    def slow_load_state(*args, **kwargs):
        release.wait(30)
        return real_load_state(*args, **kwargs)

    monkeypatch.setattr(collector_module, "load_state", slow_load_state)
    publish_store(tmp_path, p95_total_ms=120.0)
    state, error = collector.refresh()  # starts the load, waits 10 ms, serves version 1
    assert (state.version, error) == (1, False)
    assert [k for k in state.kpis if k[0] == "latency_p95_ms" and k[1] == "all"][0][4] == 180.0
    release.set()
    collector._loader.join(30)
    assert collector.refresh()[0].version == 2


def test_registering_reads_no_data_and_describe_lists_every_family(tmp_path):
    root = tmp_path / "never-created"
    registry = CollectorRegistry()
    collector = PublishedCollector(root)
    registry.register(collector)  # calls describe()
    assert not root.exists()
    names = metric_names(load_catalog())
    assert [f.name for f in collector.describe()] == names
    catalog = load_catalog()
    assert {kpi_metric(k).name for k in catalog.kpis} <= set(names)
    assert len(set(names)) == len(names) and all(n.startswith("pulso_") for n in names)


def test_scrapes_during_publishes_always_see_one_complete_version(tmp_path, served):
    """A scrape never sees half a publish: p95 and the version always belong to the same publish."""
    publish_store(tmp_path, p95_total_ms=100.0)
    port = served(tmp_path)
    stop = threading.Event()

    def publisher():
        for i in range(1, 8):
            publish_store(tmp_path, p95_total_ms=100.0 + i)
        stop.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    seen = []
    while not stop.is_set() or not seen:
        m = scrape(port)
        assert m[("pulso_up", ())] == 1.0
        seen.append((m[("pulso_published_version", ())], m[("pulso_latency_p95_seconds", place())]))
    thread.join()
    for version, p95 in seen:
        assert p95 == pytest.approx((100.0 + version - 1) / 1000, abs=1e-12)
    assert read_manifest(tmp_path).version == 8


def test_cached_exposition_serves_exactly_what_the_collector_collects(tmp_path):
    """The per-version text cache of the HTTP app changes nothing: same samples as a plain registry."""
    publish_store(tmp_path)

    def now() -> float:
        return read_manifest(tmp_path).published_at.timestamp() + 90.0

    registry = CollectorRegistry()
    registry.register(PublishedCollector(tmp_path, clock=now))
    app = ExporterApp(PublishedCollector(tmp_path, clock=now))

    def samples(text: str) -> dict:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    plain = samples(generate_latest(registry).decode())
    assert samples(app.render().decode()) == plain == samples(app.render().decode())
    assert plain[("pulso_published_age_seconds", ())] == 90.0
    assert len(plain) > 40


def test_an_unreadable_published_file_gives_up_0_and_a_log_line_naming_it(tmp_path, caplog):
    publish_store(tmp_path)
    (broken,) = [p for p in tmp_path.glob("kpi_daily/day=2026-11-27/*.parquet")]
    broken.write_bytes(b"not parquet at all")
    collector = PublishedCollector(tmp_path)
    with caplog.at_level("ERROR", logger="pulso.exporter"):
        samples = {s.name: s.value for f in collector.collect() for s in f.samples if not s.labels}
    assert samples["pulso_up"] == 0.0
    assert "cannot read the published store" in caplog.text and broken.name in caplog.text


def test_label_values_stay_within_the_catalog_whatever_is_published(tmp_path, served):
    """Rows with a niche, country, region or service the catalog does not know (a new niche nobody
    declared, a typo, hostile or huge text) add no label value in any family: they are dropped and
    counted (cost keeps its dollars under the bounded service names)."""
    catalog = load_catalog()
    con = hand_made_warehouse()
    unknown = ["dentist_not_declared", "'; DROP TABLE kpi_daily; --", "ñandú 🦀", "x" * 10_000]
    for value in unknown:
        con.execute(
            "INSERT INTO kpi_daily VALUES (?, 'bookings', ?, 'AR', 'cordoba', 1, 'count', NULL, 'ok'), "
            "(?, 'bookings', 'barber', 'AR', ?, 1, 'count', NULL, 'ok'), "
            "(?, 'bookings', 'barber', ?, 'all', 1, 'count', NULL, 'ok')",
            [D2, value, D2, value, D2, value],
        )
        con.execute(
            "INSERT INTO slo_daily VALUES (?, 'availability', ?, 'AR', 'cordoba', 0.999, 30, 1, 1, 1, 1, 0, 0, 0, 0)",
            [D2, value],
        )
        con.execute(
            "INSERT INTO cost_daily VALUES (?, ?, 'api', 'usage', 'tagged', 1), (?, 'barber', ?, 'usage', 'tagged', 1)",
            [D2, value, D2, value],
        )
        con.execute(
            "INSERT INTO incidents VALUES (?, ?, 'barber', 'AR', ?, ?, NULL, NULL)",
            [D2, f"i-{len(value)}", value, datetime(2026, 11, 27, 10, tzinfo=UTC)],
        )
    publish(con, TABLES, [D1, D2], tmp_path)
    m = scrape(served(tmp_path))
    allowed = {
        "niche": set(catalog.niche_ids) | {"all"},
        "country": {c.id for c in catalog.countries} | {"all"},
        "region": {r.id for r in catalog.regions} | {"all"},
        "service": {s.id for s in catalog.services} | {"all", "shared", "other"},
    }
    seen: dict[str, set[str]] = {name: set() for name in allowed}
    for _, labels in m:
        for name, value in labels:
            if name in seen:
                seen[name].add(value)
    for name, values in seen.items():
        assert values <= allowed[name], (name, values - allowed[name])
    assert seen["niche"] and seen["region"] and seen["service"]  # the check looked at real samples
    # per unknown value: 3 KPI rows + 1 SLO row + 1 cost row (unknown niche) + 1 incident; plus the 2 of the base store
    assert m[("pulso_published_rows_dropped", ())] == 2.0 + 6 * len(unknown)
    # an unknown service tag is cost kept under service="other", never a new label value
    other = tuple(sorted({"niche": "barber", "service": "other", "charge_category": "usage"}.items()))
    assert m[("pulso_cost_usd", other)] == float(len(unknown))
