"""Metric samples from a live Prometheus server through ``/api/v1/query_range``.

:class:`PrometheusSource` gives the warehouse loader the same rows it reads from the metric files
(docs/data-contract.md section 1.1): one row per (series, minute) with the contract's label columns and
the **raw** sample value. Counters stay cumulative; staging applies Prometheus' reset rule
(:func:`counter_increases` is that rule, shared so both paths give the same increases).

Why these choices:

- Prometheus refuses a ``query_range`` returning more than 11,000 points per series, so long ranges are
  split into consecutive chunks of at most ``max_points`` steps; chunks never overlap and never skip a
  step.
- 5xx answers, timeouts and dropped connections are retried with exponential backoff (a busy or
  restarting server); a 4xx (bad query) is not retried: it will not get better.
- The selector is the bare metric name, so values are the stored samples, not a PromQL computation.
  Prometheus' 5-minute lookback repeats a series' last value into gaps of up to 5 minutes; for counters
  that adds increases of 0, so KPIs do not change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from pipelines.lib.storage import SourceError

log = logging.getLogger(__name__)

#: Label columns of the metric sample contract, in order (NULL when a metric has no such label).
LABEL_COLUMNS = ("niche", "country", "region", "service", "route", "code", "le", "group")
#: Prometheus' own limit on points per series in one range query.
MAX_POINTS_PER_SERIES = 11_000
STEP_SECONDS = 60

SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    **{c: pl.String() for c in LABEL_COLUMNS},
    "value": pl.Float64(),
}


class PrometheusError(SourceError):
    """The server rejected a query or could not be reached; the message names the URL and the problem."""


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no time zone; pass an aware UTC datetime")
    return ts.astimezone(UTC)


def chunk_range(
    start: datetime, end: datetime, step_seconds: int = STEP_SECONDS, max_points: int = MAX_POINTS_PER_SERIES
) -> list[tuple[datetime, datetime]]:
    """Split the inclusive evaluation range ``[start, end]`` into chunks of at most ``max_points`` steps.

    Consecutive chunks start one step after the previous one ends, so every evaluation time
    ``start + k * step`` falls in exactly one chunk.
    """
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    step = timedelta(seconds=step_seconds)
    chunks = []
    cursor = start
    while cursor <= end:
        chunk_end = min(cursor + step * (max_points - 1), end)
        chunks.append((cursor, chunk_end))
        cursor = chunk_end + step
    return chunks


@dataclass
class PrometheusClient:
    """A small ``/api/v1/query_range`` client with chunking and retries.

    ``base_url`` is the server root (``http://prometheus:9090``); a reverse-proxy path prefix is kept.
    """

    base_url: str
    timeout_seconds: float = 30.0
    max_retries: int = 4
    backoff_seconds: float = 0.5
    max_points: int = MAX_POINTS_PER_SERIES
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        import requests  # lazily: local-folder runs never import it

        self.base_url = self.base_url.rstrip("/")
        self._session = requests.Session()
        self.requests_made = 0  # for benchmarks and tests of the chunking

    @property
    def query_range_url(self) -> str:
        """The endpoint, for messages: any ``user:password@`` in the base URL is masked."""
        return _redact(f"{self.base_url}/api/v1/query_range")

    def _post(self, form: dict[str, str]) -> dict[str, Any]:
        import requests

        url = f"{self.base_url}/api/v1/query_range"  # the real one; messages use query_range_url
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "Prometheus %s: %s; retry %d/%d in %.1fs",
                    self.query_range_url,
                    last_problem,
                    attempt,
                    self.max_retries,
                    delay,
                )
                self.sleep(delay)
            try:
                self.requests_made += 1
                response = self._session.post(url, data=form, timeout=self.timeout_seconds)
            except requests.Timeout:
                last_problem = f"no answer within {self.timeout_seconds:g}s"
                continue
            except requests.ConnectionError as exc:
                last_problem = f"cannot connect ({type(exc).__name__})"
                continue
            if response.status_code >= 500:
                last_problem = f"HTTP {response.status_code}"
                continue
            return self._decode(response, form)
        raise PrometheusError(
            f"Prometheus {self.query_range_url} unreachable after {self.max_retries + 1} attempts: {last_problem}"
        )

    def _decode(self, response: Any, form: dict[str, str]) -> dict[str, Any]:
        url = self.query_range_url
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(
                f"Prometheus {url}: HTTP {response.status_code} with a non-JSON body "
                f"(is this a Prometheus server?): {response.text[:200]!r}"
            ) from None
        if not isinstance(body, dict):
            raise PrometheusError(
                f"Prometheus {url}: HTTP {response.status_code} with a JSON {type(body).__name__}, "
                "not a Prometheus answer object"
            )
        if response.status_code >= 400 or body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus {url} rejected query {form.get('query')!r}: "
                f"{body.get('errorType', 'HTTP ' + str(response.status_code))}: {body.get('error', 'no detail')}"
            )
        data = body.get("data") or {}
        kind = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        if kind != "matrix":
            raise PrometheusError(f"Prometheus {url}: expected a matrix for {form.get('query')!r}, got {kind!r:.100}")
        result = data.get("result") or []
        if not isinstance(result, list) or not all(_is_series(s) for s in result):
            raise PrometheusError(
                f"Prometheus {url}: malformed matrix for {form.get('query')!r} "
                "(each series needs a 'metric' object of text labels and a list of [time, value] pairs)"
            )
        warnings = body.get("warnings")
        for warning in warnings if isinstance(warnings, list) else []:
            log.warning("Prometheus %s warning for %r: %s", url, form.get("query"), warning)
        return data

    def query_range(
        self, query: str, start: datetime, end: datetime, step_seconds: int = STEP_SECONDS
    ) -> list[dict[str, Any]]:
        """Evaluate ``query`` at ``start, start+step, … <= end``; series merged across chunks.

        Returns Prometheus' matrix: ``[{"metric": {labels}, "values": [[unix_ts, "value"], …]}, …]``.
        """
        start, end = _utc(start), _utc(end)
        merged: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
        for chunk_start, chunk_end in chunk_range(start, end, step_seconds, self.max_points):
            form = {
                "query": query,
                "start": f"{chunk_start.timestamp():.3f}",
                "end": f"{chunk_end.timestamp():.3f}",
                "step": f"{step_seconds}s",
            }
            for series in self._post(form).get("result", []):
                key = tuple(sorted(series["metric"].items()))
                merged.setdefault(key, []).extend(series["values"])
        return [{"metric": dict(key), "values": values} for key, values in merged.items()]


def _is_series(series: Any) -> bool:
    """Whether one entry of a matrix has Prometheus' shape (values are checked when converted)."""
    if (
        not isinstance(series, dict)
        or not isinstance(series.get("metric"), dict)
        or not isinstance(series.get("values"), list)
    ):
        return False
    labels, values = series["metric"], series["values"]
    return all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()) and all(
        isinstance(p, list) and len(p) == 2 for p in values
    )


def _redact(url: str) -> str:
    """``url`` without credentials (``https://user:pw@host`` → ``https://***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def _ceil_minute(ts: datetime) -> datetime:
    floor = _floor_minute(ts)
    return floor if floor == ts else floor + timedelta(minutes=1)


class PrometheusSource:
    """Metric samples in the contract's columns, read from a Prometheus server.

    The warehouse's metrics loader calls :meth:`samples` exactly as it reads a day's Parquet file.
    """

    def __init__(self, base_url: str, client: PrometheusClient | None = None):
        self.client = client or PrometheusClient(base_url)

    def describe(self, metric: str) -> str:
        """Where rows came from, for ``_source_file`` and messages."""
        return f"{self.client.query_range_url}?query={metric}"

    def samples(self, metric: str, start_utc: datetime, end_utc: datetime) -> pl.DataFrame:
        """Raw samples of ``metric`` at each minute ``start_utc <= ts < end_utc`` (half-open, like a day file).

        Columns: ``ts`` (UTC), the contract label columns (NULL when absent) and ``value`` (cumulative
        for counters). Labels outside the contract (``job``, ``instance``) are dropped; if that would merge
        two series into one row, a :class:`PrometheusError` says so rather than silently mixing them.
        """
        if not metric.replace("_", "").replace(":", "").isalnum():
            raise ValueError(f"{metric!r} is not a metric name")
        first = _ceil_minute(_utc(start_utc))
        last = _ceil_minute(_utc(end_utc)) - timedelta(minutes=1)
        if last < first:
            return pl.DataFrame(schema=SAMPLE_SCHEMA)
        matrix = self.client.query_range(metric, first, last, STEP_SECONDS)
        # Which evaluation times have a sample of their own: Prometheus' lookback would otherwise repeat a
        # series' last sample into gaps (and past its newest sample). A sample at most one step old exists
        # iff count_over_time over the last step is >= 1. The window is 59,999 ms because Prometheus 2
        # closes range windows on the left ([t-60s, t] would see the previous minute's sample) and
        # timestamps are whole milliseconds; timestamp(<metric>) says the same but is ~10x slower.
        fresh_matrix = self.client.query_range(
            f"count_over_time({metric}[{STEP_SECONDS * 1000 - 1}ms])", first, last, STEP_SECONDS
        )
        columns: dict[str, list[Any]] = {c: [] for c in SAMPLE_SCHEMA}
        try:  # the shape was checked on arrival; a time or value that is not a number is named here
            fresh = {
                _series_key(s["metric"]): {float(t) for t, v in s["values"] if float(v) >= 1} for s in fresh_matrix
            }
            for series in matrix:
                labels = series["metric"]
                has_sample = fresh.get(_series_key(labels), set())
                kept = [(float(t), raw) for t, raw in series["values"] if float(t) in has_sample]
                for c in LABEL_COLUMNS:
                    columns[c].extend([labels.get(c)] * len(kept))
                for ts, raw in kept:
                    columns["ts"].append(datetime.fromtimestamp(ts, UTC))
                    columns["value"].append(float(raw))
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            raise PrometheusError(f"{self.describe(metric)}: malformed sample in the answer ({exc})") from None
        frame = pl.DataFrame(columns, schema=SAMPLE_SCHEMA).sort(["ts", *LABEL_COLUMNS], nulls_last=False)
        dupes = frame.select(["ts", *LABEL_COLUMNS]).is_duplicated()
        if dupes.any():
            extra = sorted({k for s in matrix for k in s["metric"] if k not in LABEL_COLUMNS and k != "__name__"})
            raise PrometheusError(
                f"{self.describe(metric)}: {int(dupes.sum())} rows share the contract labels once "
                f"{extra or 'extra'} labels are dropped; aggregate them with a recording rule first"
            )
        non_finite = frame.filter(~pl.col("value").is_finite()).height
        if non_finite:
            log.warning("%s: %d non-finite samples (NaN/Inf) returned as is", self.describe(metric), non_finite)
        return frame


def _series_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A series' identity without its name (``count_over_time()`` drops ``__name__``)."""
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def counter_increases(samples: pl.DataFrame) -> pl.DataFrame:
    """Per-minute increases of cumulative counter samples with Prometheus' reset rule.

    For each series (the label columns) ordered by ``ts``: ``increase = value - previous``, except
    when the value is lower than the previous one (a reset), when the increase is the value itself.
    The first sample of a series has no increase (NULL). Returns the input columns plus ``increase``.
    """
    labels = [c for c in LABEL_COLUMNS if c in samples.columns]
    previous = pl.col("value").shift(1).over(labels, order_by="ts") if labels else pl.col("value").shift(1)
    ordered = samples.sort("ts")
    return ordered.with_columns(
        pl.when(previous.is_null())
        .then(None)
        .when(pl.col("value") < previous)
        .then(pl.col("value"))
        .otherwise(pl.col("value") - previous)
        .alias("increase")
    )
