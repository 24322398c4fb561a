"""Pulso's dashboards, each a function of the catalog (and the day whose targets apply).

The SRE dashboards cover the whole business with niche/country/region variables; :func:`niche_dashboard`
is the ONE template every niche's dashboard comes from, so adding a niche to the catalog adds its
dashboard with no code change.
"""

from __future__ import annotations

from datetime import date

from grafanalib import core as g

from alerts.rules import SLO_DASHBOARD_UID, STALE_AFTER_SECONDS, sli_queries
from dashboards.panels import (
    GRAFANA_UNITS,
    Layout,
    dashboard,
    heatmap,
    kpi_expr,
    published_selector,
    raw_selector,
    stat,
    table,
    threshold_steps,
    timeseries,
    variables,
)
from pipelines.lib.catalog import Catalog, _hours

RATE = "$__rate_interval"
RAW = raw_selector()


def _kpi_stat(
    catalog: Catalog, kpi_id: str, day: date, fixed: dict[str, str] | None = None, title: str | None = None
) -> g.Stat:
    kpi = catalog.kpi(kpi_id)
    return stat(
        title or kpi.name["en"],
        kpi_expr(catalog, kpi_id, fixed),
        GRAFANA_UNITS[kpi.unit],
        threshold_steps(catalog, kpi_id, day),
        kpi.definition,
    )


def _kpi_trend(catalog: Catalog, kpi_id: str, day: date, fixed: dict[str, str] | None = None) -> g.TimeSeries:
    """A KPI as the exporter served it over time, with its target line."""
    kpi = catalog.kpi(kpi_id)
    queries = [(kpi_expr(catalog, kpi_id, fixed), kpi.name["en"])]
    if kpi.targets:
        queries.append((kpi_expr(catalog, kpi_id, fixed, target=True), "target"))
    return timeseries(
        f"{kpi.name['en']} (published, daily)",
        queries,
        GRAFANA_UNITS[kpi.unit],
        threshold_steps(catalog, kpi_id, day),
        kpi.definition,
    )


def _quantile(q: float, by: str, selector: str = RAW) -> str:
    # From merged buckets (summed over the selected series per le); `>= 0` drops the NaN that
    # histogram_quantile gives a place without requests in the window.
    return (
        f"histogram_quantile({q}, sum by (le, {by}) (rate(http_request_duration_seconds_bucket{{{selector}}}[{RATE}])))"
        " >= 0"
    )


def sre_overview(catalog: Catalog, day: date) -> g.Dashboard:
    lay = Layout().row("Health of the newest published day")
    lay.add(
        stat(
            "Pulso data fresh (pulso_up)",
            "pulso_up",
            "none",
            [{"color": "red", "value": None}, {"color": "green", "value": 1}],
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Published data age",
            "pulso_published_age_seconds",
            "s",
            [{"color": "green", "value": None}, {"color": "red", "value": STALE_AFTER_SECONDS}],
            "Older than this the exporter reports pulso_up 0 (and a ticket opens after 30 minutes).",
        ),
        4,
        4,
    )
    for kpi_id in ("availability_ratio", "latency_p95_ms", "error_budget_remaining_ratio", "infra_cost_usd"):
        lay.add(_kpi_stat(catalog, kpi_id, day), 4, 4)
    lay.row("Live traffic")
    lay.add(
        timeseries(
            "Requests per second by region",
            [(f"sum by (region) (rate(http_requests_total{{{RAW}}}[{RATE}]))", "{{region}}")],
            "reqps",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "5xx error ratio (5m) by place",
            [(f'slo:sli_error:ratio_rate5m{{slo="availability",{RAW}}}', "{{niche}} {{region}}")],
            "percentunit",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Latency p95 by region (live)",
            [(_quantile(0.95, "region"), "{{region}}")],
            "s",
            threshold_steps(catalog, "latency_p95_ms", day),
        ),
        8,
        8,
    )
    lay.row("Incidents and capacity")
    lay.add(
        stat(
            "Open incidents",
            f"sum(pulso_incidents_open{{{RAW}}}) or vector(0)",
            "short",
            [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        6,
        4,
    )
    lay.add(_kpi_stat(catalog, "peak_concurrent_users", day), 6, 4)
    lay.add(_kpi_stat(catalog, "cache_hit_ratio", day), 6, 4)
    lay.add(_kpi_stat(catalog, "db_pool_utilization_ratio", day), 6, 4)
    return dashboard(
        catalog,
        "pulso-sre-overview",
        "Pulso / SRE overview",
        lay,
        variables(catalog),
        ["sre"],
        "Health of BarberPro at a glance: published KPIs against targets and live traffic.",
    )


def slos(catalog: Catalog, day: date) -> g.Dashboard:
    slo_sel = f'slo="$slo",{published_selector()}'
    lay = Layout().row("Error budget (SLO period, newest published day)")
    lay.add(
        stat(
            "Error budget remaining",
            f"pulso_slo_error_budget_remaining_ratio{{{slo_sel}}}",
            "percentunit",
            threshold_steps(catalog, "error_budget_remaining_ratio", day),
        ),
        6,
        4,
    )
    lay.add(stat("SLI", f"pulso_slo_sli_ratio{{{slo_sel}}}", "percentunit"), 6, 4)
    lay.add(stat("Objective", f"pulso_slo_objective_ratio{{{slo_sel}}}", "percentunit"), 6, 4)
    lay.add(
        stat(
            "Budget exhausted in (at the 1d burn rate)", f"pulso_slo_error_budget_exhaustion_seconds{{{slo_sel}}}", "s"
        ),
        6,
        4,
    )
    lay.row("Burn rate per window")
    windows = catalog.raw.get("burn_rate_alerts", {}).get("report_windows", [])
    lay.add(
        timeseries(
            "Burn rate (published)",
            [(f"pulso_slo_burn_rate{{{slo_sel}}}", "{{window}}")],
            "none",
            [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        12,
        8,
    )
    live_windows = sorted({w for bw in catalog.burn_windows for w in (bw.long, bw.short)}, key=_hours)
    live = [
        (
            f'sum by (slo) (slo:sli_error:ratio_rate{w}{{slo="$slo",{RAW}}} * on (slo, niche, country, region) '
            f'slo:sli_total:rate{w}{{slo="$slo",{RAW}}}) / (sum by (slo) (slo:sli_total:rate{w}{{slo="$slo",{RAW}}}) > 0) '
            f'/ on (slo) (1 - slo:objective:ratio{{slo="$slo"}})',
            w,
        )
        for w in live_windows
    ]
    lay.add(
        timeseries(
            "Burn rate (live, from the recording rules)",
            live,
            "none",
            [{"color": "green", "value": None}, {"color": "red", "value": 1}],
            "Bad/all requests summed over the selected places, divided by the error budget.",
        ),
        12,
        8,
    )
    lay.row("Burndown")
    lay.add(
        timeseries(
            "Error budget remaining over time",
            [
                (f"pulso_slo_error_budget_remaining_ratio{{{slo_sel}}}", "published"),
                (f'slo:error_budget_remaining:ratio{{slo="$slo",{RAW}}}', "live {{niche}} {{region}}"),
            ],
            "percentunit",
            threshold_steps(catalog, "error_budget_remaining_ratio", day),
        ),
        24,
        8,
    )
    lay.row("Every SLO, least budget left first")
    lay.add(
        table(
            "SLOs by error budget remaining",
            [("sort(pulso_slo_error_budget_remaining_ratio)", "")],
            "percentunit",
            "Value",
            f"Report windows: {', '.join(windows)}. Negative: budget overspent.",
        ),
        24,
        10,
    )
    return dashboard(
        catalog,
        SLO_DASHBOARD_UID,
        "Pulso / SLOs and error budgets",
        lay,
        variables(catalog, slo=True),
        ["sre", "slo"],
        "Error budgets, burn rates and burndown of every SLO in the catalog.",
    )


def latency(catalog: Catalog, day: date) -> g.Dashboard:
    lay = Layout().row("Published percentiles (merged histogram buckets of the day)")
    for kpi_id in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        lay.add(_kpi_stat(catalog, kpi_id, day), 8, 4)
    lay.row("Live percentiles per region")
    for q, kpi_id in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
        lay.add(
            timeseries(
                f"p{round(q * 100)} by region",
                [(_quantile(q, "region"), "{{region}}")],
                "s",
                threshold_steps(catalog, kpi_id, day),
            ),
            8,
            8,
        )
    lay.row("Distribution")
    lay.add(
        heatmap(
            "Request duration buckets", f"sum by (le) (increase(http_request_duration_seconds_bucket{{{RAW}}}[{RATE}]))"
        ),
        12,
        9,
    )
    lay.add(_kpi_trend(catalog, "latency_p95_ms", day), 12, 9)
    return dashboard(
        catalog,
        "pulso-latency",
        "Pulso / Latency",
        lay,
        variables(catalog),
        ["sre", "latency"],
        "Latency percentiles from merged histogram buckets, per region, and the bucket heatmap.",
    )


def availability(catalog: Catalog, day: date) -> g.Dashboard:
    lay = Layout().row("Availability (published)")
    for kpi_id in ("availability_ratio", "incidents", "mttr_minutes"):
        lay.add(_kpi_stat(catalog, kpi_id, day), 6, 4)
    lay.add(
        stat(
            "Open incidents",
            f"sum(pulso_incidents_open{{{RAW}}}) or vector(0)",
            "short",
            [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        6,
        4,
    )
    lay.row("Probes and errors (live)")
    lay.add(
        timeseries(
            "Blackbox probe success by region",
            [(f"avg by (niche, region) (probe_success{{{RAW}}})", "{{niche}} {{region}}")],
            "percentunit",
            [{"color": "red", "value": None}, {"color": "green", "value": 1}],
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "5xx error ratio (5m)",
            [(f'slo:sli_error:ratio_rate5m{{slo="availability",{RAW}}}', "{{niche}} {{region}}")],
            "percentunit",
        ),
        12,
        8,
    )
    lay.add(_kpi_trend(catalog, "availability_ratio", day), 24, 8)
    return dashboard(
        catalog,
        "pulso-availability",
        "Pulso / Availability and incidents",
        lay,
        variables(catalog),
        ["sre", "availability"],
        "Uptime from probes and 5xx ratios, incidents and recovery time.",
    )


def capacity(catalog: Catalog, day: date) -> g.Dashboard:
    cap = catalog.section("capacity")
    group = next(gr for gr in catalog.autoscaling_groups if gr.id == cap["capacity_group"])
    lay = Layout().row("Scaling (published)")
    lay.add(_kpi_stat(catalog, "scaling_time_minutes", day), 12, 4)
    lay.add(_kpi_stat(catalog, "peak_concurrent_users", day), 12, 4)
    lay.row("Instances per autoscaling group vs min/max")
    for gr in catalog.autoscaling_groups:
        lay.add(
            timeseries(
                f"{gr.id}: instances (min {gr.min}, max {gr.max})",
                [
                    (
                        f'sum by (country) (autoscaling_group_in_service_instances{{group="{gr.id}",country=~"$country"}})',
                        "in service {{country}}",
                    ),
                    (
                        f'sum by (country) (autoscaling_group_desired_capacity{{group="{gr.id}",country=~"$country"}})',
                        "desired {{country}}",
                    ),
                ],
                "short",
                [
                    {"color": "red", "value": None},
                    {"color": "green", "value": gr.min},
                    {"color": "red", "value": gr.max},
                ],
            ),
            24 // max(1, len(catalog.autoscaling_groups)),
            8,
        )
    lay.row("Concurrent users vs capacity")
    lay.add(
        timeseries(
            "Active sessions vs capacity",
            [
                (f"sum(active_sessions{{{RAW}}})", "active sessions"),
                (
                    f'sum(autoscaling_group_in_service_instances{{group="{group.id}",country=~"$country"}}) * {group.users_per_instance}',
                    f"capacity ({group.id} instances x {group.users_per_instance})",
                ),
            ],
            "short",
        ),
        24,
        8,
    )
    return dashboard(
        catalog,
        "pulso-capacity",
        "Pulso / Capacity and scaling",
        lay,
        variables(catalog),
        ["sre", "capacity"],
        "Autoscaling groups, scaling time and concurrent users against capacity.",
    )


def cache_db(catalog: Catalog, day: date) -> g.Dashboard:
    pool = catalog.section("capacity")["db_pool_size"]
    lay = Layout().row("Published")
    lay.add(_kpi_stat(catalog, "cache_hit_ratio", day), 12, 4)
    lay.add(_kpi_stat(catalog, "db_pool_utilization_ratio", day), 12, 4)
    lay.row("Live")
    lay.add(
        timeseries(
            "Cache hit ratio by region",
            [
                (
                    f"sum by (region) (rate(cache_hits_total{{{RAW}}}[{RATE}])) / (sum by (region) (rate(cache_requests_total{{{RAW}}}[{RATE}])) > 0)",
                    "{{region}}",
                )
            ],
            "percentunit",
            threshold_steps(catalog, "cache_hit_ratio", day),
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            f"DB pool utilization (pool of {pool})",
            [(f"sum(db_connections_in_use) / {pool}", "in use")],
            "percentunit",
            threshold_steps(catalog, "db_pool_utilization_ratio", day),
        ),
        12,
        8,
    )
    return dashboard(
        catalog,
        "pulso-cache-db",
        "Pulso / Cache and DB pool",
        lay,
        variables(catalog),
        ["sre", "capacity"],
        "Cache hit ratio from summed hits/requests and DB connection pool use.",
    )


def cost(catalog: Catalog, day: date) -> g.Dashboard:
    lay = Layout().row("Unit economics (newest published day)")
    for kpi_id in ("infra_cost_usd", "cost_per_active_user_usd", "revenue_per_infra_usd", "infra_margin_ratio"):
        lay.add(_kpi_stat(catalog, kpi_id, day), 6, 4)
    lay.row("Cost")
    lay.add(_kpi_trend(catalog, "infra_cost_usd", day), 12, 8)
    lay.add(timeseries("Cost per niche", [('pulso_infra_cost_usd{niche!="all"}', "{{niche}}")], "currencyUSD"), 12, 8)
    lay.add(
        timeseries(
            "Cost per service", [('sum by (service) (pulso_cost_usd{niche=~"$niche"})', "{{service}}")], "currencyUSD"
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Cost per charge category",
            [('sum by (charge_category) (pulso_cost_usd{niche=~"$niche"})', "{{charge_category}}")],
            "currencyUSD",
        ),
        12,
        8,
    )
    lay.row("Revenue")
    lay.add(_kpi_trend(catalog, "revenue_per_infra_usd", day), 12, 8)
    lay.add(_kpi_trend(catalog, "infra_margin_ratio", day), 12, 8)
    return dashboard(
        catalog,
        "pulso-cost",
        "Pulso / Cost",
        lay,
        variables(catalog, dims=("niche",)),
        ["cost"],
        "Amortized AWS cost per day, niche and service against budget; unit economics.",
    )


def niche_dashboard(catalog: Catalog, niche_id: str, day: date) -> g.Dashboard:
    """The one template of every niche's dashboard."""
    niche = next(n for n in catalog.niches if n.id == niche_id)
    fixed = {"niche": niche.id}
    raw = raw_selector(f'niche="{niche.id}"', dims=("country", "region"))
    lay = Layout().row(f"{niche.name['en']}: service level")
    for kpi_id in ("availability_ratio", "latency_p95_ms", "error_budget_remaining_ratio", "mercadopago_success_ratio"):
        lay.add(_kpi_stat(catalog, kpi_id, day, fixed), 6, 4)
    lay.add(
        timeseries(
            "Requests per second by region",
            [(f"sum by (region) (rate(http_requests_total{{{raw}}}[{RATE}]))", "{{region}}")],
            "reqps",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Latency p95 by region (live)",
            [(_quantile(0.95, "region", raw), "{{region}}")],
            "s",
            threshold_steps(catalog, "latency_p95_ms", day),
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Burn rate (published)",
            [
                (
                    f'pulso_slo_burn_rate{{slo="{q.slo.id}",{published_selector(fixed=fixed)}}}',
                    f"{q.slo.id} {{{{window}}}}",
                )
                for q in sli_queries(catalog)
            ],
            "none",
            [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        8,
        8,
    )
    lay.row(f"{niche.name['en']}: business")
    for kpi_id in (
        "infra_cost_usd",
        "revenue_per_infra_usd",
        "infra_margin_ratio",
        "cost_per_active_user_usd",
        "bookings",
        "active_users",
    ):
        lay.add(_kpi_stat(catalog, kpi_id, day, fixed), 4, 4)
    return dashboard(
        catalog,
        f"pulso-niche-{niche.id}",
        f"Pulso / Niche / {niche.name['en']}",
        lay,
        variables(catalog, dims=("country", "region")),
        ["niche", niche.id],
        f"Service level and unit economics of the {niche.name['en']} niche.",
    )


SRE_DASHBOARDS = (sre_overview, slos, latency, availability, capacity, cache_db, cost)


def all_dashboards(catalog: Catalog, day: date) -> list[g.Dashboard]:
    """Every dashboard: the SRE ones plus one per catalog niche."""
    return [build(catalog, day) for build in SRE_DASHBOARDS] + [
        niche_dashboard(catalog, n.id, day) for n in catalog.niches
    ]
