"""Percentiles from summed histogram buckets, exactly like Prometheus' ``histogram_quantile``.

Merge, never average: buckets of every series and minute in the window are summed first, then the
quantile is interpolated linearly inside the bucket where the rank falls. A rank in the ``+Inf`` bucket
returns the largest finite bound; no requests → no value (None / NULL), never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """``q``-quantile from cumulative ``(upper_bound, count)`` buckets (``+Inf`` bound included)."""
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(bound):
                return ordered[-2][0] if len(ordered) > 1 else None
            if count == prev_count:
                return bound
            start = prev_bound if i > 0 else (0.0 if bound > 0 else bound)
            return start + (bound - start) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return None


def le_value(le: str) -> float:
    """A Prometheus ``le`` label as a number (``+Inf`` → inf)."""
    return math.inf if le.strip() in ("+Inf", "Inf", "inf") else float(le)


def quantile_sql(relation: str, keys: Sequence[str], quantiles: dict[str, float], scale: float = 1.0) -> str:
    """SQL: one row per ``keys`` with a column per quantile, from ``relation(keys..., le, requests)``
    where ``requests`` are cumulative bucket counts already summed over the window.

    Same rule as :func:`histogram_quantile`; ``scale`` converts seconds (e.g. 1000 for ms).
    """
    k = ", ".join(keys)
    on = " AND ".join(f"b.{c} IS NOT DISTINCT FROM r.{c}" for c in keys)
    cols = ", ".join(f"max(CASE WHEN r.q = {v!r} THEN r.value END) AS {name}" for name, v in quantiles.items())
    qs = ", ".join(f"({v!r})" for v in quantiles.values())
    return f"""
    WITH b AS (
        SELECT {k}, CASE WHEN le IN ('+Inf', 'Inf', 'inf') THEN 'inf'::DOUBLE ELSE le::DOUBLE END AS ub,
               sum(requests) AS cnt
        FROM {relation} GROUP BY ALL
    ),
    w AS (
        SELECT *, lag(ub, 1, 0) OVER (PARTITION BY {k} ORDER BY ub) AS lb,
               lag(cnt, 1, 0) OVER (PARTITION BY {k} ORDER BY ub) AS prev,
               max(CASE WHEN isinf(ub) THEN cnt END) OVER (PARTITION BY {k}) AS total,
               max(CASE WHEN NOT isinf(ub) THEN ub END) OVER (PARTITION BY {k}) AS top_finite
        FROM b
    ),
    ranked AS (
        SELECT w.*, qs.q, qs.q * w.total AS rnk FROM w CROSS JOIN (VALUES {qs}) qs(q) WHERE w.total > 0
    ),
    hit AS (
        SELECT {k}, q, arg_min(struct_pack(ub := ub, lb := lb, cnt := cnt, prev := prev, rnk := rnk, top := top_finite), ub) AS h
        FROM ranked WHERE cnt >= rnk GROUP BY {k}, q
    ),
    r AS (
        SELECT {k}, q,
            {scale!r} * CASE
                WHEN isinf(h.ub) THEN h.top
                WHEN h.cnt = h.prev THEN h.ub
                ELSE h.lb + (h.ub - h.lb) * (h.rnk - h.prev) / (h.cnt - h.prev) END AS value
        FROM hit
    )
    SELECT {", ".join(f"b.{c}" for c in keys)}, {cols}
    FROM (SELECT DISTINCT {k} FROM b) b LEFT JOIN r ON {on}
    GROUP BY ALL
    """  # noqa: S608
