"""Simulation profiles: how many days, which part of the catalog, and at what scale.

A profile names a plan *phase* (``now`` or ``month_6``); the niches and countries it simulates are the
catalog's entries launched by that phase, and its scale (peak concurrent users, infra cost) comes from the
catalog's targets for that phase. Only the simulator's own behaviour (growth, durations) is declared here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.lib.catalog import Catalog


@dataclass(frozen=True)
class Profile:
    """One simulation profile (see module doc)."""

    name: str
    days: int
    phase: str  # catalog plan phase whose niches/countries are live and whose targets set the scale
    monthly_growth: float  # month-over-month growth of traffic, users and variable cost
    monthly_active_users_at_now_scale: int  # MAU at the catalog's "now" concurrent-user target
    incident_repeats: int  # how many times each incident type is injected
    tiny_layout: bool = False  # pack one of each incident into three days (for tests)

    def niche_ids(self, catalog: Catalog) -> tuple[str, ...]:
        """Niches simulated: those launched by the profile's phase (all live from the first day)."""
        return tuple(n.id for n in catalog.live_niches(self.phase))

    def country_ids(self, catalog: Catalog) -> tuple[str, ...]:
        """Countries simulated: those launched by the profile's phase (all live from the first day)."""
        return tuple(c.id for c in catalog.live_countries(self.phase))

    def peak_concurrent_users(self, catalog: Catalog) -> float:
        """Weekday peak concurrent users on the last day: the catalog target of the profile's phase."""
        return float(catalog.target("peak_concurrent_users", _phase_day(catalog, self.phase)))

    def infra_cost_reference_usd(self, catalog: Catalog) -> float:
        """Daily infra cost at the profile's scale: around the catalog target of its phase at the window end."""
        return 1.12 * float(catalog.target("infra_cost_usd", _phase_day(catalog, self.phase)))


def _phase_day(catalog: Catalog, phase: str):
    return catalog.plan["start"] if phase == "now" else catalog.plan[phase]


PROFILES: dict[str, Profile] = {
    "tiny": Profile("tiny", 3, "now", 0.15, 35_000, 1, tiny_layout=True),
    "small": Profile("small", 14, "now", 0.15, 35_000, 1),
    "demo": Profile("demo", 90, "now", 0.15, 35_000, 1),
    "m6-year": Profile("m6-year", 365, "month_6", 0.12, 35_000, 2),
}


def get_profile(name: str) -> Profile:
    """The profile called ``name``; raises ``ValueError`` naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
