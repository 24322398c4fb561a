"""Alert lifecycle, outbox and history in the warehouse: one message per anomaly, never lost or doubled.

Each evaluation hands :meth:`AlertStore.process` the anomalies active now and the keys it looked at.
Per key (metric + scope) the store keeps one state row and decides:

* a new anomaly -> a *firing* message, unless the key fired less than ``cooldown`` ago (then it is
  recorded as suppressed and stays silent until it ends). The cooldown counts from the last message
  that was sent, not from a suppressed re-fire, and defaults to the alert policy's
  ``cooldown_minutes`` (``alerts/detection/policy.yaml``);
* the same anomaly again -> nothing (deduplicated); if its severity rose -> one *escalated* update
  per severity level;
* a firing key that was evaluated and is no longer anomalous -> one *resolved* message. A key that was
  not evaluated (no data) keeps its state: no data never resolves an alert.

Messages are written to ``alerts.outbox`` in the same transaction as the state, with a deterministic
id (``<alert_id>:firing`` ...) and ``INSERT OR IGNORE``, so re-running an evaluation cannot queue a
message twice. :meth:`AlertStore.deliver` sends pending messages in order; a message is marked
delivered right after Slack's 200, and one that fails stays pending with a backoff (and holds back the
later messages of its alert, so a *resolved* never overtakes its *firing*). All writes go through the
caller's DuckDB connection (Dagster's, in the ``duckdb`` pool).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from alerts.detection.explain import Contribution, CostImpact
from alerts.detection.monitor import load_policy
from alerts.slack.delivery import Sender
from alerts.slack.messages import SEVERITY_RANK, Anomaly, firing_message, resolved_message
from pipelines.lib.catalog import Catalog, load_catalog

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS alerts;
CREATE TABLE IF NOT EXISTS alerts.state (
    key VARCHAR PRIMARY KEY, alert_id VARCHAR, status VARCHAR, severity VARCHAR,
    last_fired_at TIMESTAMPTZ, anomaly VARCHAR);
CREATE TABLE IF NOT EXISTS alerts.outbox (
    message_id VARCHAR PRIMARY KEY, alert_id VARCHAR, kind VARCHAR, payload VARCHAR,
    created_at TIMESTAMPTZ, seq BIGINT, attempts INTEGER, next_attempt_at TIMESTAMPTZ,
    delivered_at TIMESTAMPTZ, last_status INTEGER, last_error VARCHAR);
CREATE SEQUENCE IF NOT EXISTS alerts.outbox_seq;
CREATE TABLE IF NOT EXISTS alerts.history (
    alert_id VARCHAR PRIMARY KEY, day DATE, key VARCHAR, kpi VARCHAR, severity VARCHAR, state VARCHAR,
    started_at TIMESTAMPTZ, resolved_at TIMESTAMPTZ, actual DOUBLE, expected DOUBLE, lower DOUBLE,
    upper DOUBLE, top_contributors VARCHAR, message_ts VARCHAR, announced BOOLEAN, score DOUBLE);
CREATE OR REPLACE VIEW alerts.alert_history AS
    SELECT day, alert_id, kpi, severity, state, started_at, resolved_at, actual, expected, lower, upper,
           top_contributors, message_ts
    FROM alerts.history WHERE announced;
"""
MAX_BACKOFF = timedelta(minutes=15)


@dataclass
class ProcessSummary:
    fired: int = 0
    escalated: int = 0
    resolved: int = 0
    suppressed: int = 0
    deduplicated: int = 0


@dataclass
class DeliverySummary:
    delivered: int = 0
    failed: int = 0
    pending: int = 0


def _finite(x: float | None) -> float | None:
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else float(x)


def anomaly_to_json(a: Anomaly) -> str:
    """Serialise an anomaly for the state table (decimals as strings, times as ISO)."""
    return json.dumps(
        {
            "key": a.key,
            "metric": a.metric,
            "name": a.name,
            "unit": a.unit,
            "scope": a.scope,
            "severity": a.severity,
            "direction": a.direction,
            "started_at": a.started_at.isoformat(),
            "observed_at": a.observed_at.isoformat(),
            "actual": _finite(a.actual),
            "expected": _finite(a.expected),
            "lower": _finite(a.lower),
            "upper": _finite(a.upper),
            "score": a.score,
            "contributors": [
                [
                    c.dimension,
                    c.value,
                    str(c.contribution),
                    None if c.share_of_deviation is None else str(c.share_of_deviation),
                ]
                for c in a.contributors
            ],
            "cost": None
            if a.cost is None
            else [
                str(a.cost.expected_spend),
                str(a.cost.actual_spend),
                str(a.cost.total_impact),
                None if a.cost.impact_percent is None else str(a.cost.impact_percent),
            ],
            "dashboard": a.dashboard,
            "app_page": a.app_page,
        }
    )


def anomaly_from_json(text: str) -> Anomaly:
    """Inverse of :func:`anomaly_to_json`."""
    d = json.loads(text)
    contributors = tuple(
        Contribution(dim, val, Decimal(c), None if s is None else Decimal(s)) for dim, val, c, s in d["contributors"]
    )
    cost = (
        None
        if d["cost"] is None
        else CostImpact(
            Decimal(d["cost"][0]),
            Decimal(d["cost"][1]),
            Decimal(d["cost"][2]),
            None if d["cost"][3] is None else Decimal(d["cost"][3]),
        )
    )
    return Anomaly(
        d["key"],
        d["metric"],
        d["name"],
        d["unit"],
        d["scope"],
        d["severity"],
        d["direction"],
        datetime.fromisoformat(d["started_at"]),
        datetime.fromisoformat(d["observed_at"]),
        d["actual"],
        d["expected"],
        d["lower"],
        d["upper"],
        d["score"],
        contributors,
        cost,
        d["dashboard"],
        d["app_page"],
    )


class AlertStore:
    """The alert state machine over a DuckDB connection (schema ``alerts``)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, catalog: Catalog | None = None, cooldown: timedelta | None = None
    ):
        self.con = con
        self.catalog = catalog or load_catalog()
        # One source for the cooldown: the policy file the detector reads, unless a caller overrides it.
        self.cooldown = cooldown if cooldown is not None else load_policy(catalog=self.catalog).cooldown
        con.execute(SCHEMA_SQL)

    # --- lifecycle -------------------------------------------------------------------------------
    def _enqueue(self, alert_id: str, kind: str, payload: dict[str, Any], now: datetime) -> None:
        self.con.execute(
            "INSERT OR IGNORE INTO alerts.outbox VALUES (?, ?, ?, ?, ?, nextval('alerts.outbox_seq'), 0, ?, NULL, NULL, NULL)",
            [f"{alert_id}:{kind}", alert_id, kind, json.dumps(payload), now, now],
        )

    def _history_upsert(self, a: Anomaly, state: str, announced: bool, resolved_at: datetime | None = None) -> None:
        tz = ZoneInfo(self.catalog.timezone)
        top = json.dumps([c.as_dict() for c in a.contributors[:5]])
        existing = self.con.execute(
            "SELECT score, message_ts FROM alerts.history WHERE alert_id = ?", [a.alert_id]
        ).fetchone()
        if existing is not None and existing[0] is not None and existing[0] > a.score and resolved_at is None:
            # Keep the values of the episode's most anomalous point; only the severity/state move.
            self.con.execute(
                "UPDATE alerts.history SET severity = ?, state = ? WHERE alert_id = ?", [a.severity, state, a.alert_id]
            )
            return
        message_ts = existing[1] if existing else None
        self.con.execute("DELETE FROM alerts.history WHERE alert_id = ?", [a.alert_id])
        self.con.execute(
            "INSERT INTO alerts.history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                a.alert_id,
                a.started_at.astimezone(tz).date(),
                a.key,
                a.metric,
                a.severity,
                state,
                a.started_at,
                resolved_at,
                _finite(a.actual),
                _finite(a.expected),
                _finite(a.lower),
                _finite(a.upper),
                top,
                message_ts,
                announced,
                a.score,
            ],
        )

    def process(self, active: Iterable[Anomaly], evaluated_keys: Iterable[str], now: datetime) -> ProcessSummary:
        """Apply one evaluation: fire, deduplicate, escalate, suppress (cooldown) or resolve per key."""
        summary = ProcessSummary()
        active_by_key = {a.key: a for a in active}
        evaluated = set(evaluated_keys) | set(active_by_key)
        self.con.execute("BEGIN TRANSACTION")
        try:
            states = {
                r[0]: r
                for r in self.con.execute(
                    "SELECT key, alert_id, status, severity, last_fired_at, anomaly FROM alerts.state"
                ).fetchall()
            }
            for key, a in active_by_key.items():
                row = states.get(key)
                status = row[2] if row else None
                if status in ("firing", "suppressed"):
                    current = anomaly_from_json(row[5])
                    # The same incident continues (even if the detector's episode restarted): keep its id.
                    merged = Anomaly(**{**a.__dict__, "started_at": current.started_at})
                    if status == "firing" and SEVERITY_RANK.get(a.severity, 0) > SEVERITY_RANK.get(row[3], 0):
                        self._enqueue(
                            merged.alert_id,
                            f"escalated-{a.severity}",
                            firing_message(merged, self.catalog, escalated=True),
                            now,
                        )
                        summary.escalated += 1
                    else:
                        summary.deduplicated += 1
                    severity = max(a.severity, row[3], key=lambda s: SEVERITY_RANK.get(s, 0))
                    merged = Anomaly(**{**merged.__dict__, "severity": severity})
                    self.con.execute(
                        "UPDATE alerts.state SET severity = ?, anomaly = ? WHERE key = ?",
                        [severity, anomaly_to_json(merged), key],
                    )
                    self._history_upsert(merged, status, announced=status == "firing")
                    continue
                last_fired = row[4] if row else None
                if last_fired is not None and now - last_fired < self.cooldown:
                    new_status = "suppressed"
                    summary.suppressed += 1
                else:
                    new_status = "firing"
                    self._enqueue(a.alert_id, "firing", firing_message(a, self.catalog), now)
                    summary.fired += 1
                    last_fired = now
                self.con.execute(
                    "INSERT OR REPLACE INTO alerts.state VALUES (?, ?, ?, ?, ?, ?)",
                    [key, a.alert_id, new_status, a.severity, last_fired, anomaly_to_json(a)],
                )
                self._history_upsert(a, new_status, announced=new_status == "firing")
            for key, row in states.items():
                if key in active_by_key or key not in evaluated or row[2] not in ("firing", "suppressed"):
                    continue
                current = anomaly_from_json(row[5])
                if row[2] == "firing":
                    self._enqueue(current.alert_id, "resolved", resolved_message(current, now, self.catalog), now)
                    summary.resolved += 1
                self.con.execute("UPDATE alerts.state SET status = 'resolved' WHERE key = ?", [key])
                self._history_upsert(current, "resolved", announced=row[2] == "firing", resolved_at=now)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        return summary

    # --- delivery --------------------------------------------------------------------------------
    def deliver(self, sender: Sender, now: datetime | None = None) -> DeliverySummary:
        """Send every due pending message in order; failures stay queued with a backoff."""
        now = now or datetime.now(UTC)
        summary = DeliverySummary()
        rows = self.con.execute(
            "SELECT message_id, alert_id, kind, payload, attempts, next_attempt_at FROM alerts.outbox "
            "WHERE delivered_at IS NULL ORDER BY seq"
        ).fetchall()
        blocked: set[str] = set()
        unreachable = False
        for message_id, alert_id, kind, payload, attempts, due in rows:
            if due > now:
                # Still backing off: it also holds back its alert's later messages (a resolve queued
                # meanwhile must not reach Slack before its firing).
                blocked.add(alert_id)
                continue
            if alert_id in blocked or unreachable:
                continue
            result = sender.send(json.loads(payload))
            if result.ok:
                # Marked delivered at once, so a later run never sends it again.
                self.con.execute(
                    "UPDATE alerts.outbox SET delivered_at = ?, attempts = ?, last_status = 200, "
                    "last_error = NULL WHERE message_id = ?",
                    [now, attempts + 1, message_id],
                )
                if kind == "firing":
                    self.con.execute(
                        "UPDATE alerts.history SET message_ts = ? WHERE alert_id = ?",
                        [now.astimezone(UTC).isoformat(), alert_id],
                    )
                summary.delivered += 1
            else:
                backoff = min(MAX_BACKOFF, timedelta(seconds=30 * 2**attempts))
                self.con.execute(
                    "UPDATE alerts.outbox SET attempts = ?, next_attempt_at = ?, last_status = ?, "
                    "last_error = ? WHERE message_id = ?",
                    [attempts + 1, now + backoff, result.status, result.error, message_id],
                )
                summary.failed += 1
                blocked.add(alert_id)
                unreachable = result.connection_failed  # the receiver is down: stop this round
        summary.pending = self.con.execute("SELECT count(*) FROM alerts.outbox WHERE delivered_at IS NULL").fetchone()[
            0
        ]
        return summary

    def pending(self) -> list[tuple[str, int, str | None]]:
        """Undelivered messages: (message_id, attempts, last_error)."""
        return self.con.execute(
            "SELECT message_id, attempts, last_error FROM alerts.outbox WHERE delivered_at IS NULL ORDER BY seq"
        ).fetchall()
