"""Prometheus metric samples of one Argentina day, as the rows ``/api/v1/query_range`` returns at 60 s.

All series of a day are drawn at once with numpy (sessions -> Poisson requests -> multinomial codes and
latency buckets), then accumulated into counters that carry over from the previous day and reset when a
simulated process restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import ndtr

from pipelines.lib.simulator.incidents import (
    DEGRADED_CACHE_HIT,
    LATENCY_REGRESSION_FACTOR,
    OUTAGE_5XX_SHARE,
    SPIKE_SCALE_OUT_LAG_MIN,
    TRAFFIC_SPIKE_FACTOR,
    Incident,
)
from pipelines.lib.simulator.world import MINUTES, World, traffic_shape

# --- contract ----------------------------------------------------------------------------------------
LABELS = ("niche", "country", "region", "service", "route", "code", "le", "group")
CODES = ("200", "404", "500", "503")
METRICS = {
    "http_request_duration_seconds_bucket": "histogram",
    "http_requests_total": "counter",
    "probe_success": "gauge",
    "cache_hits_total": "counter",
    "cache_requests_total": "counter",
    "active_sessions": "gauge",
    "autoscaling_group_desired_capacity": "gauge",
    "autoscaling_group_in_service_instances": "gauge",
    "db_connections_in_use": "gauge",
}
COUNTER_METRICS = tuple(m for m, t in METRICS.items() if t in ("counter", "histogram"))

# --- behaviour parameters -----------------------------------------------------------------------------
REQUESTS_PER_SESSION_MINUTE = 2.5
# Share of requests and median latency (seconds) per service id; unknown services get the default.
SERVICE_MIX = {"web": (0.50, 0.035), "api": (0.40, 0.050), "payments": (0.10, 0.060)}
SERVICE_MIX_DEFAULT = (0.10, 0.050)
LATENCY_SIGMA = 0.5  # log-normal shape: p95 = median x 2.28
REGION_LATENCY_STEP = 0.05  # each further region of a country is 5% slower than the first
CODE_SHARES = (0.9855, 0.0140, 0.00035, 0.00015)  # 200/404/500/503: ~0.05% 5xx
CACHE_LOOKUPS_PER_REQUEST = 0.8
CACHE_HIT = 0.93
CAPACITY_HEADROOM = 1.05
SCALE_IN_COOLDOWN_MIN = 10
SCALE_OUT_LAG_MIN = ((1, 2, 3), (0.55, 0.33, 0.12))  # minutes from desired rising to in service
DB_POOL_SHARE_AT_PEAK = 0.6
PROBE_BLIP_PER_DAY = 0.05  # chance a probe series has one isolated failed minute (not an incident)
RESTARTS_PER_DAY = 0.6  # expected process restarts (counter resets) per day, over all series


@dataclass
class MetricsState:
    """What carries over from one day to the next: counter totals and the autoscaling fleet."""

    hist: np.ndarray | None = None  # (series, le) cumulative bucket counts
    requests: np.ndarray | None = None  # (series, code)
    cache_hits: np.ndarray | None = None  # (segment,)
    cache_requests: np.ndarray | None = None
    fleet: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    resets: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DayMetrics:
    """The day's samples (as Arrow tables per metric) plus aggregates billing and events reuse."""

    tables: dict[str, pa.Table]
    sessions: np.ndarray  # (segment, minute) active sessions
    requests: np.ndarray  # (segment, minute) requests over all services
    series_requests: np.ndarray  # (series, minute) requests per niche/region/service


class MetricsModel:
    """Generates metric samples day by day for one :class:`World`."""

    def __init__(self, world: World, incidents: list[Incident]):
        self.world = world
        self.incidents = incidents
        cat = world.catalog
        self.bounds = np.array(cat.latency_buckets_seconds)
        self.le_labels = [_le(b) for b in cat.latency_buckets_seconds] + ["+Inf"]
        self.segs = world.segments
        self.services = world.services
        self.n_seg = len(self.segs)
        self.n_svc = len(self.services)
        self.n_series = self.n_seg * self.n_svc
        mix = [SERVICE_MIX.get(s.id, SERVICE_MIX_DEFAULT) for s in self.services]
        share = np.array([m[0] for m in mix])
        self.service_share = share / share.sum()
        self.service_median = np.array([m[1] for m in mix])
        slo_min = min(cat.country(c).latency_slo_ms for c in world.countries)
        self.seg_latency = np.empty(self.n_seg)
        for seg in self.segs:
            country = cat.country(seg.country)
            region_pos = [r.id for r in country.regions].index(seg.region)
            country_mult = 1 + 0.6 * (country.latency_slo_ms / slo_min - 1)
            self.seg_latency[seg.index] = country_mult * (1 + REGION_LATENCY_STEP * region_pos)
        self.groups = world.catalog.autoscaling_groups
        self.pool = int(cat.section("capacity")["db_pool_size"])
        self.capacity_group = cat.section("capacity").get("capacity_group", self.groups[0].id)
        self.state = MetricsState()

    # --- one day ----------------------------------------------------------------------------------------
    def day(self, day: date) -> DayMetrics:
        """All metric samples of the Argentina day ``day`` (call in date order: counters carry over)."""
        w = self.world
        epochs = w.minute_epochs(day)
        rng = w.rng("metrics", day.isoformat())
        g = w.growth(day)

        # Sessions per segment and minute, with incidents that change traffic.
        sessions = np.empty((self.n_seg, MINUTES))
        for seg in self.segs:
            shape = traffic_shape(w.local_hours(day, seg.timezone), seg.peak_hours)
            sessions[seg.index] = w.session_scale * seg.weight * shape * w.day_factors(seg, day) * g
        sessions *= rng.lognormal(0.0, 0.03, sessions.shape)
        spike_mask = np.zeros((self.n_seg, MINUTES), dtype=bool)
        outage = np.zeros((self.n_seg, MINUTES), dtype=bool)
        slow = np.ones((self.n_seg, MINUTES))
        cache_hit = np.clip(rng.normal(CACHE_HIT, 0.006, (self.n_seg, MINUTES)), 0.85, 0.99)
        for inc in self.incidents:
            mask = inc.minute_mask(epochs)
            if not mask.any():
                continue
            for seg in self.segs:
                if not inc.touches(seg.niche, seg.country, seg.region):
                    continue
                if inc.type == "traffic_spike":
                    sessions[seg.index, mask] *= TRAFFIC_SPIKE_FACTOR
                    spike_mask[seg.index, mask] = True
                elif inc.type == "outage":
                    outage[seg.index, mask] = True
                elif inc.type == "latency_regression":
                    slow[seg.index, mask] *= LATENCY_REGRESSION_FACTOR
                elif inc.type == "cache_degradation":
                    cache_hit[seg.index, mask] = np.clip(rng.normal(DEGRADED_CACHE_HIT, 0.01, int(mask.sum())), 0, 1)
        active = np.rint(sessions)

        # Fleet per country and group follows the load of that country.
        fleet_rows, utilization = self._fleet(day, sessions, spike_mask)

        # Requests per series (segment x service) and minute.
        seg_of = np.repeat(np.arange(self.n_seg), self.n_svc)
        svc_of = np.tile(np.arange(self.n_svc), self.n_seg)
        rate = sessions[seg_of] * REQUESTS_PER_SESSION_MINUTE * self.service_share[svc_of][:, None]
        n = rng.poisson(rate)
        code_p = np.broadcast_to(np.array(CODE_SHARES), (self.n_series, MINUTES, len(CODES))).copy()
        out = outage[seg_of]
        code_p[out] = (1 - OUTAGE_5XX_SHARE - 0.01, 0.01, 0.2 * OUTAGE_5XX_SHARE, 0.8 * OUTAGE_5XX_SHARE)
        code_inc = rng.multinomial(n, code_p)

        # Latency: log-normal around a per-service/region median, slower under load and in incidents.
        util = utilization[seg_of]
        median = (
            self.service_median[svc_of][:, None]
            * self.seg_latency[seg_of][:, None]
            * (1 + 0.15 * np.minimum(util, 1.0) ** 2 + 2.0 * np.maximum(util - 1.0, 0.0))
            * slow[seg_of]
        )
        median = np.where(out, 0.004, median)  # an outage fails fast (load balancer 503)
        cdf = ndtr((np.log(self.bounds)[None, None, :] - np.log(median)[:, :, None]) / LATENCY_SIGMA)
        p = np.diff(
            np.concatenate([np.zeros(cdf.shape[:2] + (1,)), cdf, np.ones(cdf.shape[:2] + (1,))], axis=2), axis=2
        )
        p = np.clip(p, 0, None)
        p /= p.sum(axis=2, keepdims=True)
        bucket_inc = np.cumsum(rng.multinomial(n, p), axis=2)  # (series, minute, le) cumulative in le

        # Cache lookups per segment.
        seg_requests = n.reshape(self.n_seg, self.n_svc, MINUTES).sum(axis=1)
        cache_req_inc = rng.poisson(seg_requests * CACHE_LOOKUPS_PER_REQUEST)
        cache_hit_inc = rng.binomial(cache_req_inc, cache_hit)

        # Counters: accumulate from yesterday, then apply today's process restarts.
        st = self.state
        if st.hist is None:
            st.hist, st.requests, st.cache_hits, st.cache_requests = self._initial_counters(rng)
        hist = st.hist[:, None, :] + np.cumsum(bucket_inc, axis=1)
        reqs = st.requests[:, None, :] + np.cumsum(code_inc, axis=1)
        c_hits = st.cache_hits[:, None] + np.cumsum(cache_hit_inc, axis=1)
        c_reqs = st.cache_requests[:, None] + np.cumsum(cache_req_inc, axis=1)
        for _ in range(rng.poisson(RESTARTS_PER_DAY)):
            s = int(rng.integers(self.n_series))
            k = int(rng.integers(1, MINUTES))
            seg = self.segs[s // self.n_svc]
            svc = self.services[s % self.n_svc].id
            hist[s, k:] -= hist[s, k - 1]
            reqs[s, k:] -= reqs[s, k - 1]
            metrics = ["http_request_duration_seconds_bucket", "http_requests_total"]
            if s % self.n_svc == 0:  # the first service's process also exports the segment's cache counters
                c_hits[seg.index, k:] -= c_hits[seg.index, k - 1]
                c_reqs[seg.index, k:] -= c_reqs[seg.index, k - 1]
                metrics += ["cache_hits_total", "cache_requests_total"]
            st.resets.append(
                {
                    "ts": _iso_epoch(int(epochs[k])),
                    "niche": seg.niche,
                    "country": seg.country,
                    "region": seg.region,
                    "service": svc,
                    "metrics": metrics,
                }
            )
        st.hist, st.requests = hist[:, -1, :].copy(), reqs[:, -1, :].copy()
        st.cache_hits, st.cache_requests = c_hits[:, -1].copy(), c_reqs[:, -1].copy()

        # Blackbox probes: down during outages, plus rare isolated one-minute blips.
        probe = np.where(outage, 0.0, 1.0)
        for seg in self.segs:
            if rng.random() < PROBE_BLIP_PER_DAY:
                k = int(rng.integers(1, MINUTES - 1))
                if not outage[seg.index, max(k - 3, 0) : k + 4].any():
                    probe[seg.index, k] = 0.0

        # DB connections in use follow the total load, capped by the pool.
        total = sessions.sum(axis=0)
        db = np.clip(
            np.rint(6 + self.pool * DB_POOL_SHARE_AT_PEAK * total / self.world.peak_users + rng.normal(0, 2, MINUTES)),
            1,
            self.pool,
        )

        tables = self._tables(epochs, hist, reqs, probe, c_hits, c_reqs, active, fleet_rows, db)
        return DayMetrics(tables, sessions, seg_requests.astype(np.float64), n.astype(np.float64))

    def _initial_counters(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Counter totals at the window start: the processes have been up for a while."""
        uptime = rng.integers(5_000, 50_000, self.n_series)
        p = np.array(CODE_SHARES)
        reqs = rng.multinomial(uptime, p).astype(np.int64)
        median = self.service_median[np.tile(np.arange(self.n_svc), self.n_seg)]
        cdf = ndtr((np.log(self.bounds)[None, :] - np.log(median)[:, None]) / LATENCY_SIGMA)
        pb = np.diff(np.concatenate([np.zeros((self.n_series, 1)), cdf, np.ones((self.n_series, 1))], axis=1), axis=1)
        pb = np.clip(pb, 0, None)
        pb /= pb.sum(axis=1, keepdims=True)
        hist = np.cumsum(rng.multinomial(uptime, pb), axis=1).astype(np.int64)
        seg_up = uptime.reshape(self.n_seg, self.n_svc).sum(axis=1)
        c_req = rng.poisson(seg_up * CACHE_LOOKUPS_PER_REQUEST).astype(np.int64)
        c_hit = rng.binomial(c_req, CACHE_HIT).astype(np.int64)
        return hist, reqs, c_hit, c_req

    # --- autoscaling --------------------------------------------------------------------------------------
    def _fleet(
        self, day: date, sessions: np.ndarray, spike_mask: np.ndarray
    ) -> tuple[list[tuple[str, str, np.ndarray, np.ndarray]], np.ndarray]:
        """Desired and in-service instances per (country, group), and each segment's load / capacity."""
        w = self.world
        rng = w.rng("fleet", day.isoformat())
        rows = []
        utilization = np.zeros((self.n_seg, MINUTES))
        for country in w.countries:
            idx = [s.index for s in self.segs if s.country == country]
            demand = sessions[idx].sum(axis=0)
            spiking = spike_mask[idx].any(axis=0)
            for grp in self.groups:
                per_instance = grp.users_per_instance * w.capacity_factor
                raw = np.clip(np.ceil(demand * CAPACITY_HEADROOM / per_instance), grp.min, grp.max).astype(int)
                key = (country, grp.id)
                st = self.state.fleet.get(key) or {
                    "desired": int(raw[0]),
                    "in_service": int(raw[0]),
                    "below": 0,
                    "pending": [],
                }
                desired_out = np.empty(MINUTES)
                in_service_out = np.empty(MINUTES)
                lags = rng.choice(SCALE_OUT_LAG_MIN[0], size=MINUTES, p=SCALE_OUT_LAG_MIN[1])
                spike_lags = rng.integers(SPIKE_SCALE_OUT_LAG_MIN[0], SPIKE_SCALE_OUT_LAG_MIN[1] + 1, MINUTES)
                for k in range(MINUTES):
                    want = int(raw[k])
                    if want > st["desired"]:
                        st["desired"] = want
                        st["below"] = 0
                        lag = int(spike_lags[k] if spiking[max(k - 10, 0) : k + 1].any() else lags[k])
                        st["pending"].append((k + lag, want))
                    elif want < st["desired"]:
                        st["below"] += 1
                        if st["below"] >= SCALE_IN_COOLDOWN_MIN and not st["pending"]:
                            st["desired"] = want
                            st["below"] = 0
                            st["pending"].append((k + 1, want))
                    else:
                        st["below"] = 0
                    keep = []
                    for due, target in st["pending"]:
                        if due <= k:
                            st["in_service"] = target if target < st["in_service"] else max(st["in_service"], target)
                        else:
                            keep.append((due, target))
                    st["pending"] = keep
                    desired_out[k] = st["desired"]
                    in_service_out[k] = st["in_service"]
                # Pending launches roll over to tomorrow's minutes.
                st["pending"] = [(due - MINUTES, target) for due, target in st["pending"]]
                self.state.fleet[key] = st
                rows.append((grp.id, country, desired_out, in_service_out))
                if grp.id == self.capacity_group:
                    utilization[idx] = (demand / (in_service_out * per_instance))[None, :]
        return rows, utilization

    # --- rows ---------------------------------------------------------------------------------------------
    def _tables(self, epochs, hist, reqs, probe, c_hits, c_reqs, active, fleet_rows, db) -> dict[str, pa.Table]:
        segs, svcs = self.segs, self.services
        niche = [s.niche for s in segs]
        country = [s.country for s in segs]
        region = [s.region for s in segs]
        seg_of = np.repeat(np.arange(self.n_seg), self.n_svc)
        svc_of = np.tile(np.arange(self.n_svc), self.n_seg)
        tables: dict[str, pa.Table] = {}

        def series_table(values: np.ndarray, labels: dict[str, list[str | None]]) -> pa.Table:
            # values: (n_series, MINUTES); labels: one value per series
            n_series = values.shape[0]
            cols: dict[str, pa.Array] = {"ts": _ts_array(np.tile(epochs, n_series))}
            for name in LABELS:
                vals = labels.get(name)
                if vals is None:
                    cols[name] = pa.nulls(n_series * MINUTES, pa.string())
                else:
                    cols[name] = _repeat_strings(vals, MINUTES)
            cols["value"] = pa.array(values.reshape(-1).astype(np.float64))
            return pa.table(cols)

        n_le = len(self.le_labels)
        h = hist.transpose(0, 2, 1).reshape(self.n_series * n_le, MINUTES)
        s_idx = np.repeat(seg_of, n_le)
        v_idx = np.repeat(svc_of, n_le)
        tables["http_request_duration_seconds_bucket"] = series_table(
            h,
            {
                "niche": [niche[i] for i in s_idx],
                "country": [country[i] for i in s_idx],
                "region": [region[i] for i in s_idx],
                "service": [svcs[i].id for i in v_idx],
                "route": [svcs[i].route for i in v_idx],
                "le": self.le_labels * self.n_series,
            },
        )
        r = reqs.transpose(0, 2, 1).reshape(self.n_series * len(CODES), MINUTES)
        s_idx = np.repeat(seg_of, len(CODES))
        v_idx = np.repeat(svc_of, len(CODES))
        tables["http_requests_total"] = series_table(
            r,
            {
                "niche": [niche[i] for i in s_idx],
                "country": [country[i] for i in s_idx],
                "region": [region[i] for i in s_idx],
                "service": [svcs[i].id for i in v_idx],
                "route": [svcs[i].route for i in v_idx],
                "code": list(CODES) * self.n_series,
            },
        )
        seg_labels = {"niche": niche, "country": country, "region": region}
        tables["probe_success"] = series_table(probe, seg_labels)
        tables["cache_hits_total"] = series_table(c_hits, seg_labels)
        tables["cache_requests_total"] = series_table(c_reqs, seg_labels)
        tables["active_sessions"] = series_table(active, seg_labels)
        grp_labels = {"group": [g for g, _, _, _ in fleet_rows], "country": [c for _, c, _, _ in fleet_rows]}
        tables["autoscaling_group_desired_capacity"] = series_table(
            np.stack([d for _, _, d, _ in fleet_rows]), grp_labels
        )
        tables["autoscaling_group_in_service_instances"] = series_table(
            np.stack([i for _, _, _, i in fleet_rows]), grp_labels
        )
        tables["db_connections_in_use"] = series_table(db[None, :], {})
        return tables


def _le(bound: float) -> str:
    """Prometheus' formatting of a bucket bound ("0.025", "1", "2.5")."""
    text = repr(float(bound))
    return text[:-2] if text.endswith(".0") else text


def _iso_epoch(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts_array(epochs: np.ndarray) -> pa.Array:
    return pa.array(epochs.astype("int64") * 1_000_000, type=pa.timestamp("us", tz="UTC"))


def _repeat_strings(per_series: list[str | None], times: int) -> pa.Array:
    """One label value per series, repeated for every minute, as a dictionary array (fast to write).

    Files are written without the Arrow schema, so every reader sees plain VARCHAR/string columns.
    """
    uniq = list(dict.fromkeys(per_series))
    pos = {v: i for i, v in enumerate(uniq)}
    codes = np.repeat(np.array([pos[v] for v in per_series], dtype=np.int32), times)
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(uniq, pa.string()))


def write_day_metrics(out: Path, day: date, tables: dict[str, pa.Table]) -> list[Path]:
    """Write one Parquet file per metric family for the AR day (contract section 1.1)."""
    paths = []
    for metric, table in tables.items():
        path = out / "metrics" / metric / f"date={day.isoformat()}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        # No stored Arrow schema: label columns are dictionary-encoded in memory but read back as strings.
        pq.write_table(table, path, compression="zstd", store_schema=False)
        paths.append(path)
    return paths


def counter_metric(metric: str) -> bool:
    """Is this metric family a (cumulative) counter, histogram buckets included?"""
    return metric in COUNTER_METRICS


assert math.isclose(sum(CODE_SHARES), 1.0)
