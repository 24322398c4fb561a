"""The catalog: one declaration of every niche, region, KPI, SLO and target."""

from datetime import date
from pathlib import Path

import pytest
import yaml

from pipelines.lib.catalog import ALL, CatalogError, load_catalog, parse_catalog

CONTRACT_KPIS = {
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "availability_ratio",
    "error_budget_remaining_ratio",
    "incidents",
    "mttr_minutes",
    "scaling_time_minutes",
    "peak_concurrent_users",
    "cache_hit_ratio",
    "db_pool_utilization_ratio",
    "infra_cost_usd",
    "revenue_usd",
    "cost_per_active_user_usd",
    "revenue_per_infra_usd",
    "infra_margin_ratio",
    "mercadopago_success_ratio",
    "active_users",
    "bookings",
    "arr_usd",
    "psychologists_onboarded",
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def raw_catalog() -> dict:
    return yaml.safe_load(Path("pipelines/catalog.yaml").read_text(encoding="utf-8"))


def test_declares_exactly_the_contract_kpis(catalog):
    assert set(catalog.kpi_ids) == CONTRACT_KPIS
    assert len(catalog.kpi_ids) == len(CONTRACT_KPIS)


def test_niches_countries_and_regions_from_the_strategy(catalog):
    assert catalog.niche_ids == ("barber", "psychology", "dentist", "fitness", "vet", "beauty")
    assert [n.id for n in catalog.live_niches("now")] == ["barber", "psychology"]
    assert [r.id for r in catalog.country("AR").regions] == ["buenos_aires", "cordoba", "rosario", "mendoza"]
    assert len(catalog.live_countries("month_6")) == 5
    assert catalog.sensitive_niches[0] == "psychology"


def test_targets_follow_the_plan_phase_and_overrides(catalog):
    now, m3, m6 = date(2026, 10, 1), date(2026, 12, 15), date(2027, 3, 2)
    assert [catalog.target("latency_p95_ms", d) for d in (now, m3, m6)] == [200, 150, 100]
    assert catalog.target("latency_p95_ms", now, country="UY") == 300
    assert [catalog.target("peak_concurrent_users", d) for d in (now, m3, m6)] == [1400, 5000, 15000]
    assert [catalog.target("infra_cost_usd", d) for d in (now, m3, m6)] == [2000, 5000, 12000]
    assert [catalog.target("revenue_per_infra_usd", d) for d in (now, m3, m6)] == [5, 8, 12]
    # A missing phase inherits the earlier one; none at all means no target.
    assert catalog.target("availability_ratio", m6) == 0.999
    assert catalog.target("arr_usd", now) is None and catalog.target("arr_usd", m6) == 500000
    # Margin: >60% overall, >70% per niche.
    assert catalog.target("infra_margin_ratio", now) == 0.60
    assert catalog.target("infra_margin_ratio", now, niche="barber") == 0.70
    assert catalog.target("latency_p50_ms", now, ALL, ALL) is None


@pytest.mark.parametrize(
    ("kpi", "value", "target", "expected"),
    [
        ("latency_p95_ms", 199.0, 200.0, "ok"),
        ("latency_p95_ms", 215.0, 200.0, "warn"),  # within the 10% margin
        ("latency_p95_ms", 221.0, 200.0, "breach"),
        ("availability_ratio", 0.9991, 0.999, "ok"),
        ("availability_ratio", 0.9987, 0.999, "warn"),  # ratio margins are absolute points
        ("availability_ratio", 0.998, 0.999, "breach"),
        ("error_budget_remaining_ratio", 0.5, 0.0, "ok"),
        ("error_budget_remaining_ratio", 0.1, 0.0, "warn"),
        ("error_budget_remaining_ratio", -0.2, 0.0, "breach"),
        ("incidents", 0, 0.0, "ok"),
        ("incidents", 1, 0.0, "warn"),
        ("incidents", 3, 0.0, "breach"),
        ("mercadopago_success_ratio", 0.975, 0.97, "ok"),
        ("latency_p50_ms", 80.0, None, "ok"),
        ("cost_per_active_user_usd", None, 2.0, "no_data"),
        ("revenue_usd", float("nan"), None, "no_data"),
    ],
)
def test_status_rule(catalog, kpi, value, target, expected):
    assert catalog.status(kpi, value, target) == expected


def test_burn_rate_thresholds_scale_with_the_period(catalog):
    assert [round(w.burn_rate(30), 3) for w in catalog.burn_windows] == [14.4, 6.0, 3.0, 1.0]
    assert [round(w.burn_rate(28), 3) for w in catalog.burn_windows] == [13.44, 5.6, 2.8, 0.933]


def test_every_latency_threshold_is_a_histogram_bound(catalog):
    for country in catalog.countries:
        assert country.latency_slo_ms / 1000 in catalog.latency_buckets_seconds


def test_adding_a_niche_is_a_config_change(tmp_path, monkeypatch):
    data = raw_catalog()
    data["niches"].append({"id": "tattoo", "name": {"es": "Tatuajes", "en": "Tattoo"}, "launch": "month_6"})
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("PULSO_CATALOG", str(path))
    assert "tattoo" in load_catalog().niche_ids


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["niches"].append(dict(d["niches"][0])), "declared twice"),
        (lambda d: d["kpis"][0].update(direction="sideways"), "direction"),
        (lambda d: d["kpis"][0]["targets"].update(month_9=1), "unknown target phases"),
        (lambda d: d["countries"][0]["regions"][0].update(traffic_share=0.9), "sums to"),
        (lambda d: d["countries"][0].update(latency_slo_ms=250), "not a histogram bucket"),
        (lambda d: d["slos"][0].update(objective=1.5), "objective"),
        (lambda d: d["niches"][0].pop("name"), "name"),
        (lambda d: d["currency"].update(fx_quote_range={"min": "2000", "max": "1000"}), "fx_quote_range"),
        (lambda d: d["currency"].update(fx_quote_range={"min": "cheap", "max": "1000"}), "must be numbers"),
    ],
)
def test_malformed_catalog_is_refused_with_a_clear_error(mutate, message):
    data = raw_catalog()
    mutate(data)
    with pytest.raises(CatalogError, match=message):
        parse_catalog(data)
