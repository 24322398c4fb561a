"""SLO rules and Alertmanager config: generated from the catalog, checked in, and proven by promtool/amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alerts.generate import generate
from alerts.rules import alert_expr, render, sli_queries, windows
from pipelines.lib.catalog import load_catalog, parse_catalog
from tests.fixtures import services

ALERTS = Path(__file__).resolve().parents[1] / "alerts"
PROMTOOL = services.find("promtool")
AMTOOL = services.find("amtool")
needs_promtool = services.skip_unless("promtool")


def test_checked_in_files_are_what_the_generator_produces():
    for rel, text in render(load_catalog()).items():
        checked_in = (ALERTS / rel).read_text(encoding="utf-8")
        assert checked_in == text, f"alerts/{rel} is out of date: run `python -m alerts.generate`"


def test_generate_writes_the_same_files_to_another_folder(tmp_path):
    written = generate(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "alertmanager/alertmanager.yml",
        "prometheus/pulso.rules.yml",
        "prometheus/slo.rules.yml",
    ]
    assert (tmp_path / "prometheus/slo.rules.yml").read_text() == (ALERTS / "prometheus/slo.rules.yml").read_text()


@needs_promtool
def test_promtool_check_rules_passes():
    files = sorted(str(p) for p in (ALERTS / "prometheus").glob("*.rules.yml"))
    result = subprocess.run([PROMTOOL, "check", "rules", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # 2 SLOs with raw series x 8 windows x (error ratio + total) + budget + objective = 36 recordings,
    # plus one page and one ticket alert each.
    assert "SUCCESS: 40 rules found" in result.stdout
    assert "SUCCESS: 2 rules found" in result.stdout


@needs_promtool
@pytest.mark.parametrize("test_file", sorted(p.name for p in (ALERTS / "prometheus/tests").glob("*_test.yml")))
def test_promtool_unit_tests_pass(test_file, tmp_path):
    """Outage pages within 3 minutes and clears after recovery, 1x burn never pages but opens a ticket
    after 3 days, near-zero traffic never alerts, the traffic guard at 99/100 requests per 5 minutes,
    each country's latency threshold, exporter alerts.

    Against the rules generated now (the golden test above pins the checked-in copy to them), so a
    change to ``alerts/rules.py`` is judged by how the rules behave, not only by a text diff.
    """
    generate(tmp_path)
    shutil.copytree(ALERTS / "prometheus/tests", tmp_path / "prometheus/tests")
    result = subprocess.run(
        [PROMTOOL, "test", "rules", test_file], cwd=tmp_path / "prometheus/tests", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@services.skip_unless("amtool")
def test_amtool_check_config_passes(tmp_path):
    generate(tmp_path)  # the config generated now (the golden test pins the checked-in copy to it)
    result = subprocess.run(
        [AMTOOL, "check-config", str(tmp_path / "alertmanager/alertmanager.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alertmanager_routes_pages_and_tickets_to_slack_from_a_secret_file():
    text = render(load_catalog())["alertmanager/alertmanager.yml"]
    config = yaml.safe_load(text)
    routes = {tuple(r["matchers"]): r["receiver"] for r in config["route"]["routes"]}
    assert routes == {('severity="page"',): "slack-page", ('severity="ticket"',): "slack-ticket"}
    assert config["route"]["group_by"] == ["alertname", "slo", "niche", "country", "region"]
    for receiver in config["receivers"]:
        (slack,) = receiver["slack_configs"]
        assert slack["api_url_file"].endswith("slack_webhook_url")
        assert "api_url" not in slack and slack["send_resolved"] is True
    # A page inhibits the ticket of the same SLO and place (no duplicate messages).
    assert config["inhibit_rules"][0]["equal"] == ["slo", "niche", "country", "region"]
    assert "hooks.slack.com" not in text


def test_windows_and_thresholds_come_from_the_catalog():
    catalog = load_catalog()
    availability = catalog.slo("availability")
    assert windows(catalog, availability) == ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]
    page = alert_expr(catalog, availability, "page")
    assert 'round(slo:sli_error:ratio_rate1h{slo="availability"} / 0.001, 0.000001) >= 14.4' in page
    assert 'round(slo:sli_error:ratio_rate30m{slo="availability"} / 0.001, 0.000001) >= 6' in page
    assert '(slo:sli_total:rate5m{slo="availability"} * 300) >= 100' in page
    ticket = alert_expr(catalog, availability, "ticket")
    assert ">= 3\n" in ticket and ">= 1\n" in ticket and "rate3d" in ticket and "14.4" not in ticket
    # MercadoPago success has no raw Prometheus series: no rules (the exporter serves it).
    assert [q.slo.id for q in sli_queries(catalog)] == ["availability", "latency"]


def test_a_28_day_period_scales_thresholds_and_records_a_28d_window():
    data = yaml.safe_load(load_catalog().path.read_text())
    for slo in data["slos"]:
        slo["period_days"] = 28
    catalog = parse_catalog(data)
    expr = "\n".join(alert_expr(catalog, catalog.slo("availability"), s) for s in ("page", "ticket"))
    for threshold in ("13.44", "5.6", "2.8", "0.933333"):
        assert f">= {threshold}\n" in expr
    assert windows(catalog, catalog.slo("availability"))[-1] == "28d"


def test_latency_slo_uses_each_countrys_threshold_bucket():
    (latency,) = [q for q in sli_queries(load_catalog()) if q.slo.id == "latency"]
    assert latency.terms == (
        (
            'http_request_duration_seconds_bucket{country="AR",le="0.2"}',
            'http_request_duration_seconds_bucket{country="AR",le="+Inf"}',
        ),
        (
            'http_request_duration_seconds_bucket{country=~"UY|CL|BR|CO",le="0.3"}',
            'http_request_duration_seconds_bucket{country=~"UY|CL|BR|CO",le="+Inf"}',
        ),
    )


def _github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_every_runbook_link_points_to_a_section_of_docs_runbooks():
    anchors = {
        _github_anchor(line.lstrip("#"))
        for line in (ALERTS.parent / "docs/runbooks.md").read_text().splitlines()
        if line.startswith("#")
    }
    rendered = render(load_catalog())
    links = [
        r["annotations"]["runbook_url"]
        for rel in ("slo.rules.yml", "pulso.rules.yml")
        for g in yaml.safe_load(rendered[f"prometheus/{rel}"])["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    assert len(links) == 6
    base = load_catalog().section("links")["runbook_base_url"]
    for link in links:
        assert link.startswith(base + "#")
        assert link.split("#", 1)[1] in anchors, link


def test_an_slo_with_half_a_prometheus_sli_is_a_clear_error():
    from alerts.rules import RuleError

    data = yaml.safe_load(load_catalog().path.read_text())
    data["slos"][0]["prometheus"] = {"good": 'http_requests_total{code!~"5.."}'}
    with pytest.raises(RuleError, match="slo 'availability': prometheus needs both 'good' and 'total'"):
        render(parse_catalog(data))


ALERTMANAGER = services.find("alertmanager")


@pytest.mark.slow
@services.skip_unless("alertmanager")
def test_alertmanager_sends_one_grouped_page_to_slack_inhibits_the_ticket_and_resolves(tmp_path):
    """The generated config in a real Alertmanager, posting to a loopback Slack receiver.

    Only the timings are shortened and the webhook file is a temporary one; routes, grouping,
    inhibition and templates are the generated ones.
    """
    import json
    import socket
    import threading
    import time
    import urllib.request
    from datetime import UTC, datetime, timedelta
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Slack(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    slack = ThreadingHTTPServer(("127.0.0.1", 0), Slack)
    threading.Thread(target=slack.serve_forever, daemon=True).start()
    webhook = tmp_path / "slack_webhook_url"
    webhook.write_text(f"http://127.0.0.1:{slack.server_port}/services/T000/B000/XXXX")
    config = yaml.safe_load(render(load_catalog(), str(webhook))["alertmanager/alertmanager.yml"])
    config["route"].update(group_wait="1s", group_interval="1s")
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "am.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"

    def post(alerts):
        request = urllib.request.Request(
            f"{base}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def wait(predicate, what):
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; got {received}"
            time.sleep(0.2)

    try:

        def ready():
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait(ready, "Alertmanager")
        place = {"slo": "availability", "niche": "barber", "country": "AR", "region": "cordoba"}
        now = datetime.now(UTC)

        def alert(severity, ends=None):
            return {
                "labels": {"alertname": "AvailabilityBudgetBurn", "severity": severity, **place},
                "annotations": {
                    "summary": f"{severity} summary",
                    "budget_remaining": "-4662%",
                    "dashboard": "http://grafana/d/pulso-slos",
                    "runbook_url": "http://runbook",
                },
                "startsAt": now.isoformat(),
                **({"endsAt": ends.isoformat()} if ends else {}),
            }

        # The page and the ticket of one place, the page sent twice (Prometheus re-sends every cycle).
        post([alert("page"), alert("ticket")])
        post([alert("page")])
        wait(lambda: received, "the page")
        time.sleep(3)  # a few more group intervals: nothing else may arrive
        firing = [m for m in received if "FIRING" in m["attachments"][0]["title"]]
        assert [m["channel"] for m in firing] == ["#pulso-pages"]  # one message; the ticket is inhibited
        text = firing[0]["attachments"][0]["text"]
        assert text == (
            "*AvailabilityBudgetBurn* (page) page summary\n"
            "Budget left: -4662% | <http://grafana/d/pulso-slos|dashboard> | <http://runbook|runbook>\n"
        )
        assert firing[0]["attachments"][0]["title"] == "[FIRING:1] AvailabilityBudgetBurn barber cordoba"
        assert "XXXX" not in json.dumps(received)  # the webhook secret never appears in a message
        # Recovery: the page resolves (send_resolved); the ticket is no longer inhibited and is sent.
        post([alert("page", ends=datetime.now(UTC) - timedelta(seconds=1))])
        wait(lambda: any("RESOLVED" in m["attachments"][0]["title"] for m in received), "the resolved page")
        wait(lambda: any(m["channel"] == "#pulso-tickets" for m in received), "the ticket after the page resolved")
        resolved = [m for m in received if "RESOLVED" in m["attachments"][0]["title"]]
        assert [m["channel"] for m in resolved] == ["#pulso-pages"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        slack.shutdown()


def test_names_links_and_text_follow_the_catalog():
    """Catalog values the checked-in files do not exercise: a two-word SLO id, a base URL with a trailing
    slash, a non-ASCII SLO name (written as is, not escaped)."""
    data = yaml.safe_load(load_catalog().path.read_text())
    data["links"]["grafana_base_url"] = "https://grafana.example.org/"
    (availability,) = [s for s in data["slos"] if s["id"] == "availability"]
    availability["id"] = "api_availability"
    availability["name"]["en"] = "Availability – API"
    rendered = render(parse_catalog(data))
    slo_groups = yaml.safe_load(rendered["prometheus/slo.rules.yml"])["groups"]
    meta_groups = yaml.safe_load(rendered["prometheus/pulso.rules.yml"])["groups"]
    assert [g["name"] for g in slo_groups] == ["pulso-slo-api_availability", "pulso-slo-latency"]
    assert [g["name"] for g in meta_groups] == ["pulso-exporter"]
    alerts = [r for g in slo_groups + meta_groups for r in g["rules"] if "alert" in r]
    assert sorted({r["alert"] for r in alerts}) == [
        "ApiAvailabilityBudgetBurn",
        "LatencyBudgetBurn",
        "PulsoExporterDown",
        "PulsoPublishedDataStale",
    ]
    dashboards = [r["annotations"]["dashboard"] for r in alerts]
    assert all(d.startswith("https://grafana.example.org/d/pulso-") for d in dashboards), dashboards
    assert "Availability – API SLO (99.9% over 30d)" in rendered["prometheus/slo.rules.yml"]
    runbooks = {r["annotations"]["runbook_url"].split("#")[1] for r in alerts if r["alert"].startswith("Api")}
    assert runbooks == {"api-availability-budget-burn-page", "api-availability-budget-burn-ticket"}


def test_bucket_bounds_are_written_as_prometheus_writes_them():
    from alerts.rules import format_le

    assert [format_le(x) for x in (0.2, 1, 1.0, 2.5, 10.0, 0.025)] == ["0.2", "1", "1", "2.5", "10", "0.025"]


def test_report_windows_and_the_traffic_guard_come_from_the_catalog():
    data = yaml.safe_load(load_catalog().path.read_text())
    data["burn_rate_alerts"]["report_windows"] = ["12h"]
    del data["burn_rate_alerts"]["min_requests_per_5m"]
    catalog = parse_catalog(data)
    availability = catalog.slo("availability")
    assert windows(catalog, availability) == ["5m", "30m", "1h", "2h", "6h", "12h", "1d", "3d", "30d"]
    # No guard configured: no traffic condition in the alert, and the text says 0.
    assert "* 300" not in alert_expr(catalog, availability, "page")
    groups = yaml.safe_load(render(catalog)["prometheus/slo.rules.yml"])["groups"]
    descriptions = [r["annotations"]["description"] for g in groups for r in g["rules"] if "alert" in r]
    assert all(d.endswith("with at least 0 requests per 5 minutes.") for d in descriptions)


def test_a_catalog_without_report_windows_or_burn_alerts_still_records_its_slos():
    data = yaml.safe_load(load_catalog().path.read_text())
    del data["burn_rate_alerts"]["report_windows"]
    catalog = parse_catalog(data)
    assert windows(catalog, catalog.slo("availability")) == ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]
    del data["burn_rate_alerts"]
    catalog = parse_catalog(data)
    assert windows(catalog, catalog.slo("availability")) == ["30d"]
    groups = yaml.safe_load(render(catalog)["prometheus/slo.rules.yml"])["groups"]
    assert [r["record"] for r in groups[0]["rules"] if "record" in r][:2] == [
        "slo:sli_error:ratio_rate30d",
        "slo:sli_total:rate30d",
    ]
