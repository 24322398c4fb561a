"""Slack alerts against a real HTTP receiver on loopback: content, dedup, cooldown, resolve, retries, outbox."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pytest

from alerts.detection.explain import Contribution, cost_impact
from alerts.slack.delivery import SlackConfigError, SlackWebhookSender
from alerts.slack.messages import Anomaly, firing_message, resolved_message
from alerts.slack.notifier import AlertStore

T0 = datetime(2026, 11, 27, 14, 5, tzinfo=UTC)  # 11:05 in Buenos Aires


class Receiver:
    """A scripted Slack webhook stand-in: answers each POST with the next scripted reply (default 200 ok)."""

    def __init__(self, port: int = 0):
        self.script: list[tuple[int, dict[str, str], str]] = []
        self.requests: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        self._start(port)

    def _start(self, port: int) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append((time.monotonic(), json.loads(body)))
                    status, headers, text = receiver.script.pop(0) if receiver.script else (200, {}, "ok")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/secret-token"

    def down(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def up(self) -> None:
        self._start(self.port)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.down()


@pytest.fixture
def store():
    con = duckdb.connect(":memory:")
    yield AlertStore(con, cooldown=timedelta(hours=1))
    con.close()


def latency_anomaly(**changes) -> Anomaly:
    base = dict(
        key="latency_p95_ms|niche=psychology|region=cordoba",
        metric="latency_p95_ms",
        name={"es": "Tiempo de respuesta p95", "en": "Response time p95"},
        unit="ms",
        scope={"niche": "psychology", "country": "AR", "region": "cordoba"},
        severity="warning",
        direction="up",
        started_at=T0,
        observed_at=T0 + timedelta(minutes=15),
        actual=412.0,
        expected=180.0,
        lower=150.0,
        upper=220.0,
        score=0.91,
        contributors=(
            Contribution("service", "payments", Decimal("190.5"), Decimal("0.821121")),
            Contribution("route", "juan.perez@example.com", Decimal("20"), Decimal("0.086207")),
            Contribution("user", "30123456", Decimal("10"), Decimal("0.043103")),
        ),
        dashboard="pulso-latency",
        app_page="kpis",
    )
    base.update(changes)
    return Anomaly(**base)


# --- content ---------------------------------------------------------------------------------------


def test_firing_message_block_kit_numbers_links_and_no_personal_data():
    msg = firing_message(latency_anomaly())
    blocks = msg["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "actions", "context"]
    assert blocks[0]["text"]["text"] == "Warning anomaly: Response time p95 up — psychology · AR · cordoba"
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == [
        "*Actual*\n412 ms",
        "*Expected*\n180 ms (150 ms – 220 ms)",
        "*Change*\n+129%",
        "*Since*\n2026-11-27 11:05 (AR)",
        "*Severity*\nwarning",
        "*Anomaly score*\n0.91",
    ]
    contributors = blocks[2]["text"]["text"]
    assert "• service *payments*: +191 ms (82% of the change)" in contributors  # 190.5 rounds half up
    urls = [e["url"] for e in blocks[3]["elements"]]
    start_ms = int(T0.timestamp() * 1000) - 3_600_000
    assert urls[0] == (
        "http://localhost:3000/d/pulso-latency?var-niche=psychology&var-country=AR&var-region=cordoba"
        f"&from={start_ms}&to=now"
    )
    assert urls[1] == "http://localhost:8501/kpis"
    dumped = json.dumps(msg)
    assert "juan.perez" not in dumped and "example.com" not in dumped and "30123456" not in dumped
    assert dumped.count("(other)") == 2
    assert msg["text"].startswith(":large_orange_circle: Warning anomaly: Response time p95 up")
    assert (
        blocks[4]["elements"][0]["text"]
        == "Pulso · alert `latency_p95_ms|niche=psychology|region=cordoba@20261127T1405`"
    )


def test_personal_values_in_a_scope_never_reach_slack():
    # A label that is not a catalog id nor a short lower-case code (a name, an e-mail, a DNI) is redacted
    # everywhere: header, links, contributors and the alert id shown in the context line.
    leaked = {"niche": "psychology", "country": "AR", "region": "Juan Pérez <juan@example.com> 30123456"}
    anomaly = latency_anomaly(key="latency_p95_ms|niche=psychology|region=" + leaked["region"], scope=leaked)
    for msg in (firing_message(anomaly), resolved_message(anomaly, T0 + timedelta(hours=1))):
        dumped = json.dumps(msg, ensure_ascii=False)
        assert "Juan" not in dumped and "juan" not in dumped and "30123456" not in dumped and "example" not in dumped
        assert "region=(other)" in dumped


def test_cost_message_carries_expected_actual_impact_and_percent():
    a = latency_anomaly(
        key="infra_cost_usd|niche=all",
        metric="infra_cost_usd",
        unit="usd",
        name={"es": "Costo", "en": "Infrastructure cost"},
        scope={"niche": "all"},
        actual=2650.125,
        expected=2000.0,
        lower=1800.0,
        upper=2200.0,
        contributors=(),
        cost=cost_impact(Decimal("2650.125"), 2000.0),
    )
    blocks = firing_message(a)["blocks"]
    assert blocks[0]["text"]["text"] == "Warning anomaly: Infrastructure cost up — all of BarberPro"
    assert blocks[1]["fields"][0]["text"] == "*Actual*\n$2,650.13"
    assert blocks[2]["text"]["text"] == (
        "*Cost impact* — expected spend $2,000.00, actual spend $2,650.13, impact +$650.13 (+32.51%)"
    )
    assert "No single dimension stands out." in blocks[3]["text"]["text"]


def test_resolved_message_and_no_nan_reaches_a_person():
    a = latency_anomaly(actual=float("nan"), expected=None)
    msg = resolved_message(a, T0 + timedelta(minutes=75))
    assert (
        msg["text"] == ":white_check_mark: Resolved: Response time p95 — psychology · AR · cordoba (lasted 1 h 15 min)"
    )
    dumped = json.dumps(msg)
    assert "nan" not in dumped.lower().replace("nano", "") and "no data vs expected no data" in dumped


# --- lifecycle through the real receiver -----------------------------------------------------------


def sender_for(receiver: Receiver) -> SlackWebhookSender:
    return SlackWebhookSender(receiver.url, backoff_factor=0.05, timeout=2)


def test_fire_dedup_escalate_resolve_one_message_each(receiver, store):
    sender = sender_for(receiver)
    a = latency_anomaly()
    assert store.process([a], [a.key], T0).fired == 1
    assert store.deliver(sender, T0).delivered == 1
    # The next three evaluations see the same episode: nothing new is sent.
    for k in range(1, 4):
        later = latency_anomaly(observed_at=T0 + timedelta(minutes=15 * k), actual=400.0 + k)
        assert store.process([later], [a.key], T0 + timedelta(minutes=15 * k)).deduplicated == 1
        store.deliver(sender, T0 + timedelta(minutes=15 * k))
    assert len(receiver.requests) == 1
    # Severity rises: one escalation, and only one.
    for k in (4, 5):
        worse = latency_anomaly(severity="critical", score=0.97, actual=900.0)
        store.process([worse], [a.key], T0 + timedelta(minutes=15 * k))
        store.deliver(sender, T0 + timedelta(minutes=15 * k))
    assert len(receiver.requests) == 2
    assert receiver.requests[1][1]["blocks"][0]["text"]["text"].startswith("Escalated to critical: Response time p95")
    # An evaluation without data for the key does not resolve it.
    assert store.process([], [], T0 + timedelta(minutes=90)).resolved == 0
    # Evaluated and normal: resolved, once.
    assert store.process([], [a.key], T0 + timedelta(minutes=105)).resolved == 1
    assert store.process([], [a.key], T0 + timedelta(minutes=120)).resolved == 0
    store.deliver(sender, T0 + timedelta(minutes=120))
    assert len(receiver.requests) == 3
    assert receiver.requests[2][1]["text"].startswith(":white_check_mark: Resolved: Response time p95")
    assert "lasted 1 h 45 min" in receiver.requests[2][1]["text"]
    history = store.con.execute(
        "SELECT alert_id, kpi, severity, state, resolved_at, actual, expected, message_ts FROM alerts.alert_history"
    ).fetchall()
    assert len(history) == 1
    alert_id, kpi, severity, state, resolved_at, actual, expected, message_ts = history[0]
    assert (kpi, severity, state, actual, expected) == ("latency_p95_ms", "critical", "resolved", 900.0, 180.0)
    assert resolved_at == T0 + timedelta(minutes=105)
    assert message_ts == T0.isoformat()
    assert alert_id == "latency_p95_ms|niche=psychology|region=cordoba@20261127T1405"


def test_cooldown_suppresses_a_refire_then_allows_one_after(receiver, store):
    sender = sender_for(receiver)
    a = latency_anomaly()
    store.process([a], [a.key], T0)
    store.process([], [a.key], T0 + timedelta(minutes=15))
    # Flaps back 30 min after it fired: inside the 1 h cooldown -> recorded, not sent.
    again = latency_anomaly(started_at=T0 + timedelta(minutes=30))
    assert store.process([again], [a.key], T0 + timedelta(minutes=30)).suppressed == 1
    assert store.process([], [a.key], T0 + timedelta(minutes=45)).resolved == 0  # never announced, no resolve
    third = latency_anomaly(started_at=T0 + timedelta(minutes=90))
    assert store.process([third], [a.key], T0 + timedelta(minutes=90)).fired == 1
    store.deliver(sender, T0 + timedelta(minutes=90))
    kinds = [r[1]["text"].split(":")[1] for r in receiver.requests]
    assert kinds == ["large_orange_circle", "white_check_mark", "large_orange_circle"]
    assert store.con.execute("SELECT count(*) FROM alerts.alert_history").fetchone()[0] == 2  # suppressed not published


def test_rerunning_the_same_evaluation_never_queues_twice(receiver, store):
    a = latency_anomaly()
    store.process([a], [a.key], T0)
    # A crashed run re-processed from scratch with a fresh state row would still hit the same message id.
    store.con.execute("DELETE FROM alerts.state")
    store.process([a], [a.key], T0)
    store.deliver(sender_for(receiver), T0)
    assert len(receiver.requests) == 1


def test_429_retry_after_is_honoured(receiver, store):
    receiver.script = [(429, {"Retry-After": "1"}, "rate_limited")]
    sender = sender_for(receiver)
    a = latency_anomaly()
    store.process([a], [a.key], T0)
    summary = store.deliver(sender, T0)
    assert (summary.delivered, summary.pending) == (1, 0)
    assert len(receiver.requests) == 2
    assert receiver.requests[1][0] - receiver.requests[0][0] >= 1.0
    assert sender.rate_limit.waits == [1.0]


def test_5xx_then_success_is_retried_with_backoff(receiver, store):
    receiver.script = [(500, {}, "internal_error"), (502, {}, "bad gateway"), (503, {}, "unavailable")]
    a = latency_anomaly()
    store.process([a], [a.key], T0)
    assert store.deliver(sender_for(receiver), T0).delivered == 1
    assert len(receiver.requests) == 4
    gaps = [receiver.requests[i + 1][0] - receiver.requests[i][0] for i in range(3)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # 0.05 x 2^attempt


def test_persistent_failure_stays_in_the_outbox_without_the_url(receiver, store):
    receiver.script = [(500, {}, "internal_error")] * 4 + [(404, {}, "no_service")]
    a = latency_anomaly()
    store.process([a], [a.key], T0)
    first = store.deliver(sender_for(receiver), T0)
    assert (first.delivered, first.failed, first.pending) == (0, 1, 1)
    message_id, attempts, error = store.pending()[0]
    assert attempts == 1 and error.startswith("HTTP 500") and "secret-token" not in error
    # Not due yet (backoff): nothing is sent.
    assert store.deliver(sender_for(receiver), T0 + timedelta(seconds=10)).failed == 0
    second = store.deliver(sender_for(receiver), T0 + timedelta(minutes=1))  # 404: kept, not dropped
    assert second.pending == 1 and store.pending()[0][2].startswith("HTTP 404")
    assert store.deliver(sender_for(receiver), T0 + timedelta(minutes=5)).delivered == 1
    assert store.pending() == []


def test_receiver_down_then_back_delivers_exactly_once_and_in_order(receiver, store):
    a = latency_anomaly()
    store.process([a], [a.key], T0)
    store.process([], [a.key], T0 + timedelta(minutes=15))  # firing and resolved both queued
    receiver.down()
    sender = SlackWebhookSender(receiver.url, backoff_factor=0.01, max_retries=1, timeout=1)
    down = store.deliver(sender, T0 + timedelta(minutes=15))
    assert (down.delivered, down.failed, down.pending) == (0, 1, 2)  # stops at the first refused connection
    receiver.up()
    back = store.deliver(sender, T0 + timedelta(hours=1))
    assert (back.delivered, back.pending) == (2, 0)
    assert store.deliver(sender, T0 + timedelta(hours=2)).delivered == 0
    texts = [r[1]["text"] for r in receiver.requests]
    assert len(texts) == 2 and "anomaly" in texts[0] and texts[1].startswith(":white_check_mark:")


def test_webhook_url_only_from_env_and_never_logged(receiver, store, monkeypatch, caplog):
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    with pytest.raises(SlackConfigError, match="SLACK_WEBHOOK_URL"):
        SlackWebhookSender()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
    receiver.script = [(500, {}, "oops")]
    caplog.set_level(logging.DEBUG)
    sender = SlackWebhookSender(backoff_factor=0.01)
    a = latency_anomaly()
    store.process([a], [a.key], T0)
    assert store.deliver(sender, T0).delivered == 1
    assert "secret-token" not in caplog.text and "secret-token" not in repr(sender)
