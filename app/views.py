"""What each page shows, as plain data: formatted tables (with a raw CSV twin), KPI cards and series.

No Streamlit here, so every number a page shows is testable from a snapshot connection. Display
tables hold strings already formatted for the language and currency (so the browser never re-formats
them); the CSV twin holds the raw values (ISO dates, '.' decimals) with the same localized headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pandas as pd

from app import formatting as fmt
from app.i18n import catalog_name, t
from app.queries import (
    ALL,
    DailyPoint,
    Scope,
    availability_by_niche_country,
    cost_by,
    grain,
    histogram_quantile,
    in_currency,
    incidents,
    kpi_series,
    latency_buckets,
    mercadopago_daily,
    payments_by,
    period_rule,
    period_value,
    rejections,
    share_within,
)
from app.queries import alerts as alert_rows
from pipelines.lib.catalog import Catalog, Kpi

DOT = "●"  # a plain glyph every font has; render.py colors it (and its text) by status
STATUS_COLORS = {"ok": "#1a7f37", "warn": "#b26b00", "breach": "#c62828", "no_data": "#6b7280"}


class StatusText(str):
    """A cell's text that also carries the status it shows (ok / warn / breach / no_data)."""

    status: str

    def __new__(cls, text: str, status: str) -> StatusText:
        obj = super().__new__(cls, text)
        obj.status = status
        return obj


RESTRICTED = "__restricted__"


@dataclass(frozen=True)
class Table:
    """A table to show (formatted strings) and its CSV twin (raw values), same columns."""

    name: str
    display: pd.DataFrame
    raw: pd.DataFrame
    status: pd.DataFrame | None = None  # same shape as display: a status per cell, or None

    @property
    def empty(self) -> bool:
        return self.display.empty

    def csv(self) -> bytes:
        return self.raw.to_csv(index=False).encode("utf-8")


@dataclass(frozen=True)
class Card:
    kpi: str
    label: str
    value: str
    delta: str | None
    delta_color: str
    delta_arrow: str
    help: str
    chart: list[float] | None
    raw_value: float | Decimal | None
    raw_previous: float | Decimal | None


@dataclass(frozen=True)
class View:
    """The inputs every view needs (a subset of the page context, so tests can build one directly)."""

    con: duckdb.DuckDBPyConnection
    catalog: Catalog
    scope: Scope
    lang: str
    rates: dict[date, Decimal]
    hidden_niches: tuple[str, ...] = ()

    def t(self, key: str, **params: Any) -> str:
        return t(key, self.lang, **params)

    def niche_name(self, niche: str) -> str:
        if niche == ALL:
            return self.t("all")
        if niche == RESTRICTED:
            return self.t("restricted_row")
        return next((catalog_name(n, self.lang) for n in self.catalog.niches if n.id == niche), niche)

    def country_name(self, country: str) -> str:
        if country == ALL:
            return self.t("all")
        return next((catalog_name(c, self.lang) for c in self.catalog.countries if c.id == country), country)

    def region_name(self, region: str) -> str:
        if region == ALL:
            return self.t("all")
        return next((catalog_name(r, self.lang) for r in self.catalog.regions if r.id == region), region)

    def service_name(self, service: str) -> str:
        if service in ("shared", "", None):  # billing lines tagged shared or untagged (no catalog service)
            return self.t("shared_service")
        return next((catalog_name(s, self.lang) for s in self.catalog.services if s.id == service), service)

    def status(self, status: str | None) -> str:
        status = status or "no_data"
        return StatusText(f"{DOT} {self.t('status_' + status)}", status)

    def value(self, value: Any, unit: str) -> str:
        return fmt.kpi_value(value, unit, self.lang, self.scope.currency)

    def money(self, amount: Any) -> str:
        return fmt.money(amount, self.lang, self.scope.currency)

    def unit_label(self, unit: str) -> str:
        return self.scope.currency if unit == "usd" else unit


def _raw(value: Any) -> Any:
    """A value for the CSV: missing -> empty; a Decimal written exactly, without padding zeros."""
    if fmt.is_missing(value):
        return None
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return value


def _table(name: str, columns: list[str], display_rows: list[list[Any]], raw_rows: list[list[Any]]) -> Table:
    # Statuses are read before the DataFrame is built (pandas stores plain strings, not StatusText).
    status = [[getattr(cell, "status", None) for cell in row] for row in display_rows]
    has_status = any(s for row in status for s in row)
    return Table(
        name,
        pd.DataFrame(display_rows, columns=columns),
        pd.DataFrame(raw_rows, columns=columns),
        pd.DataFrame(status, columns=columns, dtype=object) if has_status else None,
    )


def _target_text(view: View, kpi: Kpi, target: Any) -> str:
    if fmt.is_missing(target):
        return "—"
    sign = "≤" if kpi.direction == "lower" else "≥"
    return f"{sign} {view.value(target, kpi.unit)}"


# ------------------------------------------------------------------------------------------------
# Overview
# ------------------------------------------------------------------------------------------------


def targets_table(view: View) -> Table:
    """Each KPI: actual on the period's last day, target in force, month-3 and month-6, status."""
    cat, scope = view.catalog, view.scope
    end_rate = {d: r for d, r in view.rates.items() if d == scope.end}
    columns = [view.t(k) for k in ("kpi", "actual", "target_now", "target_m3", "target_m6", "status", "grain")]
    shown, raw = [], []
    last_day = kpi_series(view.con, cat, list(cat.kpi_ids), scope.with_(start=scope.end), view.rates)
    for kpi in cat.kpis:
        n, c, _, split = grain(kpi, scope)
        points = last_day[kpi.id]
        point = points[0] if points else DailyPoint(scope.end, None, None, "no_data")
        now = (
            point.target
            if point.target is not None
            else in_currency(cat.target(kpi.id, scope.end, n, c), kpi.unit, scope.end, scope.currency, end_rate)
        )
        # Future phases converted at the last day's rate: the plan is in USD, the future rate unknown.
        m3 = in_currency(cat.target(kpi.id, cat.plan["month_3"], n, c), kpi.unit, scope.end, scope.currency, end_rate)
        m6 = in_currency(cat.target(kpi.id, cat.plan["month_6"], n, c), kpi.unit, scope.end, scope.currency, end_rate)
        grain_text = "" if split else view.t("not_split")
        shown.append(
            [
                catalog_name(kpi, view.lang),
                view.value(point.value, kpi.unit),
                _target_text(view, kpi, now),
                _target_text(view, kpi, m3),
                _target_text(view, kpi, m6),
                view.status(point.status),
                grain_text,
            ]
        )
        raw.append([kpi.id, _raw(point.value), _raw(now), _raw(m3), _raw(m6), point.status, grain_text])
    if not any(row[-1] for row in shown):  # every KPI at the requested grain: no need for the column
        columns, shown, raw = columns[:-1], [r[:-1] for r in shown], [r[:-1] for r in raw]
    return _table("targets", columns, shown, raw)


def status_summary(targets: Table) -> dict[str, int]:
    """How many KPIs with a target are ok / warn / breach / no_data on the last day."""
    counts = {s: 0 for s in ("ok", "warn", "breach", "no_data")}
    has_target = targets.raw.iloc[:, 2].notna()
    for status in targets.raw.loc[has_target].iloc[:, 5]:
        counts[status] = counts.get(status, 0) + 1
    return counts


def card_kpis(catalog: Catalog) -> list[Kpi]:
    """KPIs on the overview cards: the strategy's KPIs that carry a target (catalog-driven)."""
    return [k for k in catalog.kpis if k.source == "strategy" and (k.targets or k.raw.get("growth_mom_target"))]


def kpi_cards(view: View, kpis: list[Kpi] | None = None) -> list[Card]:
    """Cards: the period's value, the change against the previous period, a daily sparkline."""
    cat, scope = view.catalog, view.scope
    kpis = kpis if kpis is not None else card_kpis(cat)
    prev_scope = scope.previous()
    ids = [k.id for k in kpis]
    # One query for both periods of every card; each period takes its own days from it.
    both = kpi_series(view.con, cat, ids, scope.with_(start=prev_scope.start), view.rates)
    series = {k: [p for p in points if p.day >= scope.start] for k, points in both.items()}
    cards = []
    for kpi in kpis:
        current = period_value(view.con, cat, kpi.id, scope, view.rates, both)
        previous = period_value(view.con, cat, kpi.id, prev_scope, view.rates, both)  # rates cover both periods
        change = None
        if not fmt.is_missing(current.value) and not fmt.is_missing(previous.value):
            change = fmt.to_decimal(current.value) - fmt.to_decimal(previous.value)  # type: ignore[arg-type]
        points = [float(p.value) for p in series[kpi.id] if not fmt.is_missing(p.value)]
        rule_key = {
            "sum": "rule_sum",
            "last": "rule_last",
            "max": "rule_max",
            "payments": "rule_payments",
            "revenue_per_cost": "rule_ratio_of_sums",
            "margin": "rule_ratio_of_sums",
            "cache": "rule_cache",
        }.get(current.rule, "rule_buckets")
        n, c, _, _ = grain(kpi, scope)
        target = in_currency(cat.target(kpi.id, scope.end, n, c), kpi.unit, scope.end, scope.currency, view.rates)
        help_text = view.t(rule_key)
        if kpi.unit == "usd" and not fmt.is_missing(current.value):
            help_text += f" {view.value(current.value, kpi.unit)}."  # the exact amount behind a short card
        if not fmt.is_missing(target):
            help_text += f" {view.t('target_now')}: {_target_text(view, kpi, target)}"
        cards.append(
            Card(
                kpi.id,
                catalog_name(kpi, view.lang),
                fmt.kpi_value(current.value, kpi.unit, view.lang, scope.currency, True),
                fmt.kpi_delta(change, kpi.unit, view.lang, scope.currency, compact=True),
                # No change is neither good nor bad: grey, whatever the KPI's direction.
                "off" if change == 0 else ("normal" if kpi.direction == "higher" else "inverse"),
                "off" if change == 0 else "auto",
                help_text,
                points if len(points) >= 2 else None,
                current.value,
                previous.value,
            )
        )
    return cards


# ------------------------------------------------------------------------------------------------
# Reliability
# ------------------------------------------------------------------------------------------------


def availability_table(view: View) -> Table:
    """Availability and error budget left per niche x country on the period's last day."""
    columns = [view.t(k) for k in ("niche", "country", "availability", "error_budget", "status")]
    shown, raw = [], []
    for row in availability_by_niche_country(view.con, view.scope.end, view.scope):
        if row["niche"] in view.hidden_niches:
            continue
        worst = max(
            (row["availability_status"] or "no_data", row["error_budget_status"] or "no_data"),
            key=lambda s: ["ok", "no_data", "warn", "breach"].index(s),
        )
        shown.append(
            [
                view.niche_name(row["niche"]),
                view.country_name(row["country"]),
                fmt.percent(row["availability"], view.lang, 3),
                fmt.percent(row["error_budget"], view.lang, 1),
                view.status(worst),
            ]
        )
        raw.append([row["niche"], row["country"], _raw(row["availability"]), _raw(row["error_budget"]), worst])
    return _table("availability", columns, shown, raw)


def incidents_table(view: View) -> Table:
    """Incidents started in the period with their recovery time (open ones say so)."""
    columns = [view.t(k) for k in ("started", "ended", "niche", "country", "region", "recovery")]
    shown, raw = [], []
    for row in incidents(view.con, view.scope):
        if row["niche"] in view.hidden_niches:
            continue
        ended = fmt.moment(row["ended_at"], view.lang) if row["ended_at"] else view.t("open")
        shown.append(
            [
                fmt.moment(row["started_at"], view.lang),
                ended,
                view.niche_name(row["niche"]),
                view.country_name(row["country"]),
                view.region_name(row["region"]),
                view.value(row["recovery_minutes"], "minutes") if row["ended_at"] else view.t("open"),
            ]
        )
        raw.append(
            [
                row["started_at"].isoformat(),
                row["ended_at"].isoformat() if row["ended_at"] else None,
                row["niche"],
                row["country"],
                row["region"],
                _raw(row["recovery_minutes"]),
            ]
        )
    return _table("incidents", columns, shown, raw)


def latency_table(view: View) -> Table:
    """Per region: p95 from the period's merged buckets against the country's SLA and p95 target."""
    cat, scope = view.catalog, view.scope
    columns = [view.t(k) for k in ("region", "country", "p95", "target_now", "sla", "within_sla", "requests", "status")]
    shown, raw = [], []
    for country in cat.countries:
        if scope.country not in (ALL, country.id):
            continue
        for region in country.regions:
            region_scope = scope.with_(country=country.id, region=region.id)
            buckets = latency_buckets(view.con, region_scope)
            if not buckets:
                continue
            seconds = histogram_quantile(0.95, buckets)
            p95 = None if seconds is None else seconds * 1000
            target = cat.target("latency_p95_ms", scope.end, scope.niche, country.id)
            status = cat.status("latency_p95_ms", p95, target)
            within = share_within(buckets, country.latency_slo_ms / 1000)
            total = max(count for _, count in buckets)
            shown.append(
                [
                    catalog_name(region, view.lang),
                    catalog_name(country, view.lang),
                    view.value(p95, "ms"),
                    _target_text(view, cat.kpi("latency_p95_ms"), target),
                    f"{country.latency_slo_ms} ms",
                    fmt.percent(within, view.lang, 2),
                    fmt.number(total, view.lang),
                    view.status(status),
                ]
            )
            raw.append(
                [region.id, country.id, _raw(p95), target, country.latency_slo_ms, _raw(within), int(total), status]
            )
    return _table("latency", columns, shown, raw)


# ------------------------------------------------------------------------------------------------
# Unit economics
# ------------------------------------------------------------------------------------------------


ECONOMICS_KPIS = ("infra_cost_usd", "cost_per_active_user_usd", "revenue_per_infra_usd", "infra_margin_ratio")


def cost_vs_budget(view: View) -> tuple[Table, list[DailyPoint]]:
    """Daily infra cost against the budget (the catalog target in force that day)."""
    points = kpi_series(view.con, view.catalog, ["infra_cost_usd"], view.scope, view.rates)["infra_cost_usd"]
    columns = [view.t(k) for k in ("day", "cost", "budget", "status")]
    shown = [
        [fmt.day(p.day, view.lang), view.money(p.value), view.money(p.target), view.status(p.status)] for p in points
    ]
    raw = [[p.day.isoformat(), _raw(p.value), _raw(p.target), p.status] for p in points]
    return _table("cost_vs_budget", columns, shown, raw), points


def niche_economics(view: View) -> Table:
    """Per niche over the period: cost, revenue, revenue per infra $, margin, cost per active user."""
    cat = view.catalog
    kpis = ["infra_cost_usd", "revenue_usd", "revenue_per_infra_usd", "infra_margin_ratio", "cost_per_active_user_usd"]
    columns = [view.t("niche")] + [catalog_name(cat.kpi(k), view.lang) for k in kpis]
    shown, raw = [], []
    niches = [n.id for n in cat.niches if n.id not in view.hidden_niches and view.scope.niche in (ALL, n.id)]
    for niche in niches:
        scope = view.scope.with_(niche=niche, country=ALL)
        values = {k: period_value(view.con, cat, k, scope, view.rates).value for k in kpis}
        if all(fmt.is_missing(v) for v in values.values()):
            continue  # a niche not launched in this period
        cells = []
        for k in kpis:
            kpi = cat.kpi(k)
            status = cat.status(
                k, None if values[k] is None else float(values[k]), cat.target(k, view.scope.end, niche)
            )
            # A period sum is not comparable with a daily target: only rates and latest values get a status.
            rated = bool(kpi.targets) and period_rule(k) != "sum" and not fmt.is_missing(values[k])
            text = view.value(values[k], kpi.unit)
            cells.append(StatusText(f"{DOT} {text}", status) if rated else text)
        shown.append([view.niche_name(niche), *cells])
        raw.append([niche, *[_raw(values[k]) for k in kpis]])
    return _table("niche_economics", columns, shown, raw)


def cost_by_service(view: View) -> Table:
    """Exact cost per service over the period, with each service's share."""
    totals = cost_by(view.con, view.scope, "service", view.rates)
    return _share_table(
        view, "cost_by_service", view.t("service"), {view.service_name(k): v for k, v in totals.items()}, list(totals)
    )


def shared_split(view: View) -> Table:
    """Shared cost per niche (how it was split); hidden niches are summed into one restricted row."""
    totals = cost_by(view.con, view.scope, "niche", view.rates, allocation="shared_split")
    merged: dict[str, Decimal | None] = {}
    for niche, amount in totals.items():
        key = RESTRICTED if niche in view.hidden_niches else niche
        if key in merged and (merged[key] is None or amount is None):
            merged[key] = None
        else:
            merged[key] = (merged.get(key) or Decimal(0)) + amount  # type: ignore[operator]
    return _share_table(
        view, "shared_split", view.t("niche"), {view.niche_name(k): v for k, v in merged.items()}, list(merged)
    )


def allocation_table(view: View) -> Table:
    """Tagged vs shared-split cost over the period (their sum is the infra cost)."""
    totals = cost_by(view.con, view.scope, "allocation", view.rates)
    labels = {"tagged": view.t("tagged"), "shared_split": view.t("shared")}
    return _share_table(
        view, "allocation", view.t("charge_category"), {labels.get(k, k): v for k, v in totals.items()}, list(totals)
    )


def _share_table(view: View, name: str, label: str, amounts: dict[str, Decimal | None], keys: list[str]) -> Table:
    columns = [label, view.t("cost"), view.t("share")]
    known = [v for v in amounts.values() if v is not None]
    total = sum(known, Decimal(0)) if len(known) == len(amounts) else None
    shown, raw = [], []
    for (shown_key, amount), key in sorted(zip(amounts.items(), keys, strict=True), key=lambda kv: -(kv[0][1] or 0)):
        share = amount / total if amount is not None and total not in (None, 0) else None
        shown.append([shown_key, view.money(amount), fmt.percent(share, view.lang, 1)])
        raw.append([key, _raw(amount), _raw(share)])
    if amounts:
        shown.append([view.t("total"), view.money(total), fmt.percent(Decimal(1) if total else None, view.lang, 1)])
        raw.append(["total", _raw(total), 1 if total else None])
    return _table(name, columns, shown, raw)


# ------------------------------------------------------------------------------------------------
# Growth
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    mom: Decimal | None
    mom_target: float | None
    last30: float
    previous30: float


def mom_growth(view: View) -> Growth:
    """Active-user growth: daily active users summed over the 30 days to the end vs the 30 before."""
    end = view.scope.end
    current = view.scope.with_(start=end - timedelta(days=29), end=end)
    before = current.previous()
    sums = []
    for s in (current, before):
        pts = kpi_series(view.con, view.catalog, ["active_users"], s, view.rates)["active_users"]
        sums.append(sum(float(p.value) for p in pts if not fmt.is_missing(p.value)))
    mom = fmt.relative_change(sums[0], sums[1]) if sums[1] else None
    target = view.catalog.kpi("active_users").raw.get("growth_mom_target")
    return Growth(mom, None if target is None else float(target), sums[0], sums[1])


def month6_goals(view: View) -> Table:
    """The month-6 goals (catalog) against the latest value: ARR, onboarded, peak users, ..."""
    cat, scope = view.catalog, view.scope
    end_rate = {d: r for d, r in view.rates.items() if d == scope.end}
    columns = [view.t(k) for k in ("kpi", "actual", "target_m6", "progress", "status")]
    shown, raw = [], []
    for kpi in cat.kpis:
        if kpi.source != "strategy" or kpi.direction != "higher" or "month_6" not in kpi.targets:
            continue
        n, c, _, _ = grain(kpi, scope)
        goal = in_currency(cat.target(kpi.id, cat.plan["month_6"], n, c), kpi.unit, scope.end, scope.currency, end_rate)
        actual = period_value(view.con, cat, kpi.id, scope, view.rates).value
        progress = None
        if not fmt.is_missing(actual) and not fmt.is_missing(goal) and goal:
            progress = fmt.to_decimal(actual) / fmt.to_decimal(goal)  # type: ignore[arg-type]
        # Status against the target in force today: a month-6 goal not reached yet is not off track.
        now = in_currency(cat.target(kpi.id, scope.end, n, c), kpi.unit, scope.end, scope.currency, end_rate)
        status = cat.status(kpi.id, None if actual is None else float(actual), None if now is None else float(now))
        shown.append(
            [
                catalog_name(kpi, view.lang),
                view.value(actual, kpi.unit),
                _target_text(view, kpi, goal),
                fmt.percent(progress, view.lang, 1),
                view.status(status),
            ]
        )
        raw.append([kpi.id, _raw(actual), _raw(goal), _raw(progress), status])
    return _table("month6_goals", columns, shown, raw)


# ------------------------------------------------------------------------------------------------
# Payments
# ------------------------------------------------------------------------------------------------


def payments_daily_table(view: View) -> Table:
    """MercadoPago success per day (from summed counts) against the catalog target."""
    counts = mercadopago_daily(view.con, view.catalog, view.scope)
    columns = [view.t(k) for k in ("day", "final_payments", "successful", "success_rate", "status")]
    shown, raw = [], []
    for day in sorted(counts):
        c = counts[day]
        target = view.catalog.target("mercadopago_success_ratio", day, view.scope.niche, view.scope.country)
        status = view.catalog.status("mercadopago_success_ratio", c.success_ratio, target)
        shown.append(
            [
                fmt.day(day, view.lang),
                fmt.number(c.final, view.lang),
                fmt.number(c.successful, view.lang),
                fmt.percent(c.success_ratio, view.lang, 2),
                view.status(status),
            ]
        )
        raw.append([day.isoformat(), c.final, c.successful, _raw(c.success_ratio), status])
    return _table("mercadopago_daily", columns, shown, raw)


def payments_method_table(view: View) -> Table:
    """MercadoPago by payment method over the period: success rate and approved amount."""
    columns = [view.t(k) for k in ("method", "final_payments", "successful", "success_rate", "approved_amount")]
    amount_key = "approved_ars" if view.scope.currency == "ARS" else "approved_usd"
    shown, raw = [], []
    for row in payments_by(view.con, view.catalog, view.scope, "payment_method"):
        final, ok = int(row["final"] or 0), int(row["successful"] or 0)
        ratio = ok / final if final else None
        amount = row[amount_key] if row[amount_key] is not None else Decimal(0)
        shown.append(
            [
                row["key"],
                fmt.number(final, view.lang),
                fmt.number(ok, view.lang),
                fmt.percent(ratio, view.lang, 2),
                view.money(amount),
            ]
        )
        raw.append([row["key"], final, ok, _raw(ratio), amount])
    return _table("payments_by_method", columns, shown, raw)


def rejections_table(view: View) -> Table:
    """MercadoPago rejections by reason (``status_detail``) with their share of all rejections."""
    found = rejections(view.con, view.scope)
    total = sum(int(r["payments"]) for r in found)
    columns = [view.t(k) for k in ("reason", "payments", "share")]
    shown, raw = [], []
    for r in found:
        share = int(r["payments"]) / total if total else None
        shown.append([r["reason"] or "—", fmt.number(r["payments"], view.lang), fmt.percent(share, view.lang, 1)])
        raw.append([r["reason"], int(r["payments"]), _raw(share)])
    return _table("rejections", columns, shown, raw)


# ------------------------------------------------------------------------------------------------
# Geography
# ------------------------------------------------------------------------------------------------

GEO_KPIS = (
    "latency_p95_ms",
    "availability_ratio",
    "peak_concurrent_users",
    "active_users",
    "bookings",
    "revenue_usd",
    "mercadopago_success_ratio",
)


def geography_table(view: View) -> Table:
    """The period's KPIs per city / region (only KPIs the catalog publishes by region)."""
    cat, scope = view.catalog, view.scope
    kpis = [cat.kpi(k) for k in GEO_KPIS if k in cat.kpi_ids and "region" in cat.kpi(k).dims]
    columns = [view.t("region"), view.t("country")] + [catalog_name(k, view.lang) for k in kpis]
    shown, raw = [], []
    for country in cat.countries:
        if scope.country not in (ALL, country.id):
            continue
        for region in country.regions:
            region_scope = scope.with_(country=country.id, region=region.id)
            values = [period_value(view.con, cat, k.id, region_scope, view.rates).value for k in kpis]
            if all(fmt.is_missing(v) for v in values):
                continue
            shown.append(
                [
                    catalog_name(region, view.lang),
                    catalog_name(country, view.lang),
                    *[view.value(v, k.unit) for v, k in zip(values, kpis, strict=True)],
                ]
            )
            raw.append([region.id, country.id, *[_raw(v) for v in values]])
    return _table("geography", columns, shown, raw)


# ------------------------------------------------------------------------------------------------
# Alerts
# ------------------------------------------------------------------------------------------------


def contributors_text(view: View, value: Any, unit: str) -> str:
    """``top_contributors`` (alerts/detection/explain.py ``Contribution.as_dict``) as short text:
    ``Vertical Barbería: +US$ 240,50 (80,0 %)``; other JSON shapes as ``key=value`` pairs."""
    if value in (None, ""):
        return "—"
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return str(value)[:200]
    items = data if isinstance(data, list) else [data]
    names = {
        "niche": view.niche_name,
        "country": view.country_name,
        "region": view.region_name,
        "service": view.service_name,
    }
    parts = []
    for item in items[:5]:
        if isinstance(item, dict) and {"dimension", "value", "contribution"} <= set(item):
            dim, member = str(item["dimension"]), str(item["value"])
            if dim == "niche" and member in view.hidden_niches:
                member_text = view.t("restricted_row")
            else:
                member_text = names[dim](member) if dim in names else member
            label = view.t(dim) if dim in ("niche", "country", "region", "service") else dim
            contribution = item["contribution"]
            text = f"{label} {member_text}: " + (
                fmt.kpi_delta(contribution, unit, view.lang, "USD") or view.t("no_data")
            )
            if not fmt.is_missing(item.get("share_of_deviation")):
                text += f" ({fmt.percent(item['share_of_deviation'], view.lang, 1)})"
            parts.append(text)
        elif isinstance(item, dict):
            parts.append(", ".join(f"{k}={v}" for k, v in item.items() if not fmt.is_missing(v)))
        else:
            parts.append(str(item))
    return "; ".join(parts) or "—"


def alerts_table(view: View) -> Table:
    """Anomaly alerts of the period with the explanation the alerting wrote (contributors, range)."""
    cat = view.catalog
    columns = [view.t(k) for k in ("started", "kpi", "severity", "state", "actual", "range", "drivers", "explanation")]
    shown, raw = [], []
    for row in alert_rows(view.con, view.scope):
        kpi = cat.kpi(row["kpi"]) if row.get("kpi") in cat.kpi_ids else None
        unit = kpi.unit if kpi else ""
        name = catalog_name(kpi, view.lang) if kpi else str(row.get("kpi"))

        def v(x: Any, unit: str = unit) -> str:
            # Alert values are in the KPI's unit (USD for money): shown in USD, never re-converted.
            return fmt.kpi_value(x, unit, view.lang, "USD")

        state = view.t(row["state"]) if row.get("state") in ("firing", "resolved") else str(row.get("state"))
        explanation = view.t(
            "alert_text",
            kpi=name,
            actual=v(row.get("actual")),
            expected=v(row.get("expected")),
            lower=v(row.get("lower")),
            upper=v(row.get("upper")),
            since=fmt.moment(row.get("started_at"), view.lang),
        )
        shown.append(
            [
                fmt.moment(row.get("started_at"), view.lang),
                name,
                str(row.get("severity") or "—"),
                state,
                v(row.get("actual")),
                f"{v(row.get('lower'))} – {v(row.get('upper'))}",
                contributors_text(view, row.get("top_contributors"), unit),
                explanation,
            ]
        )
        raw.append(
            [
                row["started_at"].isoformat() if row.get("started_at") else None,
                row.get("kpi"),
                row.get("severity"),
                row.get("state"),
                _raw(row.get("actual")),
                f"{_raw(row.get('lower'))}..{_raw(row.get('upper'))}",
                row.get("top_contributors"),
                explanation,
            ]
        )
    return _table("alerts", columns, shown, raw)
