"""Readers during writes: the exporter is scraped and the executive view's queries run, in loops, while a
full ``python -m pipelines.build`` (another process) rewrites the warehouse and publishes.

The ``tiny`` profile is built once with the billing month's first delivery (``--before-restatement``,
published version 1); then the restated delivery lands and the full build runs again (version 2), so the
two published states differ in every cost figure. Both expected states are computed from the Parquet files
their manifests list, independently of the readers. Every scrape and every query answer must equal one of
the two exactly (never a mix of both, never half a run), readers move from the old state to the new one
and never back, nothing fails, and no reader ever opens the DuckDB warehouse file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.queries import Scope, cost_by, period_value
from pipelines.lib.catalog import load_catalog
from pipelines.lib.published import PublishedReader, read_manifest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability")]
REPO = Path(__file__).resolve().parents[1]
END = "2026-11-27"
SCOPE = Scope(date(2026, 11, 25), date(2026, 11, 27))
PAUSE = 0.05  # between reads: a few hundred reads per run without starving the writer of the 2 cores


def build_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSO_", "DAGSTER_"))}
    env.update(
        PULSO_SOURCES=str(base / "sources"),
        PULSO_WAREHOUSE=str(base / "warehouse.duckdb"),
        PULSO_PUBLISHED=str(base / "published"),
        PULSO_PSEUDONYM_KEY="reliability-test-key",
    )
    return env


def simulate(base: Path, *extra: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.simulate",
            "--profile",
            "tiny",
            "--out",
            str(base / "sources"),
            "--end",
            END,
            "--quiet",
            *extra,
        ],
        check=True,
        cwd=REPO,
    )


@dataclass(frozen=True)
class Expected:
    """What a reader of one published state must answer, computed from that manifest's files."""

    version: int
    exporter_cost_usd: Decimal  # newest day's cost_daily total (the exporter's pulso_cost_usd series)
    exporter_infra_kpi: float  # newest day's infra_cost_usd KPI at the total grain
    app_cost_by_niche: dict[str, Decimal]  # the period's cost per niche (executive view, exact)
    app_infra_cost: Decimal | None  # the period's infra cost KPI (executive view card), to the micro-dollar


def expected_state(root: Path) -> Expected:
    manifest = read_manifest(root)
    con = duckdb.connect()

    def table(name: str) -> str:
        files = ", ".join(f"'{f}'" for f in manifest.files(name))
        return f"read_parquet([{files}])"

    newest_cost = con.execute(
        f"SELECT sum(cost_usd) FROM {table('cost_daily')} "  # noqa: S608
        f"WHERE day = (SELECT max(day) FROM {table('cost_daily')})"
    ).fetchall()[0][0]
    kpis = f"SELECT * FROM {table('kpi_daily')} WHERE kpi = 'infra_cost_usd' AND niche = 'all' AND country = 'all' AND region = 'all'"  # noqa: S608
    newest_kpi = con.execute(f"SELECT value FROM ({kpis}) ORDER BY day DESC LIMIT 1").fetchall()[0][0]  # noqa: S608
    by_niche = dict(
        con.execute(
            f"SELECT niche, sum(cost_usd) FROM {table('cost_daily')} "  # noqa: S608
            "WHERE day BETWEEN ? AND ? GROUP BY niche",
            [SCOPE.start, SCOPE.end],
        ).fetchall()
    )
    period = con.execute(
        f"SELECT sum(value) FROM ({kpis}) WHERE day BETWEEN ? AND ?",  # noqa: S608
        [SCOPE.start, SCOPE.end],
    ).fetchall()[0][0]
    return Expected(manifest.version, Decimal(newest_cost), float(newest_kpi), by_niche, micro_usd(period))


def micro_usd(value: float | Decimal | None) -> Decimal | None:
    """A USD amount to the micro-dollar (the KPI is a DOUBLE in the store, a Decimal in the view)."""
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.000001"))


@dataclass
class Reads:
    answers: list[tuple[float, float, object]] = field(default_factory=list)  # (started, ended, answer)
    errors: list[str] = field(default_factory=list)
    warehouse_opened: list[str] = field(default_factory=list)

    def during(self, start: float, end: float) -> int:
        return sum(1 for t0, t1, _ in self.answers if t1 >= start and t0 <= end)


def open_files(pid: int | str) -> set[str]:
    folder = Path(f"/proc/{pid}/fd")
    out = set()
    for fd in folder.iterdir() if folder.exists() else []:
        try:
            out.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return out


def watch_warehouse(reads: Reads, pid: int | str, warehouse: Path) -> None:
    # The warehouse and its WAL: a reader holding either would block (or be blocked by) the writer.
    hits = [f for f in open_files(pid) if f.startswith(str(warehouse))]
    if hits:
        reads.warehouse_opened.append(f"pid {pid}: {hits}")


def scrape_loop(url: str, stop: threading.Event, reads: Reads, exporter_pid: int, warehouse: Path) -> None:
    infra = "pulso_infra_cost_usd"
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
                text = response.read().decode()
            version, cost, kpi = None, Decimal(0), None
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "pulso_published_version":
                        version = int(sample.value)
                    elif sample.name == "pulso_cost_usd":
                        cost += Decimal(repr(sample.value))
                    elif sample.name == infra and sample.labels == {"niche": "all", "country": "all", "region": "all"}:
                        kpi = sample.value
            reads.answers.append((t0, time.monotonic(), (version, cost, kpi)))
        except Exception as exc:  # every failure is counted and shown by the test
            reads.errors.append(f"scrape: {type(exc).__name__}: {exc}")
        watch_warehouse(reads, exporter_pid, warehouse)
        stop.wait(PAUSE)


def query_loop(root: Path, stop: threading.Event, reads: Reads, warehouse: Path) -> None:
    catalog = load_catalog()
    reader = PublishedReader(root)  # one long-lived reader, as the app keeps one per process
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            con = reader.snapshot().cursor()
            by_niche = cost_by(con, SCOPE, "niche", {})
            infra = micro_usd(period_value(con, catalog, "infra_cost_usd", SCOPE, {}).value)
            reads.answers.append((t0, time.monotonic(), (by_niche, infra)))
        except Exception as exc:
            reads.errors.append(f"query: {type(exc).__name__}: {exc}")
        watch_warehouse(reads, "self", warehouse)
        stop.wait(PAUSE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    before: Expected
    after: Expected
    build: subprocess.CompletedProcess
    build_seconds: float
    started: float
    ended: float
    scrapes: Reads
    queries: Reads
    exporter_log: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("readers")
    env = build_env(base)
    simulate(base, "--before-restatement")
    first = subprocess.run([sys.executable, "-m", "pipelines.build"], cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    before = expected_state(base / "published")
    simulate(base)  # the restated delivery of the month lands

    port = free_port()
    log = (base / "exporter.log").open("w")
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporters.serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--published",
            str(base / "published"),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(300):
            try:
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
                    if b"pulso_published_version 1.0" in r.read():
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("exporter did not serve version 1")
        stop = threading.Event()
        scrapes, queries = Reads(), Reads()
        warehouse = base / "warehouse.duckdb"
        threads = [
            threading.Thread(target=scrape_loop, args=(url, stop, scrapes, exporter.pid, warehouse)),
            threading.Thread(target=query_loop, args=(base / "published", stop, queries, warehouse)),
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)  # both loops running before the writer starts
        started = time.monotonic()
        build = subprocess.run(
            [sys.executable, "-m", "pipelines.build"], cwd=REPO, env=env, capture_output=True, text=True
        )
        ended = time.monotonic()
        time.sleep(2.0)  # readers pick the new version up
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        exporter.terminate()
        exporter.wait(10)
        log.close()
    after = expected_state(base / "published")
    return Run(
        before, after, build, ended - started, started, ended, scrapes, queries, (base / "exporter.log").read_text()
    )


def check_the_two_states_differ_so_a_mix_would_show(run: Run) -> None:
    assert run.build.returncode == 0, run.build.stderr[-3000:]
    assert (run.before.version, run.after.version) == (1, 2)
    assert run.before.exporter_cost_usd != run.after.exporter_cost_usd
    assert run.before.exporter_infra_kpi != run.after.exporter_infra_kpi
    assert run.before.app_cost_by_niche != run.after.app_cost_by_niche
    assert run.before.app_infra_cost != run.after.app_infra_cost


def check_no_errors_and_no_reader_opens_the_warehouse(run: Run) -> None:
    assert run.scrapes.errors == [] and run.queries.errors == []
    assert run.scrapes.warehouse_opened == [] and run.queries.warehouse_opened == []
    for bad in ("Traceback", "ERROR", "lock"):
        assert bad not in run.exporter_log


def check_reads_happened_throughout_the_run(run: Run) -> None:
    during = (run.scrapes.during(run.started, run.ended), run.queries.during(run.started, run.ended))
    print(f"build {run.build_seconds:.1f}s; reads during it: {during[0]} scrapes, {during[1]} query rounds")
    assert during[0] >= 20 and during[1] >= 20


def check_every_scrape_is_one_complete_published_state(run: Run) -> None:
    states = {e.version: e for e in (run.before, run.after)}
    seen = []
    for _, _, (version, cost, kpi) in run.scrapes.answers:
        expected = states[version]
        # The cost series are the newest day's cost_daily, exactly (to the micro-dollar; floats in the format).
        assert abs(cost - expected.exporter_cost_usd) < Decimal("0.000001") * 50, (version, cost)
        assert kpi == pytest.approx(expected.exporter_infra_kpi, abs=1e-6), (version, kpi)
        seen.append(version)
    assert seen == sorted(seen)  # monotonic: never back to an older state
    assert seen[0] == 1 and seen[-1] == 2


def check_every_query_round_is_one_complete_published_state(run: Run) -> None:
    seen = []
    for _, _, (by_niche, infra) in run.queries.answers:
        matches = [
            e.version for e in (run.before, run.after) if by_niche == e.app_cost_by_niche and infra == e.app_infra_cost
        ]
        assert len(matches) == 1, (by_niche, infra)  # one state's figures, both from it: never a mix
        seen.append(matches[0])
    assert seen == sorted(seen)
    assert seen[0] == 1 and seen[-1] == 2


# The checks below run from one test, so the builds above run once however the suite is distributed
# (with or without xdist groups, which tests/conftest.py makes hold under pytest 9.2).


def test_readers_during_a_full_build_see_one_whole_published_state(run: Run) -> None:
    check_the_two_states_differ_so_a_mix_would_show(run)
    check_no_errors_and_no_reader_opens_the_warehouse(run)
    check_reads_happened_throughout_the_run(run)
    check_every_scrape_is_one_complete_published_state(run)
    check_every_query_round_is_one_complete_published_state(run)
