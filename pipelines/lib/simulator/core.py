"""Run a whole simulation: stream day by day through metrics, billing and events, then write the extras."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipelines.lib.catalog import Catalog, load_catalog
from pipelines.lib.simulator.billing import BillingModel
from pipelines.lib.simulator.events import EventsModel
from pipelines.lib.simulator.fx import rate_lookup, write_fx
from pipelines.lib.simulator.incidents import Incident, plan_incidents
from pipelines.lib.simulator.metrics import MetricsModel, write_day_metrics
from pipelines.lib.simulator.people import Canaries
from pipelines.lib.simulator.profiles import Profile, get_profile
from pipelines.lib.simulator.world import World

DEFAULT_SEED = 20260901


@dataclass
class SimulationResult:
    """What a run wrote and the ground truth tests compare against."""

    out: Path
    profile: str
    seed: int
    start: date
    end: date
    incidents: list[Incident]
    counter_resets: list[dict[str, Any]]
    metric_files: int
    metric_rows: int
    event_stats: dict[str, Any]
    billing: dict[str, Any]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def yesterday_in(timezone: str, now: datetime | None = None) -> date:
    """Yesterday's date in ``timezone`` (the default last simulated day)."""
    now = now or datetime.now(UTC)
    return now.astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def simulate(
    profile: str | Profile,
    out: str | Path,
    end: date | None = None,
    seed: int = DEFAULT_SEED,
    canaries: Canaries | None = None,
    catalog: Catalog | None = None,
    restate_billing: bool = True,
    progress: bool = False,
    incidents: bool = True,
) -> SimulationResult:
    """Write the sources of ``profile`` for the days ending on ``end`` (AR days) into ``out``.

    ``restate_billing=False`` writes only the first CUR delivery of the restated month (the state before the
    restatement arrives), so a loader can be tested loading both states in turn. ``incidents=False`` injects
    none (a clean run: ``incidents.json`` is empty), to measure false alerts.
    """
    t_start = time.perf_counter()
    catalog = catalog or load_catalog()
    prof = get_profile(profile) if isinstance(profile, str) else profile
    end = end or yesterday_in(catalog.timezone)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world = World(catalog, prof, end, seed)
    incidents = plan_incidents(world) if incidents else []
    rates = rate_lookup(world.start, world.end + timedelta(days=1), catalog.plan["start"], seed)
    metrics = MetricsModel(world, incidents)
    billing = BillingModel(world, incidents, out, restate=restate_billing)
    events = EventsModel(world, incidents, rates, out, canaries, infra_cost_usd=billing.cost_ref)
    metric_files = metric_rows = 0
    for i, day in enumerate(world.days):
        dm = metrics.day(day)
        metric_files += len(write_day_metrics(out, day, dm.tables))
        metric_rows += sum(t.num_rows for t in dm.tables.values())
        billing.day(day, dm.sessions)
        events.day(day, dm.sessions)
        # UTC date `day` can no longer receive events; billing periods that ended are delivered.
        events.flush(through=day)
        billing.close_through(world.day_start_utc(day + timedelta(days=1)))
        if progress:
            print(f"{day} done ({i + 1}/{len(world.days)}, {time.perf_counter() - t_start:.0f}s)", flush=True)
    events.flush(through=None)
    billing.close_through(None)
    write_fx(out, world.start, world.end, catalog.plan["start"], seed)

    result = SimulationResult(
        out=out,
        profile=prof.name,
        seed=seed,
        start=world.start,
        end=world.end,
        incidents=incidents,
        counter_resets=metrics.state.resets,
        metric_files=metric_files,
        metric_rows=metric_rows,
        event_stats={
            "events": events.stats.events,
            "lines": events.stats.lines,
            "duplicates": events.stats.duplicates,
            "late": events.stats.late,
            "not_yet_arrived": events.stats.dropped_after_window,
            "by_type": dict(sorted(events.stats.by_type.items())),
        },
        billing={
            "deliveries": [
                {
                    "billing_period": d.period,
                    "execution_id": d.execution_id,
                    "data_files": d.data_files,
                    "rows": d.rows,
                    "unblended_usd": str(d.unblended_total),
                    "amortized_usd": str(d.amortized_total),
                }
                for d in billing.stats.deliveries
            ],
            "restated": None
            if billing.stats.superseded is None
            else {
                "billing_period": billing.stats.superseded.period,
                "superseded_execution_id": billing.stats.superseded.execution_id,
                "superseded_data_files": billing.stats.superseded.data_files,
                "superseded_amortized_usd": str(billing.stats.superseded.amortized_total),
            },
            "daily_amortized_usd_first_delivery": {k: str(v) for k, v in sorted(billing.stats.daily_amortized.items())},
        },
        seconds=time.perf_counter() - t_start,
    )
    _write_ground_truth(out, world, result, canaries)
    return result


def _write_ground_truth(out: Path, world: World, result: SimulationResult, canaries: Canaries | None) -> None:
    (out / "incidents.json").write_text(
        json.dumps([i.to_json() for i in result.incidents], indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    profile = {
        "profile": result.profile,
        "seed": result.seed,
        "start": result.start.isoformat(),
        "end": result.end.isoformat(),
        "days": len(world.days),
        "timezone": world.catalog.timezone,
        "window_utc": {
            "start": world.window_start_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": world.window_end_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "niches": list(world.niches),
        "countries": list(world.countries),
        "regions": list(dict.fromkeys(s.region for s in world.segments)),
        "services": [s.id for s in world.services],
        "peak_concurrent_users": world.peak_users,
        "counter_resets": result.counter_resets,
        "events": result.event_stats,
        "billing": result.billing,
        "canaries_planted": bool(canaries and canaries.any()),
    }
    (out / "profile.json").write_text(json.dumps(profile, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
