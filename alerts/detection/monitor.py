"""From watched series to explained anomalies: the policy, one detector run per series, explanation.

Plain logic over polars frames; the Dagster assets (``pipelines/defs/alerts``) and ``python -m
alerts.evaluate`` both call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import yaml

from alerts.detection.detector import DetectorConfig, Episode, detect, episodes
from alerts.detection.explain import (
    Contribution,
    contributions_additive,
    contributions_ratio,
    contributions_weighted,
    cost_impact,
)
from alerts.detection.operational import Series
from alerts.slack.messages import Anomaly
from pipelines.lib.catalog import ALL, Catalog, load_catalog
from pipelines.lib.kpis.quantiles import histogram_quantile, le_value

POLICY_PATH = Path(__file__).with_name("policy.yaml")
CONFIG_FIELDS = ("direction", "transform", "z_threshold", "min_abs_change", "min_rel_change", "min_scale")
DAILY_METRICS = ("infra_cost_usd", "mercadopago_success_ratio", "bookings")
APP_PAGES = {"infra_cost_usd": "economics", "mercadopago_success_ratio": "payments"}


class PolicyError(ValueError):
    """The alert policy file is malformed; the message names the entry."""


@dataclass(frozen=True)
class MetricPolicy:
    """How one metric is watched (see policy.yaml)."""

    metric: str
    name: dict[str, str]
    unit: str
    daily: bool
    config: DetectorConfig
    dashboard: str
    app_page: str


@dataclass(frozen=True)
class Policy:
    step_minutes: int
    cooldown: timedelta
    critical_score: float
    metrics: dict[str, MetricPolicy]


def load_policy(path: Path | None = None, catalog: Catalog | None = None) -> Policy:
    """Read and validate the policy; KPI names and units come from the catalog."""
    catalog = catalog or load_catalog()
    path = path or POLICY_PATH
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    metrics = {}
    for metric, entry in (data.get("metrics") or {}).items():
        where = f"{path.name}: metric {metric!r}"
        if "kpi" in entry:
            try:
                kpi = catalog.kpi(entry["kpi"])
            except KeyError as exc:
                raise PolicyError(f"{where}: {exc.args[0]}") from exc
            name, unit = kpi.name, kpi.unit
        elif "name" in entry and "unit" in entry:
            name, unit = entry["name"], entry["unit"]
        else:
            raise PolicyError(f"{where}: needs either a catalog `kpi` or both `name` and `unit`")
        unknown = set(entry) - {*CONFIG_FIELDS, "kpi", "name", "unit", "daily", "holidays", "dashboard", "app_page"}
        if unknown:
            raise PolicyError(f"{where}: unknown fields {sorted(unknown)}")
        cfg = DetectorConfig(
            **{k: entry[k] for k in CONFIG_FIELDS if k in entry},
            holidays_country="AR" if entry.get("holidays", True) else None,
            history=timedelta(days=56 if entry.get("daily") else 28),
            timezone=catalog.timezone,
        )
        metrics[metric] = MetricPolicy(
            metric,
            name,
            unit,
            bool(entry.get("daily", False)),
            cfg,
            entry.get("dashboard", "pulso-sre-overview"),
            entry.get("app_page", APP_PAGES.get(metric, "alerts")),
        )
    return Policy(
        int(data.get("step_minutes", 5)),
        timedelta(minutes=int(data.get("cooldown_minutes", 60))),
        float(data.get("critical_score", 0.8)),
        metrics,
    )


@dataclass(frozen=True)
class Finding:
    """One detector episode on one series (for evaluation and for the notifier)."""

    series: Series
    episode: Episode
    ongoing: bool


def series_config(mp: MetricPolicy, scope: dict[str, str], catalog: Catalog | None = None) -> DetectorConfig:
    """The detector settings for one series of ``mp``'s metric.

    A series confined to one country follows that country's calendar, not Argentina's: its public
    holidays (where the metric watches holidays at all) and, for sub-daily series, its local clock, so
    the time-of-day profile stays put when the country changes to daylight saving time (Chile) or keeps
    another offset (Colombia). Mixed scopes (the total, a niche across countries) keep Argentina's,
    which carries most of their volume. Daily series keep Argentina's clock: their points are Argentine
    days.
    """
    country = scope.get("country")
    if country in (None, ALL):
        return mp.config
    catalog = catalog or load_catalog()
    try:
        entry = catalog.country(country)
    except KeyError:
        return mp.config  # not a catalog country: nothing better than the default calendar
    changes: dict[str, str] = {}
    if mp.config.holidays_country is not None:
        changes["holidays_country"] = entry.id
    if not mp.daily:
        changes["timezone"] = entry.timezone
    return mp.config.with_overrides(**changes)


def scan(
    series: Iterable[Series], policy: Policy, judge_from: datetime | None = None
) -> tuple[list[Finding], set[str]]:
    """Run the detector on every series with a policy (judging only from ``judge_from`` if given); each
    series with its own calendar (:func:`series_config`).

    Returns every episode found and the keys whose latest point could be judged (has data and enough
    history): only those may resolve an alert.
    """
    findings: list[Finding] = []
    evaluated: set[str] = set()
    catalog = load_catalog()
    for s in series:
        mp = policy.metrics.get(s.metric)
        if mp is None or len(s.ts) == 0:
            continue
        result = detect(s.ts, s.values, series_config(mp, s.scope, catalog), judge_from=judge_from)
        if result["status"][-1] == "ok":
            evaluated.add(s.key)
        last = result["ts"][-1]
        for ep in episodes(result, mp.config):
            findings.append(Finding(s, ep, ongoing=ep.resolved_at is None and ep.last_anomalous >= last - _gap(mp)))
    return findings, evaluated


def _gap(mp: MetricPolicy) -> timedelta:
    return mp.config.episode_gap or (timedelta(days=1) if mp.daily else timedelta(hours=1))


def _bucket_cells(cells: pl.DataFrame, at: datetime, time_col: str) -> pl.DataFrame:
    return cells.filter(pl.col(time_col) == at)


def explain(finding: Finding, policy: Policy) -> tuple[Contribution, ...]:
    """Rank niche and region by their part of the deviation at the episode's most anomalous point."""
    s, ep = finding.series, finding.episode
    cells = s.cells
    if cells is None or cells.is_empty():
        return ()
    dims = [d for d in ("niche", "region", "service") if d in cells.columns and s.scope.get(d, ALL) == ALL]
    out: list[Contribution] = []
    time_col = "bucket" if "bucket" in cells.columns else "ts" if "ts" in cells.columns else "day"
    now = _bucket_cells(cells, ep.peak_at, time_col)
    if now.is_empty():
        return ()
    before = cells.filter((pl.col(time_col) < ep.start) & (pl.col(time_col) >= ep.start - timedelta(days=7)))
    for dim in dims:
        if s.metric in ("error_ratio", "cache_hit_ratio"):
            bad_col, total_col = ("errors", "requests") if s.metric == "error_ratio" else ("misses", "cache_requests")
            frame = (
                now.with_columns((pl.col("cache_requests") - pl.col("cache_hits")).alias("misses"))
                if s.metric == "cache_hit_ratio"
                else now
            )
            g = frame.group_by(dim).agg(pl.col(bad_col).sum(), pl.col(total_col).sum())
            names = [str(v) for v in g[dim]]
            expected_bad = ep.expected if s.metric == "error_ratio" else 1 - ep.expected
            part = contributions_ratio(
                dict(zip(names, g[bad_col], strict=True)),
                dict(zip(names, g[total_col], strict=True)),
                expected_bad,
                dim,
            )
            if s.metric == "cache_hit_ratio":  # misses up = hit ratio down: flip the sign
                part = [Contribution(c.dimension, c.value, -c.contribution, c.share_of_deviation) for c in part]
            out += part
        elif s.metric == "latency_p95_ms":

            def p95_by(frame: pl.DataFrame, d: str = dim) -> dict[str, float]:
                res = {}
                for (v,), block in frame.group_by(d):
                    agg = block.group_by("le").agg(pl.col("count").sum())
                    q = histogram_quantile(
                        0.95, [(le_value(le), n) for le, n in zip(agg["le"], agg["count"], strict=True)]
                    )
                    if q is not None:
                        res[str(v)] = q * 1000
                return res

            weights = {
                str(v): float(n)
                for v, n in now.filter(pl.col("le") == "+Inf").group_by(dim).agg(pl.col("count").sum()).iter_rows()
            }
            out += contributions_weighted(p95_by(now), p95_by(before), weights, ep.actual - ep.expected, dim)
        else:
            value_col = {"requests": "requests", "concurrent_users": "value"}.get(s.metric, "value")
            g = now.group_by(dim).agg(pl.col(value_col).sum())
            share = before.group_by(dim).agg(pl.col(value_col).sum()) if not before.is_empty() else g
            out += contributions_additive(
                dict(zip([str(v) for v in g[dim]], g[value_col], strict=True)),
                dict(zip([str(v) for v in share[dim]], share[value_col], strict=True)),
                ep.expected,
                dim,
            )
    return tuple(sorted(out, key=lambda c: (-abs(c.contribution), c.dimension, c.value)))


def to_anomaly(finding: Finding, policy: Policy) -> Anomaly:
    """The notifier's view of an ongoing finding: severity, numbers, explanation, links."""
    s, ep = finding.series, finding.episode
    mp = policy.metrics[s.metric]
    cost = cost_impact(Decimal(repr(ep.actual)), ep.expected) if s.metric == "infra_cost_usd" else None
    return Anomaly(
        key=s.key,
        metric=s.metric,
        name=mp.name,
        unit=mp.unit,
        scope=dict(s.scope),
        severity="critical" if ep.peak_score >= policy.critical_score else "warning",
        direction=ep.direction,
        started_at=ep.start,
        observed_at=s.ts[-1],
        actual=ep.actual,
        expected=ep.expected,
        lower=ep.lower,
        upper=ep.upper,
        score=ep.peak_score,
        contributors=explain(finding, policy),
        cost=cost,
        dashboard=mp.dashboard,
        app_page=mp.app_page,
    )


def daily_series(
    frame: pl.DataFrame, metric: str, value_col: str, grains: dict[str, tuple[str, ...]], timezone: str
) -> list[Series]:
    """Daily series (one point per Argentine day, stamped at local midnight) at each grain.

    ``frame`` has ``day`` plus the grain columns and ``value_col`` (summed across finer cells).
    """
    out = []
    for grain in grains.values():
        keys = list(grain)
        groups = frame.select(keys).unique().sort(keys).iter_rows(named=True) if keys else [{}]
        for row in groups:
            flt = pl.lit(True)
            for k in keys:
                flt = flt & (pl.col(k) == row[k])
            cells = frame.filter(flt)
            agg = cells.group_by("day").agg(pl.col(value_col).sum().cast(pl.Float64)).sort("day")
            if agg.is_empty():
                continue
            days = pl.date_range(agg["day"][0], agg["day"][-1], "1d", eager=True).alias("day")
            full = pl.DataFrame(days).join(agg, on="day", how="left")
            stamps = full.select(
                pl.col("day").cast(pl.Datetime("us")).dt.replace_time_zone(timezone).dt.convert_time_zone("UTC")
            )["day"].to_list()
            scope = {k: row[k] for k in keys} or {"niche": ALL}
            cells = cells.with_columns(
                pl.col("day")
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone(timezone)
                .dt.convert_time_zone("UTC")
                .alias("ts"),
                pl.col(value_col).alias("value"),
            )
            out.append(Series(metric, scope, stamps, full[value_col].to_numpy().astype("float64"), cells))
    return out


def collapse_related(anomalies: list[Anomaly], window: timedelta = timedelta(hours=1)) -> list[Anomaly]:
    """One message per anomaly: drop an anomaly whose broader scope (same metric) started within
    ``window`` of it -- the broader one names it among its top contributors.

    A scope is broader when every dimension it fixes is fixed to the same value in the other one.
    Daily metrics use a window of a day.
    """

    def fixed(a: Anomaly) -> dict[str, str]:
        return {k: v for k, v in a.scope.items() if v != ALL}

    kept = []
    for a in anomalies:
        span = timedelta(days=1) if a.metric in DAILY_METRICS else window
        covered = any(
            b is not a
            and b.metric == a.metric
            and abs(b.started_at - a.started_at) <= span
            and len(fixed(b)) < len(fixed(a))
            and all(fixed(a).get(k) == v for k, v in fixed(b).items())
            for b in anomalies
        )
        if not covered:
            kept.append(a)
    return kept
