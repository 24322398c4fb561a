"""Forecasts of daily series: the coming days, month-end cost, capacity and target crossings.

One small daily model, fitted as of a day from the days before it: log scale (growth is
multiplicative), a weekday profile where Argentine holidays count as Sundays, the growth trend as the
median week-over-week change of the weekly medians, and the current level as the median of the last
week's de-seasonalised values. The interval widens with the horizon: a shared level/trend error (it
moves every future day together) plus independent day noise, both from MAD-scaled residuals.

**Calibration.** That error model gives the interval's *shape* (how it widens with the horizon); its
*width* is calibrated on the series' own past (split-conformal, studentized): the same forecast is
replayed from each of the last ``CALIBRATION_DAYS`` days as origin, every realised error is divided by
the model's standard deviation for it, and the interval's multiplier is the conformal 90 % quantile
of those scores (``ceil((n + 1) * 0.9)``-th smallest) instead of the normal 1.645. With fewer than
``MIN_CALIBRATION`` scores the normal multiplier is used. A bill with incidents, holidays or a level
the model tracks late therefore gets an interval as wide as its past errors were.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

import holidays
import numpy as np
import polars as pl

from pipelines.lib.catalog import ALL, Catalog, load_catalog

Z90 = 1.6449  # two-sided 90 % normal quantile
COVERAGE = 0.9  # nominal coverage of every interval here
CALIBRATION_DAYS = 56  # past forecast origins replayed to calibrate an interval
MIN_CALIBRATION = 20  # fewer calibration scores than this: the normal multiplier
MAD_TO_SIGMA = 1.4826
MONEY = Decimal("0.000001")


@lru_cache(maxsize=64)
def _holidays(country: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, years=year)


class ForecastInputError(ValueError):
    """The series handed to a forecast is unusable; the message says why."""


@dataclass(frozen=True)
class DailyModel:
    """A fitted daily model (log scale): level at ``as_of``, trend per day, weekday profile, noise."""

    as_of: date  # the first day *not* used for fitting
    level: float
    slope: float
    slope_se: float
    profile: tuple[float, ...]  # Monday .. Sunday (holidays use Sunday)
    sigma: float  # day-to-day noise
    level_se: float
    holidays_country: str | None
    log: bool = True

    def value(self, mu: float) -> float:
        """From the model's scale back to the series' units."""
        return math.exp(mu) if self.log else mu

    def trend_at(self, h: int) -> float:
        """The de-seasonalised trend ``h`` days after ``as_of``, in the series' units."""
        return self.value(self.level + self.slope * h)

    def day_type(self, d: date) -> int:
        if self.holidays_country and d in _holidays(self.holidays_country, d.year):
            return 6
        return d.weekday()

    def mean_sd(self, d: date) -> tuple[float, float]:
        """Expected value and standard deviation for one future day, in the model's (log) scale."""
        h = (d - self.as_of).days
        mu = self.level + self.slope * h + self.profile[self.day_type(d)]
        return mu, math.sqrt(self.sigma**2 + (self.level_se + self.slope_se * h) ** 2)

    def predict(self, d: date, z: float = Z90) -> tuple[float, float, float]:
        """Point forecast and interval (``z`` standard deviations; 90 % if normal) for one future day."""
        mu, sd = self.mean_sd(d)
        return self.value(mu), self.value(mu - z * sd), self.value(mu + z * sd)

    def sum_mean_sd(self, days: Sequence[date]) -> tuple[float, float]:
        """Expected total of ``days`` (series' units, log models only) and its standard deviation: the
        level/trend error is shared by every day (it does not average out), the day noise independent."""
        mus = [math.exp(self.level + self.slope * (d - self.as_of).days + self.profile[self.day_type(d)]) for d in days]
        shared = sum(
            m * (self.level_se + self.slope_se * (d - self.as_of).days) for m, d in zip(mus, days, strict=True)
        )
        noise = math.sqrt(sum((m * self.sigma) ** 2 for m in mus))
        return sum(mus), math.sqrt(shared**2 + noise**2)


def conformal_multiplier(scores: Sequence[float], coverage: float = COVERAGE) -> float | None:
    """The split-conformal quantile of studentized absolute errors: the ``ceil((n + 1) * coverage)``-th
    smallest score (the largest if that rank exceeds n); None with fewer than ``MIN_CALIBRATION`` scores."""
    n = len(scores)
    if n < MIN_CALIBRATION:
        return None
    k = min(math.ceil((n + 1) * coverage), n)
    return float(sorted(scores)[k - 1])


class _Replay:
    """A cleaned series and its models fitted as of any day (memoised): forecasts replayed from past
    origins, to calibrate an interval on the series' own realised errors."""

    def __init__(self, days: Sequence[date], values: Sequence[float | Decimal | None], fit_args: dict):
        self.days, ys = _clean(days, values)
        self.by_day = dict(zip(self.days, ys.tolist(), strict=True))
        self.fit_args = fit_args
        self._models: dict[date, DailyModel | None] = {}
        self._scores: dict[tuple[date, bool], list[float | None]] = {}

    def model(self, as_of: date) -> DailyModel | None:
        if as_of not in self._models:
            lo = bisect_left(self.days, as_of - timedelta(days=self.fit_args.get("history_days", 56)))
            hi = bisect_left(self.days, as_of)
            window = self.days[lo:hi]
            try:
                self._models[as_of] = fit_daily(window, [self.by_day[d] for d in window], as_of, **self.fit_args)
            except ForecastInputError:
                self._models[as_of] = None
        return self._models[as_of]

    def origins(self, as_of: date) -> list[date]:
        return [as_of - timedelta(days=k) for k in range(CALIBRATION_DAYS, 0, -1)]

    def _errors(self, t: date, total: bool) -> list[float | None]:
        """Studentized |error| of the forecasts from origin ``t``, ``h + 1`` days ahead (h = 0..31): of that
        day's value, or (``total``) of the sum of the days up to it. None where a day is not observed."""
        key = (t, total)
        if key not in self._scores:
            m = self.model(t)
            out: list[float | None] = [None] * 32
            mean = shared = noise2 = observed = 0.0
            for h in range(32 if m is not None else 0):
                d = t + timedelta(days=h)
                y = self.by_day.get(d)
                if y is None or (m.log and y <= 0):
                    if total:
                        break  # a total needs every day
                    continue
                mu, sd = m.mean_sd(d)
                if not total:
                    out[h] = abs((math.log(y) if m.log else y) - mu) / sd if sd > 0 else None
                    continue
                expected = m.value(mu)  # as in DailyModel.sum_mean_sd (log models: relative errors)
                mean += expected
                shared += expected * (m.level_se + m.slope_se * h)
                noise2 += (expected * m.sigma) ** 2
                observed += y
                sd_sum = math.sqrt(shared**2 + noise2)
                out[h] = abs(observed - mean) / sd_sum if sd_sum > 0 else None
            self._scores[key] = out
        return self._scores[key]

    def scores(self, as_of: date, horizon_days: int, total: bool) -> list[float]:
        """Every studentized error 1..``horizon_days`` ahead from the past origins whose target days are
        all observed before ``as_of`` (single days, or totals of the next days if ``total``)."""
        out = []
        for t in self.origins(as_of):
            errs = self._errors(t, total)
            out += [e for e in errs[: min(horizon_days, (as_of - t).days)] if e is not None]
        return out


def _clean(days: Sequence[date], values: Sequence[float | Decimal | None]) -> tuple[list[date], np.ndarray]:
    if len(days) != len(values):
        raise ForecastInputError(f"{len(days)} days but {len(values)} values")
    pairs = sorted(
        (d, float(v)) for d, v in zip(days, values, strict=True) if v is not None and math.isfinite(float(v))
    )
    if any(a[0] == b[0] for a, b in zip(pairs, pairs[1:], strict=False)):
        raise ForecastInputError("a day appears twice in the series")
    return [p[0] for p in pairs], np.array([p[1] for p in pairs])


def fit_daily(
    days: Sequence[date],
    values: Sequence[float | Decimal | None],
    as_of: date,
    *,
    history_days: int = 56,
    min_history_days: int = 14,
    holidays_country: str | None = "AR",
    log: bool = True,
) -> DailyModel:
    """Fit on the days in ``[as_of - history_days, as_of)``; raises if fewer than ``min_history_days``.

    ``log=True``: multiplicative growth and weekday factors (values must be positive); ``log=False``:
    additive (ratios, latency).
    """
    ds, ys = _clean(days, values)
    sel = [(d, y) for d, y in zip(ds, ys, strict=True) if as_of - timedelta(days=history_days) <= d < as_of]
    if len(sel) < min_history_days:
        raise ForecastInputError(f"needs {min_history_days} days of history before {as_of}, has {len(sel)}")
    if log and any(y <= 0 for _, y in sel):
        raise ForecastInputError("values must be positive for a multiplicative (log) forecast")
    hol = holidays.country_holidays(holidays_country, years={d.year for d, _ in sel}) if holidays_country else {}
    dd = np.array([(as_of - d).days for d, _ in sel])  # 1 = yesterday
    u = np.log(np.array([y for _, y in sel])) if log else np.array([y for _, y in sel])
    dtype = np.array([6 if d in hol else d.weekday() for d, _ in sel])
    week = (dd - 1) // 7
    full = [w for w in np.unique(week) if (week == w).sum() == 7]

    profile = np.zeros(7)
    slope, slope_se = 0.0, 0.0
    for _ in range(2):  # weekly levels on de-seasonalised values, so a holiday week is not low
        des = u - profile[dtype]
        levels = {int(w): float(np.median(des[week == w])) for w in full}
        changes = np.array([(levels[w] - levels[w + 1]) / 7 for w in levels if w + 1 in levels])
        if len(changes):
            slope = float(np.median(changes))
            slope_se = MAD_TO_SIGMA * float(np.median(np.abs(changes - slope))) / math.sqrt(len(changes))
        detr = u + slope * dd  # values brought to as_of's trend level
        centred = detr - float(np.median(detr - profile[dtype]))
        profile = np.array(
            [float(np.median(centred[dtype == k])) if (dtype == k).sum() >= 2 else 0.0 for k in range(7)]
        )
    recent = dd <= 7
    level = float(np.median((detr - profile[dtype])[recent]))
    resid = detr - profile[dtype] - level
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid))))
    level_se = sigma * 1.2533 / math.sqrt(max(int(recent.sum()), 1))  # standard error of a median
    return DailyModel(as_of, level, slope, slope_se, tuple(profile), sigma, level_se, holidays_country, log)


def forecast_days(
    days: Sequence[date],
    values: Sequence[float | Decimal | None],
    horizon_days: int,
    as_of: date | None = None,
    **fit_args,
) -> pl.DataFrame:
    """Traffic, concurrent users or any positive daily series for the next ``horizon_days`` days.

    Returns ``day, forecast, lower, upper`` (90 % interval, calibrated on the errors of the same
    forecast replayed from past days); ``as_of`` defaults to the day after the last observed one.
    """
    ds, _ = _clean(days, values)
    start = as_of or (ds[-1] + timedelta(days=1))
    replay = _Replay(days, values, fit_args)
    model = replay.model(start)
    if model is None:
        fit_daily(days, values, start, **fit_args)  # raises the reason
    z = conformal_multiplier(replay.scores(start, horizon_days, total=False)) or Z90
    rows = [(start + timedelta(days=h), *model.predict(start + timedelta(days=h), z)) for h in range(horizon_days)]
    return pl.DataFrame(rows, schema=["day", "forecast", "lower", "upper"], orient="row")


@dataclass(frozen=True)
class MonthEndForecast:
    """Month-to-date actual plus the forecast of the remaining days (exact decimals, USD)."""

    month: str
    as_of: date
    actual_to_date: Decimal
    forecast_remaining: Decimal
    total: Decimal
    lower: Decimal
    upper: Decimal


def _money(x: float | Decimal) -> Decimal:
    return (x if isinstance(x, Decimal) else Decimal(repr(float(x)))).quantize(MONEY, rounding=ROUND_HALF_UP)


def forecast_month_end(
    days: Sequence[date], cost: Sequence[Decimal | float | None], as_of: date, **fit_args
) -> MonthEndForecast:
    """Cost to the end of ``as_of``'s month: actual days before ``as_of`` + forecast from ``as_of`` on.

    The interval's shape treats the level/trend error as shared by every remaining day (it does not
    average out) and the day noise as independent; its width is calibrated on the realised errors of
    the same forecast (totals of the next 1..n days) replayed from the last ``CALIBRATION_DAYS`` days.
    """
    fit_args.setdefault("holidays_country", None)  # the bill barely follows holidays
    return _month_end(_Replay(days, cost, fit_args), days, cost, as_of)


def _month_end(
    replay: _Replay, days: Sequence[date], cost: Sequence[Decimal | float | None], as_of: date
) -> MonthEndForecast:
    model = replay.model(as_of)
    if model is None:
        fit_daily(days, cost, as_of, **replay.fit_args)  # raises the reason
    first = as_of.replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    actual = sum(
        (_money(v) for d, v in zip(days, cost, strict=True) if first <= d < as_of and v is not None), Decimal(0)
    )
    remaining = [as_of + timedelta(days=k) for k in range((nxt - as_of).days)]
    mean, sd = model.sum_mean_sd(remaining)
    z = conformal_multiplier(replay.scores(as_of, len(remaining), total=True)) or Z90
    spread = z * sd
    fc = _money(mean)
    return MonthEndForecast(
        f"{first:%Y-%m}",
        as_of,
        actual,
        fc,
        actual + fc,
        actual + _money(max(0.0, mean - spread)),
        actual + _money(mean + spread),
    )


@dataclass(frozen=True)
class Crossing:
    """When a series crosses a threshold at its current trend."""

    threshold: float
    status: str  # "already" (at or past it), "will_cross", "not_at_current_trend"
    day: date | None  # first day at or past the threshold
    days_from_now: int | None


def trend_crossing(
    days: Sequence[date],
    values: Sequence[float | None],
    threshold: float,
    *,
    direction: str = "up",
    as_of: date | None = None,
    log: bool = True,
    horizon_days: int = 730,
    **fit_args,
) -> Crossing:
    """The first day the de-seasonalised trend reaches ``threshold`` going ``direction`` ("up"/"down").

    ``log=True`` projects growth multiplicatively (users, traffic, cost); ``log=False`` linearly (ratios,
    latency), fitted the same way on the raw values.
    """
    ds, ys = _clean(days, values)
    start = as_of or (ds[-1] + timedelta(days=1))
    model = fit_daily(ds, ys.tolist(), start, log=log, **fit_args)
    level, slope = model.level, model.slope
    thr = math.log(threshold) if log else threshold
    sign = 1 if direction == "up" else -1
    if sign * (level - thr) >= 0:
        return Crossing(threshold, "already", start, 0)
    if sign * slope <= 0:
        return Crossing(threshold, "not_at_current_trend", None, None)
    n = math.ceil((thr - level) / slope)
    if n > horizon_days:
        return Crossing(threshold, "not_at_current_trend", None, None)
    return Crossing(threshold, "will_cross", start + timedelta(days=n), n)


def capacity_crossings(
    days: Sequence[date], peak_users: Sequence[float | None], catalog: Catalog | None = None, as_of: date | None = None
) -> dict[str, Crossing]:
    """When daily peak concurrent users pass each plan capacity (catalog targets of peak_concurrent_users)."""
    catalog = catalog or load_catalog()
    targets = catalog.kpi("peak_concurrent_users").targets
    return {
        phase: trend_crossing(days, peak_users, value, direction="up", as_of=as_of)
        for phase, value in sorted(targets.items(), key=lambda kv: kv[1])
    }


def kpi_target_crossings(
    kpi_daily: pl.DataFrame, as_of: date | None = None, catalog: Catalog | None = None, horizon_days: int = 365
) -> pl.DataFrame:
    """For every total-grain KPI with a target: its status now and the day the trend changes it.

    ``kpi_daily`` follows the published contract (``day, kpi, niche, country, region, value``). The
    trend is projected day by day against the target in force on each future day (plan phases), so a
    rising target counts. Returns ``kpi, status_now, crossing_day, projected_value, target_then``.
    """
    catalog = catalog or load_catalog()
    totals = kpi_daily.filter(
        (pl.col("niche") == ALL)
        & (pl.col("country") == ALL)
        & (pl.col("region") == ALL)
        & pl.col("value").is_not_null()
    )
    rows = []
    for kpi in catalog.kpis:
        series = totals.filter(pl.col("kpi") == kpi.id).sort("day")
        if series.height < 14 or catalog.target(kpi.id, series["day"][-1]) is None:
            continue
        ds, ys = series["day"].to_list(), series["value"].to_list()
        start = as_of or ds[-1] + timedelta(days=1)
        log = min(ys) > 0 and kpi.unit != "ratio"  # growth is multiplicative; ratios move in points
        try:
            model = fit_daily(ds, ys, start, holidays_country=None, log=log)
        except ForecastInputError:
            continue
        at = model.trend_at
        now_value = at(0)
        status_now = catalog.status(kpi.id, now_value, catalog.target(kpi.id, start))
        crossing, projected, target_then = None, None, None
        for h in range(1, horizon_days + 1):
            d = start + timedelta(days=h)
            target = catalog.target(kpi.id, d)
            value = at(h)
            if (catalog.status(kpi.id, value, target) == "breach") != (status_now == "breach"):
                crossing, projected, target_then = d, value, target
                break
        rows.append(
            {
                "kpi": kpi.id,
                "status_now": status_now,
                "value_now": now_value,
                "crossing_day": crossing,
                "projected_value": projected,
                "target_then": target_then,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "kpi": pl.String,
            "status_now": pl.String,
            "value_now": pl.Float64,
            "crossing_day": pl.Date,
            "projected_value": pl.Float64,
            "target_then": pl.Float64,
        },
    )


def backtest_month_end(
    days: Sequence[date],
    cost: Sequence[Decimal | float | None],
    min_history_days: int = 14,
    holidays_country: str | None = None,
) -> pl.DataFrame:
    """Month-end forecasts made on every day of every complete month, against the month's actual total.

    Returns ``as_of, month, forecast, lower, upper, actual, ape`` (absolute percentage error); MAPE is
    its mean and interval coverage the share of rows with ``lower <= actual <= upper``.
    """
    by_day = {d: _money(v) for d, v in zip(days, cost, strict=True) if v is not None}
    first_day, last_day = min(by_day), max(by_day)
    replay = _Replay(
        list(by_day),
        list(by_day.values()),
        {"holidays_country": holidays_country, "min_history_days": min_history_days},
    )
    rows = []
    month = first_day.replace(day=1)
    while month <= last_day:
        nxt = (month + timedelta(days=32)).replace(day=1)
        month_days = [month + timedelta(days=k) for k in range((nxt - month).days)]
        if all(d in by_day for d in month_days):
            actual = sum((by_day[d] for d in month_days), Decimal(0))
            for as_of in month_days[1:]:
                if (as_of - first_day).days < min_history_days:
                    continue
                f = _month_end(replay, list(by_day), list(by_day.values()), as_of)
                ape = abs(f.total - actual) / actual * 100 if actual else None
                rows.append(
                    {
                        "as_of": as_of,
                        "month": f.month,
                        "forecast": f.total,
                        "lower": f.lower,
                        "upper": f.upper,
                        "actual": actual,
                        "ape": float(ape) if ape is not None else None,
                    }
                )
        month = nxt
    return pl.DataFrame(
        rows,
        schema={
            "as_of": pl.Date,
            "month": pl.String,
            "forecast": pl.Decimal(18, 6),
            "lower": pl.Decimal(18, 6),
            "upper": pl.Decimal(18, 6),
            "actual": pl.Decimal(18, 6),
            "ape": pl.Float64,
        },
    )
