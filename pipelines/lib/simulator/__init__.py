"""Deterministic simulator of BarberPro's sources (metrics, CUR 2.0 billing, app events, FX).

Public API: :func:`simulate` (a whole profile into a folder), :func:`write_openmetrics` (metric samples
of a time range as OpenMetrics text for promtool), :data:`PROFILES`, :class:`Canaries`. See
docs/simulator.md for what is simulated and how.
"""

from pipelines.lib.simulator.core import DEFAULT_SEED, SimulationResult, simulate, yesterday_in
from pipelines.lib.simulator.openmetrics import write_openmetrics
from pipelines.lib.simulator.people import Canaries
from pipelines.lib.simulator.profiles import PROFILES, Profile, get_profile

__all__ = [
    "DEFAULT_SEED",
    "PROFILES",
    "Canaries",
    "Profile",
    "SimulationResult",
    "get_profile",
    "simulate",
    "write_openmetrics",
    "yesterday_in",
]
