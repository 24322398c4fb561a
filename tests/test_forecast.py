"""Forecasts on series whose future is known: exact growth, flat cost, linear decline, and a backtest."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from alerts.forecast.forecast import (
    ForecastInputError,
    backtest_month_end,
    capacity_crossings,
    conformal_multiplier,
    fit_daily,
    forecast_days,
    forecast_month_end,
    kpi_target_crossings,
    trend_crossing,
)

WEEK = [1.0, 1.05, 1.1, 1.05, 1.0, 0.8, 0.6]  # Monday .. Sunday


def days_from(start: date, n: int) -> list[date]:
    return [start + timedelta(days=k) for k in range(n)]


def test_exact_growth_with_weekly_rhythm_and_holiday_is_forecast_exactly():
    start = date(2026, 9, 1)
    ds = days_from(start, 84)

    def truth(d: date) -> float:
        import holidays

        wd = 6 if d in holidays.country_holidays("AR", years=d.year) else d.weekday()
        return 1000 * math.exp(0.01 * (d - start).days) * WEEK[wd]

    history = [d for d in ds if d < date(2026, 11, 10)]
    fc = forecast_days(history, [truth(d) for d in history], horizon_days=30)
    assert fc["day"][0] == date(2026, 11, 10) and fc.height == 30
    for row in fc.iter_rows(named=True):
        assert row["forecast"] == pytest.approx(truth(row["day"]), rel=1e-9)
    # 2026-11-23 (a Monday) is a holiday: forecast at Sunday level.
    holiday = fc.filter(pl.col("day") == date(2026, 11, 23)).row(0, named=True)
    assert holiday["forecast"] == pytest.approx(1000 * math.exp(0.01 * 83) * WEEK[6], rel=1e-9)


def test_interval_widens_with_the_horizon_and_covers_noisy_truth():
    rng = np.random.default_rng(5)
    ds = days_from(date(2026, 6, 1), 120)
    values = [5000 * WEEK[d.weekday()] * math.exp(0.005 * k + 0.03 * rng.standard_normal()) for k, d in enumerate(ds)]
    fc = forecast_days(ds[:90], values[:90], horizon_days=30, holidays_country=None)
    widths = (fc["upper"] / fc["lower"]).to_list()
    assert all(b >= a for a, b in zip(widths, widths[1:], strict=False))
    inside = sum(lo <= v <= hi for lo, hi, v in zip(fc["lower"], fc["upper"], values[90:], strict=True))
    assert inside >= 25  # a 90 % interval: 27 of 30 expected


def test_month_end_cost_is_actual_to_date_plus_forecast_in_exact_decimals():
    ds = days_from(date(2026, 10, 1), 45)
    cost = [Decimal("2000.123456")] * len(ds)
    f = forecast_month_end(ds, cost, as_of=date(2026, 11, 11))
    assert f.month == "2026-11"
    assert f.actual_to_date == Decimal("20001.234560")  # 10 days x 2000.123456
    assert f.forecast_remaining == Decimal("40002.469120")  # 20 days
    assert f.total == Decimal("60003.703680")
    assert f.lower == f.upper == f.total  # a perfectly flat bill leaves no uncertainty


def test_month_end_interval_contains_the_truth_on_noisy_growth():
    rng = np.random.default_rng(9)
    ds = days_from(date(2026, 8, 1), 122)
    cost = [
        Decimal(str(round(2000 * math.exp(0.004 * k) * (1 + 0.03 * rng.standard_normal()), 6))) for k in range(len(ds))
    ]
    result = backtest_month_end(ds, cost)
    assert set(result["month"].unique()) == {"2026-08", "2026-09", "2026-10", "2026-11"}
    # Every day after the 1st of each complete month, once 14 days of history exist (August from the 15th).
    assert result.height == 17 + 29 + 30 + 29
    mape = result["ape"].mean()
    coverage = ((result["lower"] <= result["actual"]) & (result["actual"] <= result["upper"])).mean()
    assert mape < 5
    assert coverage >= 0.8


def test_capacity_crossings_at_the_current_trend():
    ds = days_from(date(2026, 9, 1), 60)
    as_of = ds[-1] + timedelta(days=1)
    users = [1000 * math.exp(0.01 * (d - as_of).days) for d in ds]  # 1000 at as_of, +1 % a day
    crossings = capacity_crossings(ds, users, as_of=as_of)
    assert list(crossings) == ["now", "month_3", "month_6"]
    # ceil(ln(1400/1000)/0.01) = 34, ceil(ln 5/0.01) = 161, ceil(ln 15/0.01) = 271
    assert [c.days_from_now for c in crossings.values()] == [34, 161, 271]
    assert crossings["now"].day == as_of + timedelta(days=34)
    flat = capacity_crossings(ds, [900.0] * len(ds), as_of=as_of)
    assert flat["now"].status == "not_at_current_trend" and flat["now"].day is None
    above = trend_crossing(ds, [2000.0] * len(ds), 1400, as_of=as_of)
    assert above.status == "already" and above.day == as_of


def test_kpi_target_crossing_day_from_a_linear_decline():
    # cache_hit_ratio total declines 0.001 a day from 0.9505 at the forecast start; target 0.90 with a 0.02
    # warn margin, so it breaches below 0.88: 0.9505 - 0.001 h < 0.88 first at h = 71.
    ds = days_from(date(2026, 9, 1), 40)
    start = ds[-1] + timedelta(days=1)
    frame = pl.DataFrame(
        {
            "day": ds,
            "kpi": ["cache_hit_ratio"] * 40,
            "niche": ["all"] * 40,
            "country": ["all"] * 40,
            "region": ["all"] * 40,
            "value": [0.9505 - 0.001 * (d - start).days for d in ds],
        }
    )
    out = kpi_target_crossings(frame).row(0, named=True)
    assert out["kpi"] == "cache_hit_ratio" and out["status_now"] == "ok"
    assert out["value_now"] == pytest.approx(0.9505, abs=1e-12)
    assert out["crossing_day"] == start + timedelta(days=71)
    assert out["projected_value"] == pytest.approx(0.8795, abs=1e-12)
    assert out["target_then"] == 0.90


def test_bad_input_is_named():
    ds = days_from(date(2026, 9, 1), 10)
    with pytest.raises(ForecastInputError, match="needs 14 days of history"):
        fit_daily(ds, [1.0] * 10, date(2026, 9, 11))
    with pytest.raises(ForecastInputError, match="10 days but 9 values"):
        forecast_days(ds, [1.0] * 9, 3)
    with pytest.raises(ForecastInputError, match="twice"):
        forecast_days([ds[0], ds[0]], [1.0, 2.0], 3)


def _known_noise(n: int, seed: int, sigma: float = 0.05) -> tuple[list[date], list[float]]:
    """Weekly rhythm x 0.2 %/day growth x log-normal day noise of known sigma."""
    rng = np.random.default_rng(seed)
    ds = days_from(date(2025, 1, 1), n)
    return ds, [
        3000 * WEEK[d.weekday()] * math.exp(0.002 * k + sigma * rng.standard_normal()) for k, d in enumerate(ds)
    ]


def test_conformal_multiplier_is_the_rank_quantile():
    scores = [float(k) for k in range(1, 40)]  # n = 39: rank ceil(40 x 0.9) = 36
    assert conformal_multiplier(scores) == 36.0
    assert conformal_multiplier(scores[:19]) is None  # too few: the caller falls back to the normal 1.645
    assert conformal_multiplier([1.0] * 25, coverage=0.99) == 1.0  # rank capped at n


def test_daily_interval_is_calibrated_to_nominal_coverage_on_known_noise():
    # 28 forecast origins x 7 days = 196 day forecasts on a series with known noise (seed fixed). The
    # normal-theory interval (1.645 x the model's sd, what fit_daily alone gives) undercovers: its MAD
    # sigma and level error ignore that level and trend are re-estimated from noisy weeks. The calibrated
    # one must sit at 90 %: +-6 points is ~3 binomial standard errors (sqrt(.9 x .1 / 196) = 2.1 points).
    ds, values = _known_noise(400, seed=11)
    calibrated = normal = total = 0
    for origin in range(120, 393, 10):
        fc = forecast_days(ds[:origin], values[:origin], horizon_days=7, holidays_country=None)
        model = fit_daily(ds[:origin], values[:origin], ds[origin], holidays_country=None)
        for d, lo, hi, v in zip(fc["day"], fc["lower"], fc["upper"], values[origin : origin + 7], strict=True):
            calibrated += lo <= v <= hi
            _, nlo, nhi = model.predict(d)
            normal += nlo <= v <= nhi
            total += 1
    assert total == 196
    assert 0.84 <= calibrated / total <= 0.96
    assert normal / total < calibrated / total - 0.04  # the calibration is what brings it to nominal


def test_month_end_interval_is_calibrated_to_nominal_coverage_on_known_noise():
    # 12 complete months of forecasts (every day from the 2nd). Forecasts of one month share its actual,
    # so the effective sample is a few dozen, not 370: the tolerance is wide, the seed fixed.
    ds, values = _known_noise(400, seed=11)
    bt = backtest_month_end(ds, [Decimal(str(round(v, 6))) for v in values])
    assert bt.height == 370
    coverage = ((bt["lower"] <= bt["actual"]) & (bt["actual"] <= bt["upper"])).mean()
    assert 0.82 <= coverage <= 0.97
    assert bt["ape"].mean() < 2
