"""The alert state the notifier keeps between runs: stored anomalies come back whole, and a later run
(a new process, a new store on the same warehouse) resolves, escalates and delivers from what was stored.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest

from alerts.detection.explain import Contribution, CostImpact
from alerts.slack.delivery import SendResult
from alerts.slack.messages import Anomaly
from alerts.slack.notifier import AlertStore, anomaly_from_json, anomaly_to_json

T0 = datetime(2026, 11, 27, 14, 5, tzinfo=UTC)  # 11:05 in Buenos Aires


def cost_anomaly(**changes) -> Anomaly:
    base = dict(
        key="infra_cost_usd|niche=psychology|country=AR|region=all",
        metric="infra_cost_usd",
        name={"es": "Costo de infraestructura", "en": "Infrastructure cost"},
        unit="usd",
        scope={"niche": "psychology", "country": "AR", "region": "all"},
        severity="warning",
        direction="up",
        started_at=T0,
        observed_at=T0 + timedelta(minutes=15),
        actual=2450.5,
        expected=2000.25,
        lower=1900.0,
        upper=2100.75,
        score=0.65,
        contributors=(
            Contribution("service", "api", Decimal("300.125"), Decimal("0.666667")),
            Contribution("region", "cordoba", Decimal("0"), None),
        ),
        cost=CostImpact(Decimal("2000.25"), Decimal("2450.50"), Decimal("450.25"), Decimal("22.51")),
        dashboard="pulso-cost",
        app_page="economics",
    )
    base.update(changes)
    return Anomaly(**base)


class Recorder:
    """A sender that records payloads and answers with a scripted result (default: delivered)."""

    def __init__(self, results: list[SendResult] | None = None):
        self.sent: list[dict] = []
        self.results = list(results or [])

    def send(self, payload: dict) -> SendResult:
        self.sent.append(payload)
        return self.results.pop(0) if self.results else SendResult(True, 200)


@pytest.fixture
def con():
    c = duckdb.connect(":memory:")
    yield c
    c.close()


def test_every_field_survives_the_state_table():
    a = cost_anomaly()
    assert anomaly_from_json(anomaly_to_json(a)) == a
    no_cost = cost_anomaly(cost=CostImpact(Decimal("0"), Decimal("5"), Decimal("5"), None), contributors=())
    assert anomaly_from_json(anomaly_to_json(no_cost)) == no_cost
    assert anomaly_from_json(anomaly_to_json(cost_anomaly(cost=None))).cost is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_stored_as_no_value(bad):
    stored = json.loads(anomaly_to_json(cost_anomaly(actual=bad, expected=bad, lower=bad, upper=bad)))
    assert (stored["actual"], stored["expected"], stored["lower"], stored["upper"]) == (None, None, None, None)
    assert anomaly_from_json(anomaly_to_json(cost_anomaly(actual=bad))).actual is None
    assert json.loads(anomaly_to_json(cost_anomaly(actual=0.0)))["actual"] == 0.0  # zero is a value


def test_a_later_run_resolves_and_escalates_from_the_stored_state(con):
    a = cost_anomaly()
    AlertStore(con, cooldown=timedelta(hours=1)).process([a], [a.key], T0)
    # A new store (the next scheduled run) on the same warehouse: critical now, then over.
    later = AlertStore(con, cooldown=timedelta(hours=1))
    worse = cost_anomaly(severity="critical", started_at=T0 + timedelta(minutes=10), actual=3100.0, score=0.95)
    summary = later.process([worse], [a.key], T0 + timedelta(minutes=15))
    assert (summary.escalated, summary.deduplicated) == (1, 0)
    assert later.process([worse], [a.key], T0 + timedelta(minutes=20)).deduplicated == 1  # critical again: once
    assert later.process([], [a.key], T0 + timedelta(minutes=95)).resolved == 1
    sender = Recorder()
    delivered = AlertStore(con).deliver(sender, T0 + timedelta(minutes=95))
    assert (delivered.delivered, delivered.failed, delivered.pending) == (3, 0, 0)
    kinds = [p["text"].split(":")[1] for p in sender.sent]
    assert kinds == ["large_orange_circle", "red_circle", "white_check_mark"]
    resolved = sender.sent[2]
    # The episode keeps its first start (the detector's restart at +10 is the same incident).
    assert "(lasted 1 h 35 min)" in resolved["text"]
    peak = resolved["blocks"][1]["fields"][3]["text"]
    assert "$3,100" in peak and "$2,000" in peak
    history = con.execute(
        "SELECT alert_id, severity, state, started_at, resolved_at, actual, message_ts FROM alerts.alert_history"
    ).fetchall()
    assert history == [
        (
            a.alert_id,
            "critical",
            "resolved",
            T0,
            T0 + timedelta(minutes=95),
            3100.0,
            (T0 + timedelta(minutes=95)).isoformat(),
        )
    ]
    assert AlertStore(con).pending() == []


def test_a_failed_message_waits_for_its_backoff_and_holds_back_its_resolve(con):
    store = AlertStore(con)
    a = cost_anomaly()
    store.process([a], [a.key], T0)
    store.process([], [a.key], T0 + timedelta(minutes=5))
    sender = Recorder([SendResult(False, 503, "HTTP 503: unavailable")])
    first = store.deliver(sender, T0 + timedelta(minutes=5))
    assert (first.delivered, first.failed, first.pending) == (0, 1, 2)  # the resolve waits behind its firing
    assert len(sender.sent) == 1
    assert store.pending() == [
        (f"{a.alert_id}:firing", 1, "HTTP 503: unavailable"),
        (f"{a.alert_id}:resolved", 0, None),
    ]
    # 30 s backoff after the first failure: not due at +29 s, due at +30 s.
    assert store.deliver(sender, T0 + timedelta(minutes=5, seconds=29)).delivered == 0
    assert len(sender.sent) == 1
    again = store.deliver(sender, T0 + timedelta(minutes=5, seconds=30))
    assert (again.delivered, again.pending) == (2, 0)
    assert [p["text"].split(":")[1] for p in sender.sent] == ["large_orange_circle"] * 2 + ["white_check_mark"]


def test_backoff_doubles_per_attempt_up_to_fifteen_minutes(con):
    store = AlertStore(con)
    a = cost_anomaly()
    store.process([a], [a.key], T0)
    now = T0
    waits = []
    for _ in range(7):
        store.deliver(Recorder([SendResult(False, 500, "HTTP 500")]), now)
        (due,) = con.execute("SELECT next_attempt_at FROM alerts.outbox").fetchone()
        waits.append((due - now).total_seconds())
        now = due
    assert waits == [30, 60, 120, 240, 480, 900, 900]


def test_an_unreachable_receiver_stops_the_round(con):
    store = AlertStore(con)
    for region in ("cordoba", "rosario"):
        a = cost_anomaly(key=f"requests|region={region}", scope={"niche": "all", "country": "AR", "region": region})
        store.process([a], [a.key], T0)
    sender = Recorder([SendResult(False, None, "URLError: refused", connection_failed=True)])
    summary = store.deliver(sender, T0)
    assert (summary.delivered, summary.failed, summary.pending) == (0, 1, 2)
    assert len(sender.sent) == 1  # the second message was not tried against a receiver that is down
    # A plain HTTP error (not a connection failure) does not stop the others.
    sender = Recorder([SendResult(False, 404, "HTTP 404: no_service")])
    summary = store.deliver(sender, T0 + timedelta(minutes=1))
    assert (summary.delivered, summary.failed, summary.pending) == (1, 1, 1)


def test_one_alert_in_backoff_does_not_hold_back_the_others(con):
    store = AlertStore(con)
    a = cost_anomaly(key="requests|region=cordoba", scope={"niche": "all", "country": "AR", "region": "cordoba"})
    b = cost_anomaly(key="requests|region=rosario", scope={"niche": "all", "country": "AR", "region": "rosario"})
    store.process([a], [a.key], T0)
    store.process([], [a.key], T0 + timedelta(seconds=1))  # a's resolve, queued behind its firing
    store.process([b], [b.key], T0 + timedelta(seconds=2))
    # a's firing fails (HTTP 500): its resolve waits, b's firing is still sent in the same round.
    sender = Recorder([SendResult(False, 500, "HTTP 500")])
    summary = store.deliver(sender, T0 + timedelta(seconds=2))
    assert (summary.delivered, summary.failed, summary.pending) == (1, 1, 2)
    assert [m for m, _, _ in store.pending()] == [f"{a.alert_id}:firing", f"{a.alert_id}:resolved"]
    # Next round, a still backing off: a new message of b goes out, a's stay queued.
    store.process([], [b.key], T0 + timedelta(seconds=10))
    summary = store.deliver(Recorder(), T0 + timedelta(seconds=10))
    assert (summary.delivered, summary.pending) == (1, 2)
    assert [m for m, _, _ in store.pending()] == [f"{a.alert_id}:firing", f"{a.alert_id}:resolved"]


def test_delivery_without_a_time_uses_the_current_utc_time(con, monkeypatch):
    import time

    store = AlertStore(con)
    created = datetime.now(UTC) - timedelta(seconds=5)
    a = cost_anomaly(started_at=created)
    store.process([a], [a.key], created)
    # A local clock three hours behind UTC (Buenos Aires) must not make the message look not due.
    monkeypatch.setenv("TZ", "America/Argentina/Buenos_Aires")
    time.tzset()
    try:
        summary = store.deliver(Recorder())
    finally:
        monkeypatch.undo()
        time.tzset()
    assert (summary.delivered, summary.pending) == (1, 0)
    (delivered_at,) = con.execute("SELECT delivered_at FROM alerts.outbox").fetchone()
    assert abs((delivered_at - datetime.now(UTC)).total_seconds()) < 300


def test_history_keeps_the_argentina_day_the_top_five_contributors_and_utc_message_times(con, monkeypatch):
    import time

    store = AlertStore(con)
    # 01:30 UTC on the 28th is 22:30 on the 27th in Buenos Aires: the alert's day is the 27th.
    start = datetime(2026, 11, 28, 1, 30, tzinfo=UTC)
    contributors = tuple(Contribution("service", f"s{i}", Decimal(10 - i), Decimal("0.1")) for i in range(6))
    a = cost_anomaly(started_at=start, observed_at=start, contributors=contributors)
    store.process([a], [a.key], start)
    monkeypatch.setenv("TZ", "America/Argentina/Buenos_Aires")  # a local clock that is not UTC
    time.tzset()
    try:
        store.deliver(Recorder(), start + timedelta(minutes=1))
    finally:
        monkeypatch.undo()
        time.tzset()
    day, top, message_ts = con.execute("SELECT day, top_contributors, message_ts FROM alerts.alert_history").fetchone()
    assert day == date(2026, 11, 27)
    assert [c["value"] for c in json.loads(top)] == ["s0", "s1", "s2", "s3", "s4"]
    assert json.loads(top)[0] == Contribution("service", "s0", Decimal(10), Decimal("0.1")).as_dict()
    assert message_ts == "2026-11-28T01:31:00+00:00"


def test_attempts_and_failures_are_counted(con):
    store = AlertStore(con)
    for region in ("cordoba", "rosario"):
        a = cost_anomaly(key=f"requests|region={region}", scope={"niche": "all", "country": "AR", "region": region})
        store.process([a], [a.key], T0)
    failing = Recorder([SendResult(False, 500, "HTTP 500"), SendResult(False, 502, "HTTP 502")])
    assert store.deliver(failing, T0).failed == 2
    assert store.deliver(Recorder(), T0 + timedelta(minutes=1)).delivered == 2
    attempts = con.execute("SELECT attempts, last_status, last_error FROM alerts.outbox ORDER BY seq").fetchall()
    assert attempts == [(2, 200, None), (2, 200, None)]


# --- the lifecycle, several keys in one evaluation -------------------------------------------------------


def place(region: str, **changes) -> Anomaly:
    return cost_anomaly(
        key=f"requests|region={region}", scope={"niche": "all", "country": "AR", "region": region}, **changes
    )


def history(con) -> dict[str, tuple]:
    rows = con.execute(
        "SELECT key, severity, state, announced, actual, lower, upper, score FROM alerts.history ORDER BY key"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_counts_of_one_evaluation_with_several_keys(con):
    store = AlertStore(con, cooldown=timedelta(hours=1))
    a, b, c, d = (place(r) for r in ("cordoba", "rosario", "mendoza", "buenos_aires"))
    assert store.process([a, b], [a.key, b.key], T0).fired == 2
    # a and b continue (a worse, b the same), c and d are new.
    summary = store.process([place("cordoba", severity="critical"), b, c, d], [a.key, b.key, c.key, d.key], T0)
    assert (summary.fired, summary.escalated, summary.deduplicated) == (2, 1, 1)
    summary = store.process([place("cordoba", severity="critical"), b, c, d], [a.key, b.key, c.key, d.key], T0)
    assert (summary.escalated, summary.deduplicated) == (0, 4)
    assert store.process([], [a.key, b.key, c.key, d.key], T0 + timedelta(minutes=5)).resolved == 4
    # All four back within the cooldown: suppressed, each counted.
    back = [place(r, started_at=T0 + timedelta(minutes=10)) for r in ("cordoba", "rosario", "mendoza")]
    assert store.process(back, [x.key for x in back], T0 + timedelta(minutes=10)).suppressed == 3


def test_a_key_that_was_not_evaluated_keeps_firing_while_the_others_resolve(con):
    store = AlertStore(con)
    a, b, c = place("cordoba"), place("rosario"), place("mendoza")
    store.process([a, b, c], [a.key, b.key, c.key], T0)
    # cordoba still anomalous, rosario had no data (not evaluated), mendoza evaluated clean.
    summary = store.process([a], [a.key, c.key], T0 + timedelta(minutes=5))
    assert (summary.resolved, summary.deduplicated) == (1, 1)
    assert {k: v[1] for k, v in history(con).items()} == {a.key: "firing", b.key: "firing", c.key: "resolved"}
    # Then rosario and mendoza ... both evaluated: rosario resolves too, even though cordoba comes first.
    assert store.process([a], [a.key, b.key, c.key], T0 + timedelta(minutes=10)).resolved == 1


def test_the_history_keeps_the_worst_point_and_the_highest_severity_of_an_episode(con):
    store = AlertStore(con)
    worst = place("cordoba", actual=900.0, lower=100.0, upper=300.0, score=0.9)
    store.process([worst], [worst.key], T0)
    assert history(con)[worst.key] == ("warning", "firing", True, 900.0, 100.0, 300.0, 0.9)
    # A milder point of the same episode, critical now: the values stay the worst point's, the
    # severity and state move.
    milder = place("cordoba", severity="critical", actual=500.0, lower=90.0, upper=310.0, score=0.6)
    store.process([milder], [worst.key], T0 + timedelta(minutes=5))
    assert history(con)[worst.key] == ("critical", "firing", True, 900.0, 100.0, 300.0, 0.9)
    # Back to warning: never de-escalated.
    store.process([place("cordoba", actual=950.0, score=0.9)], [worst.key], T0 + timedelta(minutes=10))
    assert history(con)[worst.key][:3] == ("critical", "firing", True)
    # A point as anomalous as the worst (equal score) is the newer worst point.
    assert history(con)[worst.key][3] == 950.0
    # Resolved: the state and the resolution time, the episode's stored values.
    store.process([], [worst.key], T0 + timedelta(minutes=15))
    assert history(con)[worst.key][:3] == ("critical", "resolved", True)
    assert con.execute("SELECT count(*) FROM alerts.alert_history").fetchone()[0] == 1


def test_a_suppressed_episode_is_in_the_history_but_never_announced(con):
    store = AlertStore(con, cooldown=timedelta(hours=1))
    a = place("cordoba")
    store.process([a], [a.key], T0)
    store.process([], [a.key], T0 + timedelta(minutes=5))
    back = place("cordoba", started_at=T0 + timedelta(minutes=10))
    store.process([back], [a.key], T0 + timedelta(minutes=10))
    store.process([back], [a.key], T0 + timedelta(minutes=15))  # continues, still suppressed
    rows = con.execute("SELECT alert_id, state, announced FROM alerts.history ORDER BY started_at").fetchall()
    assert rows == [(a.alert_id, "resolved", True), (back.alert_id, "suppressed", False)]
    assert [r[0] for r in con.execute("SELECT alert_id FROM alerts.alert_history").fetchall()] == [a.alert_id]


def test_unknown_severities_rank_below_warning(con):
    store = AlertStore(con)
    info = place("cordoba", severity="info")
    store.process([info], [info.key], T0)
    # Another unknown severity: not an escalation; warning is.
    assert store.process([place("cordoba", severity="notice")], [info.key], T0).escalated == 0
    assert store.process([place("cordoba", severity="warning")], [info.key], T0).escalated == 1
    assert history(con)[info.key][0] == "warning"
    # And an unknown one after warning does not lower it.
    assert store.process([place("cordoba", severity="info")], [info.key], T0).deduplicated == 1
    assert history(con)[info.key][0] == "warning"


def test_two_escalations_in_one_evaluation_are_both_counted(con):
    store = AlertStore(con)
    a, b = place("cordoba"), place("rosario")
    store.process([a, b], [a.key, b.key], T0)
    worse = [place("cordoba", severity="critical"), place("rosario", severity="critical")]
    assert store.process(worse, [a.key, b.key], T0 + timedelta(minutes=5)).escalated == 2


def test_a_failing_evaluation_changes_nothing_and_the_next_one_works(con):
    store = AlertStore(con)
    good, bad = place("cordoba"), place("rosario", score=Decimal("0.7"))  # a score JSON cannot store
    with pytest.raises(TypeError):
        store.process([good, bad], [good.key, bad.key], T0)
    assert con.execute("SELECT count(*) FROM alerts.outbox").fetchone()[0] == 0  # rolled back
    assert con.execute("SELECT count(*) FROM alerts.state").fetchone()[0] == 0
    assert store.process([good], [good.key], T0).fired == 1


def test_messages_use_the_stores_catalog(con, tmp_path):
    import yaml

    from pipelines.lib.catalog import load_catalog, parse_catalog

    data = yaml.safe_load(load_catalog().path.read_text())
    data["links"]["grafana_base_url"] = "https://grafana.example.org"
    catalog = parse_catalog(data)
    store = AlertStore(con, catalog=catalog)
    a = place("cordoba")
    store.process([a], [a.key], T0)
    store.process([place("cordoba", severity="critical")], [a.key], T0 + timedelta(minutes=5))
    store.process([], [a.key], T0 + timedelta(minutes=10))
    sender = Recorder()
    store.deliver(sender, T0 + timedelta(minutes=10))
    assert len(sender.sent) == 3
    for payload in sender.sent:
        buttons = [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert buttons[0]["url"].startswith("https://grafana.example.org/d/pulso-cost"), buttons
    ids = [m[0] for m in con.execute("SELECT message_id FROM alerts.outbox ORDER BY seq").fetchall()]
    assert ids == [f"{a.alert_id}:firing", f"{a.alert_id}:escalated-critical", f"{a.alert_id}:resolved"]
