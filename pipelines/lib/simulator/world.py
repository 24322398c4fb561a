"""The simulated world: days, segments (niche x country x region), traffic shape, growth, randomness.

Everything the three sources share lives here so metrics, billing and events tell the same story: the
same daily peaks, weekends, holidays and growth drive sessions, requests, cost and bookings.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

import holidays
import numpy as np

from pipelines.lib.catalog import Catalog
from pipelines.lib.simulator.profiles import Profile

# --- behaviour parameters (the simulator's own; catalog values are never repeated here) -----------------
# Relative traffic weight of a niche / country by the plan phase it launched in (later = smaller so far).
LAUNCH_WEIGHT_NICHE = {"now": 1.0, "month_3": 0.35, "month_6": 0.25}
LAUNCH_WEIGHT_COUNTRY = {"now": 1.0, "month_3": 0.2, "month_6": 0.3}
SENSITIVE_NICHE_WEIGHT = 0.6  # clinics (sensitive niches) see fewer sessions than walk-in trades
# Day-of-week factor (Mon..Sun): trades are busy on Saturday, clinics are mostly closed at weekends.
WEEKDAY_FACTOR = (1.0, 1.0, 1.0, 1.02, 1.05, 1.02, 0.35)
WEEKDAY_FACTOR_SENSITIVE = (1.0, 1.0, 1.0, 1.0, 0.95, 0.35, 0.15)
HOLIDAY_FACTOR = 0.45
DAILY_NOISE_SIGMA = 0.03
DAYS_PER_MONTH = 30.44
MINUTES = 1440


def stable_hash(*parts: object) -> int:
    """A process-independent 32-bit hash of the parts (Python's ``hash`` of str is salted per process)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode())


@dataclass(frozen=True)
class Segment:
    """One traffic segment: a niche in a region of a country."""

    index: int
    niche: str
    country: str
    region: str
    timezone: str
    weight: float  # share of all sessions (sums to 1 over segments)
    niche_sensitive: bool
    peak_hours: tuple[tuple[int, int], ...]


def smooth_step(x: np.ndarray) -> np.ndarray:
    """Logistic step used to round the edges of the daily traffic shape."""
    return 1.0 / (1.0 + np.exp(-x))


def traffic_shape(local_hour: np.ndarray, peak_hours: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Relative sessions by local hour: a low night, a daytime plateau and the niche's peak windows at ~1."""
    day = smooth_step((local_hour - 7.5) / 0.6) * smooth_step((23.5 - local_hour) / 0.6)
    bump = np.zeros_like(local_hour)
    for start, end in peak_hours:
        bump = np.maximum(
            bump, smooth_step((local_hour - start - 0.25) / 0.25) * smooth_step((end - 0.25 - local_hour) / 0.25)
        )
    return 0.04 + 0.28 * day + 0.68 * bump


class World:
    """Days, segments and the shared traffic model of one simulation run."""

    def __init__(self, catalog: Catalog, profile: Profile, end: date, seed: int):
        self.catalog = catalog
        self.profile = profile
        self.seed = seed
        self.end = end
        self.start = end - timedelta(days=profile.days - 1)
        self.days = [self.start + timedelta(days=i) for i in range(profile.days)]
        self.tz = ZoneInfo(catalog.timezone)
        self.niches = profile.niche_ids(catalog)
        self.countries = profile.country_ids(catalog)
        self.services = catalog.services
        self.segments = self._segments()
        self.peak_users = profile.peak_concurrent_users(catalog)
        # Capacity per instance grows with the profile's scale (bigger instances at month-6 scale), so the
        # catalog's group bounds still describe a fleet that follows load instead of sitting at its max.
        self.capacity_factor = self.peak_users / float(catalog.target("peak_concurrent_users", catalog.plan["start"]))
        self._holidays = {
            c: holidays.country_holidays(c, years=range(self.start.year - 1, self.end.year + 2)) for c in self.countries
        }
        self.session_scale = self.peak_users / self._reference_peak()
        # Mean sessions of a plain weekday on the last day: the load at which cost is at its reference.
        self.reference_mean_sessions = self.session_scale * self._reference_mean

    # --- structure ------------------------------------------------------------------------------------
    def _segments(self) -> list[Segment]:
        segs: list[tuple[object, ...]] = []
        niches = [n for n in self.catalog.niches if n.id in self.niches]
        countries = [c for c in self.catalog.countries if c.id in self.countries]
        for n in niches:
            wn = LAUNCH_WEIGHT_NICHE[n.launch] * (SENSITIVE_NICHE_WEIGHT if n.sensitive else 1.0)
            for c in countries:
                wc = LAUNCH_WEIGHT_COUNTRY[c.launch]
                for r in c.regions:
                    segs.append((n, c, r, wn * wc * r.traffic_share))
        total = sum(s[3] for s in segs)
        return [
            Segment(i, n.id, c.id, r.id, c.timezone, w / total, n.sensitive, n.peak_hours)  # type: ignore[attr-defined]
            for i, (n, c, r, w) in enumerate(segs)
        ]

    @cached_property
    def day_starts_utc(self) -> list[datetime]:
        """UTC instant of local midnight of each simulated AR day."""
        return [datetime(d.year, d.month, d.day, tzinfo=self.tz).astimezone(UTC) for d in self.days]

    def day_start_utc(self, day: date) -> datetime:
        """UTC instant where the Argentina day ``day`` begins."""
        return datetime(day.year, day.month, day.day, tzinfo=self.tz).astimezone(UTC)

    @property
    def window_start_utc(self) -> datetime:
        return self.day_start_utc(self.start)

    @property
    def window_end_utc(self) -> datetime:
        return self.day_start_utc(self.end + timedelta(days=1))

    def minute_epochs(self, day: date) -> np.ndarray:
        """Epoch seconds of the 1440 minutes of an AR day."""
        t0 = int(self.day_start_utc(day).timestamp())
        return t0 + 60 * np.arange(MINUTES, dtype=np.int64)

    def local_hours(self, day: date, timezone: str) -> np.ndarray:
        """Local clock hour (float) of each minute of the AR day in another timezone (DST-aware)."""
        tz = ZoneInfo(timezone)
        t0 = self.day_start_utc(day)
        out = np.empty(MINUTES)
        for h in range(24):  # offsets change at most on an hour boundary
            local = (t0 + timedelta(hours=h)).astimezone(tz)
            base = local.hour + local.minute / 60
            out[h * 60 : (h + 1) * 60] = (base + np.arange(60) / 60) % 24
        return out

    # --- drivers --------------------------------------------------------------------------------------
    def is_holiday(self, country: str, day: date) -> bool:
        return day in self._holidays[country]

    def growth(self, day: date) -> float:
        """Traffic level relative to the last day of the window (month-over-month compound growth)."""
        return (1.0 + self.profile.monthly_growth) ** ((day - self.end).days / DAYS_PER_MONTH)

    def day_factor(self, seg: Segment, day: date) -> float:
        """Weekday/weekend, holiday and day-to-day noise factor of a segment's traffic."""
        table = WEEKDAY_FACTOR_SENSITIVE if seg.niche_sensitive else WEEKDAY_FACTOR
        f = table[day.weekday()]
        if self.is_holiday(seg.country, day):
            f = min(f, HOLIDAY_FACTOR)
        noise = self.rng("day-noise", seg.niche, seg.country, day.isoformat()).normal(0.0, DAILY_NOISE_SIGMA)
        return f * math.exp(noise)

    def day_factors(self, seg: Segment, day: date) -> np.ndarray:
        """:meth:`day_factor` for each minute of the AR day ``day``, by the segment's *local* date: where
        the segment's clock is behind Argentina's (Bogotá, Santiago in winter), the AR day's first hours
        are still the local previous day, with that day's weekday and holiday."""
        tz = ZoneInfo(seg.timezone)
        t0 = self.day_start_utc(day)
        today, yesterday = self.day_factor(seg, day), None
        out = np.empty(MINUTES)
        for h in range(24):  # offsets change at most on an hour boundary
            if (t0 + timedelta(hours=h)).astimezone(tz).date() < day:
                if yesterday is None:
                    yesterday = self.day_factor(seg, day - timedelta(days=1))
                out[h * 60 : (h + 1) * 60] = yesterday
            else:
                out[h * 60 : (h + 1) * 60] = today
        return out

    def _reference_peak(self) -> float:
        """Max over a plain weekday of the summed shapes, so sessions can be scaled to the peak target."""
        ref = self.end - timedelta(days=(self.end.weekday() - 1) % 7)  # the latest Tuesday
        total = np.zeros(MINUTES)
        for seg in self.segments:
            total += seg.weight * traffic_shape(self.local_hours(ref, seg.timezone), seg.peak_hours)
        self._reference_mean = float(total.mean())
        return float(total.max())

    def rng(self, *keys: object) -> np.random.Generator:
        """An independent generator for one purpose and day, fixed by the run's seed."""
        return np.random.default_rng([self.seed, *(stable_hash(k) for k in keys)])
