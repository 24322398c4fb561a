"""Prometheus SLO rules and the Alertmanager config, generated from the catalog.

The shape follows the Google SRE Workbook (chapter "Alerting on SLOs") as Sloth and Pyrra generate it:

* recording rules ``slo:sli_error:ratio_rate<w>`` (bad / all requests over window ``w``, from summed
  counters, never an average of ratios) and ``slo:sli_total:rate<w>`` (requests per second) for every
  window the alerts and reports use plus the SLO period, by the SLO's dimensions;
* ``slo:error_budget_remaining:ratio`` over the period and ``slo:objective:ratio``;
* one multiwindow, multi-burn-rate alert per SLO and severity: it fires when both the long and the short
  window burn at least the catalog's rate (``BurnWindow.burn_rate(period_days)``), with a traffic guard
  (``min_requests_per_5m``) so a single error in near-zero traffic pages nobody. The windows of one
  severity are joined with ``or`` on the same labels, so whichever window fired the alert is the same one
  (Alertmanager deduplicates it).

Windows are computed from the raw counters (``rate(...[w])``), exact and simple to test. At month-6
scale the 1d/3d/period windows read up to 30 days of raw samples per evaluation; if that becomes
expensive, give those windows their own slower group (Pyrra evaluates them every few minutes) or derive
them from recorded 1-minute increases with ``sum_over_time`` (still summed counts, not averaged ratios).

Every value (SLOs, objectives, windows, thresholds, links, latency thresholds per country) comes from
:mod:`pipelines.lib.catalog`; adding a niche or a country needs no change here because the rules group
by labels, not by listed values.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import yaml

from pipelines.lib.catalog import Catalog, Slo, _hours

# Raw service metric families of the data contract (section 1.1) the rules read.
REQUESTS_METRIC = "http_requests_total"
LATENCY_BUCKET_METRIC = "http_request_duration_seconds_bucket"

RULES_FILE = "slo.rules.yml"
META_RULES_FILE = "pulso.rules.yml"
ALERTMANAGER_FILE = "alertmanager.yml"
# Where the Alertmanager container finds the Slack webhook URL (mounted secret). The URL itself never
# appears in a generated file.
DEFAULT_WEBHOOK_FILE = "/etc/alertmanager/secrets/slack_webhook_url"
SLACK_CHANNELS = {"page": "#pulso-pages", "ticket": "#pulso-tickets"}
# Dashboard uid the alert links point to (dashboards.generate uses the same constant).
SLO_DASHBOARD_UID = "pulso-slos"
# Data older than this (a daily pipeline plus slack) makes the exporter report pulso_up 0.
STALE_AFTER_SECONDS = 36 * 3600
BURN_RESOLUTION = "0.000001"


class RuleError(ValueError):
    """The catalog cannot be turned into rules; the message names the SLO and the problem."""


@dataclass(frozen=True)
class SliQuery:
    """How to count the good and all events of one SLO from raw Prometheus series.

    ``terms`` is a list of (good selector, total selector) pairs whose results are joined with ``or``:
    the latency SLO has one pair per distinct country threshold.
    """

    slo: Slo
    terms: tuple[tuple[str, str], ...]

    @property
    def by(self) -> str:
        return ", ".join(self.slo.dims)

    def total_rate(self, window: str) -> str:
        return _or(f"sum by ({self.by}) (rate({total}[{window}]))" for _, total in self.terms)

    def good_rate(self, window: str) -> str:
        return _or(f"sum by ({self.by}) (rate({good}[{window}]))" for good, _ in self.terms)

    def error_ratio(self, window: str) -> str:
        # (all - good) / all from summed counters: merging, never averaging per-series ratios. Using the
        # good selector (rather than a "bad" one) keeps the ratio defined when no 5xx series exists yet.
        # `> 0` on the denominator: no traffic in the window gives no sample rather than NaN (0/0), so
        # no NaN reaches a dashboard and "no data" shows as no data.
        total, good = self.total_rate(window), self.good_rate(window)
        return f"(\n  ({total})\n  -\n  ({good})\n)\n/\n(({total}) > 0)"


def _or(parts: Any) -> str:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else " or ".join(f"({p})" for p in parts)


def format_le(seconds: float) -> str:
    """The ``le`` label value of a bucket bound as Prometheus writes it (``0.2``, ``1``, ``2.5``)."""
    text = repr(float(seconds))
    return text[:-2] if text.endswith(".0") else text


def sli_queries(catalog: Catalog) -> list[SliQuery]:
    """The SLOs that have a Prometheus SLI, with their good/total selectors.

    An SLO with a ``prometheus: {good, total}`` entry uses those selectors; the latency SLO
    (``threshold_ms_by_country``) counts requests within each country's ``latency_slo_ms`` bucket.
    SLOs measured only in the warehouse (MercadoPago success) have no raw series and are skipped; the
    exporter serves their published SLI and burn rates instead.
    """
    queries = []
    for slo in catalog.slos:
        prom = slo.raw.get("prometheus")
        if prom:
            if not {"good", "total"} <= set(prom):
                raise RuleError(f"slo {slo.id!r}: prometheus needs both 'good' and 'total' selectors")
            queries.append(SliQuery(slo, ((prom["good"], prom["total"]),)))
        elif slo.raw.get("threshold_ms_by_country"):
            by_threshold: dict[int, list[str]] = defaultdict(list)
            for country in catalog.countries:
                by_threshold[country.latency_slo_ms].append(country.id)
            terms = []
            for ms, countries in sorted(by_threshold.items()):
                le = format_le(ms / 1000)
                match = f'country="{countries[0]}"' if len(countries) == 1 else f'country=~"{"|".join(countries)}"'
                terms.append(
                    (f'{LATENCY_BUCKET_METRIC}{{{match},le="{le}"}}', f'{LATENCY_BUCKET_METRIC}{{{match},le="+Inf"}}')
                )
            queries.append(SliQuery(slo, tuple(terms)))
    return queries


def windows(catalog: Catalog, slo: Slo) -> list[str]:
    """Every window recorded for an SLO: the alert windows, the report windows and the SLO period."""
    burn = catalog.raw.get("burn_rate_alerts", {})
    names = {w for bw in catalog.burn_windows for w in (bw.long, bw.short)}
    names |= set(burn.get("report_windows", []))
    names.add(f"{slo.period_days}d")
    return sorted(names, key=_hours)


def _num(value: float) -> str:
    """A threshold as PromQL text: short, and free of float noise (0.1 * 30 * 24 / 72 -> 1)."""
    return f"{value:.6g}"


def error_budget(slo: Slo) -> float:
    """1 - objective, rounded so 1 - 0.999 is 0.001 and not 0.0010000000000000009."""
    return round(slo.error_budget, 12)


def recording_rules(catalog: Catalog) -> list[dict[str, Any]]:
    """One recording group per SLO with a Prometheus SLI."""
    groups = []
    for q in sli_queries(catalog):
        labels = {"slo": q.slo.id}
        rules: list[dict[str, Any]] = []
        for w in windows(catalog, q.slo):
            rules.append({"record": f"slo:sli_error:ratio_rate{w}", "expr": q.error_ratio(w), "labels": labels})
            rules.append({"record": f"slo:sli_total:rate{w}", "expr": q.total_rate(w), "labels": labels})
        period = f"{q.slo.period_days}d"
        rules.append(
            {
                "record": "slo:error_budget_remaining:ratio",
                "expr": f'1 - slo:sli_error:ratio_rate{period}{{slo="{q.slo.id}"}} / {_num(error_budget(q.slo))}',
                "labels": labels,
            }
        )
        rules.append(
            {
                "record": "slo:objective:ratio",
                "expr": f"vector({_num(q.slo.objective)})",
                "labels": labels,
            }
        )
        groups.append({"name": f"pulso-slo-{q.slo.id}-recording", "rules": rules})
    return groups


def _dashboard_url(catalog: Catalog) -> str:
    base = catalog.section("links")["grafana_base_url"].rstrip("/")
    return (
        f"{base}/d/{SLO_DASHBOARD_UID}?var-slo={{{{ $labels.slo }}}}&var-niche={{{{ $labels.niche }}}}"
        "&var-country={{ $labels.country }}&var-region={{ $labels.region }}"
    )


def runbook_url(catalog: Catalog, anchor: str) -> str:
    """A link to a section of docs/runbooks.md."""
    return f"{catalog.section('links')['runbook_base_url']}#{anchor}"


def alert_name(slo: Slo) -> str:
    """``AvailabilityBudgetBurn`` for the availability SLO."""
    return "".join(part.capitalize() for part in slo.id.split("_")) + "BudgetBurn"


def alert_expr(catalog: Catalog, slo: Slo, severity: str) -> str:
    """The multiwindow, multi-burn-rate condition of one SLO and severity.

    The value is the burn rate of the long window (how many times faster than sustainable the budget
    burns). ``>=``: burning exactly the catalog's rate consumes exactly the budget fraction the window
    allows, which is what the alert is for. Burn rates are compared at ``BURN_RESOLUTION``: the ratio of
    two summed rates carries float noise (an exact 1x burn evaluates to 1 - 6e-14), which must not decide
    whether a ticket opens.
    """
    guard = catalog.raw.get("burn_rate_alerts", {}).get("min_requests_per_5m", 0)
    budget = _num(error_budget(slo))
    sel = f'{{slo="{slo.id}"}}'
    branches = []
    for bw in (w for w in catalog.burn_windows if w.severity == severity):
        rate = _num(bw.burn_rate(slo.period_days))
        branch = (
            f"(\n  round(slo:sli_error:ratio_rate{bw.long}{sel} / {budget}, {BURN_RESOLUTION}) >= {rate}\n"
            f"  and\n  round(slo:sli_error:ratio_rate{bw.short}{sel} / {budget}, {BURN_RESOLUTION}) >= {rate}\n"
        )
        if guard:
            # Traffic guard: at least min_requests_per_5m requests per 5 minutes, on average over the
            # short window, or a lone error at night would be a 100% error ratio.
            branch += f"  and\n  (slo:sli_total:rate{bw.short}{sel} * 300) >= {_num(guard)}\n"
        branches.append(branch + ")")
    return "\nor\n".join(branches)


def alert_rules(catalog: Catalog) -> list[dict[str, Any]]:
    """One alerting group per SLO with a Prometheus SLI: a page and a ticket alert."""
    groups = []
    severities = sorted({w.severity for w in catalog.burn_windows}, key=lambda s: (s != "page", s))
    for q in sli_queries(catalog):
        slo = q.slo
        rules = []
        for severity in severities:
            windows_text = ", ".join(
                f"{w.long}/{w.short} at {_num(w.burn_rate(slo.period_days))}x"
                for w in catalog.burn_windows
                if w.severity == severity
            )
            budget_query = (
                '{{ with printf "slo:error_budget_remaining:ratio{slo=%q,niche=%q,country=%q,region=%q}" '
                "$labels.slo $labels.niche $labels.country $labels.region | query }}"
                "{{ . | first | value | humanizePercentage }}{{ else }}unknown{{ end }}"
            )
            rules.append(
                {
                    "alert": alert_name(slo),
                    "expr": alert_expr(catalog, slo, severity),
                    "labels": {"severity": severity, "slo": slo.id},
                    "annotations": {
                        "summary": (
                            f"{slo.name['en']} SLO ({_num(slo.objective * 100)}% over {slo.period_days}d) of "
                            "{{ $labels.niche }} in {{ $labels.region }} ({{ $labels.country }}) is burning its "
                            'error budget {{ $value | printf "%.1f" }}x faster than sustainable'
                        ),
                        "description": (
                            f"Error budget left over {slo.period_days}d: {budget_query}. "
                            f"Fires when both windows of a pair burn at least the rate ({windows_text}) "
                            f"with at least {catalog.raw.get('burn_rate_alerts', {}).get('min_requests_per_5m', 0)} "
                            "requests per 5 minutes."
                        ),
                        "budget_remaining": budget_query,
                        "dashboard": _dashboard_url(catalog),
                        "runbook_url": runbook_url(catalog, f"{slo.id.replace('_', '-')}-budget-burn-{severity}"),
                    },
                }
            )
        groups.append({"name": f"pulso-slo-{slo.id}-alerts", "rules": rules})
    return groups


def slo_rule_groups(catalog: Catalog) -> list[dict[str, Any]]:
    """One group per SLO: its recording rules, then its alerts.

    One group, because Prometheus evaluates the rules of a group in order at the same timestamp, so the
    alerts read the ratios recorded in this very evaluation; across groups the order is not defined and
    an alert could act on the previous evaluation's values (seen as flaky promtool results).
    """
    alerts = {g["name"].removesuffix("-alerts"): g["rules"] for g in alert_rules(catalog)}
    return [
        {
            "name": g["name"].removesuffix("-recording"),
            "rules": g["rules"] + alerts[g["name"].removesuffix("-recording")],
        }
        for g in recording_rules(catalog)
    ]


def meta_rules(catalog: Catalog) -> list[dict[str, Any]]:
    """Alerts on Pulso itself: the exporter cannot serve fresh published data."""
    return [
        {
            "name": "pulso-exporter",
            "rules": [
                {
                    "alert": "PulsoPublishedDataStale",
                    "expr": "pulso_up == 0",
                    "for": "30m",
                    "labels": {"severity": "ticket"},
                    "annotations": {
                        "summary": "Pulso's published data is missing or stale "
                        '(age {{ with query "pulso_published_age_seconds" }}'
                        "{{ . | first | value | humanizeDuration }}{{ else }}unknown{{ end }})",
                        "dashboard": f"{catalog.section('links')['grafana_base_url'].rstrip('/')}/d/pulso-sre-overview",
                        "runbook_url": runbook_url(catalog, "pulso-published-data-stale"),
                    },
                },
                {
                    "alert": "PulsoExporterDown",
                    "expr": 'up{job="pulso"} == 0',
                    "for": "10m",
                    "labels": {"severity": "ticket"},
                    "annotations": {
                        "summary": "Prometheus cannot scrape the Pulso exporter ({{ $labels.instance }})",
                        "dashboard": f"{catalog.section('links')['grafana_base_url'].rstrip('/')}/d/pulso-sre-overview",
                        "runbook_url": runbook_url(catalog, "pulso-exporter-down"),
                    },
                },
            ],
        }
    ]


HEADER = (
    "# GENERATED by `python -m alerts.generate` from pipelines/catalog.yaml. Do not edit by hand:\n"
    "# change the catalog and regenerate (tests/test_rules.py fails when this file is out of date).\n"
)


class _Dumper(yaml.SafeDumper):
    """Readable output: multi-line expressions as literal blocks, no YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(payload: dict[str, Any]) -> str:
    return HEADER + yaml.dump(payload, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def alertmanager_config(catalog: Catalog, webhook_file: str = DEFAULT_WEBHOOK_FILE) -> dict[str, Any]:
    """Alertmanager routing: pages and tickets to their Slack channels, grouped per SLO and place.

    The webhook URL is read by Alertmanager from ``webhook_file`` (``api_url_file``), a mounted secret.
    """
    group_by = ["alertname", "slo", "niche", "country", "region"]
    text = (
        "{{ range .Alerts }}*{{ .Labels.alertname }}* ({{ .Labels.severity }}) {{ .Annotations.summary }}\n"
        "Budget left: {{ .Annotations.budget_remaining }} | <{{ .Annotations.dashboard }}|dashboard> | "
        "<{{ .Annotations.runbook_url }}|runbook>\n{{ end }}"
    )
    receivers = []
    for severity, channel in SLACK_CHANNELS.items():
        receivers.append(
            {
                "name": f"slack-{severity}",
                "slack_configs": [
                    {
                        "api_url_file": webhook_file,
                        "channel": channel,
                        "send_resolved": True,
                        "title": '[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}'
                        "{{ end }}] {{ .CommonLabels.alertname }} {{ .CommonLabels.niche }} "
                        "{{ .CommonLabels.region }}",
                        "text": text,
                    }
                ],
            }
        )
    return {
        "route": {
            "receiver": "slack-ticket",
            "group_by": group_by,
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": [
                {"matchers": ['severity="page"'], "receiver": "slack-page", "repeat_interval": "1h"},
                {"matchers": ['severity="ticket"'], "receiver": "slack-ticket", "repeat_interval": "24h"},
            ],
        },
        # A page already covers the ticket of the same SLO and place: do not send both.
        "inhibit_rules": [
            {
                "source_matchers": ['severity="page"'],
                "target_matchers": ['severity="ticket"'],
                "equal": ["slo", "niche", "country", "region"],
            }
        ],
        "receivers": receivers,
    }


def render(catalog: Catalog, webhook_file: str = DEFAULT_WEBHOOK_FILE) -> dict[str, str]:
    """Every generated file, keyed by its path relative to ``alerts/``."""
    return {
        f"prometheus/{RULES_FILE}": _dump({"groups": slo_rule_groups(catalog)}),
        f"prometheus/{META_RULES_FILE}": _dump({"groups": meta_rules(catalog)}),
        f"alertmanager/{ALERTMANAGER_FILE}": _dump(alertmanager_config(catalog, webhook_file)),
    }
