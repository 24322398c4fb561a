"""Slack Block Kit messages for anomalies: firing, escalated and resolved.

A message says what moved, actual vs expected with the interval, since when (Argentina time), the top
contributing dimensions, the severity, and links to the Grafana dashboard and the executive view
(catalog ``links``). Only catalog ids and short machine codes (payment methods, rejection reasons) ever
reach a message: any other label value is replaced, so no personal data can leak through a dimension.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from alerts.detection.explain import Contribution, CostImpact
from pipelines.lib.catalog import ALL, Catalog, load_catalog

SAFE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,48}$")  # e.g. visa, cc_rejected_high_risk
REDACTED = "(other)"
SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}
SEVERITY_RANK = {"warning": 1, "critical": 2}


@dataclass(frozen=True)
class Anomaly:
    """One anomaly as the notifier sees it (built from a detector episode plus its explanation)."""

    key: str  # what is watched, stable across runs: metric + scope, e.g. "requests|niche=all|region=all"
    metric: str  # metric id from the alert policy (a catalog KPI id where one exists)
    name: dict[str, str]  # {"es": ..., "en": ...}
    unit: str  # catalog units: ms, ratio, count, users, usd, ...
    scope: dict[str, str]  # niche/country/region/service -> catalog id or "all"
    severity: str  # "warning" or "critical"
    direction: str  # "up" or "down"
    started_at: datetime
    observed_at: datetime
    actual: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    score: float
    contributors: tuple[Contribution, ...] = ()
    cost: CostImpact | None = None
    dashboard: str = "pulso-overview"  # Grafana dashboard uid
    app_page: str = ""  # executive view page path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        """Stable id of this episode: the key and the start (re-running a check gives the same id)."""
        return f"{self.key}@{self.started_at.astimezone(ZoneInfo('UTC')):%Y%m%dT%H%M}"


def _allowed_values(catalog: Catalog) -> set[str]:
    return (
        {ALL}
        | set(catalog.niche_ids)
        | {c.id for c in catalog.countries}
        | {r.id for r in catalog.regions}
        | {s.id for s in catalog.services}
    )


def safe_label(value: str, catalog: Catalog | None = None) -> str:
    """A label value fit for Slack: a catalog id or a short lower-case code; anything else is redacted."""
    catalog = catalog or load_catalog()
    text = str(value)
    if text in _allowed_values(catalog) or SAFE_CODE.fullmatch(text):
        return text
    return REDACTED


def format_value(value: float | Decimal | None, unit: str) -> str:
    """A number as a person reads it; None, NaN and Inf become "no data"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "no data"
    if unit == "ms":
        return f"{_round(value, 0)} ms"
    if unit == "ratio":
        return f"{_round(_to_decimal(value) * 100, 2)}%"
    if unit == "usd":
        return f"${_round(value, 2)}"
    if unit == "usd_per_usd":
        return f"{_round(value, 2)} USD/USD"
    if unit == "minutes":
        return f"{_round(value, 1)} min"
    return _round(value, 0)


def _to_decimal(value: float | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(repr(float(value)))


def _round(value: float | Decimal, places: int) -> str:
    """Half-up rounding (as people and accountants expect), with thousands separators."""
    q = _to_decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{q:,.{places}f}"


def _format_change(actual: float | None, expected: float | None, unit: str) -> str:
    if actual is None or expected is None or not math.isfinite(actual) or not math.isfinite(expected):
        return "no data"
    delta = actual - expected
    if unit == "ratio":
        return f"{delta * 100:+.2f} pp"
    if expected == 0:
        return f"{'+' if delta >= 0 else '-'}{format_value(abs(delta), unit)}"
    return f"{delta / abs(expected) * 100:+.0f}%"


def _scope_text(scope: dict[str, str], catalog: Catalog) -> str:
    parts = [safe_label(v, catalog) for k, v in scope.items() if v != ALL]
    return " · ".join(parts) if parts else "all of BarberPro"


def _links(anomaly: Anomaly, catalog: Catalog) -> tuple[str, str]:
    links = catalog.section("links")
    params = {f"var-{k}": safe_label(v, catalog) for k, v in anomaly.scope.items() if v != ALL}
    start_ms = int(anomaly.started_at.timestamp() * 1000) - 3_600_000
    params |= {"from": str(start_ms), "to": "now"}
    grafana = f"{links['grafana_base_url'].rstrip('/')}/d/{anomaly.dashboard}?{urlencode(params)}"
    app = f"{links['app_base_url'].rstrip('/')}/{anomaly.app_page.lstrip('/')}"
    return grafana, app


def _shown_id(anomaly: Anomaly, catalog: Catalog) -> str:
    """The alert id as shown in Slack: the key's parts pass :func:`safe_label` (the stored id keeps them)."""
    parts = []
    for part in anomaly.key.split("|"):
        dim, sep, value = part.partition("=")
        parts.append(f"{safe_label(dim, catalog)}={safe_label(value, catalog)}" if sep else safe_label(part, catalog))
    return "|".join(parts) + f"@{anomaly.started_at.astimezone(ZoneInfo('UTC')):%Y%m%dT%H%M}"


def _local(ts: datetime, catalog: Catalog) -> str:
    return ts.astimezone(ZoneInfo(catalog.timezone)).strftime("%Y-%m-%d %H:%M") + " (AR)"


def _contributors_text(anomaly: Anomaly, catalog: Catalog, top: int = 3) -> str:
    lines = []
    for c in anomaly.contributors[:top]:
        share = f" ({float(c.share_of_deviation) * 100:.0f}% of the change)" if c.share_of_deviation is not None else ""
        amount = float(c.contribution)
        text = (
            f"{amount * 100:+.2f} pp"
            if anomaly.unit == "ratio"
            else (("+" if amount >= 0 else "-") + format_value(abs(amount), anomaly.unit))
        )
        lines.append(f"• {c.dimension} *{safe_label(c.value, catalog)}*: {text}{share}")
    return "\n".join(lines) if lines else "No single dimension stands out."


def firing_message(anomaly: Anomaly, catalog: Catalog | None = None, *, escalated: bool = False) -> dict[str, Any]:
    """The Block Kit payload announcing an anomaly (``escalated``: its severity rose since)."""
    catalog = catalog or load_catalog()
    name = anomaly.name.get("en", anomaly.metric)
    verb = "up" if anomaly.direction == "up" else "down"
    scope = _scope_text(anomaly.scope, catalog)
    prefix = "Escalated to critical" if escalated else f"{anomaly.severity.capitalize()} anomaly"
    title = f"{prefix}: {name} {verb} — {scope}"
    grafana, app = _links(anomaly, catalog)
    fields = [
        f"*Actual*\n{format_value(anomaly.actual, anomaly.unit)}",
        f"*Expected*\n{format_value(anomaly.expected, anomaly.unit)} "
        f"({format_value(anomaly.lower, anomaly.unit)} – {format_value(anomaly.upper, anomaly.unit)})",
        f"*Change*\n{_format_change(anomaly.actual, anomaly.expected, anomaly.unit)}",
        f"*Since*\n{_local(anomaly.started_at, catalog)}",
        f"*Severity*\n{anomaly.severity}",
        f"*Anomaly score*\n{anomaly.score:.2f}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if anomaly.cost is not None:
        c = anomaly.cost
        pct = f" ({c.impact_percent:+}%)" if c.impact_percent is not None else ""
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        f"*Cost impact* — expected spend {format_value(c.expected_spend, 'usd')}, actual spend "
                        f"{format_value(c.actual_spend, 'usd')}, impact "
                        f"{'+' if c.total_impact >= 0 else '-'}{format_value(abs(c.total_impact), 'usd')}{pct}"
                    ),
                },
            }
        )
    blocks += [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*Top contributors*\n" + _contributors_text(anomaly, catalog)},
        },
        {
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Grafana dashboard"}, "url": grafana},
                {"type": "button", "text": {"type": "plain_text", "text": "Executive view"}, "url": app},
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Pulso · alert `{_shown_id(anomaly, catalog)}`"}]},
    ]
    text = (
        f"{SEVERITY_EMOJI.get(anomaly.severity, '')} {title}: {format_value(anomaly.actual, anomaly.unit)} vs "
        f"expected {format_value(anomaly.expected, anomaly.unit)}"
    ).strip()
    return {"text": text, "blocks": blocks}


def resolved_message(anomaly: Anomaly, resolved_at: datetime, catalog: Catalog | None = None) -> dict[str, Any]:
    """The Block Kit payload saying an anomaly ended, and how long it lasted."""
    catalog = catalog or load_catalog()
    name = anomaly.name.get("en", anomaly.metric)
    scope = _scope_text(anomaly.scope, catalog)
    minutes = max(0, int((resolved_at - anomaly.started_at).total_seconds() // 60))
    lasted = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    grafana, app = _links(anomaly, catalog)
    title = f"Resolved: {name} — {scope}"
    return {
        "text": f":white_check_mark: {title} (lasted {lasted})",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Started*\n{_local(anomaly.started_at, catalog)}"},
                    {"type": "mrkdwn", "text": f"*Resolved*\n{_local(resolved_at, catalog)}"},
                    {"type": "mrkdwn", "text": f"*Lasted*\n{lasted}"},
                    {
                        "type": "mrkdwn",
                        "text": f"*Peak*\n{format_value(anomaly.actual, anomaly.unit)} vs expected "
                        f"{format_value(anomaly.expected, anomaly.unit)}",
                    },
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Grafana dashboard"}, "url": grafana},
                    {"type": "button", "text": {"type": "plain_text", "text": "Executive view"}, "url": app},
                ],
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Pulso · alert `{_shown_id(anomaly, catalog)}`"}],
            },
        ],
    }
