"""The Slack cooldown at its boundaries, with the alert policy's own ``cooldown_minutes``.

The store is built the way a caller that says nothing gets it (no ``cooldown=``), so the value comes from
``alerts/detection/policy.yaml`` read as minutes. One key flaps: it fires, resolves, and comes back at
half the cooldown, ten minutes before its end, exactly at its end and ten minutes after the next firing
(+30, +50, +60 and +70 minutes with the policy's 60). Each return is a new episode (a new start time).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest
import yaml

from alerts.detection.monitor import POLICY_PATH
from alerts.slack.messages import Anomaly
from alerts.slack.notifier import AlertStore

T0 = datetime(2026, 11, 27, 14, 5, tzinfo=UTC)  # 11:05 in Buenos Aires
KEY = "requests|niche=barber|country=AR|region=cordoba"


def policy_cooldown_minutes() -> int:
    """The cooldown as the policy file states it (minutes), read here independently of the loader."""
    return yaml.safe_load(POLICY_PATH.read_text(encoding="utf-8"))["cooldown_minutes"]


def anomaly(started_at: datetime, severity: str = "warning") -> Anomaly:
    return Anomaly(
        key=KEY,
        metric="requests",
        name={"es": "Tráfico (solicitudes)", "en": "Traffic (requests)"},
        unit="count",
        scope={"niche": "barber", "country": "AR", "region": "cordoba"},
        severity=severity,
        direction="down",
        started_at=started_at,
        observed_at=started_at + timedelta(minutes=5),
        actual=120.0,
        expected=900.0,
        lower=700.0,
        upper=1100.0,
        score=0.7,
        dashboard="pulso-capacity",
    )


@pytest.fixture
def store():
    con = duckdb.connect(":memory:")
    yield AlertStore(con)  # no cooldown passed: the policy's
    con.close()


def outbox(store: AlertStore) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT message_id FROM alerts.outbox ORDER BY seq").fetchall()]


def flap(store: AlertStore, at: datetime, until: datetime):
    """The key is anomalous from ``at``, evaluated clean again at ``until``: the summary of its return."""
    a = anomaly(at)
    summary = store.process([a], [KEY], at)
    store.process([], [KEY], until)
    return a, summary


def test_refires_at_30_50_60_70_minutes_follow_the_policys_cooldown(store):
    cooldown = policy_cooldown_minutes()
    assert cooldown > 20, "the offsets below assume a cooldown of more than 20 minutes"
    assert store.cooldown == timedelta(minutes=cooldown)  # minutes, as the file says, not seconds

    def at(minutes: float) -> datetime:
        return T0 + timedelta(minutes=minutes)

    first, fired = flap(store, at(0), at(15))
    assert fired.fired == 1

    # +30 (half the cooldown) and +50 (10 minutes before its end): suppressed, nothing queued.
    half, summary = flap(store, at(cooldown / 2), at(cooldown / 2 + 5))
    assert (summary.fired, summary.suppressed) == (0, 1)
    late, summary = flap(store, at(cooldown - 10), at(cooldown - 5))
    assert (summary.fired, summary.suppressed) == (0, 1)
    assert outbox(store) == [f"{first.alert_id}:firing", f"{first.alert_id}:resolved"]

    # +60: exactly one cooldown after the last message that was sent. The suppressed returns at +30 and
    # +50 did not restart the cooldown, and "less than the cooldown ago" is false at exactly the cooldown.
    again, summary = flap(store, at(cooldown), at(cooldown + 5))
    assert (summary.fired, summary.suppressed) == (1, 0)

    # +70: 10 minutes after the +60 message: the cooldown restarted at that firing.
    last, summary = flap(store, at(cooldown + 10), at(cooldown + 15))
    assert (summary.fired, summary.suppressed) == (0, 1)

    assert outbox(store) == [
        f"{first.alert_id}:firing",
        f"{first.alert_id}:resolved",
        f"{again.alert_id}:firing",
        f"{again.alert_id}:resolved",
    ]
    announced = store.con.execute("SELECT alert_id FROM alerts.alert_history ORDER BY started_at").fetchall()
    assert announced == [(first.alert_id,), (again.alert_id,)]
    suppressed = store.con.execute(
        "SELECT alert_id FROM alerts.history WHERE NOT announced ORDER BY started_at"
    ).fetchall()
    assert suppressed == [(half.alert_id,), (late.alert_id,), (last.alert_id,)]


def test_a_suppressed_return_that_lasts_stays_silent_and_is_never_resolved(store):
    cooldown = policy_cooldown_minutes()
    first, _ = flap(store, T0, T0 + timedelta(minutes=5))
    back = anomaly(T0 + timedelta(minutes=cooldown / 2))
    assert store.process([back], [KEY], back.started_at).suppressed == 1
    # Still anomalous after the cooldown has run out: the same suppressed episode, not a new firing.
    later = T0 + timedelta(minutes=cooldown + 5)
    summary = store.process([anomaly(back.started_at, severity="critical")], [KEY], later)
    assert (summary.fired, summary.escalated, summary.deduplicated) == (0, 0, 1)
    assert store.process([], [KEY], later + timedelta(minutes=5)).resolved == 0
    assert outbox(store) == [f"{first.alert_id}:firing", f"{first.alert_id}:resolved"]


def test_a_cooldown_passed_by_the_caller_overrides_the_policy():
    con = duckdb.connect(":memory:")
    store = AlertStore(con, cooldown=timedelta(minutes=10))
    flap(store, T0, T0 + timedelta(minutes=5))
    assert flap(store, T0 + timedelta(minutes=10), T0 + timedelta(minutes=15))[1].fired == 1
