"""Intraday MercadoPago success from the payment events, for the 15-minute schedule.

The warehouse's daily ``mercadopago_success_ratio`` (by the attempt's creation day, latest status) is
known only once the day is over. On-call needs a payment problem within the hour, so this module
reads the day's events so far through the configured events source (any :class:`Storage`: folder or
S3; the same gzip JSON-lines files the warehouse loads) and counts **decisions** by when they happened:

* a MercadoPago attempt is *decided* when it first reaches a final status (catalog
  ``payments.final_statuses``); it *succeeded* if that outcome is a success status (``approved``; a
  later refund or chargeback does not change the attempt's outcome, and is dated by ``date_approved``);
* decisions are counted per ``step`` bucket (15 minutes) x niche x country x region; a series point is
  the success ratio over the trailing ``window`` (an hour) of buckets, from **summed counts** (never an
  average of ratios), and is *no data* below ``min_decisions`` decisions, so a thin night hour cannot
  alert;
* a thin scope (a small country) widens its own window, bucket by bucket up to ``max_window``, until it
  holds ``min_decisions``: every point rests on about as many decisions as a busy hour's, so the floor
  means the same noise everywhere, and a small country's surge is seen a little later instead of never.

Only non-personal fields are read from each line (ids, provider, status, times, niche/country/region);
the payer and user objects are never parsed into anything kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import yaml

from alerts.detection.operational import Series, _grid
from pipelines.lib.catalog import ALL, Catalog, load_catalog
from pipelines.lib.ingest.events import arrival_folders, gunzip_lines
from pipelines.lib.storage import Storage

METRIC = "mercadopago_success_intraday"
CELL = ("niche", "country", "region")
GRAINS: dict[str, tuple[str, ...]] = {"total": (), "country": ("country",)}
DECISION_SCHEMA = {
    "payment_id": pl.String,
    "niche": pl.String,
    "country": pl.String,
    "region": pl.String,
    "decided_at": pl.Datetime("us", "UTC"),
    "success": pl.Boolean,
}
COUNT_SCHEMA = {
    "bucket": pl.Datetime("us", "UTC"),
    "niche": pl.String,
    "country": pl.String,
    "region": pl.String,
    "success": pl.Float64,
    "decided": pl.Float64,
}


@dataclass(frozen=True)
class IntradayConfig:
    """Bucket, trailing window and volume floor of the intraday series (see module doc)."""

    step_minutes: int = 15
    window_minutes: int = 60
    min_decisions: int = 30
    max_window_minutes: int = 0  # 0: the window never widens

    @classmethod
    def from_policy(cls, path: Path | None = None) -> IntradayConfig:
        """The ``intraday_payments`` entry of the alert policy (defaults where absent)."""
        from alerts.detection.monitor import POLICY_PATH

        path = path or POLICY_PATH
        entry = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("intraday_payments") or {}
        unknown = set(entry) - {"step_minutes", "window_minutes", "min_decisions", "max_window_minutes"}
        if unknown:
            raise ValueError(f"{path.name}: intraday_payments: unknown fields {sorted(unknown)}")
        cfg = cls(**{k: int(v) for k, v in entry.items()})
        if cfg.step_minutes <= 0 or cfg.window_minutes < cfg.step_minutes or cfg.min_decisions < 1:
            raise ValueError(f"{path.name}: intraday_payments: need step > 0, window >= step, min_decisions >= 1")
        if cfg.max_window_minutes and cfg.max_window_minutes < cfg.window_minutes:
            raise ValueError(f"{path.name}: intraday_payments: max_window_minutes must be 0 or >= window_minutes")
        return cfg

    @property
    def window_buckets(self) -> tuple[int, int]:
        """(buckets in the window, buckets in the widest window)."""
        k = max(self.window_minutes // self.step_minutes, 1)
        return k, max(self.max_window_minutes // self.step_minutes, k)


def _ts(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def read_updates(
    storage: Storage, arrival_days: Iterable[date], provider: str = "mercadopago"
) -> tuple[pl.DataFrame, int]:
    """The ``payment.updated`` events of ``provider`` in the arrival-day folders (non-personal fields
    only), and how many lines were unreadable (skipped here; the warehouse loader quarantines them)."""
    rows: list[tuple] = []
    bad = 0
    for day in sorted(set(arrival_days)):
        for key in storage.list(f"date={day.isoformat()}/"):
            if not key.endswith(".jsonl.gz"):
                continue
            lines, _damage = gunzip_lines(storage.read_bytes(key))
            for line in lines:
                if b'"payment.updated"' not in line or provider.encode() not in line:
                    continue
                try:
                    ev = json.loads(line)
                    body = ev["payload"]
                    pay = body["payment"]
                except (ValueError, KeyError, TypeError):
                    bad += 1
                    continue
                if ev.get("type") != "payment.updated" or body.get("provider") != provider or not isinstance(pay, dict):
                    continue
                updated = _ts(pay.get("date_last_updated"))
                if pay.get("id") is None or updated is None:
                    bad += 1
                    continue
                rows.append(
                    (
                        str(pay["id"]),
                        ev.get("niche"),
                        ev.get("country"),
                        ev.get("region"),
                        str(pay.get("status")),
                        _ts(pay.get("date_approved")),
                        updated,
                    )
                )
    frame = pl.DataFrame(
        rows,
        schema={
            "payment_id": pl.String,
            "niche": pl.String,
            "country": pl.String,
            "region": pl.String,
            "status": pl.String,
            "date_approved": pl.Datetime("us", "UTC"),
            "date_last_updated": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )
    return frame, bad


def decisions(updates: pl.DataFrame, catalog: Catalog | None = None) -> pl.DataFrame:
    """One row per decided attempt: ``payment_id, niche, country, region, decided_at, success``.

    Duplicated events collapse (same payment); a success is dated by ``date_approved`` (so a refund
    read later does not move it), a failure by its first final status.
    """
    pay = (catalog or load_catalog()).section("payments")
    final, success = list(pay["final_statuses"]), list(pay["success_statuses"])
    done = updates.filter(pl.col("status").is_in(final))
    if done.is_empty():
        return pl.DataFrame(schema=DECISION_SCHEMA)
    ok = pl.col("status").is_in(success)
    out = done.group_by("payment_id").agg(
        pl.col("niche", "country", "region").first(),
        ok.any().alias("success"),
        pl.col("date_approved").filter(ok).min().alias("_approved"),
        pl.col("date_last_updated").filter(ok).min().alias("_ok_at"),
        pl.col("date_last_updated").filter(~ok).min().alias("_failed_at"),
    )
    decided = pl.when(pl.col("success")).then(pl.coalesce("_approved", "_ok_at")).otherwise(pl.col("_failed_at"))
    return out.select("payment_id", *CELL, decided.alias("decided_at"), "success").sort("decided_at", "payment_id")


def decision_counts(
    decided: pl.DataFrame, step_minutes: int = 15, start: datetime | None = None, end: datetime | None = None
) -> pl.DataFrame:
    """Decisions and successes per bucket x niche x country x region, within ``[start, end)`` if given."""
    if start is not None:
        decided = decided.filter(pl.col("decided_at") >= start)
    if end is not None:
        decided = decided.filter(pl.col("decided_at") < end)
    if decided.is_empty():
        return pl.DataFrame(schema=COUNT_SCHEMA)
    return (
        decided.group_by(pl.col("decided_at").dt.truncate(f"{step_minutes}m").alias("bucket"), *CELL)
        .agg(pl.col("success").sum().cast(pl.Float64), pl.len().cast(pl.Float64).alias("decided"))
        .sort("bucket", *CELL)
    )


def load_intraday(
    storage: Storage,
    days: Iterable[date],
    now: datetime | None = None,
    config: IntradayConfig | None = None,
    catalog: Catalog | None = None,
) -> pl.DataFrame:
    """Decision counts for the Argentine ``days`` (through ``now``) from the events source."""
    from pipelines.lib.warehouse import day_bounds_utc

    config = config or IntradayConfig()
    days = sorted(set(days))
    updates, _bad = read_updates(storage, arrival_folders([days[0] - timedelta(days=1), *days]))
    start, end = day_bounds_utc(days[0])[0], day_bounds_utc(days[-1])[1]
    if now is not None:
        end = min(end, now)
    # A bucket still filling is not judged: only buckets complete by ``now``.
    counts = decision_counts(decisions(updates, catalog), config.step_minutes, start, end)
    if now is not None:
        counts = counts.filter(pl.col("bucket") + timedelta(minutes=config.step_minutes) <= now)
    return counts


def build_payment_series(counts: pl.DataFrame, config: IntradayConfig | None = None) -> list[Series]:
    """Trailing-window success ratio series (total and per country), cells kept for explanation.

    A point is the success ratio of the shortest trailing window, from ``window`` up to ``max_window``
    in whole buckets, holding at least ``min_decisions`` decisions; no data if even the widest is short.
    """
    config = config or IntradayConfig()
    if counts.is_empty():
        return []
    k, widest = config.window_buckets
    out = []
    for grain in GRAINS.values():
        keys = list(grain)
        groups = counts.select(keys).unique().sort(keys).iter_rows(named=True) if keys else [{}]
        for row in groups:
            flt = pl.lit(True)
            for key in keys:
                flt = flt & (pl.col(key) == row[key])
            cells = counts.filter(flt)
            agg = cells.group_by("bucket").agg(pl.col("success", "decided").sum()).sort("bucket")
            full = pl.DataFrame(
                pl.datetime_range(agg["bucket"][0], agg["bucket"][-1], f"{config.step_minutes}m", eager=True).alias(
                    "bucket"
                )
            )
            agg = full.join(agg, on="bucket", how="left").fill_null(0.0)
            ratio = pl.lit(None, dtype=pl.Float64)
            for width in range(widest, k - 1, -1):  # the narrowest enough window wins: built last
                w_success = pl.col("success").rolling_sum(width, min_samples=1)
                w_decided = pl.col("decided").rolling_sum(width, min_samples=1)
                ratio = pl.when(w_decided >= config.min_decisions).then(w_success / w_decided).otherwise(ratio)
            agg = agg.with_columns(ratio.alias("value"))
            ts, values = _grid(agg.select("bucket", "value"), "value", config.step_minutes)
            scope = {"niche": ALL, "country": ALL, "region": ALL}
            scope.update({key: row[key] for key in keys})
            out.append(Series(METRIC, scope, ts, values, cells))
    return out
