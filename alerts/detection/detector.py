"""A seasonal, outlier-robust anomaly detector for any single KPI time series.

The model, refitted once per Argentine day from the history before that day (so a point is never
judged against itself or the future):

* work in a transformed space ``u`` (``log(y + c)`` for counts, money and latency, so seasonality and
  growth are multiplicative; identity for ratios);
* **growth trend**: the median of the week-over-week slopes of the daily medians (same weekday against
  same weekday, so the weekly rhythm does not bias it; the median ignores a holiday or an incident);
* **Argentina's rhythm** (or the series' own country's: ``timezone`` and ``holidays_country``): a
  profile per slot, where a slot is *time of day x weekday* in local time for sub-daily series (the
  hour, or the quarter hour for finer data) and the weekday for daily ones. A public holiday
  (``holidays``) is left out of the history and judged *between* its own weekday and a Sunday: the
  expectation is their midpoint and the interval spans both (a day off goes either way: a clinic
  rests, a barber's Saturday barely moves, a total mixing countries rests in part);
* **robust scale**: 1.4826 x MAD of the residuals (per hour of day for sub-daily series, where noise
  differs between 4 a.m. and noon), never mean/stdev, so past incidents in the history do not blind it;
* **level**: the median of the de-seasonalised recent window (a day, or a week for daily series), so the
  expected value follows the current level and a level shift is absorbed after about half a window.

A point *is anomalous* when its robust z-score passes the threshold in the alerting direction **and** the
change is large in absolute terms (``min_abs_change``) **and** relative to the expectation
(``min_rel_change``). Consecutive anomalous points (gaps up to ``episode_gap``) form one *episode*; only
the first point of an episode alerts, so a level shift pages once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import holidays
import numpy as np
import polars as pl

from pipelines.lib.catalog import load_catalog

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x this = its standard deviation
DAY_S = 86_400
SUNDAY = 6  # day types are 0=Monday .. 6=Sunday
HOLIDAY = 7  # a holiday is its own day type, judged between its weekday and Sunday


class DetectorInputError(ValueError):
    """The series handed to :func:`detect` is malformed; the message says how."""


@dataclass(frozen=True)
class DetectorConfig:
    """How one metric is judged. Defaults suit a sub-daily count; see ``alerts/detection/policy.yaml``."""

    direction: Literal["up", "down", "both"] = "both"
    transform: Literal["log", "identity"] = "log"
    history: timedelta = timedelta(days=28)
    min_history: timedelta = timedelta(days=14)
    level_window: timedelta | None = None  # None: 1 day for sub-daily series, 7 days for daily ones
    episode_gap: timedelta | None = None  # None: 1 hour for sub-daily series, 1 day for daily ones
    z_threshold: float = 4.5
    min_abs_change: float = 0.0
    min_rel_change: float = 0.2
    min_scale: float = 0.02  # floor of the robust scale in transformed units (log: ~2 %)
    trend: bool = True
    holidays_country: str | None = "AR"  # None: no holiday calendar (e.g. cost, which barely follows it)
    timezone: str | None = None  # None: the catalog's timezone

    def with_overrides(self, **changes: Any) -> DetectorConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Episode:
    """One anomaly episode: from its first anomalous point to its resolution (None while ongoing)."""

    start: datetime
    last_anomalous: datetime
    resolved_at: datetime | None
    peak_score: float
    direction: str  # "up" or "down"
    actual: float  # value at the most anomalous point
    expected: float
    lower: float
    upper: float
    peak_at: datetime


def _to_epoch_seconds(timestamps: Any) -> np.ndarray:
    """UTC epoch seconds from a polars Series, numpy datetime64 array or a sequence of datetimes."""
    if isinstance(timestamps, pl.Series):
        s = timestamps
        if s.dtype == pl.Datetime:
            if s.dtype.time_zone is None:  # naive timestamps are UTC by the data contract
                s = s.dt.replace_time_zone("UTC")
            return s.dt.epoch("ms").to_numpy().astype("int64") / 1000.0
        if s.dtype == pl.Date:
            raise DetectorInputError("timestamps are dates: pass the day's local midnight as a datetime")
        raise DetectorInputError(f"timestamps must be datetimes, got {s.dtype}")
    arr = np.asarray(timestamps)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ms]").astype("int64") / 1000.0
    out = np.empty(len(arr), dtype="float64")
    for i, t in enumerate(timestamps):
        if not isinstance(t, datetime):
            raise DetectorInputError(f"timestamp {i} is {type(t).__name__}, not a datetime")
        out[i] = (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return out


def _as_values(values: Any, n: int) -> np.ndarray:
    if isinstance(values, pl.Series):
        values = values.cast(pl.Float64).to_numpy()
    arr = (
        np.array([np.nan if v is None else v for v in values], dtype="float64")
        if not isinstance(values, np.ndarray)
        else values.astype("float64")
    )
    if len(arr) != n:
        raise DetectorInputError(f"{n} timestamps but {len(arr)} values")
    return arr


def _median(values: np.ndarray) -> float:
    """Median without np.median's per-call overhead (this runs once per point)."""
    a = np.sort(values)
    n = len(a)
    return float(a[n // 2]) if n % 2 else float(0.5 * (a[n // 2 - 1] + a[n // 2]))


def _median_by(keys: np.ndarray, values: np.ndarray, min_count: int = 1) -> dict[int, float]:
    """Median of ``values`` per integer key (keys with fewer than ``min_count`` values are left out)."""
    if len(values) == 0:
        return {}
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    cuts = np.flatnonzero(np.diff(k)) + 1
    out: dict[int, float] = {}
    for key_block, val_block in zip(np.split(k, cuts), np.split(v, cuts), strict=True):
        if len(val_block) >= min_count:
            out[int(key_block[0])] = _median(val_block)
    return out


def _mad_sigma(values: np.ndarray) -> float:
    if len(values) == 0:
        return 0.0
    return MAD_TO_SIGMA * _median(np.abs(values - _median(values)))


def _nan_to_none(arr: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(x) else float(x) for x in arr]


def detect(
    timestamps: Any,
    values: Sequence[float | None] | np.ndarray | pl.Series,
    config: DetectorConfig | None = None,
    *,
    judge_from: datetime | None = None,
) -> pl.DataFrame:
    """Score every point of one time series against what Argentina's rhythm and the trend predicted.

    ``timestamps`` (UTC; strictly increasing; any regular step from a minute to a day) and ``values``
    (None/NaN = no data) describe one series of any metric. Returns one row per point:

    ``ts`` (UTC), ``value``, ``expected``, ``lower``, ``upper`` (the interval at the z threshold),
    ``z`` (robust z-score), ``score`` in [0, 1] (``z^2 / (z^2 + threshold^2)`` in the alerting direction:
    0 = as expected, 0.5 = at the threshold, towards 1 = far beyond), ``anomalous`` (this point breaks
    the threshold and both change floors), ``alert`` (first point of an episode: the only one that
    pages), ``episode`` (episode number, null outside), ``status`` (``ok``, ``insufficient_history`` or
    ``no_data`` or ``not_judged``). Expected values are null where the history is shorter than
    ``config.min_history``. ``judge_from`` skips the days before that instant's Argentine day (their
    points only serve as history): a scheduled run judges just the last day or two.
    """
    cfg = config or DetectorConfig()
    ts = _to_epoch_seconds(timestamps)
    n = len(ts)
    y = _as_values(values, n)
    if n and np.any(np.diff(ts) <= 0):
        bad = int(np.flatnonzero(np.diff(ts) <= 0)[0]) + 1
        raise DetectorInputError(f"timestamps must be strictly increasing (row {bad} is not after row {bad - 1})")
    finite = np.isfinite(y)
    if np.any(np.isinf(y)):
        raise DetectorInputError("values contain Inf; use None/NaN for 'no data'")

    tz = ZoneInfo(cfg.timezone or load_catalog().timezone)
    step = float(np.median(np.diff(ts))) if n > 1 else float(DAY_S)
    daily = step >= 20 * 3600
    level_s = (cfg.level_window or timedelta(days=7 if daily else 1)).total_seconds()
    gap_s = (cfg.episode_gap or timedelta(days=1 if daily else 0, hours=0 if daily else 1)).total_seconds()

    ts_series = pl.Series("ts", (ts * 1000).astype("int64")).cast(pl.Datetime("ms", "UTC"))
    local = ts_series.dt.convert_time_zone(tz.key)
    local_day = local.dt.date().to_list()
    hour = local.dt.hour().to_numpy().astype("int64")
    weekday = local.dt.weekday().to_numpy().astype("int64") - 1  # polars: 1 = Monday
    years = sorted({d.year for d in local_day}) or [2026]
    hol = holidays.country_holidays(cfg.holidays_country, years=years) if cfg.holidays_country else {}
    day_type = np.array([HOLIDAY if d in hol else w for d, w in zip(local_day, weekday, strict=True)], dtype="int64")
    # Time-of-day slots: the hour for hourly data, the quarter hour below that (peaks ramp within an hour).
    slot_minutes = 60 if step >= 3600 else 15
    n_tod = 1 if daily else 1440 // slot_minutes
    minute_of_day = hour * 60 + local.dt.minute().to_numpy().astype("int64")
    tod = np.zeros(n, dtype="int64") if daily else minute_of_day // slot_minutes
    slot = day_type * n_tod + tod
    day_ord = np.array([d.toordinal() for d in local_day], dtype="int64")

    # Transform. The log offset only keeps log() finite on zeros; 1 % of the typical value.
    if cfg.transform == "log":
        positive = y[finite & (y > 0)]
        c = 0.01 * float(np.median(positive)) if len(positive) else 1.0
        u = np.log(np.clip(y, 0.0, None) + c)

        def inverse(x: np.ndarray) -> np.ndarray:
            return np.clip(np.exp(x) - c, 0.0, None)
    else:
        c = 0.0
        u = y.copy()

        def inverse(x: np.ndarray) -> np.ndarray:
            return x

    k = cfg.z_threshold

    def _breaks(u_i: float, y_i: float, eu: float, sd: float) -> bool:
        z_i = (u_i - eu) / sd
        z_d = z_i if cfg.direction == "up" else -z_i if cfg.direction == "down" else abs(z_i)
        exp_value = max(math.exp(eu) - c, 0.0) if cfg.transform == "log" else eu
        change = abs(y_i - exp_value)
        exp_abs = abs(exp_value)
        return bool(z_d >= k and change >= cfg.min_abs_change and change >= cfg.min_rel_change * exp_abs)

    is_holiday = day_type == HOLIDAY

    def seasonal(table: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Profile term of the points ``idx`` and, on holidays, half the gap it has to span: a holiday
        is expected midway (in the transformed space) between its own weekday and a Sunday, the two
        ways a day off goes (a holiday on a Sunday is just a Sunday)."""
        term, spread = table[slot[idx]], np.zeros(len(idx))
        hol_at = np.flatnonzero(is_holiday[idx])
        if len(hol_at):
            own = table[weekday[idx[hol_at]] * n_tod + tod[idx[hol_at]]]
            sunday = table[SUNDAY * n_tod + tod[idx[hol_at]]]
            term = term.copy()
            term[hol_at] = (own + sunday) / 2
            spread[hol_at] = np.abs(own - sunday) / 2
        return term, spread

    anomalous = np.zeros(n, dtype=bool)
    expected_u = np.full(n, np.nan)
    sigma = np.full(n, np.nan)
    first_valid = ts[finite][0] if finite.any() else math.inf
    hist_s, min_hist_s = cfg.history.total_seconds(), cfg.min_history.total_seconds()

    day_starts: dict[int, float] = {}
    for d in dict.fromkeys(local_day):
        day_starts[d.toordinal()] = datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()

    skip_before = -math.inf
    if judge_from is not None:
        jd = judge_from.astimezone(tz).date()
        skip_before = datetime(jd.year, jd.month, jd.day, tzinfo=tz).timestamp()
    for ordinal, d0 in day_starts.items():
        if d0 < skip_before:
            continue
        if d0 - first_valid < min_hist_s:
            continue
        # Holidays are left out of the history: one holiday says little about the next (another weekday,
        # another season), so a holiday is judged against its weekday and Sunday instead (below).
        in_hist = finite & (ts >= d0 - hist_s) & (ts < d0) & ~is_holiday
        if in_hist.sum() < 7:
            continue
        tH, uH, sH, hH, todH = ts[in_hist], u[in_hist], slot[in_hist], hour[in_hist], tod[in_hist]
        # Whole weeks back from the day's start: a week's median is free of the weekly rhythm, so the
        # trend is the median week-over-week change, and each week is normalised by its own median
        # before the slot profile is taken (a level shift inside the history then does not smear the
        # profile). Weeks with under 70 % of the fullest week's points are left out.
        # Week 0 is (d0 - 7 days, d0): ceil, so a point exactly 7 days back (the day's first slot a week
        # ago) belongs to the week it starts, not to the week before it.
        week = (np.ceil((d0 - tH) / (7 * DAY_S)) - 1).astype("int64")
        counts = dict(zip(*np.unique(week, return_counts=True), strict=True))
        full = {int(b) for b, c in counts.items() if c >= 0.7 * max(counts.values())}
        keep = np.isin(week, list(full))
        tH, uH, sH, hH, todH, week = tH[keep], uH[keep], sH[keep], hH[keep], todH[keep], week[keep]

        # Two passes: week levels (and the trend from them) are re-estimated on de-seasonalised values,
        # so a week missing a day (a holiday left out) does not tilt its median.
        p_hist = np.zeros(len(uH))
        slope = 0.0  # per day, in transformed units
        for _ in range(2):
            if cfg.trend:
                raw_level = _median_by(week, uH - p_hist)
                changes = [(m - raw_level[b + 1]) / 7 for b, m in raw_level.items() if b + 1 in raw_level]
                slope = float(np.median(changes)) if changes else 0.0
            vH = uH - slope * (tH - d0) / DAY_S
            week_level = _median_by(week, vH - p_hist)
            nH = vH - np.array([week_level[int(b)] for b in week])
            profile = _median_by(sH, nH, min_count=2)
            fallback = _median_by(todH, nH)

            # Lookup table per weekday slot: the slot's own median; else the time of day's median over
            # all days; else 0. (Holiday slots are never filled: see `seasonal`.)
            table = np.zeros(8 * n_tod)
            for key in range(len(table)):
                table[key] = profile[key] if key in profile else fallback.get(key % n_tod, 0.0)
            p_hist = table[sH]
        base = week_level[min(week_level)]  # the latest week's level

        # Noise scale from week-over-week differences of the same slot (point vs the point 7 days
        # earlier, both normalised by their week's level): unbiased even when a slot has 2 samples,
        # which residuals around a 2-sample median are not. MAD / sqrt(2) per hour of day.
        partner = np.searchsorted(tH, tH - 7 * DAY_S)
        partner_ok = (partner < len(tH)) & (np.abs(tH[np.minimum(partner, len(tH) - 1)] - (tH - 7 * DAY_S)) < 1)
        partner_ok &= sH == sH[np.minimum(partner, len(tH) - 1)]
        diffs = (nH - nH[np.minimum(partner, len(tH) - 1)])[partner_ok]
        diff_hours = hH[partner_ok]
        global_sigma = _mad_sigma(diffs) / math.sqrt(2) if len(diffs) >= 5 else _mad_sigma(nH - p_hist)
        floor = max(cfg.min_scale, 0.5 * global_sigma)
        if daily:
            sigma_by_hour = {h: global_sigma for h in range(24)}
        else:
            sigma_by_hour = {}
            for h in range(24):
                sel = diffs[diff_hours == h]
                sigma_by_hour[h] = _mad_sigma(sel) / math.sqrt(2) if len(sel) >= 5 else global_sigma

        # Points of this day, and the level window reaching back before it.
        today = np.flatnonzero(day_ord == ordinal)
        lo_all = int(np.searchsorted(ts, d0 - level_s))
        span = np.arange(lo_all, today[-1] + 1)
        season, spread = seasonal(table, span)
        w = u[span] - slope * (ts[span] - d0) / DAY_S - season
        w_ok = np.isfinite(w) & ~is_holiday[span]  # a holiday's level is not the series' level
        for i in today:
            lo = int(np.searchsorted(ts, ts[i] - level_s)) - lo_all
            ok = w_ok[lo : i - lo_all]
            normal = ok & ~anomalous[lo_all + lo : i]
            # The level follows the recent normal points, so an ongoing episode does not pull the
            # expectation up to itself; once a whole window is anomalous the shift is the new level.
            window = w[lo : i - lo_all][normal if normal.sum() >= 3 else ok]
            level = _median(window) if len(window) >= 3 else base
            expected_u[i] = level + slope * (ts[i] - d0) / DAY_S + season[i - lo_all]
            # On a holiday the interval reaches from its weekday's value to Sunday's, plus the noise.
            sigma[i] = max(sigma_by_hour[int(hour[i])], floor) + spread[i - lo_all] / k
            if finite[i]:
                anomalous[i] = _breaks(u[i], y[i], expected_u[i], sigma[i])

    have = np.isfinite(expected_u)
    z = np.where(have & finite, (u - expected_u) / sigma, np.nan)
    expected = np.where(have, inverse(np.where(have, expected_u, 0.0)), np.nan)
    lower = np.where(have, inverse(np.where(have, expected_u - k * sigma, 0.0)), np.nan)
    upper = np.where(have, inverse(np.where(have, expected_u + k * sigma, 0.0)), np.nan)

    if cfg.direction == "up":
        z_dir = np.where(np.isfinite(z), np.clip(z, 0, None), 0.0)
    elif cfg.direction == "down":
        z_dir = np.where(np.isfinite(z), np.clip(-z, 0, None), 0.0)
    else:
        z_dir = np.where(np.isfinite(z), np.abs(z), 0.0)
    score = z_dir**2 / (z_dir**2 + k**2)

    alert = np.zeros(n, dtype=bool)
    episode: list[int | None] = [None] * n
    current, last_t = -1, -math.inf
    for i in np.flatnonzero(anomalous):
        if ts[i] - last_t > gap_s:
            current += 1
            alert[i] = True
        episode[i] = current
        last_t = ts[i]

    status = np.where(
        ~finite, "no_data", np.where(have, "ok", np.where(ts < skip_before, "not_judged", "insufficient_history"))
    )
    return pl.DataFrame(
        {
            "ts": ts_series,
            "value": _nan_to_none(y),
            "expected": _nan_to_none(expected),
            "lower": _nan_to_none(lower),
            "upper": _nan_to_none(upper),
            "z": _nan_to_none(z),
            "score": score.astype("float64"),
            "anomalous": anomalous,
            "alert": alert,
            "episode": pl.Series("episode", episode, dtype=pl.Int64),
            "status": status.tolist(),
        },
        schema_overrides={
            "value": pl.Float64,
            "expected": pl.Float64,
            "lower": pl.Float64,
            "upper": pl.Float64,
            "z": pl.Float64,
        },
    )


def episodes(result: pl.DataFrame, config: DetectorConfig | None = None) -> list[Episode]:
    """The episodes of a :func:`detect` result, with when each started, peaked and resolved.

    An episode is resolved at the first non-anomalous point after its last anomalous one, once the
    series reaches past the episode gap (until then it is still ongoing: ``resolved_at`` None).
    """
    cfg = config or DetectorConfig()
    if result.is_empty():
        return []
    ts = result["ts"].to_list()
    step = (ts[-1] - ts[0]) / max(len(ts) - 1, 1)
    gap = cfg.episode_gap or (timedelta(days=1) if step >= timedelta(hours=20) else timedelta(hours=1))
    out: list[Episode] = []
    for _, block in result.filter(pl.col("episode").is_not_null()).group_by("episode", maintain_order=True):
        start, last = block["ts"][0], block["ts"][-1]
        peak = block.row(int(block["score"].arg_max()), named=True)
        after = result.filter((pl.col("ts") > last) & ~pl.col("anomalous") & (pl.col("status") != "no_data"))
        resolved = after["ts"][0] if not after.is_empty() and ts[-1] - last > gap else None
        z = peak["z"] or 0.0
        out.append(
            Episode(
                start,
                last,
                resolved,
                float(peak["score"]),
                "up" if z >= 0 else "down",
                float(peak["value"]),
                float(peak["expected"]),
                float(peak["lower"]),
                float(peak["upper"]),
                peak["ts"],
            )
        )
    return out


def local_midnights(days: Sequence[date], timezone: str | None = None) -> list[datetime]:
    """Local midnight (as an aware datetime) of each Argentine day: the timestamp of a daily point."""
    tz = ZoneInfo(timezone or load_catalog().timezone)
    return [datetime(d.year, d.month, d.day, tzinfo=tz) for d in days]
