"""Secrets: the Slack webhook, the AWS keys and the app passwords never appear in logs, errors, pages,
messages, the warehouse or the published files -- on the failure paths too.

Each secret is a recognisable canary, searched (case-folded, and URL-quoted where it travels in a URL) in
everything the code under test produced: every log record (caplog at DEBUG, with its arguments) and
everything written to stdout/stderr (capfd), the Dagster runs' event logs, the str/repr/traceback of
every exception, every page element of the app, the session state after signing in, every column of the
warehouse and its file bytes, every published file, every message the Slack stand-in received.

- Slack (``SLACK_WEBHOOK_URL`` = a loopback URL whose path holds the canary): the real alert assets
  (``daily_anomalies`` + ``alert_history`` via ``dg.materialize``) over a published cost spike while the
  receiver answers 500 (its body echoing the request path, as some proxies do) then 404, is down
  (connection refused), then answers 200 and the alert is delivered and published; a webhook that is not
  an http(s) URL is refused with a message naming the variable, not its value.
- AWS (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``): events and FX loaded from a moto S3 server by the
  Dagster assets; then a moto server that checks credentials refuses the same keys (``S3Storage`` errors,
  and an asset run that fails on them).
- App (Streamlit secrets, ``PULSO_APP_PASSWORD``): wrong passwords typed (a near miss, the shared password
  for a named account, the environment's password for an unknown user), right ones (every page), and
  malformed secrets: a TOML syntax error on the password's line, a password that is not a string, a users
  entry that is not a table, a user without password.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import logging
import os
import subprocess
import sys
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import requests
import streamlit
from dagster_duckdb import DuckDBResource
from streamlit.runtime.secrets import Secrets
from streamlit.testing.v1 import AppTest

from alerts.slack.delivery import SlackConfigError, SlackWebhookSender
from pipelines.defs.sources.resources import SourceResource
from pipelines.lib.sources.s3 import S3Storage
from pipelines.lib.storage import SourceError
from tests.fixtures.app.store import build_store
from tests.fixtures.sources.servers import LOOPBACK, free_port, moto_endpoint, new_bucket, upload_tree
from tests.test_alerts_pipeline import published_cost
from tests.test_reliability_privacy import file_places, find, warehouse_places
from tests.test_slack import Receiver

__all__ = ["moto_endpoint", "published_cost"]  # pytest fixtures used by name below

pytestmark = [pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app" / "streamlit_app.py")
PAGES = ["overview", "reliability", "economics", "growth", "payments", "geography", "alerts"]

SLACK_CANARY = "hookCanary-Xq7Rz3Lm9"
AWS_KEY_ID = "AKIACANARY7Q3R9XW2LM"
AWS_SECRET = "canarySecret/7q3R9+xw2LMnb4TyP0aKc8dEf"
SHARED_PASSWORD = "Canary-Shared-Pw-4rT9"
ANA_PASSWORD = "Canary-Ana-Pw-8kL2"
ENV_PASSWORD = "Canary-Env-Pw-6hN1"


def needles(*secrets: str) -> dict[str, str]:
    """Each secret, case-folded, and its URL-quoted forms (it may travel inside a URL)."""
    out = {}
    for s in secrets:
        for v in (s, urllib.parse.quote(s), urllib.parse.quote(s, safe="")):
            out[v.casefold()] = s
    return out


def exception_text(exc: BaseException) -> str:
    """str, repr and the whole traceback (with the chained causes) of an exception."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def captured(capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    out, err = capfd.readouterr()
    return [
        ("stdout", out),
        ("stderr", err),
        ("logs", caplog.text),
        ("log records", "\n".join(repr(r.__dict__) for r in caplog.records)),
    ]


def run_logs(instance: dg.DagsterInstance, results: list) -> str:
    return "\n".join(repr(entry) for r in results for entry in instance.all_logs(r.run_id))


def assert_nothing_found(places: list[tuple[str, str]], secrets: dict[str, str]) -> None:
    hits = sorted({(where, what) for where, what, _ in find(places, secrets)})
    assert not hits, f"a secret was found (place, secret): {hits}"


# --- Slack ---------------------------------------------------------------------------------------------


class CanaryReceiver(Receiver):
    """The Slack stand-in at a webhook URL whose path holds the canary."""

    path = f"/services/T0CANARY/B0CANARY/{SLACK_CANARY}"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.path}"


def test_slack_webhook_never_appears_even_when_delivery_fails(
    tmp_path: Path, published_cost, monkeypatch, caplog, capfd
) -> None:
    from pipelines.defs.alerts import assets as alert_assets

    caplog.set_level(logging.DEBUG)
    published, _ = published_cost
    receiver = CanaryReceiver()
    secrets = needles(SLACK_CANARY)
    places: list[tuple[str, str]] = []
    try:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
        t0 = datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
        instance = dg.DagsterInstance.ephemeral()
        resources = {"duckdb": DuckDBResource(database=str(tmp_path / "warehouse.duckdb"))}
        assets = [alert_assets.daily_anomalies, alert_assets.alert_history]
        results, metas = [], []

        def run(now: datetime) -> dict:
            monkeypatch.setattr(alert_assets, "_now", lambda: now)
            result = dg.materialize(assets, resources=resources, instance=instance)
            assert result.success
            results.append(result)
            meta = {
                k: v.value for k, v in result.asset_materializations_for_node("daily_anomalies")[0].metadata.items()
            }
            metas.append(meta)
            return meta

        # 1. Every attempt answered 500 (the body echoing the path), then 404: kept in the outbox.
        echo = f"no route for {receiver.path}"
        receiver.script = [(500, {}, f"internal_error: {echo}")] * 4 + [(404, {}, f"no_service: {echo}")]
        assert run(t0)["delivery_failures"] == 1
        assert run(t0 + timedelta(hours=1))["delivery_failures"] == 1
        assert len(receiver.requests) == 5  # 4 attempts (3 retries) of the first send, 1 of the second
        # 2. The receiver down: connection refused, still kept.
        receiver.down()
        assert run(t0 + timedelta(hours=2))["delivery_failures"] == 1
        receiver.up()
        # 3. Back: delivered once, published in alert_history.
        receiver.script = []
        assert run(t0 + timedelta(hours=3))["delivered"] == 1
        assert len(receiver.requests) == 6
        bodies = [json.dumps(body, ensure_ascii=False) for _, body in receiver.requests]
        assert "Infrastructure cost" in bodies[-1]
        places += [(f"slack message {i}", b) for i, b in enumerate(bodies)]
        places += [("dagster event logs", run_logs(instance, results)), ("asset metadata", repr(metas))]
    finally:
        receiver.down()
    # The outbox kept each failure's reason, without the URL.
    import duckdb

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        errors = [r[0] for r in con.execute("SELECT last_error FROM alerts.outbox").fetchall()]
    finally:
        con.close()
    assert errors == [None]  # delivered at last: the error is cleared ...
    # ... so the failures' texts are checked where they were kept meanwhile: the run metadata and logs, and
    # the sender's own results below.
    sender = SlackWebhookSender(receiver.url, backoff_factor=0.01, max_retries=0, timeout=1)
    down = sender.send({"text": "x"})  # the receiver is down now
    assert not down.ok and down.connection_failed
    places += [("send result (down)", repr(down)), ("sender repr", repr(sender))]
    again = CanaryReceiver()
    try:
        again.script = [(500, {}, f"internal_error: no route for {again.path}")]
        failed = SlackWebhookSender(again.url, backoff_factor=0.01, max_retries=0).send({"text": "x"})
    finally:
        again.down()
    assert failed.status == 500 and failed.error.startswith("HTTP 500: internal_error: no route for ")
    places += [("send result (500)", repr(failed))]
    # A webhook that is not an http(s) URL: refused, the variable named, not its value.
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"hooks.slack.com/services/T0/B0/{SLACK_CANARY}")
    with pytest.raises(SlackConfigError, match="SLACK_WEBHOOK_URL") as info:
        SlackWebhookSender()
    places += [("config error", exception_text(info.value))]
    places += warehouse_places(tmp_path / "warehouse.duckdb", {})[0]
    places += [("warehouse file bytes", (tmp_path / "warehouse.duckdb").read_bytes().decode("utf-8", "replace"))]
    places += file_places(published, "published")
    places += captured(capfd, caplog)
    assert_nothing_found(places, secrets)


def test_outbox_error_of_a_failed_send_never_holds_the_webhook(tmp_path: Path, published_cost, monkeypatch) -> None:
    """The outbox row of a message that could not be delivered (500 echoing the path, then refused)."""
    from pipelines.defs.alerts import assets as alert_assets

    receiver = CanaryReceiver()
    try:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
        monkeypatch.setattr(alert_assets, "_now", lambda: datetime(2026, 11, 1, 13, 0, tzinfo=UTC))
        receiver.script = [(500, {}, f"internal_error: no route for {receiver.path}")] * 4
        resources = {"duckdb": DuckDBResource(database=str(tmp_path / "w.duckdb"))}
        assert dg.materialize([alert_assets.daily_anomalies], resources=resources).success
    finally:
        receiver.down()
    import duckdb

    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT attempts, last_status, last_error FROM alerts.outbox").fetchall()
        places = warehouse_places(tmp_path / "w.duckdb", {})[0]
    finally:
        con.close()
    assert rows[0][:2] == (1, 500) and rows[0][2].startswith("HTTP 500: internal_error: no route for ")
    places += [("warehouse file bytes", (tmp_path / "w.duckdb").read_bytes().decode("utf-8", "replace"))]
    assert_nothing_found(places, needles(SLACK_CANARY))


# --- AWS -----------------------------------------------------------------------------------------------


def aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("PULSO_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def source_tree(root: Path) -> int:
    """Three events of one day and the FX file; returns the number of events."""
    folder = root / "events" / "date=2026-11-25"
    folder.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "event_id": f"e{i}",
                "type": "session.started",
                "occurred_at": f"2026-11-25T13:00:0{i}Z",
                "niche": "barber",
                "country": "AR",
                "region": "buenos_aires",
                "user": {"id": f"u{i}"},
                "payload": {"session_id": f"s{i}"},
            }
        )
        for i in range(3)
    ]
    (folder / "part-0000.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    (root / "fx").mkdir()
    (root / "fx" / "ars_usd.csv").write_text("date,ars_per_usd\n2026-11-25,1000.5\n")
    return len(lines)


@contextlib.contextmanager
def checking_moto(workdir: Path) -> Iterator[str]:
    """A moto S3 server (its own process) that checks credentials from the first request: keys it never
    issued are refused, as AWS refuses wrong ones. Stopped by its own pid."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    with (workdir / "moto.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            url = f"http://{LOOPBACK}:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    requests.get(f"{url}/moto-api/data.json", timeout=5)
                    break
                except requests.ConnectionError:
                    assert proc.poll() is None and time.monotonic() < deadline, (workdir / "moto.log").read_text()
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def test_aws_keys_never_appear_with_right_or_wrong_credentials(
    tmp_path: Path, moto_endpoint: str, monkeypatch, caplog, capfd
) -> None:
    from pipelines.defs.warehouse.assets import raw_events, raw_fx

    aws_env(monkeypatch, moto_endpoint)
    events = source_tree(tmp_path / "src")
    bucket = f"pulso-secrets-{uuid.uuid4().hex[:10]}"
    new_bucket(bucket)  # the test's own set-up (a bare boto3 client) is not searched; Pulso's code is
    upload_tree(tmp_path / "src", bucket, "pulso")
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.DEBUG)

    def resources(warehouse: str) -> dict:
        return {
            "duckdb": DuckDBResource(database=str(tmp_path / warehouse)),
            "events_source": SourceResource(source="events", location=f"s3://{bucket}/pulso/events"),
            "fx_source": SourceResource(source="fx", location=f"s3://{bucket}/pulso/fx"),
        }

    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setenv("PULSO_PARTITION_START", "2026-11-25")
    monkeypatch.setenv("PULSO_PSEUDONYM_KEY", "secrets-test-key")
    good = dg.materialize(
        [raw_events, raw_fx], resources=resources("warehouse.duckdb"), instance=instance, partition_key="2026-11-25"
    )
    assert good.success
    import duckdb

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM raw.events").fetchall() == [(events,)]
        assert con.execute("SELECT count(*) FROM raw.fx_rates").fetchall() == [(1,)]
    finally:
        con.close()

    places: list[tuple[str, str]] = []
    with checking_moto(tmp_path) as checking:
        monkeypatch.setenv("PULSO_S3_ENDPOINT_URL", checking)
        storage = S3Storage(bucket, "pulso")
        for call in (
            lambda: storage.list("events"),
            lambda: storage.read_bytes("fx/ars_usd.csv"),
            lambda: storage.exists("fx/ars_usd.csv"),
        ):
            with pytest.raises(SourceError) as info:
                call()
            message = str(info.value)  # a HEAD answer has no body: a bare 403 is "access denied"
            assert message.startswith(f"s3://{bucket}/pulso/")
            assert message.endswith((": access denied", ": S3 error InvalidAccessKeyId")), message
            places.append(("S3 error", exception_text(info.value)))
        bad = dg.materialize(
            [raw_events],
            resources=resources("refused.duckdb"),
            instance=instance,
            partition_key="2026-11-25",
            raise_on_error=False,
        )
    assert not bad.success
    failure = bad.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert f"s3://{bucket}/pulso/events" in failure and ("access denied" in failure or "InvalidAccessKeyId" in failure)
    places += [("dagster step failure", failure), ("dagster event logs", run_logs(instance, [good, bad]))]
    gc.collect()  # the failed run's traceback frames held its warehouse connection
    for db in ("warehouse.duckdb", "refused.duckdb"):
        if (tmp_path / db).exists():
            places += warehouse_places(tmp_path / db, {})[0]
            places += [(f"{db} file bytes", (tmp_path / db).read_bytes().decode("utf-8", "replace"))]
    places += captured(capfd, caplog)
    assert_nothing_found(places, needles(AWS_KEY_ID, AWS_SECRET))


# --- the app's passwords -------------------------------------------------------------------------------

SECRETS = {"pulso": {"password": SHARED_PASSWORD, "users": {"ana": {"password": ANA_PASSWORD, "roles": ["clinical"]}}}}
APP_SECRETS = (SHARED_PASSWORD, ANA_PASSWORD, ENV_PASSWORD)


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "published"
    build_store(root)
    monkeypatch.setenv("PULSO_PUBLISHED", str(root))
    monkeypatch.setenv("PULSO_APP_ACCESS_LOG", str(tmp_path / "access.log"))
    monkeypatch.delenv("PULSO_APP_PASSWORD", raising=False)
    return root


def open_app(secrets: dict | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if secrets is not None:
        at.secrets.update(secrets)
    at.run()
    return at


def sign_in(secrets: dict | None, user: str, password: str) -> AppTest:
    at = open_app(secrets)
    at.text_input(key="sign_in_user").input(user)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click().run()
    return at


def app_state(at: AppTest) -> str:
    """Everything the app keeps in the session (widget values included)."""
    return "\n".join(f"{k}={at.session_state[k]!r}" for k in list(at.session_state))


def page(at: AppTest) -> str:
    """Every element as drawn (its protobuf: what the browser receives), tables' cells, and any exception.
    A text input's own value is the user's typing held in their session, never sent back to the
    browser (the password field's protobuf carries no value), so it is not part of the page."""
    from google.protobuf import text_format

    parts = []
    for element in at._tree:
        if getattr(element, "proto", None) is not None:
            parts.append(text_format.MessageToString(element.proto, as_utf8=True))
        if type(element).__name__ != "TextInput":
            try:
                value = element.value
            except Exception:  # noqa: BLE001 -- elements without a value
                continue
            parts.append(value.to_csv() if hasattr(value, "to_csv") else str(value))
    parts += [exception_text_of(e) for e in at.exception]
    return "\n".join(parts)


def exception_text_of(element) -> str:
    return f"{element.message}\n{element.stack_trace}"


def test_app_password_never_shown_wrong_or_right(app_env: Path, monkeypatch, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PULSO_APP_PASSWORD", ENV_PASSWORD)
    places: list[tuple[str, str]] = []
    wrong = [
        ("ana", ANA_PASSWORD[:-1] + "X"),
        ("ana", SHARED_PASSWORD),
        ("ana", ENV_PASSWORD),
        ("luis", ENV_PASSWORD[:-1] + "Z"),
        ("luis", ""),
    ]
    for user, typed in wrong:
        at = sign_in(SECRETS, user, typed)
        assert not at.exception, at.exception
        assert "pulso_identity" not in at.session_state
        assert [e.value for e in at.error] == ["Usuario o contraseña incorrectos."] or typed == ""
        places += [(f"wrong password page ({user})", page(at))]
    # Right: a named account (every page) and the environment's shared password.
    at = sign_in(SECRETS, "ana", ANA_PASSWORD)
    assert not at.exception and at.session_state["pulso_identity"].name == "ana"
    places += [("session state after signing in", app_state(at))]
    for name in PAGES:
        at.switch_page(f"app_pages/{name}.py").run()
        assert not at.exception, (name, at.exception)
        places += [(f"page {name}", page(at))]
    at = sign_in(SECRETS, "luis", ENV_PASSWORD)
    assert not at.exception and at.session_state["pulso_identity"].name == "luis"
    places += [("page after the shared password", page(at)), ("session state (luis)", app_state(at))]
    places += captured(capfd, caplog)
    assert_nothing_found(places, needles(*APP_SECRETS))


@pytest.mark.parametrize(
    "case",
    ["toml syntax error", "password not a string", "users not a table", "user without password", "roles not a list"],
)
def test_malformed_secrets_never_show_a_password(
    app_env: Path, tmp_path: Path, monkeypatch, caplog, capfd, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    if case == "toml syntax error":  # the password unquoted: the whole file is refused by the TOML parser
        path = tmp_path / "secrets.toml"
        from streamlit import config

        saved = config.get_option("secrets.files")
        config.set_option("secrets.files", [str(path)])
        try:
            # The file is read: quoted, the same file gives a sign-in form ...
            path.write_text(f'[pulso]\npassword = "{SHARED_PASSWORD}"\n')
            monkeypatch.setattr(streamlit, "secrets", Secrets())
            assert open_app(None).text_input(key="sign_in_password")
            # ... unquoted, the TOML parser refuses the whole file.
            path.write_text(f'[pulso]\npassword = {SHARED_PASSWORD}\n[pulso.users.ana]\npassword = "{ANA_PASSWORD}"\n')
            monkeypatch.setattr(streamlit, "secrets", Secrets())
            at = open_app(None)
        finally:
            config.set_option("secrets.files", saved)
        expected = "secrets file is not valid TOML"
    else:
        secrets = {
            "password not a string": {"pulso": {"password": [SHARED_PASSWORD]}},
            "users not a table": {"pulso": {"password": SHARED_PASSWORD, "users": ANA_PASSWORD}},
            "user without password": {"pulso": {"users": {"ana": {"pasword": ANA_PASSWORD}}}},
            "roles not a list": {"pulso": {"users": {"ana": {"password": ANA_PASSWORD, "roles": {"x": ANA_PASSWORD}}}}},
        }[case]
        at = open_app(secrets)
        expected = "secrets [pulso"
    shown = page(at)
    assert not at.exception, at.exception
    assert expected in shown  # a clear message, naming the entry
    assert not at.text_input  # no sign-in form over a broken configuration
    places = [("page", shown), ("session state", app_state(at)), *captured(capfd, caplog)]
    assert_nothing_found(places, needles(*APP_SECRETS))
