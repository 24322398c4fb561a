"""The Pulso collector: Prometheus gauges built per scrape from the published data only.

Reads through :class:`pipelines.lib.published.PublishedReader` (never the warehouse), so a scrape never
blocks a pipeline run and never sees half of one. The rows a scrape needs are queried once per
published manifest version and kept in memory; a scrape then only builds ``GaugeMetricFamily`` objects
from them (plus the clock-dependent data age).

A missing, unreadable or stale published store gives ``pulso_up 0`` (and the age of what is there),
never an exception to the scraper.

Exposed (all ``pulso_``, base units, labels from the catalog only: niche, country, region, service,
slo, window, kpi, status; ``all`` on totals):

* one gauge per catalog KPI for the newest published day (``pulso_latency_p95_seconds``,
  ``pulso_availability_ratio``, ``pulso_infra_cost_usd``, ...) and its target (``..._target``), plus
  ``pulso_kpi_status{kpi,status}`` (1 for the row's ok/warn/breach/no_data);
* SLOs from ``slo_daily``: objective, SLI, error budget remaining, burn rate per report window, time to
  budget exhaustion at the 1-day burn rate, SLO period;
* ``pulso_cost_usd`` by niche, service and charge category; ``pulso_incidents_open``;
* ``pulso_up``, ``pulso_published_timestamp_seconds``, ``pulso_published_age_seconds``,
  ``pulso_data_through_timestamp_seconds``, ``pulso_published_version``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alerts.rules import STALE_AFTER_SECONDS
from exporters.naming import kpi_metric
from pipelines.lib.catalog import ALL, Catalog, load_catalog
from pipelines.lib.published import MANIFEST, Manifest, NotPublishedError, PublishedReader

log = logging.getLogger("pulso.exporter")

TABLES = ("kpi_daily", "slo_daily", "cost_daily", "incidents")
PLACE = ("niche", "country", "region")
# Time to exhaustion extrapolates the burn of the last day: long enough to be stable, short enough to
# react to today's burn.
EXHAUSTION_WINDOW = "1d"


@dataclass
class PublishedState:
    """The rows one published manifest version gives the exporter (already filtered and typed)."""

    version: int
    published_at: float
    publish_id: str = ""
    data_through: float | None = None
    kpis: list[tuple[str, str, str, str, float | None, float | None, str]] = field(default_factory=list)
    slos: list[dict[str, object]] = field(default_factory=list)
    costs: list[tuple[str, str, str, float]] = field(default_factory=list)
    incidents_open: list[tuple[str, str, str, int]] = field(default_factory=list)
    dropped: int = 0


def _finite(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # DECIMAL money becomes a float only here, at the exposition boundary
    return number if math.isfinite(number) else None


def _day_end_epoch(day: date, tz: str) -> float:
    """Midnight (in the catalog time zone) at the end of ``day``, as a Unix timestamp."""
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=ZoneInfo(tz))
    return end.timestamp()


def load_state(con: duckdb.DuckDBPyConnection, manifest: Manifest, catalog: Catalog) -> PublishedState:
    """Query the newest published day of every table the exporter serves.

    Rows whose labels are not catalog values (or whose KPI is unknown) are dropped and counted, so a
    label can never take unbounded values; NaN/Inf values are treated as no data.
    """
    state = PublishedState(
        manifest.version, manifest.published_at.timestamp(), str(manifest.data.get("publish_id", ""))
    )
    allowed = {
        "niche": set(catalog.niche_ids) | {ALL},
        "country": {c.id for c in catalog.countries} | {ALL},
        "region": {r.id for r in catalog.regions} | {ALL},
        "service": {s.id for s in catalog.services} | {ALL, "shared", "other"},
    }
    known_kpis = set(catalog.kpi_ids)

    def place_ok(*pairs: tuple[str, object]) -> bool:
        return all(value in allowed[dim] for dim, value in pairs)

    tables = set(manifest.tables)
    if "kpi_daily" in tables:
        newest = con.execute("SELECT max(day) FROM kpi_daily").fetchone()[0]
        if newest is not None:
            state.data_through = _day_end_epoch(newest, catalog.timezone)
            rows = con.execute(
                "SELECT kpi, niche, country, region, value, target, status FROM kpi_daily WHERE day = ? ORDER BY ALL",
                [newest],
            ).fetchall()
            for kpi, niche, country, region, value, target, status in rows:
                if kpi not in known_kpis or not place_ok(("niche", niche), ("country", country), ("region", region)):
                    state.dropped += 1
                    continue
                state.kpis.append((kpi, niche, country, region, _finite(value), _finite(target), status))
    if "slo_daily" in tables:
        cur = con.execute(
            "SELECT * FROM slo_daily WHERE day = (SELECT max(day) FROM slo_daily) ORDER BY slo, niche, country, region"
        )
        names = [d[0] for d in cur.description]
        slo_ids = {s.id for s in catalog.slos}
        for row in cur.fetchall():
            record = dict(zip(names, row, strict=True))
            if record["slo"] not in slo_ids or not place_ok(*((d, record[d]) for d in PLACE)):
                state.dropped += 1
                continue
            state.slos.append(record)
    if "cost_daily" in tables:
        # Cost is never dropped: a service tag outside the catalog (shared infrastructure, a typo in a
        # tag) is served as service="shared" (untagged/shared) or "other", so sums stay whole and the
        # label stays bounded.
        rows = con.execute(
            "SELECT niche, CASE WHEN list_contains($services, service) THEN service "
            "                   WHEN service IS NULL OR service IN ('', 'shared') THEN 'shared' ELSE 'other' END AS service, "
            "       charge_category, sum(cost_usd) FROM cost_daily "
            "WHERE day = (SELECT max(day) FROM cost_daily) GROUP BY ALL ORDER BY ALL",
            {"services": [sv.id for sv in catalog.services]},
        ).fetchall()
        categories = set(catalog.section("cost_allocation")["charge_categories"])
        for niche, service, category, cost in rows:
            if not place_ok(("niche", niche), ("service", service)) or category not in categories:
                state.dropped += 1
                continue
            state.costs.append((niche, service, category, _finite(cost)))
    if "incidents" in tables:
        rows = con.execute(
            "SELECT niche, country, region, count(*) FROM incidents WHERE ended_at IS NULL GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        for niche, country, region, n in rows:
            if place_ok(("niche", niche), ("country", country), ("region", region)):
                state.incidents_open.append((niche, country, region, int(n)))
            else:
                state.dropped += 1
    return state


def build_families(
    catalog: Catalog, state: PublishedState | None, now: float, stale_after: float, error: bool = False
) -> list[Metric]:
    """Every metric family of one scrape. ``state`` None: nothing readable is published."""
    return freshness_families(state, now, stale_after, error) + data_families(catalog, state)


def freshness_families(
    state: PublishedState | None, now: float, stale_after: float, error: bool = False
) -> list[Metric]:
    """``pulso_up`` and the publish time/age/version families: the part of a scrape that depends on the clock."""
    up = GaugeMetricFamily(
        "pulso_up", "1 when fresh published data is served; 0 when it is missing, unreadable or stale."
    )
    published = GaugeMetricFamily(
        "pulso_published_timestamp_seconds", "When the served data was published (Unix time)."
    )
    age = GaugeMetricFamily("pulso_published_age_seconds", "Seconds since the served data was published.")
    through = GaugeMetricFamily(
        "pulso_data_through_timestamp_seconds", "End of the newest published day, Argentina time (Unix time)."
    )
    version = GaugeMetricFamily("pulso_published_version", "Manifest version of the served data.")
    dropped = GaugeMetricFamily(
        "pulso_published_rows_dropped", "Published rows not served: unknown KPI or label values outside the catalog."
    )
    fresh = False
    if state is not None:
        published.add_metric([], state.published_at)
        age_seconds = max(0.0, now - state.published_at)
        age.add_metric([], age_seconds)
        if state.data_through is not None:
            through.add_metric([], state.data_through)
        version.add_metric([], float(state.version))
        dropped.add_metric([], float(state.dropped))
        fresh = not error and bool(state.kpis) and age_seconds <= stale_after
    up.add_metric([], 1.0 if fresh else 0.0)
    return [up, published, age, through, version, dropped]


def data_families(catalog: Catalog, state: PublishedState | None) -> list[Metric]:
    """The KPI, SLO, cost and incident families of one published state (the same for every scrape of it)."""
    kpi_families: dict[str, tuple[GaugeMetricFamily, GaugeMetricFamily, float]] = {}
    for kpi in catalog.kpis:
        m = kpi_metric(kpi)
        kpi_families[kpi.id] = (
            GaugeMetricFamily(m.name, m.help, labels=PLACE),
            GaugeMetricFamily(
                m.target_name, f"Target in force for {kpi.name['en']}, same unit as {m.name}.", labels=PLACE
            ),
            m.factor,
        )
    status = GaugeMetricFamily(
        "pulso_kpi_status",
        "1 for the KPI's status (ok, warn, breach, no_data) on the newest published day.",
        labels=("kpi", *PLACE, "status"),
    )
    slo_labels = ("slo", *PLACE)
    objective = GaugeMetricFamily("pulso_slo_objective_ratio", "SLO objective (ratio 0-1).", labels=slo_labels)
    sli = GaugeMetricFamily(
        "pulso_slo_sli_ratio",
        "SLI over the SLO period ending the newest published day (ratio 0-1, good/total from summed counts).",
        labels=slo_labels,
    )
    budget = GaugeMetricFamily(
        "pulso_slo_error_budget_remaining_ratio",
        "Error budget left over the SLO period (ratio; negative when overspent).",
        labels=slo_labels,
    )
    burn = GaugeMetricFamily(
        "pulso_slo_burn_rate",
        "Error budget burn rate over the window (1 = spending exactly the budget over the period).",
        labels=(*slo_labels, "window"),
    )
    exhaustion = GaugeMetricFamily(
        "pulso_slo_error_budget_exhaustion_seconds",
        f"Seconds until the error budget is spent at the {EXHAUSTION_WINDOW} burn rate (0 when already spent; absent when not burning).",
        labels=slo_labels,
    )
    period = GaugeMetricFamily("pulso_slo_period_seconds", "SLO period in seconds.", labels=slo_labels)
    cost = GaugeMetricFamily(
        "pulso_cost_usd",
        "Amortized infra cost of the newest published day in US dollars.",
        labels=("niche", "service", "charge_category"),
    )
    incidents_open = GaugeMetricFamily(
        "pulso_incidents_open", "Probe-detected incidents not yet recovered.", labels=PLACE
    )

    if state is not None:
        for kpi, niche, country, region, value, target, row_status in state.kpis:
            value_family, target_family, factor = kpi_families[kpi]
            labels = [niche, country, region]
            if value is not None:
                value_family.add_metric(labels, value * factor)
            if target is not None:
                target_family.add_metric(labels, target * factor)
            status.add_metric([kpi, *labels, row_status], 1.0)
        windows = catalog.raw.get("burn_rate_alerts", {}).get("report_windows", [])
        for record in state.slos:
            labels = [record["slo"], record["niche"], record["country"], record["region"]]
            for family, column in (
                (objective, "objective"),
                (sli, "sli_ratio"),
                (budget, "error_budget_remaining_ratio"),
            ):
                value = _finite(record.get(column))
                if value is not None:
                    family.add_metric(labels, value)
            for window in windows:
                value = _finite(record.get(f"burn_rate_{window}"))
                if value is not None:
                    burn.add_metric([*labels, window], value)
            period_days = _finite(record.get("period_days"))
            if period_days is not None:
                period.add_metric(labels, period_days * 86400)
            left = _finite(record.get("error_budget_remaining_ratio"))
            rate = _finite(record.get(f"burn_rate_{EXHAUSTION_WINDOW}"))
            if left is not None and period_days is not None:
                if left <= 0:
                    exhaustion.add_metric(labels, 0.0)
                elif rate is not None and rate > 0:
                    # Budget is spent at `rate` budgets per period: left / rate periods remain.
                    exhaustion.add_metric(labels, left / rate * period_days * 86400)
        for niche, service, category, usd in state.costs:
            if usd is not None:
                cost.add_metric([niche, service, category], usd)
        for niche, country, region, n in state.incidents_open:
            incidents_open.add_metric([niche, country, region], float(n))
    families: list[Metric] = []
    for value_family, target_family, _ in kpi_families.values():
        families += [value_family, target_family]
    families += [status, objective, sli, budget, burn, exhaustion, period, cost, incidents_open]
    return families


def metric_names(catalog: Catalog) -> list[str]:
    """Every metric name the exporter exposes for ``catalog`` (dashboards and tests check against it)."""
    return [f.name for f in build_families(catalog, None, 0.0, 0.0)]


class PublishedCollector(Collector):
    """A custom collector over the published store; register it on its own ``CollectorRegistry``.

    A new publish is loaded in a background thread. A scrape waits for it at most ``reload_wait_seconds``
    (``first_load_timeout_seconds`` when nothing was loaded yet) and otherwise serves the previous
    complete version, so loading a large store (about 3 s at month-6 scale) never stalls a scrape.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        catalog: Catalog | None = None,
        stale_after_seconds: float = STALE_AFTER_SECONDS,
        clock: Callable[[], float] = time.time,
        reload_wait_seconds: float = 1.0,
        first_load_timeout_seconds: float = 30.0,
    ):
        self.catalog = catalog or load_catalog()
        self.reader = PublishedReader(root, tables=TABLES)
        self.stale_after = stale_after_seconds
        self.clock = clock
        self.reload_wait = reload_wait_seconds
        self.first_load_timeout = first_load_timeout_seconds
        self._lock = threading.Lock()
        self._state: PublishedState | None = None
        self._error = False
        self._seen: tuple[int, int] | None = None  # manifest file identity the last load started for
        self._loader: threading.Thread | None = None

    def describe(self) -> Iterator[Metric]:
        """The families without reading any data (registration never touches the published store)."""
        yield from build_families(self.catalog, None, 0.0, self.stale_after)

    def _load(self) -> None:
        """Load the current manifest's state (runs in the loader thread; the only user of the reader)."""
        try:
            con, manifest = self.reader.read()  # the connection and the manifest it was loaded from
            state = load_state(con.cursor(), manifest, self.catalog)
        except NotPublishedError:
            with self._lock:
                self._error = True
            return
        except Exception as exc:  # a scrape must answer; the failure shows as pulso_up 0 and in the log
            log.error("cannot read the published store: %s: %s", type(exc).__name__, exc)
            with self._lock:
                self._error = True
            return
        if state.dropped:
            log.warning(
                "published version %s: %d rows not served (unknown KPI or label outside the catalog)",
                state.version,
                state.dropped,
            )
        with self._lock:
            self._state, self._error = state, False

    def refresh(self) -> tuple[PublishedState | None, bool]:
        """The newest loaded state and whether the store is currently missing or unreadable.

        Costs one ``stat`` of the manifest when nothing changed. On a failed read the last good state is
        kept, so its age keeps growing and ``pulso_up`` says 0.
        """
        try:
            st = (self.reader.root / MANIFEST).stat()
        except FileNotFoundError:
            with self._lock:
                return self._state, True
        identity = (st.st_mtime_ns, st.st_ino)
        with self._lock:
            if identity != self._seen and (self._loader is None or not self._loader.is_alive()):
                self._seen = identity
                self._loader = threading.Thread(target=self._load, name="pulso-published-load", daemon=True)
                self._loader.start()
            loader, first = self._loader, self._state is None
        if loader is not None and loader.is_alive():
            loader.join(self.first_load_timeout if first else self.reload_wait)
        with self._lock:
            return self._state, self._error

    def collect(self) -> Iterator[Metric]:
        state, error = self.refresh()
        yield from build_families(self.catalog, state, self.clock(), self.stale_after, error)
