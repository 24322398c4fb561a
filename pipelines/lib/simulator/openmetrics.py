"""Write simulated metric samples as OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``.

Each family is written once (``# TYPE`` then its samples), each series' samples in time order, timestamps
in seconds, ``# EOF`` at the end. Counters are families without ``_total`` whose samples carry it;
histogram buckets are ``<family>_bucket`` samples of a ``histogram`` family.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from pipelines.lib.catalog import load_catalog
from pipelines.lib.simulator.metrics import LABELS, METRICS

HELP = {
    "http_request_duration_seconds": "HTTP request duration in seconds.",
    "http_requests": "HTTP requests by status code.",
    "probe_success": "Blackbox probe result (1 up, 0 down).",
    "cache_hits": "Cache lookups that hit.",
    "cache_requests": "Cache lookups.",
    "active_sessions": "Concurrent active user sessions.",
    "autoscaling_group_desired_capacity": "Desired instances of the autoscaling group.",
    "autoscaling_group_in_service_instances": "In-service instances of the autoscaling group.",
    "db_connections_in_use": "Database pool connections in use.",
}


def _family(metric: str) -> tuple[str, str]:
    kind = METRICS[metric]
    if kind == "histogram":
        return metric.removesuffix("_bucket"), "histogram"
    if kind == "counter":
        return metric.removesuffix("_total"), "counter"
    return metric, "gauge"


def _as_utc(ts: datetime | str) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def _fmt_value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_openmetrics(source: str | Path, path: str | Path, start: datetime | str, end: datetime | str) -> int:
    """Write the samples with ``start <= ts < end`` as OpenMetrics text; returns the number of samples.

    ``source`` is a simulated source folder (with ``metrics/``) or a profile name, which is then simulated
    into a temporary folder for the AR days covering the range.
    """
    start_utc, end_utc = _as_utc(start), _as_utc(end)
    if end_utc <= start_utc:
        raise ValueError(f"OpenMetrics range is empty: start {start_utc} is not before end {end_utc}")
    src = Path(source)
    if not (src / "metrics").is_dir():
        from pipelines.lib.simulator.core import simulate
        from pipelines.lib.simulator.profiles import PROFILES

        if str(source) not in PROFILES:
            raise FileNotFoundError(
                f"{source}: neither a simulated source folder (no metrics/ inside) nor a profile name"
            )
        tz = ZoneInfo(load_catalog().timezone)
        last_day = (end_utc - timedelta(microseconds=1)).astimezone(tz).date()
        with tempfile.TemporaryDirectory(prefix="pulso-om-") as tmp:
            simulate(str(source), tmp, end=last_day)
            return write_openmetrics(tmp, path, start_utc, end_utc)
    tz = ZoneInfo(load_catalog().timezone)
    days = []
    d: date = start_utc.astimezone(tz).date()
    while d <= (end_utc - timedelta(microseconds=1)).astimezone(tz).date():
        days.append(d.isoformat())
        d += timedelta(days=1)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(out, "w", encoding="utf-8") as fh:
        for metric in METRICS:
            files = [src / "metrics" / metric / f"date={day}" / "part-0.parquet" for day in days]
            files = [f for f in files if f.exists()]
            if not files:
                continue
            frame = pl.scan_parquet(files).filter((pl.col("ts") >= start_utc) & (pl.col("ts") < end_utc)).collect()
            if frame.is_empty():
                continue
            label_cols = [c for c in LABELS if frame[c].null_count() < frame.height]
            frame = frame.sort([*label_cols, "ts"], maintain_order=True)
            family, kind = _family(metric)
            fh.write(f"# HELP {family} {HELP.get(family, family)}\n# TYPE {family} {kind}\n")
            if kind == "histogram":
                # A histogram point is all its buckets at one timestamp, so group by series then time.
                series_cols = [c for c in label_cols if c != "le"]
                frame = frame.with_columns(pl.col("le").replace("+Inf", "inf").cast(pl.Float64).alias("_le")).sort(
                    [*series_cols, "ts", "_le"]
                )
            secs = (frame["ts"].dt.epoch("s")).to_list()
            values = frame["value"].to_list()
            label_lists = [frame[c].to_list() for c in label_cols]
            lines = []
            for i in range(frame.height):
                labels = ",".join(f'{c}="{_escape(lst[i])}"' for c, lst in zip(label_cols, label_lists, strict=True))
                name = metric
                lines.append(
                    f"{name}{{{labels}}} {_fmt_value(values[i])} {secs[i]}\n"
                    if labels
                    else f"{name} {_fmt_value(values[i])} {secs[i]}\n"
                )
                if len(lines) >= 100_000:
                    fh.writelines(lines)
                    lines.clear()
            fh.writelines(lines)
            written += frame.height
        fh.write("# EOF\n")
    return written


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
