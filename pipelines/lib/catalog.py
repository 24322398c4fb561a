"""The Pulso catalog: niches, countries, regions, services, KPIs, SLOs and targets, declared once.

Everything downstream (pipelines, exporter, rules, dashboards, alerts, the executive view) reads the
catalog through :func:`load_catalog`. ``PULSO_CATALOG`` points at another YAML file (tests use it to add
a niche to a copy of the catalog).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parents[1] / "catalog.yaml"
PHASES = ("now", "month_3", "month_6")
STATUSES = ("ok", "warn", "breach", "no_data")
ALL = "all"  # dimension value on totals in kpi_daily


class CatalogError(ValueError):
    """The catalog file is malformed; the message names the entry and the problem."""


@dataclass(frozen=True)
class Region:
    id: str
    country: str
    name: dict[str, str]
    traffic_share: float


@dataclass(frozen=True)
class Country:
    id: str
    name: dict[str, str]
    launch: str
    currency: str
    timezone: str
    latency_slo_ms: int
    regions: tuple[Region, ...]


@dataclass(frozen=True)
class Niche:
    id: str
    name: dict[str, str]
    launch: str
    peak_hours: tuple[tuple[int, int], ...]
    sensitive: bool


@dataclass(frozen=True)
class Service:
    id: str
    name: dict[str, str]
    route: str


@dataclass(frozen=True)
class AutoscalingGroup:
    id: str
    min: int
    max: int
    users_per_instance: int


@dataclass(frozen=True)
class Kpi:
    id: str
    name: dict[str, str]
    unit: str
    direction: str  # "higher" or "lower" is better
    definition: str
    dims: tuple[str, ...]
    targets: dict[str, float]
    source: str
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False, default_factory=dict)

    @property
    def warn_margin(self) -> float:
        return float(self.raw.get("warn_margin", 0.0))


@dataclass(frozen=True)
class Slo:
    id: str
    name: dict[str, str]
    sli: str
    objective: float
    period_days: int
    dims: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False, default_factory=dict)

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective


@dataclass(frozen=True)
class BurnWindow:
    severity: str
    long: str
    short: str
    budget_consumed: float

    def burn_rate(self, period_days: int) -> float:
        """Burn-rate threshold: the budget fraction consumed within the long window, as a rate."""
        return self.budget_consumed * period_days * 24 / _hours(self.long)


def _hours(window: str) -> float:
    units = {"m": 1 / 60, "h": 1.0, "d": 24.0, "w": 168.0}
    try:
        return float(window[:-1]) * units[window[-1]]
    except (KeyError, ValueError) as exc:
        raise CatalogError(f"bad window {window!r}: use a number and one of m, h, d, w") from exc


@dataclass(frozen=True)
class Catalog:
    path: Path
    timezone: str
    plan: dict[str, date]
    niches: tuple[Niche, ...]
    countries: tuple[Country, ...]
    services: tuple[Service, ...]
    kpis: tuple[Kpi, ...]
    slos: tuple[Slo, ...]
    latency_buckets_seconds: tuple[float, ...]
    autoscaling_groups: tuple[AutoscalingGroup, ...]
    burn_windows: tuple[BurnWindow, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False, default_factory=dict)

    # --- lookups -------------------------------------------------------------------------------
    @property
    def fx_quote_range(self) -> tuple[Decimal, Decimal]:
        """(min, max) plausible ARS-per-USD quote (``currency.fx_quote_range``), exact decimals."""
        return _fx_quote_range(self.raw.get("currency"))

    def kpi(self, kpi_id: str) -> Kpi:
        for k in self.kpis:
            if k.id == kpi_id:
                return k
        raise KeyError(f"unknown KPI {kpi_id!r}; the catalog declares {[k.id for k in self.kpis]}")

    def slo(self, slo_id: str) -> Slo:
        for s in self.slos:
            if s.id == slo_id:
                return s
        raise KeyError(f"unknown SLO {slo_id!r}")

    def country(self, country_id: str) -> Country:
        for c in self.countries:
            if c.id == country_id:
                return c
        raise KeyError(f"unknown country {country_id!r}")

    @property
    def regions(self) -> tuple[Region, ...]:
        return tuple(r for c in self.countries for r in c.regions)

    @property
    def kpi_ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.kpis)

    @property
    def niche_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.niches)

    @property
    def sensitive_niches(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.niches if n.sensitive)

    def section(self, name: str) -> Any:
        """A free-form section of the YAML (payments, cost_allocation, capacity, links, ...)."""
        return self.raw[name]

    def live_niches(self, phase: str = "month_6") -> tuple[Niche, ...]:
        """Niches launched by ``phase`` (now, month_3 or month_6)."""
        return tuple(n for n in self.niches if PHASES.index(n.launch) <= PHASES.index(phase))

    def live_countries(self, phase: str = "month_6") -> tuple[Country, ...]:
        return tuple(c for c in self.countries if PHASES.index(c.launch) <= PHASES.index(phase))

    # --- targets and status --------------------------------------------------------------------
    def phase_on(self, day: date) -> str:
        """Which plan phase's targets apply on ``day``."""
        if day >= self.plan["month_6"]:
            return "month_6"
        if day >= self.plan["month_3"]:
            return "month_3"
        return "now"

    def target(self, kpi_id: str, day: date, niche: str = ALL, country: str = ALL) -> float | None:
        """The target in force for a KPI on a day; a missing phase inherits the earlier one.

        Country overrides (``targets_by_country``) apply to rows of that country; the per-niche margin
        target (``targets_by_niche_level``) applies to rows of one niche.
        """
        kpi = self.kpi(kpi_id)
        phase = self.phase_on(day)
        tables = [kpi.targets]
        if niche != ALL and "targets_by_niche_level" in kpi.raw:
            tables.insert(0, kpi.raw["targets_by_niche_level"])
        if country != ALL and country in kpi.raw.get("targets_by_country", {}):
            tables.insert(0, kpi.raw["targets_by_country"][country])
        for table in tables:
            value = _inherit(table, phase)
            if value is not None:
                return value
        return None

    def status(self, kpi_id: str, value: float | None, target: float | None) -> str:
        """ok / warn / breach / no_data for a value against its target (see docs/data-contract.md)."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "no_data"
        kpi = self.kpi(kpi_id)
        raw = kpi.raw
        if "warn_above" in raw or "breach_above" in raw:  # counts: 0 ok, a few warn, many breach
            if "breach_above" in raw and value > raw["breach_above"]:
                return "breach"
            if "warn_above" in raw and value > raw["warn_above"]:
                return "warn"
            return "ok"
        if target is None:
            return "ok"
        if "warn_below" in raw:  # error budget: below target breach, under warn_below warn
            if value < target:
                return "breach"
            return "warn" if value < raw["warn_below"] else "ok"
        margin = kpi.warn_margin
        if kpi.direction == "lower":
            if value <= target:
                return "ok"
            return "warn" if value <= target + abs(target) * margin else "breach"
        if value >= target:
            return "ok"
        if kpi.unit == "ratio":  # ratio margins are absolute points (0.999 vs 0.9985)
            return "warn" if value >= target - margin else "breach"
        return "warn" if value >= target - abs(target) * margin else "breach"


def _inherit(table: dict[str, float], phase: str) -> float | None:
    for p in reversed(PHASES[: PHASES.index(phase) + 1]):
        if table.get(p) is not None:
            return float(table[p])
    return None


def _name(entry: dict[str, Any], where: str) -> dict[str, str]:
    name = entry.get("name")
    if not isinstance(name, dict) or not {"es", "en"} <= set(name):
        raise CatalogError(f"{where}: 'name' needs both 'es' and 'en'")
    return {"es": str(name["es"]), "en": str(name["en"])}


def _require(entry: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise CatalogError(f"{where}: missing {', '.join(missing)}")


def parse_catalog(data: Any, path: Path = DEFAULT_CATALOG_PATH) -> Catalog:
    """Validate and build a :class:`Catalog` from parsed YAML; raises :class:`CatalogError`.

    An entry of the wrong type or shape that the checks below do not name (a list where a mapping is
    expected, a missing nested key, text where a number is expected) is a :class:`CatalogError` too,
    naming the file and the problem, never another exception.
    """
    try:
        return _parse_catalog(data, path)
    except CatalogError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, OverflowError) as exc:
        problem = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CatalogError(f"{path}: malformed catalog entry ({type(exc).__name__}: {problem})") from exc


def _parse_catalog(data: Any, path: Path) -> Catalog:
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: the catalog must be a mapping")
    _require(data, ("timezone", "plan", "niches", "countries", "services", "kpis", "slos"), str(path))
    try:
        plan = {k: date.fromisoformat(str(data["plan"][k])) for k in ("start", "month_3", "month_6")}
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{path}: plan needs ISO dates start, month_3, month_6 ({exc})") from exc

    seen: set[str] = set()

    def unique(kind: str, ident: Any) -> str:
        if not isinstance(ident, str) or not ident:
            raise CatalogError(f"{kind}: id must be a non-empty string, got {ident!r}")
        key = f"{kind}:{ident}"
        if key in seen:
            raise CatalogError(f"{kind} {ident!r} is declared twice")
        seen.add(key)
        return ident

    niches = []
    for n in data["niches"]:
        _require(n, ("id", "name", "launch"), f"niche {n.get('id')!r}")
        if n["launch"] not in PHASES:
            raise CatalogError(f"niche {n['id']!r}: launch must be one of {PHASES}")
        peaks = tuple(tuple(int(h) for h in p) for p in n.get("peak_hours", data.get("peak_hours_default", [])))
        niches.append(
            Niche(
                unique("niche", n["id"]),
                _name(n, f"niche {n['id']}"),
                n["launch"],
                peaks,
                bool(n.get("sensitive", False)),
            )
        )
    countries = []
    for c in data["countries"]:
        _require(c, ("id", "name", "launch", "currency", "latency_slo_ms", "regions"), f"country {c.get('id')!r}")
        regions = tuple(
            Region(
                unique("region", r["id"]), c["id"], _name(r, f"region {r['id']}"), float(r.get("traffic_share", 1.0))
            )
            for r in c["regions"]
        )
        share = sum(r.traffic_share for r in regions)
        if not math.isclose(share, 1.0, abs_tol=1e-9):
            raise CatalogError(f"country {c['id']!r}: region traffic_share sums to {share}, not 1")
        countries.append(
            Country(
                unique("country", c["id"]),
                _name(c, f"country {c['id']}"),
                c["launch"],
                c["currency"],
                c.get("timezone", data["timezone"]),
                int(c["latency_slo_ms"]),
                regions,
            )
        )
    services = tuple(
        Service(unique("service", s["id"]), _name(s, f"service {s['id']}"), s.get("route", "/"))
        for s in data["services"]
    )
    kpis = []
    for k in data["kpis"]:
        _require(k, ("id", "name", "unit", "direction", "definition", "targets"), f"kpi {k.get('id')!r}")
        if k["direction"] not in ("higher", "lower"):
            raise CatalogError(f"kpi {k['id']!r}: direction must be 'higher' or 'lower'")
        bad = set(k["targets"]) - set(PHASES)
        if bad:
            raise CatalogError(f"kpi {k['id']!r}: unknown target phases {sorted(bad)}")
        kpis.append(
            Kpi(
                unique("kpi", k["id"]),
                _name(k, f"kpi {k['id']}"),
                k["unit"],
                k["direction"],
                k["definition"],
                tuple(k.get("dims", [])),
                {p: float(v) for p, v in k["targets"].items()},
                k.get("source", "strategy"),
                k,
            )
        )
    slos = []
    for s in data["slos"]:
        _require(s, ("id", "name", "objective", "period_days"), f"slo {s.get('id')!r}")
        objective = float(s["objective"])
        if not 0 < objective < 1:
            raise CatalogError(f"slo {s['id']!r}: objective must be in (0, 1)")
        slos.append(
            Slo(
                unique("slo", s["id"]),
                _name(s, f"slo {s['id']}"),
                s.get("sli", ""),
                objective,
                int(s["period_days"]),
                tuple(s.get("dims", [])),
                s,
            )
        )
    buckets = tuple(float(b) for b in data.get("latency_buckets_seconds", []))
    if list(buckets) != sorted(set(buckets)):
        raise CatalogError("latency_buckets_seconds must be strictly increasing")
    for c in countries:
        if c.latency_slo_ms / 1000 not in buckets:
            raise CatalogError(f"country {c.id!r}: latency_slo_ms {c.latency_slo_ms} is not a histogram bucket bound")
    groups = tuple(
        AutoscalingGroup(g["id"], int(g["min"]), int(g["max"]), int(g["users_per_instance"]))
        for g in data.get("capacity", {}).get("autoscaling_groups", [])
    )
    windows = tuple(
        BurnWindow(w["severity"], w["long"], w["short"], float(w["budget_consumed"]))
        for w in data.get("burn_rate_alerts", {}).get("windows", [])
    )
    _fx_quote_range(data.get("currency"))  # validated here, read by Catalog.fx_quote_range
    return Catalog(
        path,
        data["timezone"],
        plan,
        tuple(niches),
        tuple(countries),
        services,
        tuple(kpis),
        tuple(slos),
        buckets,
        groups,
        windows,
        data,
    )


def _fx_quote_range(currency: Any) -> tuple[Decimal, Decimal]:
    """``currency.fx_quote_range`` as (min, max), defaults 0.5 and 10,000,000; a clear error if malformed."""
    rng = currency.get("fx_quote_range", {}) if isinstance(currency, dict) else {}
    if not isinstance(rng, dict):
        raise CatalogError("currency.fx_quote_range: must be a mapping {min, max}")
    try:
        low, high = Decimal(str(rng.get("min", "0.5"))), Decimal(str(rng.get("max", "10000000")))
    except InvalidOperation:
        raise CatalogError("currency.fx_quote_range: min and max must be numbers") from None
    if not (0 < low < high < Decimal("1e12")):  # raw.fx_rates is DECIMAL(18,6)
        raise CatalogError("currency.fx_quote_range: needs 0 < min < max < 1e12")
    return low, high


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Catalog:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{p}: not valid YAML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{p}: not UTF-8 text at byte {exc.start}") from exc
    return parse_catalog(data, p)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load (and cache) the catalog from ``path``, ``$PULSO_CATALOG`` or the bundled catalog.yaml."""
    chosen = path or os.environ.get("PULSO_CATALOG") or DEFAULT_CATALOG_PATH
    return _load(str(Path(chosen).resolve()))
