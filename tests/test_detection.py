"""The anomaly detector on plain synthetic series with known answers, and the deviation explainer."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from alerts.detection.detector import DetectorConfig, DetectorInputError, detect, episodes, local_midnights
from alerts.detection.explain import contributions_additive, contributions_ratio, cost_impact, rank_dimensions

START = datetime(2026, 8, 3, 3, 0, tzinfo=UTC)  # Monday 00:00 in Buenos Aires (UTC-3)
DAY_SHAPE = np.array(
    [
        0.2,
        0.15,
        0.1,
        0.1,
        0.1,
        0.15,
        0.3,
        0.5,
        0.8,
        1.0,
        1.0,
        1.0,
        0.8,
        0.7,
        0.7,
        0.8,
        0.9,
        1.0,
        1.0,
        1.0,
        0.8,
        0.6,
        0.4,
        0.3,
    ]
)
WEEK_SHAPE = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.4])  # Monday .. Sunday


def hourly_traffic(
    days: int, *, base: float = 1000.0, growth_per_day: float = 0.0, seed: int = 1, holidays_as_sunday: bool = True
) -> tuple[list[datetime], np.ndarray]:
    """Requests per hour with Argentina's rhythm: peaks 9-12 and 17-20, quiet weekends, noise 3 %."""
    import holidays as hol

    ar = hol.country_holidays("AR", years=[2026])
    rng = np.random.default_rng(seed)
    ts = [START + timedelta(hours=h) for h in range(days * 24)]
    values = np.empty(len(ts))
    for i, t in enumerate(ts):
        local = t - timedelta(hours=3)
        wd = 6 if (holidays_as_sunday and local.date() in ar) else local.weekday()
        mean = base * DAY_SHAPE[local.hour] * WEEK_SHAPE[wd] * math.exp(growth_per_day * i / 24)
        values[i] = mean * (1 + 0.03 * rng.standard_normal())
    return ts, values


def test_flat_series_with_weekly_seasonality_never_alerts():
    ts, values = hourly_traffic(56)
    result = detect(ts, values, DetectorConfig(direction="both"))
    assert result["alert"].sum() == 0
    assert result["anomalous"].sum() == 0
    # After 14 days of history every point has an expectation close to the truth (3 % noise).
    scored = result.filter(pl.col("status") == "ok")
    assert scored.height == (56 - 14) * 24
    rel_err = ((scored["value"] - scored["expected"]).abs() / scored["expected"]).median()
    assert rel_err < 0.05
    # The interval contains the value for (nearly) every clean point.
    inside = ((scored["value"] >= scored["lower"]) & (scored["value"] <= scored["upper"])).mean()
    assert inside > 0.99
    assert result["score"].min() >= 0 and result["score"].max() <= 1


def test_argentine_holiday_is_expected_like_a_sunday():
    # 2026-08-17 (Monday) is a national holiday: Sunday-level traffic must not look like a drop.
    ts, values = hourly_traffic(35)
    result = detect(ts, values, DetectorConfig(direction="down"))
    holiday = result.filter(
        pl.col("ts").dt.convert_time_zone("America/Argentina/Buenos_Aires").dt.date() == date(2026, 8, 17)
    )
    assert holiday.height == 24
    assert holiday["anomalous"].sum() == 0
    # Without the holiday calendar the same quiet Monday would be a drop.
    blind = detect(ts, values, DetectorConfig(direction="down", holidays_country="UY"))
    blind_day = blind.filter(
        pl.col("ts").dt.convert_time_zone("America/Argentina/Buenos_Aires").dt.date() == date(2026, 8, 17)
    )
    assert blind_day["anomalous"].sum() > 0


def test_growth_trend_is_followed_not_flagged():
    # 50 % month-over-month growth: about 1.36 % a day.
    ts, values = hourly_traffic(60, growth_per_day=math.log(1.5) / 30)
    result = detect(ts, values, DetectorConfig(direction="both"))
    assert result["alert"].sum() == 0
    scored = result.filter(pl.col("status") == "ok")
    bias = (scored["value"] / scored["expected"]).median()
    assert abs(bias - 1) < 0.02


SHARP_DAY = np.array([0.05] * 8 + [0.35] + [1.0] * 3 + [0.35] * 5 + [1.0] * 3 + [0.35] * 3 + [0.05])


def local_traffic(
    days: int,
    timezone: str,
    country: str,
    first_day: date,
    *,
    base: float = 2000.0,
    seed: int = 5,
    rests_on_holidays: bool = True,
) -> tuple[list[datetime], np.ndarray]:
    """Requests per hour with a country's own rhythm: its local clock (DST included) and its holidays
    (as Sundays); night 5 %, daytime 35 %, peaks 9-12 and 17-20 at 100 % (the simulator's sharp edges)."""
    import holidays as hol

    zone = ZoneInfo(timezone)
    calendar = hol.country_holidays(country, years=[first_day.year])
    rng = np.random.default_rng(seed)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=zone).astimezone(UTC)
    ts = [start + timedelta(hours=h) for h in range(days * 24)]
    values = np.empty(len(ts))
    for i, t in enumerate(ts):
        local = t.astimezone(zone)
        wd = 6 if rests_on_holidays and local.date() in calendar else local.weekday()
        values[i] = base * SHARP_DAY[local.hour] * WEEK_SHAPE[wd] * (1 + 0.03 * rng.standard_normal())
    return ts, values


def test_a_country_series_is_judged_by_its_own_clock_and_holidays():
    # Santiago: Chile moves to daylight saving time on 2026-09-06 (Argentina does not) and rests on
    # 2026-09-18/19 (Fiestas Patrias), working days in Argentina. The traffic policy's thresholds.
    ts, values = local_traffic(56, "America/Santiago", "CL", date(2026, 8, 3))
    cfg = DetectorConfig(direction="both", z_threshold=6.0, min_rel_change=0.5, min_abs_change=50)
    chile = detect(ts, values, cfg.with_overrides(timezone="America/Santiago", holidays_country="CL"))
    assert chile.filter(pl.col("status") == "ok").height == (56 - 14) * 24
    assert chile["anomalous"].sum() == 0
    # Judged on Argentina's clock and calendar, every ramp of the day is an hour off for three weeks
    # after the switch, and the Chilean holiday looks like a collapse.
    blind = detect(ts, values, cfg.with_overrides(timezone="America/Argentina/Buenos_Aires", holidays_country="AR"))
    starts = [e.start.astimezone(ZoneInfo("America/Santiago")) for e in episodes(blind)]
    assert all(s.date() >= date(2026, 8, 17) for s in starts)
    assert sum(s.date() == date(2026, 9, 7) for s in starts) >= 4  # morning and evening ramps both ways
    assert any(s.date() == date(2026, 9, 18) for s in starts)
    assert len(starts) > 50


def test_a_holiday_is_judged_between_its_weekday_and_sunday():
    # A total where half the volume rests on Argentina's holiday (Monday 2026-08-17: Sunday-level) and
    # half works (another country): the holiday lands between a Monday and a Sunday. A Sunday-like
    # holiday would be wrong for it, a Monday-like one for the half that rests; neither alerts, nor does
    # the next day (the holiday is left out of its level). A real outage on the holiday still does.
    ar = "America/Argentina/Buenos_Aires"
    _, resting = local_traffic(35, ar, "AR", date(2026, 8, 3))
    ts, working = local_traffic(35, ar, "AR", date(2026, 8, 3), seed=6, rests_on_holidays=False)
    total = resting + working
    cfg = DetectorConfig(direction="both", z_threshold=6.0, min_rel_change=0.5, min_abs_change=50)
    result = detect(ts, total, cfg)
    assert result.filter(pl.col("status") == "ok").height == (35 - 14) * 24
    assert result["anomalous"].sum() == 0
    holiday = result[14 * 24 : 15 * 24]  # 2026-08-17
    assert holiday["ts"][0].astimezone(ZoneInfo(ar)).date() == date(2026, 8, 17)
    # The interval spans both ways a day off goes: Sunday's traffic and Monday's are both inside.
    for hour in (10, 12, 18):
        assert holiday["lower"][hour] < total[13 * 24 + hour]  # the Sunday before
        assert holiday["upper"][hour] > total[7 * 24 + hour]  # the Monday before
    broken = total.copy()
    broken[14 * 24 + 10 : 14 * 24 + 13] *= 0.02  # the holiday's late morning drops to 2 %
    flagged = detect(ts, broken, cfg.with_overrides(direction="down"))
    assert flagged.filter(pl.col("alert"))["ts"].to_list() == [ts[14 * 24 + 10]]


def test_a_young_segment_ramping_after_its_launch_does_not_alert():
    # A segment launched on day 40 of the series (no data before) growing 10 % a day: nothing is judged
    # until 14 days after its own launch, and then the steep trend is expected, not flagged -- including
    # each day's first hour, whose week-ago point belongs to the week it starts (an off-by-one there put
    # it in the older week, and a 10 %-a-day ramp then made midnight look like a 60 % drop).
    ts, values = local_traffic(60, "America/Argentina/Buenos_Aires", "AR", date(2026, 8, 3))
    values = values * np.exp(math.log(1.1) * np.arange(len(values)) / 24)
    values[: 40 * 24] = np.nan
    cfg = DetectorConfig(direction="both", z_threshold=6.0, min_rel_change=0.5, min_abs_change=50)
    result = detect(ts, values, cfg)
    status = result["status"].to_list()
    assert status[: 40 * 24] == ["no_data"] * (40 * 24)
    assert status[40 * 24 : 54 * 24] == ["insufficient_history"] * (14 * 24)
    assert status[54 * 24 :] == ["ok"] * (6 * 24)
    assert result["anomalous"].sum() == 0
    scored = result.filter(pl.col("status") == "ok")
    assert ((scored["value"] - scored["expected"]).abs() / scored["expected"]).max() < 0.15


def test_one_day_triple_spike_is_flagged_once_with_its_start():
    ts, values = hourly_traffic(42)
    spike_day = 35  # day index: 2026-09-07, a Monday
    spiked = values.copy()
    spiked[spike_day * 24 : (spike_day + 1) * 24] *= 3
    result = detect(ts, spiked, DetectorConfig(direction="up"))
    alerts = result.filter(pl.col("alert"))
    assert alerts.height == 1
    assert alerts["ts"][0] == ts[spike_day * 24]
    eps = episodes(result)
    assert len(eps) == 1
    assert eps[0].start == ts[spike_day * 24]
    # The level ignores the episode's own points while the 24-hour window still holds 3 normal ones:
    # from 22:00 local only 2 remain, so the x3 is taken as the new level and the episode ends there.
    assert eps[0].resolved_at == ts[spike_day * 24 + 22]
    assert result.filter(pl.col("episode") == 0).height == 22
    assert eps[0].direction == "up"
    assert eps[0].actual == pytest.approx(3 * eps[0].expected, rel=0.15)
    assert eps[0].peak_score > 0.5


def test_daily_series_one_day_spike_is_flagged():
    rng = np.random.default_rng(7)
    days = [date(2026, 6, 1) + timedelta(days=i) for i in range(70)]
    cost = np.array([2000 * WEEK_SHAPE[d.weekday()] ** 0.3 * (1 + 0.02 * rng.standard_normal()) for d in days])
    cost[60] *= 3
    # Cost barely follows holidays, so this series is judged without the holiday calendar.
    result = detect(local_midnights(days), cost, DetectorConfig(direction="up", holidays_country=None))
    assert result.filter(pl.col("alert"))["ts"].to_list() == [local_midnights([days[60]])[0]]
    assert result["status"][:14].to_list() == ["insufficient_history"] * 14


def test_level_shift_alerts_once_not_every_point_after_it():
    ts, values = hourly_traffic(49)
    shifted = values.copy()
    shift_at = 35 * 24 + 10
    shifted[shift_at:] *= 0.4  # traffic drops by 60 % and stays there
    result = detect(ts, shifted, DetectorConfig(direction="down"))
    assert result["alert"].sum() == 1
    assert result.filter(pl.col("alert"))["ts"][0] == ts[shift_at]
    # Many points after the shift are anomalous, but they are one episode.
    assert result["anomalous"].sum() > 5
    assert result["episode"].drop_nulls().unique().to_list() == [0]


def test_minimum_history_is_respected():
    ts, values = hourly_traffic(20)
    spiked = values.copy()
    spiked[5 * 24 : 5 * 24 + 6] *= 5  # on day 5: before 14 days of history exist
    result = detect(ts, spiked, DetectorConfig(direction="up"))
    early = result[: 14 * 24]
    assert set(early["status"].to_list()) == {"insufficient_history"}
    assert early["expected"].null_count() == 14 * 24
    assert early["alert"].sum() == 0
    assert result[14 * 24 :]["expected"].null_count() == 0


def test_outliers_in_history_do_not_blind_it():
    ts, values = hourly_traffic(42)
    dirty = values.copy()
    rng = np.random.default_rng(3)
    # 5 % of the history hours are wild (x10 or x0.1) -- a mean/stdev detector's scale would explode.
    wild = rng.choice(np.arange(0, 35 * 24), size=int(0.05 * 35 * 24), replace=False)
    dirty[wild] *= np.where(rng.random(len(wild)) < 0.5, 10.0, 0.1)
    dirty[38 * 24 + 10 : 38 * 24 + 13] *= 2  # a real 3-hour doubling at 10:00-13:00 local
    result = detect(ts, dirty, DetectorConfig(direction="up"))
    late = result.filter(pl.col("alert") & (pl.col("ts") >= ts[38 * 24]) & (pl.col("ts") < ts[39 * 24]))
    assert late["ts"].to_list() == [ts[38 * 24 + 10]]


def test_change_must_be_large_in_absolute_and_relative_terms():
    ts, values = hourly_traffic(28, base=1000.0)
    bumped = values.copy()
    bumped[21 * 24 + 3] *= 1.5  # 03:00 local: ~100 requests -> ~150: big z, big relative, small absolute
    loose = detect(ts, bumped, DetectorConfig(direction="up", min_abs_change=0))
    strict = detect(ts, bumped, DetectorConfig(direction="up", min_abs_change=200))
    assert loose["alert"].sum() == 1
    assert strict["alert"].sum() == 0
    relative = detect(ts, bumped, DetectorConfig(direction="up", min_rel_change=0.8))
    assert relative["alert"].sum() == 0


def test_ratio_series_with_identity_transform():
    rng = np.random.default_rng(11)
    ts = [START + timedelta(minutes=15 * i) for i in range(21 * 96)]
    errors = 0.001 + 0.0002 * rng.standard_normal(len(ts))
    errors[20 * 96 + 40 : 20 * 96 + 44] = 0.05  # one hour at 5 % errors
    cfg = DetectorConfig(
        direction="up", transform="identity", min_abs_change=0.005, min_rel_change=0.5, min_scale=0.0001
    )
    result = detect(ts, errors, cfg)
    assert result.filter(pl.col("alert"))["ts"].to_list() == [ts[20 * 96 + 40]]


def test_missing_values_are_no_data_and_bad_input_is_named():
    ts, values = hourly_traffic(16)
    values[-3] = np.nan
    result = detect(ts, values)
    assert result["status"][-3] == "no_data"
    assert result["value"][-3] is None
    assert not result["value"].is_nan().any()
    with pytest.raises(DetectorInputError, match="strictly increasing"):
        detect([ts[1], ts[0]], [1.0, 2.0])
    with pytest.raises(DetectorInputError, match="3 timestamps but 2 values"):
        detect(ts[:3], [1.0, 2.0])
    with pytest.raises(DetectorInputError, match="Inf"):
        detect(ts[:2], [1.0, math.inf])


# --- explanation -----------------------------------------------------------------------------------


def test_additive_contributions_sum_exactly_to_the_deviation():
    # Total bookings expected 1000, actual 1300; baseline shares 50/30/20.
    members = {"barber": (600.0, 0.5), "psychology": (500.0, 0.3), "dentist": (200.0, 0.2)}
    result = contributions_additive(
        actual={k: v[0] for k, v in members.items()},
        baseline_share={k: v[1] for k, v in members.items()},
        expected_total=1000.0,
    )
    # barber 600 - 500 = +100, psychology 500 - 300 = +200, dentist 200 - 200 = 0.
    assert [(c.value, c.contribution) for c in result] == [
        ("psychology", Decimal("200")),
        ("barber", Decimal("100")),
        ("dentist", Decimal("0")),
    ]
    assert sum(c.contribution for c in result) == Decimal("300")
    assert [c.share_of_deviation for c in result] == [Decimal("0.666667"), Decimal("0.333333"), Decimal("0")]


def test_ratio_contributions_sum_exactly_to_the_ratio_deviation():
    # Error ratio: cordoba 90 bad of 1000, buenos_aires 10 of 3000; expected ratio 0.005 overall.
    result = contributions_ratio(
        bad={"cordoba": 90, "buenos_aires": 10}, total={"cordoba": 1000, "buenos_aires": 3000}, expected_ratio=0.005
    )
    # actual ratio 100/4000 = 0.025; deviation 0.02. cordoba (90 - 5)/4000 = 0.02125, BA (10 - 15)/4000 = -0.00125
    assert result[0].value == "cordoba" and result[0].contribution == Decimal("0.02125")
    assert result[1].contribution == Decimal("-0.00125")
    assert sum(c.contribution for c in result) == Decimal("0.02")


def test_rank_dimensions_orders_by_contribution_across_dimensions():
    frame = pl.DataFrame(
        {
            "niche": ["barber", "barber", "psychology", "psychology"],
            "region": ["cordoba", "buenos_aires", "cordoba", "buenos_aires"],
            "actual": [100.0, 100.0, 400.0, 100.0],
            "baseline": [100.0, 100.0, 100.0, 100.0],
        }
    )
    ranked = rank_dimensions(frame, ["niche", "region"], expected_total=400.0)
    assert ranked[0].dimension in {"niche", "region"}
    # psychology (+300) and cordoba (+300) both explain the whole deviation of +300.
    top = {(c.dimension, c.value): c.contribution for c in ranked[:2]}
    assert top == {("niche", "psychology"): Decimal("300"), ("region", "cordoba"): Decimal("300")}
    for dim in ("niche", "region"):
        assert sum(c.contribution for c in ranked if c.dimension == dim) == Decimal("300")


def test_rank_dimensions_is_exact_with_shares_that_do_not_divide_evenly():
    frame = pl.DataFrame(
        {"service": ["web", "api", "payments"], "actual": [1.0, 1.0, 1.0], "baseline": [1.0, 1.0, 1.0]}
    )
    ranked = rank_dimensions(frame, ["service"], expected_total=1.0)
    assert sum(c.contribution for c in ranked) == Decimal(3) - Decimal(1)


def test_cost_impact_like_aws_cost_anomaly_detection():
    impact = cost_impact(actual=Decimal("2650.125000"), expected=2000.0)
    assert impact.expected_spend == Decimal("2000.000000")
    assert impact.actual_spend == Decimal("2650.125000")
    assert impact.total_impact == Decimal("650.125000")
    assert impact.impact_percent == Decimal("32.51")
    assert cost_impact(Decimal("5"), 0.0).impact_percent is None  # no division by zero reaches a person


def test_judge_from_only_scores_the_last_days_with_the_same_result():
    ts, values = hourly_traffic(30)
    spiked = values.copy()
    spiked[29 * 24 + 12] *= 3
    full = detect(ts, spiked, DetectorConfig(direction="up"))
    recent = detect(ts, spiked, DetectorConfig(direction="up"), judge_from=ts[28 * 24])
    assert set(recent[: 28 * 24]["status"].to_list()) == {"not_judged"}
    # The clean history has no episodes, so the judged days come out identical to a full run.
    assert full[: 28 * 24]["anomalous"].sum() == 0
    assert recent[28 * 24 :].equals(full[28 * 24 :])
    assert recent.filter(pl.col("alert"))["ts"].to_list() == [ts[29 * 24 + 12]]


# --- intraday MercadoPago success (alerts/detection/payments.py) -------------------------------------


def _pay_line(
    event_id: str,
    pid: int,
    status: str,
    updated: str,
    approved: str | None = None,
    provider: str = "mercadopago",
    niche: str = "barber",
    region: str = "cordoba",
) -> str:
    import json

    return json.dumps(
        {
            "event_id": event_id,
            "type": "payment.updated",
            "occurred_at": updated,
            "niche": niche,
            "country": "AR",
            "region": region,
            "user": {"id": "u_1", "name": "Canario Persona", "dni": "99999999"},
            "payload": {
                "provider": provider,
                "payment": {
                    "id": pid,
                    "status": status,
                    "status_detail": "x",
                    "date_created": updated,
                    "date_approved": approved,
                    "date_last_updated": updated,
                    "payer": {"email": "canario@example.com"},
                },
            },
        }
    )


def test_intraday_payment_decisions_counts_and_trailing_window(tmp_path):
    import gzip

    from alerts.detection.payments import (
        IntradayConfig,
        build_payment_series,
        decision_counts,
        decisions,
        read_updates,
    )
    from pipelines.lib.storage import LocalStorage

    lines = [
        _pay_line("e1", 1, "approved", "2026-11-20T18:01:00Z", "2026-11-20T18:01:00Z"),
        _pay_line("e1", 1, "approved", "2026-11-20T18:01:00Z", "2026-11-20T18:01:00Z"),  # duplicate delivery
        _pay_line("e2", 2, "rejected", "2026-11-20T18:05:00Z"),
        _pay_line("e3", 3, "pending", "2026-11-20T18:07:00Z"),  # not decided yet
        _pay_line("e4", 4, "approved", "2026-11-20T18:20:00Z", "2026-11-20T18:20:00Z", region="rosario"),
        _pay_line("e5", 4, "refunded", "2026-11-21T02:00:00Z", "2026-11-20T18:20:00Z", region="rosario"),
        _pay_line("e6", 5, "refunded", "2026-11-20T18:31:00Z", "2026-11-19T23:50:00Z"),  # approved the day before
        _pay_line("e7", 6, "rejected", "2026-11-20T18:10:00Z", provider="todopago"),  # another provider
        _pay_line("e8", 7, "in_process", "2026-11-20T18:33:00Z"),
        _pay_line("e9", 7, "rejected", "2026-11-20T18:40:00Z"),
    ]
    folder = tmp_path / "date=2026-11-20"
    folder.mkdir()
    (folder / "part-0000.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n{not json\n").encode()))
    updates, bad = read_updates(LocalStorage(tmp_path), [date(2026, 11, 20)])
    assert bad == 0  # the broken line does not mention payment.updated: not a payment line
    assert "dni" not in updates.columns and "user" not in updates.columns
    dec = decisions(updates)
    got = {r["payment_id"]: (r["decided_at"].strftime("%d %H:%M"), r["success"]) for r in dec.iter_rows(named=True)}
    # 1 approved 18:01; 2 rejected 18:05; 4 approved 18:20 (its refund does not move it); 5 approved the
    # 19th (dated by date_approved); 7 rejected 18:40 (first final status); 3 pending and 6 todopago absent.
    assert got == {
        "1": ("20 18:01", True),
        "2": ("20 18:05", False),
        "4": ("20 18:20", True),
        "5": ("19 23:50", True),
        "7": ("20 18:40", False),
    }
    counts = decision_counts(dec, 15, start=datetime(2026, 11, 20, tzinfo=UTC))
    rows = {
        (r["bucket"].strftime("%H:%M"), r["region"]): (r["success"], r["decided"]) for r in counts.iter_rows(named=True)
    }
    assert rows == {
        ("18:00", "cordoba"): (1.0, 2.0),
        ("18:15", "rosario"): (1.0, 1.0),
        ("18:30", "cordoba"): (0.0, 1.0),
    }
    # Trailing 30 minutes (2 buckets), at least 3 decisions: 18:00 has 2 (no data), 18:15 has 3 (2/3
    # merged across regions, not the mean of 1/2 and 1/1), 18:30 has 1 + 1 = 2 (no data).
    series = build_payment_series(counts, IntradayConfig(step_minutes=15, window_minutes=30, min_decisions=3))
    total = next(s for s in series if s.scope["country"] == "all")
    assert [t.strftime("%H:%M") for t in total.ts] == ["18:00", "18:15", "18:30"]
    assert np.isnan(total.values[0]) and total.values[1] == pytest.approx(2 / 3) and np.isnan(total.values[2])
    assert {s.key for s in series} == {
        "mercadopago_success_intraday|niche=all|country=all|region=all",
        "mercadopago_success_intraday|niche=all|country=AR|region=all",
    }
    # A thin scope widens its own window up to 45 minutes: 18:30 now reads 18:00-18:45 (2 of 4
    # decisions), 18:15 keeps its 30 minutes (enough), 18:00 has only 2 even so.
    wide = build_payment_series(
        counts, IntradayConfig(step_minutes=15, window_minutes=30, min_decisions=3, max_window_minutes=45)
    )
    total = next(s for s in wide if s.scope["country"] == "all")
    assert np.isnan(total.values[0]) and total.values[1] == pytest.approx(2 / 3) and total.values[2] == 0.5


def test_intraday_payment_policy_is_read_and_checked(tmp_path):
    from alerts.detection.payments import IntradayConfig

    cfg = IntradayConfig.from_policy()
    assert (cfg.step_minutes, cfg.window_minutes, cfg.max_window_minutes, cfg.min_decisions) == (15, 60, 180, 50)
    bad = tmp_path / "policy.yaml"
    bad.write_text("intraday_payments: {step_minutes: 15, window_minutes: 5}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="policy.yaml: intraday_payments: need step > 0, window >= step"):
        IntradayConfig.from_policy(bad)
    bad.write_text("intraday_payments: {window_minutes: 60, max_window_minutes: 30}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="policy.yaml: intraday_payments: max_window_minutes must be 0 or >= window"):
        IntradayConfig.from_policy(bad)
