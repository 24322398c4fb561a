"""Dashboards as code: valid provisioned JSON, fixed uids, the grid, datasources, metric names, thresholds."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
import yaml

from alerts.rules import recording_rules
from dashboards.generate import generate
from dashboards.inspect import metric_names, panel_queries, panels
from dashboards.panels import threshold_steps
from exporters.collector import metric_names as exporter_metric_names
from pipelines.lib.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 28)  # "now" phase of the plan: p95 target 200 ms


def contract_raw_metrics() -> set[str]:
    """The raw service metric families listed in docs/data-contract.md section 1.1."""
    text = (ROOT / "docs/data-contract.md").read_text()
    section = text.split("Metric families (label sets):", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)?", section, re.M)
    return {name for pair in rows for name in pair if name}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grafana")
    generate(folder, day=DAY)
    return folder


@pytest.fixture(scope="module")
def boards(out):
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "dashboards").glob("*.json"))}


def test_every_dashboard_and_one_per_niche_with_fixed_unique_uids(boards):
    catalog = load_catalog()
    expected = {
        "pulso-sre-overview",
        "pulso-slos",
        "pulso-latency",
        "pulso-availability",
        "pulso-capacity",
        "pulso-cache-db",
        "pulso-cost",
    } | {f"pulso-niche-{n}" for n in catalog.niche_ids}
    assert set(boards) == expected
    assert all(board["uid"] == uid for uid, board in boards.items())
    assert len({b["title"] for b in boards.values()}) == len(boards)
    assert boards["pulso-niche-psychology"]["title"] == "Pulso / Niche / Psychology"


def test_panel_ids_unique_and_panels_inside_the_24_column_grid_without_overlap(boards):
    for uid, board in boards.items():
        all_panels = list(panels(board))
        ids = [p["id"] for p in all_panels]
        assert len(ids) == len(set(ids)), uid
        cells = set()
        for p in all_panels:
            pos = p["gridPos"]
            assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (uid, p["title"])
            area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & area, f"{uid}: {p['title']!r} overlaps another panel"
            cells |= area
        assert any(p["type"] == "row" for p in all_panels), uid


def test_every_datasource_uid_is_provisioned(out, boards):
    provisioned = yaml.safe_load((out / "provisioning/datasources/pulso.yaml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    used = set()
    for board in boards.values():
        for p in panels(board):
            if p["type"] != "row":
                used.add(p["datasource"]["uid"])
                used |= {t["datasource"]["uid"] for t in p["targets"]}
    assert used == uids == {"pulso-prometheus"}
    text = "\n".join(json.dumps(b) for b in boards.values())
    assert "${DS_" not in text


def test_dashboard_provider_is_a_read_only_file_provider(out):
    (provider,) = yaml.safe_load((out / "provisioning/dashboards/pulso.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    assert provider["options"]["path"].startswith("/var/lib/grafana/")


def test_every_metric_a_panel_reads_is_exported_recorded_or_a_raw_contract_metric(boards):
    catalog = load_catalog()
    raw = contract_raw_metrics()
    assert {"http_requests_total", "http_request_duration_seconds_bucket", "db_connections_in_use"} <= raw
    recorded = {r["record"] for group in recording_rules(catalog) for r in group["rules"]}
    known = set(exporter_metric_names(catalog)) | recorded | raw
    used = {name for board in boards.values() for _, expr in panel_queries(board) for name in metric_names(expr)}
    assert used - known == set()
    # and the dashboards do use each kind
    assert used & raw and used & recorded and "pulso_latency_p95_seconds" in used


def test_variables_list_catalog_values_with_all(boards):
    catalog = load_catalog()
    variables = {v["name"]: v for v in boards["pulso-latency"]["templating"]["list"]}
    assert [o["value"] for o in variables["niche"]["options"]] == ["$__all", *catalog.niche_ids]
    assert variables["region"]["allValue"] == ".*"
    assert [o["value"] for o in variables["region"]["options"]][1:] == [r.id for r in catalog.regions]
    # a niche dashboard pins its niche and offers only country/region
    assert [v["name"] for v in boards["pulso-niche-barber"]["templating"]["list"]] == ["country", "region"]
    exprs = [e for _, e in panel_queries(boards["pulso-niche-barber"])]
    assert exprs and all('niche="barber"' in e for e in exprs)


def test_thresholds_and_units_come_from_catalog_targets(boards):
    catalog = load_catalog()
    # p95: target 200 ms, warn margin 10% -> orange from 0.2 s, red from 0.22 s (exporter base unit seconds)
    steps = threshold_steps(catalog, "latency_p95_ms", DAY)
    assert [s["color"] for s in steps] == ["green", "orange", "red"]
    assert steps[1]["value"] == pytest.approx(0.2) and steps[2]["value"] == pytest.approx(0.22)
    # from month 3 (2026-12-01) the target is 150 ms
    assert threshold_steps(catalog, "latency_p95_ms", date(2026, 12, 5))[1]["value"] == pytest.approx(0.15)
    # availability: higher is better, ratio margin in absolute points: red < 0.9985 <= orange < 0.999 <= green
    assert threshold_steps(catalog, "availability_ratio", DAY) == [
        {"color": "red", "value": None},
        {"color": "orange", "value": pytest.approx(0.9985)},
        {"color": "green", "value": 0.999},
    ]
    (p95,) = [p for p in panels(boards["pulso-latency"]) if p["title"] == "Response time p95"]
    assert p95["fieldConfig"]["defaults"]["unit"] == "s"
    assert p95["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == pytest.approx(0.2)
    (cost,) = [p for p in panels(boards["pulso-cost"]) if p["title"] == "Infrastructure cost"]
    assert cost["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    assert cost["targets"][0]["expr"] == 'pulso_infra_cost_usd{niche=~"(?i)${niche:text}",country="all",region="all"}'


def test_slo_dashboard_lists_slos_by_budget_left_and_shows_every_alert_window(boards):
    board = boards["pulso-slos"]
    (table,) = [p for p in panels(board) if p["type"] == "table"]
    assert table["targets"][0]["expr"] == "sort(pulso_slo_error_budget_remaining_ratio)"
    (live,) = [p for p in panels(board) if p["title"] == "Burn rate (live, from the recording rules)"]
    assert [t["legendFormat"] for t in live["targets"]] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]


def test_generate_cli_writes_the_default_layout(tmp_path):
    from dashboards.generate import main

    main(["--out", str(tmp_path), "--as-of", "2026-11-28"])
    assert (tmp_path / "provisioning/datasources/pulso.yaml").is_file()
    assert len(list((tmp_path / "dashboards").glob("*.json"))) == 7 + len(load_catalog().niches)
