"""Which niche, region, service, payment method or rejection reason drove an anomaly on a total.

Every explainer splits the total's deviation (actual - expected) among the members of one dimension so
that the contributions **sum to the deviation exactly**: the arithmetic is in ``Decimal`` and the last
quantum is handed out by the largest-remainder rule, like the cost split.

* sums (traffic, bookings, cost, users): a member's contribution is its actual minus its share of the
  expected total, the share being its share of the same slot in the history;
* ratios (error ratio, payment success, cache hit): a member's contribution is its excess bad events
  over the expected ratio, divided by the total's denominator (``(bad_i - r * n_i) / N``);
* percentiles (latency): not additive, so the deviation is split in proportion to each member's
  request-weighted excess over its own expectation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

import polars as pl

QUANTUM = Decimal("0.000000001")
SHARE_QUANTUM = Decimal("0.000001")
MONEY_QUANTUM = Decimal("0.000001")


@dataclass(frozen=True)
class Contribution:
    """One member's part of a deviation (``share_of_deviation`` is None when the deviation is 0)."""

    dimension: str
    value: str
    contribution: Decimal
    share_of_deviation: Decimal | None

    def as_dict(self) -> dict[str, str | float | None]:
        """JSON-ready form (stored in ``alert_history.top_contributors``)."""
        return {
            "dimension": self.dimension,
            "value": self.value,
            "contribution": float(self.contribution),
            "share_of_deviation": None if self.share_of_deviation is None else float(self.share_of_deviation),
        }


@dataclass(frozen=True)
class CostImpact:
    """A cost anomaly in AWS Cost Anomaly Detection's terms (impact % None when nothing was expected)."""

    expected_spend: Decimal
    actual_spend: Decimal
    total_impact: Decimal
    impact_percent: Decimal | None


def _dec(x: float | int | Decimal | str) -> Decimal:
    # Decimal(float) is the float's exact binary value; no rounding happens before we choose to.
    return x if isinstance(x, Decimal) else Decimal(x) if not isinstance(x, float) else Decimal(repr(x))


def _allocate_exact(raw: Sequence[Decimal], target: Decimal, quantum: Decimal) -> list[Decimal]:
    """Round ``raw`` to ``quantum`` so the parts sum to ``target`` (already on the quantum) exactly."""
    floors = [r.quantize(quantum, rounding=ROUND_FLOOR) for r in raw]
    remainder = int(((target - sum(floors, Decimal(0))) / quantum).to_integral_value())
    order = sorted(range(len(raw)), key=lambda i: raw[i] - floors[i], reverse=remainder > 0)
    step = quantum if remainder > 0 else -quantum
    for k in range(abs(remainder)):
        floors[order[k % len(order)]] += step
    return floors


def _finish(dimension: str, names: Sequence[str], parts: Sequence[Decimal], deviation: Decimal) -> list[Contribution]:
    out = []
    for name, part in zip(names, parts, strict=True):
        share = (part / deviation).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_UP) if deviation != 0 else None
        out.append(Contribution(dimension, str(name), part, share))
    return sorted(out, key=lambda c: (-abs(c.contribution), c.value))


def contributions_additive(
    actual: Mapping[str, float | Decimal],
    baseline_share: Mapping[str, float | Decimal],
    expected_total: float | Decimal,
    dimension: str = "",
    quantum: Decimal = QUANTUM,
) -> list[Contribution]:
    """Split ``sum(actual) - expected_total`` among members: actual_i - share_i x expected_total.

    ``baseline_share`` is each member's share of the total in the history (renormalised to 1; equal
    shares when the history is empty). Members missing from either side count as 0.
    """
    names = sorted(set(actual) | set(baseline_share))
    with localcontext() as ctx:
        ctx.prec = 50
        shares = [_dec(baseline_share.get(n, 0)) for n in names]
        total_share = sum(shares, Decimal(0))
        shares = [s / total_share for s in shares] if total_share > 0 else [Decimal(1) / len(names)] * len(names)
        acts = [_dec(actual.get(n, 0)) for n in names]
        expected = _dec(expected_total).quantize(quantum)
        deviation = (sum(acts, Decimal(0)) - expected).quantize(quantum)
        raw = [a - s * expected for a, s in zip(acts, shares, strict=True)]
        parts = _allocate_exact(raw, deviation, quantum)
    return _finish(dimension, names, parts, deviation)


def contributions_ratio(
    bad: Mapping[str, float | int],
    total: Mapping[str, float | int],
    expected_ratio: float,
    dimension: str = "",
    quantum: Decimal = QUANTUM,
) -> list[Contribution]:
    """Split ``sum(bad)/sum(total) - expected_ratio`` among members: (bad_i - r x total_i) / N."""
    names = sorted(set(bad) | set(total))
    with localcontext() as ctx:
        ctx.prec = 50
        n_total = sum((_dec(total.get(n, 0)) for n in names), Decimal(0))
        if n_total == 0:
            return [Contribution(dimension, n, Decimal(0), None) for n in names]
        r = _dec(expected_ratio)
        b_total = sum((_dec(bad.get(n, 0)) for n in names), Decimal(0))
        deviation = (b_total / n_total - r).quantize(quantum, rounding=ROUND_HALF_UP)
        raw = [(_dec(bad.get(n, 0)) - r * _dec(total.get(n, 0))) / n_total for n in names]
        parts = _allocate_exact(raw, deviation, quantum)
    return _finish(dimension, names, parts, deviation)


def contributions_weighted(
    actual: Mapping[str, float],
    expected: Mapping[str, float],
    weight: Mapping[str, float],
    deviation: float,
    dimension: str = "",
    quantum: Decimal = QUANTUM,
) -> list[Contribution]:
    """Split a non-additive deviation (a percentile) by request-weighted excess in its direction."""
    names = sorted(set(actual) & set(expected))
    sign = 1 if deviation >= 0 else -1
    with localcontext() as ctx:
        ctx.prec = 50
        excess = [max(Decimal(0), sign * _dec(weight.get(n, 0)) * (_dec(actual[n]) - _dec(expected[n]))) for n in names]
        total = sum(excess, Decimal(0))
        dev = _dec(deviation).quantize(quantum, rounding=ROUND_HALF_UP)
        if total == 0:
            excess, total = [Decimal(1)] * len(names), Decimal(len(names))
        parts = _allocate_exact([dev * e / total for e in excess], dev, quantum) if names else []
    return _finish(dimension, names, parts, dev)


def rank_dimensions(
    frame: pl.DataFrame,
    dimensions: Sequence[str],
    expected_total: float | Decimal | None = None,
    *,
    kind: str = "additive",
    actual: str = "actual",
    baseline: str = "baseline",
    bad: str = "bad",
    total: str = "total",
    expected_ratio: float | None = None,
    quantum: Decimal = QUANTUM,
) -> list[Contribution]:
    """Contributions of every member of every dimension, most influential first.

    ``frame`` has one row per finest cell with the dimension columns and either ``actual``/``baseline``
    (``kind="additive"``; baseline = the cell's level in the history, used for shares) or ``bad``/
    ``total`` (``kind="ratio"``). Each dimension's contributions sum exactly to the total's deviation.
    """
    out: list[Contribution] = []
    for dim in dimensions:
        if kind == "additive":
            g = frame.group_by(dim).agg(pl.col(actual).sum(), pl.col(baseline).sum())
            names = [str(v) for v in g[dim].to_list()]
            out += contributions_additive(
                dict(zip(names, g[actual].to_list(), strict=True)),
                dict(zip(names, g[baseline].to_list(), strict=True)),
                expected_total if expected_total is not None else g[baseline].sum(),
                dim,
                quantum,
            )
        elif kind == "ratio":
            if expected_ratio is None:
                raise ValueError("rank_dimensions(kind='ratio') needs expected_ratio")
            g = frame.group_by(dim).agg(pl.col(bad).sum(), pl.col(total).sum())
            names = [str(v) for v in g[dim].to_list()]
            out += contributions_ratio(
                dict(zip(names, g[bad].to_list(), strict=True)),
                dict(zip(names, g[total].to_list(), strict=True)),
                expected_ratio,
                dim,
                quantum,
            )
        else:
            raise ValueError(f"unknown kind {kind!r}: use 'additive' or 'ratio'")
    return sorted(out, key=lambda c: (-abs(c.contribution), c.dimension, c.value))


def cost_impact(actual: Decimal, expected: float | Decimal) -> CostImpact:
    """Expected spend, actual spend, total impact and impact % (two decimals) of a cost anomaly."""
    exp = _dec(expected).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)
    act = _dec(actual).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)
    impact = act - exp
    pct = (impact / exp * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) if exp != 0 else None
    return CostImpact(exp, act, impact, pct)
