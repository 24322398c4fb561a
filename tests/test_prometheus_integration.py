"""A real Prometheus scraping the real exporter, with raw service history loaded from OpenMetrics.

Every generated rule must load healthy and every rule expression and dashboard panel query must parse;
every panel query must return data. Plus: a niche added to (a copy of) the catalog gets its dashboard,
its alerts and its exporter series with no code change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from alerts.generate import generate as generate_rules
from bench.exporter import synthesize_published
from dashboards.generate import generate as generate_dashboards
from dashboards.inspect import panel_queries
from exporters.collector import PublishedCollector
from exporters.naming import kpi_metric
from pipelines.lib.catalog import load_catalog
from tests.fixtures import services

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = services.find("prometheus")
PROMTOOL = services.find("promtool")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("prometheus"),
    services.skip_unless("prometheus", "promtool"),
]
HISTORY = timedelta(hours=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 400 = the query does not parse: keep Prometheus' message
        return json.loads(exc.read())


def wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def substitute(expr: str) -> str:
    """Grafana variables as a user choosing "All" (and the availability SLO) would send them."""
    expr = expr.replace("$__rate_interval", "5m")
    expr = re.sub(r"\$\{(niche|country|region):text\}", "All", expr)
    expr = expr.replace("$slo", "availability")
    return re.sub(r"\$(niche|country|region)\b", ".*", expr)


def build_published(tmp: Path) -> tuple[Path, str]:
    """The published store of the warehouse engineer's real build of the ``tiny`` profile.

    Falls back (with a warning naming the failure) to a synthesized contract-shaped store, so a broken
    pipeline shows up in its own tests rather than as a failure of Prometheus/dashboards here.
    """
    published = tmp / "published"
    env = {
        **os.environ,
        "PULSO_SOURCES": str(tmp / "sources"),
        "PULSO_WAREHOUSE": str(tmp / "warehouse.duckdb"),
        "PULSO_PUBLISHED": str(published),
        "GX_ANALYTICS_ENABLED": "False",
    }
    env.pop("DAGSTER_HOME", None)
    try:
        for cmd in (
            ["-m", "pipelines.simulate", "--profile", "tiny", "--out", str(tmp / "sources"), "--quiet"],
            ["-m", "pipelines.build"],
        ):
            subprocess.run(
                [sys.executable, *cmd], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600
            )
        if (published / "_manifest.json").is_file():
            return published, "pipelines.build --profile tiny"
        problem = "pipelines.build published nothing"
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        problem = f"{' '.join(exc.cmd[1:3])} failed: {(getattr(exc, 'stderr', '') or '')[-500:]}"
    warnings.warn(f"using a synthesized published store: {problem}", stacklevel=2)
    shutil.rmtree(published, ignore_errors=True)
    synthesize_published(published, days=3)
    return published, "synthesized"


def is_published_no_data(query: str, metric_kpi: dict[str, str], no_data: set[tuple[str, str, str, str]]) -> bool:
    """True when ``query`` selects exactly one KPI row the exporter reports as no_data."""
    match = re.fullmatch(r'(pulso_\w+?)(?:_target)?\{niche=~?"([^"]*)",country=~?"([^"]*)",region=~?"([^"]*)"\}', query)
    if not match or match.group(1) not in metric_kpi:
        return False
    place = tuple("all" if v == "(?i)All" else v.removeprefix("(?i)") for v in match.groups()[1:])
    return (metric_kpi[match.group(1)], *place) in no_data


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Raw history in a TSDB, a published store, the exporter CLI and Prometheus, all on loopback."""
    tmp = tmp_path_factory.mktemp("prom")
    catalog = load_catalog()
    # The build first (minutes on a loaded machine): the raw history must still be current when
    # Prometheus evaluates the 5m windows, so its clock starts only after the build.
    published, store = build_published(tmp)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    # Raw service metrics as BarberPro exports them, from the simulator's OpenMetrics writer.
    from pipelines.lib.simulator import write_openmetrics

    om = tmp / "history.om"
    assert write_openmetrics("tiny", om, end - HISTORY, end + timedelta(minutes=1)) > 0
    data = tmp / "tsdb"
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    rules = tmp / "rules"
    generate_rules(rules)
    procs = []
    exporter = subprocess.Popen(
        [sys.executable, "-m", "exporters.serve", "--host", "127.0.0.1", "--port", "0", "--published", str(published)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    procs.append(exporter)
    try:
        line = exporter.stderr.readline()
        match = re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, f"exporter did not start: {line}"
        exporter_port = int(match.group(1))
        config = tmp / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    # Rule results at the current time land before the newest loaded block (the history
                    # runs a minute past now): out of bounds without an out-of-order window.
                    "storage": {"tsdb": {"out_of_order_time_window": "1d"}},
                    "rule_files": [str(p) for p in sorted((rules / "prometheus").glob("*.rules.yml"))],
                    "scrape_configs": [
                        {"job_name": "pulso", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}
                    ],
                }
            )
        )
        port = free_port()
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=30d",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "prometheus.log", "w"),
        )
        procs.append(prometheus)
        base = f"http://127.0.0.1:{port}"

        def ready():
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, "Prometheus to be ready")
        # One scrape of the exporter and one evaluation of the rules.
        wait_for(lambda: api(base, "/api/v1/query", query="pulso_up == 1")["data"]["result"], "a pulso_up scrape")
        wait_for(
            lambda: api(base, "/api/v1/query", query="slo:sli_error:ratio_rate5m")["data"]["result"], "rule evaluation"
        )
        yield {"base": base, "rules": rules, "catalog": catalog, "tmp": tmp, "store": store}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_every_rule_loads_healthy_and_every_rule_expression_parses(stack):
    base = stack["base"]
    groups = wait_for(
        lambda: [
            g
            for g in api(base, "/api/v1/rules")["data"]["groups"]
            if all(
                r.get("lastEvaluation", "").startswith("20") and not r["lastEvaluation"].startswith("0001")
                for r in g["rules"]
            )
        ],
        "every rule group evaluated",
    )
    loaded = [r for g in groups for r in g["rules"]]
    generated = [
        r
        for p in sorted((stack["rules"] / "prometheus").glob("*.rules.yml"))
        for g in yaml.safe_load(p.read_text())["groups"]
        for r in g["rules"]
    ]
    assert len(loaded) == len(generated) == 42
    assert all(r["health"] == "ok" for r in loaded), [
        (r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"
    ]
    for rule in generated:
        answer = api(base, "/api/v1/query", query=rule["expr"])
        assert answer["status"] == "success", (rule.get("record") or rule.get("alert"), answer)


def test_recording_rules_produce_every_window_from_the_raw_history(stack):
    base = stack["base"]
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
        result = api(base, "/api/v1/query", query=f'slo:sli_error:ratio_rate{window}{{slo="availability"}}')["data"][
            "result"
        ]
        assert result, window
        assert all(0.0 <= float(s["value"][1]) <= 1.0 for s in result), window
    budget = api(base, "/api/v1/query", query='slo:error_budget_remaining:ratio{slo="latency"}')["data"]["result"]
    assert budget and {s["metric"]["country"] for s in budget} <= {c.id for c in stack["catalog"].countries}


def test_every_dashboard_panel_query_parses_and_returns_data(stack, tmp_path):
    generate_dashboards(tmp_path, day=datetime.now(UTC).date())
    base = stack["base"]
    # The simulated profile only has traffic for the niches live now; a niche launching later has a
    # dashboard whose live (raw-metric) panels are rightly empty until it has traffic.
    with_traffic = {
        s["metric"]["niche"]
        for s in api(base, "/api/v1/query", query="count by (niche) (http_requests_total)")["data"]["result"]
    }
    published_niches = {
        s["metric"]["niche"]
        for s in api(base, "/api/v1/query", query='count by (niche) (pulso_kpi_status{niche!="all"})')["data"]["result"]
    }
    assert with_traffic and published_niches
    # A KPI whose newest published value is NULL (e.g. recovery time on a day without incidents) is
    # rightly "No data": the exporter serves its status no_data and no value.
    no_data = {
        (s["metric"]["kpi"], s["metric"]["niche"], s["metric"]["country"], s["metric"]["region"])
        for s in api(base, "/api/v1/query", query='pulso_kpi_status{status="no_data"}')["data"]["result"]
    }
    metric_kpi = {kpi_metric(k).name: k.id for k in stack["catalog"].kpis}
    empty, failed, checked = [], [], 0
    for board_file in sorted((tmp_path / "dashboards").glob("*.json")):
        board = json.loads(board_file.read_text())
        niche = board["uid"].removeprefix("pulso-niche-") if board["uid"].startswith("pulso-niche-") else None
        for title, expr in panel_queries(board):
            query = substitute(expr)
            answer = api(base, "/api/v1/query", query=query)
            checked += 1
            if answer["status"] != "success":
                failed.append((board["uid"], title, query, answer.get("error")))
            elif not answer["data"]["result"]:
                # A niche launching later has no traffic and no published rows yet.
                if niche and niche not in (with_traffic if not query.startswith("pulso_") else published_niches):
                    continue
                if is_published_no_data(query, metric_kpi, no_data):
                    continue
                empty.append(f"{board['uid']}: {title}: {query}")
    assert checked > 100
    assert not failed, failed
    assert not empty, empty


def test_a_niche_added_to_the_catalog_gets_dashboard_rules_and_exporter_series(tmp_path, monkeypatch):
    data = yaml.safe_load((ROOT / "pipelines/catalog.yaml").read_text())
    data["niches"].append(
        {
            "id": "nails",
            "name": {"es": "Uñas", "en": "Nails"},
            "launch": "now",
            "peak_hours": [[10, 19]],
            "sensitive": False,
        }
    )
    copy = tmp_path / "catalog.yaml"
    copy.write_text(yaml.safe_dump(data, allow_unicode=True))
    monkeypatch.setenv("PULSO_CATALOG", str(copy))
    catalog = load_catalog()
    assert "nails" in catalog.niche_ids

    # Dashboards: its own dashboard from the niche template, and an option in every niche variable.
    generate_dashboards(tmp_path / "grafana", day=datetime(2026, 11, 28).date())
    board = json.loads((tmp_path / "grafana/dashboards/pulso-niche-nails.json").read_text())
    assert board["title"] == "Pulso / Niche / Nails"
    assert all('niche="nails"' in e for _, e in panel_queries(board))
    latency = json.loads((tmp_path / "grafana/dashboards/pulso-latency.json").read_text())
    assert "nails" in [o["value"] for v in latency["templating"]["list"] if v["name"] == "niche" for o in v["options"]]

    # Rules: label-based, so the new niche pages like any other (promtool, outage of nails/cordoba).
    generate_rules(tmp_path / "alerts", catalog_path=str(copy))
    test_file = tmp_path / "alerts/prometheus/nails_test.yml"
    series = 'http_requests_total{niche="nails",country="AR",region="cordoba",service="web",route="/",code="%s"}'
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": ["slo.rules.yml"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": series % "200", "values": "0+600x30 18000x10"},
                            {"series": series % "503", "values": "0x30 600+600x10"},
                        ],
                        "promql_expr_test": [
                            {
                                "expr": 'ALERTS{alertname="AvailabilityBudgetBurn",alertstate="firing",severity="page"}',
                                "eval_time": "35m",
                                "exp_samples": [
                                    {
                                        "labels": 'ALERTS{alertname="AvailabilityBudgetBurn",alertstate="firing",'
                                        'severity="page",slo="availability",niche="nails",country="AR",region="cordoba"}',
                                        "value": 1,
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        [PROMTOOL, "test", "rules", test_file.name], cwd=test_file.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # Exporter: the published rows of the new niche are served under the new catalog...
    published = tmp_path / "published"
    synthesize_published(published, days=1, catalog=catalog)
    served = [s for f in PublishedCollector(published, catalog=catalog).collect() for s in f.samples]
    assert any(s.name == "pulso_availability_ratio" and s.labels["niche"] == "nails" for s in served)
    assert any(s.name == "pulso_cost_usd" and s.labels["niche"] == "nails" for s in served)
    # ...and dropped (counted, never served as an unbounded label) under the bundled catalog.
    bundled = load_catalog(ROOT / "pipelines/catalog.yaml")
    old = {
        s.name: s for f in PublishedCollector(published, catalog=bundled).collect() for s in f.samples if not s.labels
    }
    assert old["pulso_published_rows_dropped"].value > 0
    assert not any(
        s.labels.get("niche") == "nails"
        for f in PublishedCollector(published, catalog=bundled).collect()
        for s in f.samples
    )
