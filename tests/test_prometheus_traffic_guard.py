"""The burn-rate alerts' traffic guard in a real Prometheus: 100 requests per 5 minutes pages, 99 never.

The rules are generated now from the catalog (``min_requests_per_5m = 100``) and evaluated by a real
Prometheus over history loaded with promtool, at the current time. Both places burn their budget at
500x (half of all requests fail); only the traffic tells them apart. The same boundary in promtool:
``alerts/prometheus/tests/slo_traffic_guard_test.yml``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import requests

from alerts.generate import generate as generate_rules
from tests.fixtures.sources.servers import prometheus_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prometheus")]

PLACE = {"niche": "barber", "country": "AR", "service": "api", "route": "/api"}
# region -> requests a minute of each of code 200 and code 500 (so the total a minute is twice this)
PER_MINUTE = {"rosario": 10.0, "mendoza": 9.9}  # 100 and 99 requests per 5 minutes


def request_history(now: datetime) -> pl.DataFrame:
    """1-minute counter samples from 2h10m before ``now`` (the 2h ticket window full) to 20m after it
    (so every window stays full while the test runs)."""
    start = now - timedelta(hours=2, minutes=10)
    rows = []
    for region, per_minute in PER_MINUTE.items():
        for code in ("200", "500"):
            for i in range(151):
                rows.append(
                    {
                        **PLACE,
                        "region": region,
                        "code": code,
                        "ts": start + timedelta(minutes=i),
                        "value": per_minute * i,
                    }
                )
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def query(base: str, expr: str) -> list[dict]:
    answer = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=30).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_traffic_guard_pages_at_100_requests_per_5_minutes_and_not_at_99(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rules = generate_rules(tmp_path / "alerts")
    rule_files = sorted(p for p in rules if str(p).endswith(".rules.yml"))
    assert rule_files, rules
    with prometheus_server({"http_requests_total": request_history(now)}, tmp_path, rule_files) as base:
        firing = 'ALERTS{alertname="AvailabilityBudgetBurn",alertstate="firing",slo="availability"}'
        deadline = time.monotonic() + 60
        while not {s["metric"]["severity"] for s in query(base, firing)} >= {"page", "ticket"}:
            assert time.monotonic() < deadline, "the 100-requests place never paged"
            time.sleep(0.5)
        # Same group, same evaluation: the 99-requests place was judged on the same data and stayed silent.
        alerts = {(s["metric"]["region"], s["metric"]["severity"]) for s in query(base, firing)}
        assert alerts == {("rosario", "page"), ("rosario", "ticket")}
        traffic = {
            s["metric"]["region"]: float(s["value"][1])
            for s in query(base, 'slo:sli_total:rate5m{slo="availability"} * 300')
        }
        assert traffic == pytest.approx({"rosario": 100.0, "mendoza": 99.0}, rel=1e-9)
        ratio = {
            s["metric"]["region"]: float(s["value"][1])
            for s in query(base, 'slo:sli_error:ratio_rate5m{slo="availability"}')
        }
        assert ratio == pytest.approx({"rosario": 0.5, "mendoza": 0.5}, rel=1e-9)
