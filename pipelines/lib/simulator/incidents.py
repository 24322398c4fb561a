"""Injected incidents: planned deterministically inside the window and written to ``incidents.json``.

Each incident is ground truth for the pipelines' tests: the type, the UTC interval, what it touches
(``None`` = every value of that dimension) and the effect a correct pipeline must see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from pipelines.lib.simulator.world import World

# --- behaviour parameters -----------------------------------------------------------------------------
INCIDENT_TYPES = (
    "outage",
    "latency_regression",
    "cost_spike",
    "payment_rejection_surge",
    "traffic_spike",
    "cache_degradation",
)
LATENCY_REGRESSION_FACTOR = 4.0  # median latency multiplier in the region
COST_SPIKE_FACTOR = 4.0  # EC2 usage multiplier of the service
REJECTION_SURGE_SHARE = 0.30  # share of MercadoPago card attempts rejected as high risk
TRAFFIC_SPIKE_FACTOR = 5.0
SPIKE_SCALE_OUT_LAG_MIN = (7, 9)  # slow scale-out: minutes from the rise in desired to capacity
DEGRADED_CACHE_HIT = 0.60
OUTAGE_5XX_SHARE = 0.95
# Local start hour and duration (minutes) of each type; the day comes from the placement below.
TIMING = {
    "outage": (10.5, (20, 40)),
    "latency_regression": (13.0, (180, 240)),
    "payment_rejection_surge": (17.5, (150, 210)),
    "traffic_spike": (15.25, (45, 60)),
    "cache_degradation": (9.0, (180, 240)),
}
TINY_DAY = {
    "outage": 0,
    "cache_degradation": 0,
    "latency_regression": 1,
    "payment_rejection_surge": 1,
    "traffic_spike": 2,
    "cost_spike": 2,
}


@dataclass
class Incident:
    """One injected incident (ground truth)."""

    id: str
    type: str
    start: datetime
    end: datetime
    niche: str | None
    country: str | None
    region: str | None
    service: str | None
    expected_effect: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = _iso(self.start)
        d["end"] = _iso(self.end)
        return d

    def touches(self, niche: str, country: str, region: str) -> bool:
        """Does the incident apply to this segment (``None`` matches every value)?"""
        return (
            (self.niche is None or self.niche == niche)
            and (self.country is None or self.country == country)
            and (self.region is None or self.region == region)
        )

    def minute_mask(self, epochs: np.ndarray) -> np.ndarray:
        """Which of the given minute timestamps fall inside ``[start, end)``."""
        return (epochs >= int(self.start.timestamp())) & (epochs < int(self.end.timestamp()))


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_incidents(world: World) -> list[Incident]:
    """Place every incident type deterministically inside the window (see docs/simulator.md)."""
    rng = world.rng("incidents")
    n_days = len(world.days)
    slots = [(t, r) for r in range(world.profile.incident_repeats) for t in INCIDENT_TYPES]
    incidents: list[Incident] = []
    main_country = world.countries[0]
    for k, (kind, repeat) in enumerate(slots):
        if world.profile.tiny_layout:
            day_index = min(TINY_DAY[kind], n_days - 1)
        else:
            # Spread over the window, avoiding its first and last few days so windows around them exist.
            day_index = int(n_days * (0.12 + 0.76 * (k + 0.5) / len(slots)))
        day = world.days[day_index]
        country = main_country if repeat == 0 else str(rng.choice(world.countries))
        regions = [s.region for s in world.segments if s.country == country]
        regions = list(dict.fromkeys(regions))
        niche = str(rng.choice(world.niches))
        region = str(rng.choice(regions))
        service = str(rng.choice([s.id for s in world.services]))
        inc_id = f"inc-{k + 1:03d}"
        day_start = world.day_start_utc(day)
        if kind == "cost_spike":
            n_spike_days = 1 if world.profile.tiny_layout else 2
            start = day_start
            end = day_start + timedelta(days=n_spike_days)
            incidents.append(
                Incident(
                    inc_id,
                    kind,
                    start,
                    end,
                    niche,
                    None,
                    None,
                    service,
                    {
                        "billing_product_code": "AmazonEC2",
                        "usage_cost_multiplier": COST_SPIKE_FACTOR,
                        "tags": {"niche": niche, "service": service},
                    },
                    f"{service} instances of {niche} left running at {COST_SPIKE_FACTOR:g}x after a bad deploy",
                )
            )
            continue
        hour, (dmin, dmax) = TIMING[kind]
        duration = int(rng.integers(dmin, dmax + 1))
        start = day_start + timedelta(minutes=int(hour * 60) + int(rng.integers(0, 20)))
        end = start + timedelta(minutes=duration)
        if kind == "outage":
            incidents.append(
                Incident(
                    inc_id,
                    kind,
                    start,
                    end,
                    niche,
                    country,
                    None,
                    None,
                    {
                        "probe_success": 0,
                        "http_5xx_share_min": round(OUTAGE_5XX_SHARE - 0.05, 2),
                        "recovery_minutes": duration,
                    },
                    f"all of {niche} in {country} down for {duration} minutes",
                )
            )
        elif kind == "latency_regression":
            incidents.append(
                Incident(
                    inc_id,
                    kind,
                    start,
                    end,
                    None,
                    country,
                    region,
                    None,
                    {"latency_p95_ms_min": 300, "median_latency_multiplier": LATENCY_REGRESSION_FACTOR},
                    f"slow database replica in {region}: p95 well over target",
                )
            )
        elif kind == "payment_rejection_surge":
            incidents.append(
                Incident(
                    inc_id,
                    kind,
                    start,
                    end,
                    None,
                    country,
                    None,
                    None,
                    {
                        "provider": "mercadopago",
                        "status_detail": "cc_rejected_high_risk",
                        "rejected_share": REJECTION_SURGE_SHARE,
                        "mercadopago_success_ratio_max": 0.85,
                    },
                    "MercadoPago anti-fraud rejects many card payments as high risk",
                )
            )
        elif kind == "traffic_spike":
            incidents.append(
                Incident(
                    inc_id,
                    kind,
                    start,
                    end,
                    niche,
                    country,
                    None,
                    None,
                    {
                        "traffic_multiplier": TRAFFIC_SPIKE_FACTOR,
                        "scaling_time_minutes_min": SPIKE_SCALE_OUT_LAG_MIN[0],
                    },
                    f"{TRAFFIC_SPIKE_FACTOR:g}x traffic on {niche} (TV mention); slow scale-out",
                )
            )
        elif kind == "cache_degradation":
            incidents.append(
                Incident(
                    inc_id,
                    kind,
                    start,
                    end,
                    None,
                    country,
                    region,
                    None,
                    {"cache_hit_ratio": DEGRADED_CACHE_HIT},
                    f"cache node evictions in {region}: hit ratio drops",
                )
            )
    incidents.sort(key=lambda i: (i.start, i.id))
    return incidents
