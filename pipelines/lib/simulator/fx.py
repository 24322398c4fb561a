"""Daily ARS per USD quotes: a drifting, slightly wavy rate; no quotes on weekends and AR holidays."""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import holidays

from pipelines.lib.simulator.world import stable_hash

# --- behaviour parameters -----------------------------------------------------------------------------
RATE_AT_PLAN_START = 1350.0  # ARS per USD on the catalog's plan start
MONTHLY_DRIFT = 0.018  # crawling peg plus inflation gap
QUOTE_LOOKBACK_DAYS = 10  # quotes before the window so its first days have an earlier rate


def ars_per_usd(day: date, anchor: date, seed: int) -> float:
    """The rate of ``day``: a fixed drift from the anchor, two slow waves and a small daily jitter."""
    t = (day - anchor).days
    wave = 0.015 * math.sin(2 * math.pi * t / 47) + 0.008 * math.sin(2 * math.pi * t / 13 + 1.0)
    jitter = ((stable_hash("fx", seed, day.isoformat()) % 2001) - 1000) / 1000 * 0.003
    return RATE_AT_PLAN_START * math.exp(MONTHLY_DRIFT * t / 30.44) * (1 + wave + jitter)


def rate_lookup(start: date, end: date, anchor: date, seed: int) -> dict[date, float]:
    """The rate that applies on every calendar day (a day without a quote takes the last earlier one)."""
    quotes = quote_days(start - timedelta(days=QUOTE_LOOKBACK_DAYS), end)
    out: dict[date, float] = {}
    last = None
    d = start - timedelta(days=QUOTE_LOOKBACK_DAYS)
    while d <= end:
        if d in quotes:
            last = round(ars_per_usd(d, anchor, seed), 2)
        out[d] = last if last is not None else round(ars_per_usd(d, anchor, seed), 2)
        d += timedelta(days=1)
    return out


def quote_days(start: date, end: date, country: str = "AR") -> set[date]:
    """Business days of the quoting market (no weekends, no public holidays) between start and end."""
    ar = holidays.country_holidays(country, years=range(start.year, end.year + 1))
    days = set()
    d = start
    while d <= end:
        if d.weekday() < 5 and d not in ar:
            days.add(d)
        d += timedelta(days=1)
    return days


def write_fx(out: Path, start: date, end: date, anchor: date, seed: int) -> Path:
    """Write ``fx/ars_usd.csv`` (contract section 1.4) for the window plus a short lookback."""
    path = out / "fx" / "ars_usd.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["date,ars_per_usd"]
    for d in sorted(quote_days(start - timedelta(days=QUOTE_LOOKBACK_DAYS), end)):
        lines.append(f"{d.isoformat()},{ars_per_usd(d, anchor, seed):.2f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
