"""Personal data: known people planted in the sources never come out anywhere, and the pseudonym is keyed.

The simulator's ``tiny`` profile is written with a planted client (``--canary``: name with accents, e-mail,
phone, DNI, licence); a psychology patient and a psychology professional are planted the same way in the
event files (every line of one patient and of one professional rewritten with known values, the payer of
the patient's payments too), plus two broken lines of the patient that the loader must quarantine (one
with a bad timestamp, one cut in the middle). Then the real thing runs:

- ``python -m pipelines.build`` (the whole Dagster job, quality checks included) with ``DAGSTER_HOME`` set,
  so the run's event log is stored; key ``KEY`` from ``PULSO_PSEUDONYM_KEY``;
- the alert assets in process (5-minute counters, operational and daily anomalies, alert history,
  forecasts) with "now" inside the profile's traffic spike and the detector's minimum history shortened
  to one day (three days of data), posting to a Slack stand-in on loopback;
- ``raw_events`` again into a second warehouse with another key (``OTHER_KEY``);
- the exporter (``python -m exporters.serve``) scraped over loopback HTTP;
- the Grafana dashboards and the Prometheus/Alertmanager rule files generated;
- the executive view (AppTest over the built store) signed in through its form as a clinical user, every page.

Searched for every planted value and its variants (case-folded, without accents, surname alone, the
e-mail's local part and URL-encoded form, the DNI with and without dots, the phone whole, digits only,
without country code, the subscriber number alone, the licence with and without its space), the raw app
user ids of the planted people, and both keys: every column of every table of both warehouses (distinct
values of text columns; numbers compared to the planted numbers), the warehouses' file bytes, every
published file (bytes, and every column read back), the exporter's /metrics and its output, the
dashboards and rule files, every Slack request (body and path), every app page (every element's
protobuf), the access log, the build's stdout/stderr, every file of its Dagster home (event log),
the in-process Dagster runs' event logs, and everything logged (caplog) or written to stdout/stderr
(capfd) meanwhile. The planted values are first shown to be in the sources, and the planted people's
rows to be in the warehouse under their keyed pseudonym, so a search that found nothing had something
to find.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import hmac
import json
import logging
import os
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests
from dagster_duckdb import DuckDBResource
from streamlit.testing.v1 import AppTest

from pipelines.defs.sources.resources import MetricsSourceResource, SourceResource
from tests.test_slack import Receiver

pytestmark = [pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app" / "streamlit_app.py")
END = "2026-11-27"
DAYS = [date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)]
RANGE = {
    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
    "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
}
PAGES = ["overview", "reliability", "economics", "growth", "payments", "geography", "alerts"]
# Inside the tiny profile's traffic spike (inc-005, 2026-11-27 18:31-19:24 UTC): the alerts have something to say.
ALERTS_NOW = datetime(2026, 11, 27, 19, 15, tzinfo=UTC)

KEY = "pulso-canary-pseudonym-key-7Qx4Vb"
OTHER_KEY = "pulso-other-pseudonym-key-2Wm9Kd"
APP_USER = "dra.lectora"
APP_PASSWORD = "canary-app-Pw-5Tz8"

# The client (barber, planted by the simulator's --canary), a psychology patient and professional.
CLIENT = {
    "name": "Éowyn Quibbleworth-Zárate",
    "email": "eowyn.quibbleworth@canary.invalid",
    "phone": "+54 9 11 4817-2395",
    "dni": "38271946",
    "license_number": "MN 90421",
}
PATIENT = {
    "first_name": "Ximena",
    "last_name": "Wolfenstahl Ñúñez",
    "email": "x.wolfenstahl@canary.invalid",
    "phone": "+54 9 351 6620-4471",
    "dni": "41.093.775",
}
PROFESSIONAL = {
    "first_name": "Ludovica",
    "last_name": "Brandtmeier",
    "email": "l.brandtmeier@canary.invalid",
    "phone": "+54 9 261 3307-5518",
    "dni": "27.654.309",
    "license_number": "MP 55817",
}


# --- what is searched for -------------------------------------------------------------------------------


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _name_variants(first: str, last: str) -> set[str]:
    out = set()
    for text in (f"{first} {last}", first, last, *last.split(" ")):
        out |= {text, _ascii(text)}
    return out


def _phone_variants(phone: str) -> set[str]:
    digits = "".join(c for c in phone if c.isdigit())
    national = phone.split(" ", 2)[2]  # without "+54 9"
    subscriber = national.split(" ", 1)[1]  # without the area code
    return {
        phone,
        digits,
        "+" + digits,
        national,
        "".join(c for c in national if c.isdigit()),
        subscriber,
        subscriber.replace("-", ""),
        urllib.parse.quote(phone),
    }


def _dni_variants(dni: str) -> set[str]:
    digits = dni.replace(".", "")
    dotted = f"{int(digits):,}".replace(",", ".")
    return {digits, dotted}


def _email_variants(email: str) -> set[str]:
    return {email, email.split("@")[0], urllib.parse.quote(email)}


def personal_needles() -> dict[str, str]:
    """Every planted personal value and its variants, case-folded, mapped to what it is."""
    needles: dict[str, str] = {}

    def add(values: set[str], what: str) -> None:
        for v in values:
            needles[v.casefold()] = what

    first, last = CLIENT["name"].split(" ", 1)
    for who, person in (
        ("client", {**CLIENT, "first_name": first, "last_name": last}),
        ("patient", PATIENT),
        ("professional", PROFESSIONAL),
    ):
        add(_name_variants(person["first_name"], person["last_name"]), f"{who} name")
        add(_email_variants(person["email"]), f"{who} e-mail")
        add(_phone_variants(person["phone"]), f"{who} phone")
        add(_dni_variants(person["dni"]), f"{who} DNI")
        if "license_number" in person:
            lic = person["license_number"]
            add({lic, lic.replace(" ", "")}, f"{who} licence")
    return needles


def planted_numbers() -> dict[int, str]:
    """The planted numbers as numbers (a DNI or phone stored in a numeric column)."""
    out: dict[int, str] = {}
    first, last = CLIENT["name"].split(" ", 1)
    for who, person in (("client", CLIENT), ("patient", PATIENT), ("professional", PROFESSIONAL)):
        out[int(person["dni"].replace(".", ""))] = f"{who} DNI"
        for v in _phone_variants(person["phone"]):
            if v.lstrip("+").isdigit():
                out[int(v.lstrip("+"))] = f"{who} phone"
    return out


# --- planting ---------------------------------------------------------------------------------------------


def simulate(out: Path) -> None:
    canaries = [arg for k, v in CLIENT.items() for arg in ("--canary", f"{k}={v}")]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.simulate",
            "--profile",
            "tiny",
            "--out",
            str(out),
            "--end",
            END,
            "--quiet",
            *canaries,
        ],
        check=True,
        cwd=REPO,
    )


def _dump(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclasses.dataclass
class Planted:
    client_uid: str
    patient_uid: str
    professional_id: str
    patient_lines: int
    professional_lines: int
    broken_file: Path
    broken_rows: tuple[int, int]


def plant_psychology_people(events: Path) -> Planted:
    """Give one psychology patient and one psychology professional the planted values (every line of
    theirs), then append two broken lines of the patient to the patient's first file."""
    files = sorted(events.glob("date=*/part-*.jsonl.gz"))
    lines_of = {f: gzip.decompress(f.read_bytes()).decode("utf-8").splitlines() for f in files}
    client = patient = professional = None
    for lines in lines_of.values():
        for line in lines:
            ev = json.loads(line)
            if client is None and CLIENT["email"] in line:
                client = ev["user"]["id"]
            if ev["niche"] != "psychology":
                continue
            if patient is None and ev["type"] == "payment.updated" and ev["payload"].get("provider") == "mercadopago":
                patient = ev["user"]["id"]
            if professional is None and ev["type"] == "professional.onboarded":
                professional = ev["user"]["id"]
    assert client and patient and professional, "the tiny profile has a client, a psychology payer and professional"
    counts = {"patient": 0, "professional": 0}
    patient_file, patient_line = None, None
    for f, lines in lines_of.items():
        out = []
        for line in lines:
            ev = json.loads(line)
            uid = ev["user"]["id"]
            if uid not in (patient, professional):
                out.append(line)
                continue
            who = PATIENT if uid == patient else PROFESSIONAL
            ev["user"].update(
                name=f"{who['first_name']} {who['last_name']}", email=who["email"], phone=who["phone"], dni=who["dni"]
            )
            payer = (ev["payload"].get("payment") or {}).get("payer")
            if payer is not None:
                payer.update(
                    email=who["email"],
                    first_name=who["first_name"],
                    last_name=who["last_name"],
                    identification={"type": "DNI", "number": who["dni"]},
                )
            if uid == professional:
                ev["payload"]["license_number"] = PROFESSIONAL["license_number"]
                counts["professional"] += 1
            else:
                counts["patient"] += 1
                if patient_file is None and payer is not None:
                    patient_file, patient_line = f, ev
            out.append(_dump(ev))
        lines_of[f] = out
    assert patient_file is not None and patient_line is not None
    # Two broken lines of the patient: a timestamp the loader refuses, and a line cut after the DNI.
    bad_time = {**patient_line, "event_id": "privacy-broken-1", "occurred_at": "27/11/2026 10:30"}
    cut = _dump({**patient_line, "event_id": "privacy-broken-2"})
    cut = cut[: cut.index(PATIENT["dni"]) + len(PATIENT["dni"])]
    lines_of[patient_file] += [_dump(bad_time), cut]
    rows = (len(lines_of[patient_file]) - 1, len(lines_of[patient_file]))
    for f, lines in lines_of.items():
        f.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    return Planted(client, patient, professional, counts["patient"], counts["professional"], patient_file, rows)


# --- running the real thing ------------------------------------------------------------------------------


def build_env(root: Path, sources: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSO_", "DAGSTER_", "SLACK_"))}
    env.update(
        PULSO_SOURCES=str(sources),
        PULSO_WAREHOUSE=str(root / "warehouse.duckdb"),
        PULSO_PUBLISHED=str(root / "published"),
        PULSO_PSEUDONYM_KEY=KEY,
        PULSO_SECRETS_DIR=str(root / "secrets"),
        DAGSTER_HOME=str(root / "dagster_home"),
        PULSO_LOG_LEVEL="DEBUG",
    )  # every event on the console too: the search covers it
    return env


def resources(warehouse: Path, sources: Path) -> dict:
    return {
        "duckdb": DuckDBResource(database=str(warehouse)),
        "metrics_source": MetricsSourceResource(location=str(sources / "metrics")),
        "billing_source": SourceResource(source="billing", location=str(sources / "billing")),
        "events_source": SourceResource(source="events", location=str(sources / "events")),
        "fx_source": SourceResource(source="fx", location=str(sources / "fx")),
    }


def run_logs(instance: dg.DagsterInstance, results: list[dg.ExecuteInProcessResult]) -> str:
    """Every event-log entry (messages, metadata, step output) of in-process runs, as text."""
    return "\n".join(repr(entry) for r in results for entry in instance.all_logs(r.run_id))


def run_alerts(root: Path, sources: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> str:
    """The alert assets over the built warehouse, "now" inside the traffic spike, one day of history enough."""
    from alerts.detection.monitor import load_policy
    from pipelines.defs.alerts import assets as alert_assets

    policy = load_policy()
    short = dataclasses.replace(
        policy,
        metrics={
            m: dataclasses.replace(p, config=dataclasses.replace(p.config, min_history=timedelta(days=1)))
            for m, p in policy.metrics.items()
        },
    )
    monkeypatch.setattr(alert_assets, "load_policy", lambda: short)
    monkeypatch.setattr(alert_assets, "_now", lambda: ALERTS_NOW)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("PULSO_PUBLISHED", str(root / "published"))
    monkeypatch.setenv("PULSO_PSEUDONYM_KEY", KEY)
    instance = dg.DagsterInstance.ephemeral()
    res = resources(root / "warehouse.duckdb", sources)
    results = [
        dg.materialize([alert_assets.ops_5m], partition_key=END, resources=res, instance=instance),
        dg.materialize(
            [
                alert_assets.operational_anomalies,
                alert_assets.daily_anomalies,
                alert_assets.alert_history,
                alert_assets.kpi_forecasts,
            ],
            resources=res,
            instance=instance,
        ),
    ]
    assert all(r.success for r in results)
    return run_logs(instance, results)


def load_events_with_other_key(root: Path, sources: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from pipelines.defs.warehouse.assets import raw_events

    monkeypatch.setenv("PULSO_PSEUDONYM_KEY", OTHER_KEY)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [raw_events], resources=resources(root / "other.duckdb", sources), instance=instance, tags=RANGE
    )
    assert result.success
    monkeypatch.setenv("PULSO_PSEUDONYM_KEY", KEY)
    return run_logs(instance, [result])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_exporter(published: Path, log: Path) -> str:
    port = free_port()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporters.serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--published",
                str(published),
            ],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
                    if response.status_code == 200:
                        return response.text
                except requests.ConnectionError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(10)


def element_texts(at: AppTest) -> str:
    """Everything on the page: every element's protobuf (UTF-8 text format) and every table's cells."""
    from google.protobuf import text_format

    parts = []
    for element in at._tree:
        proto = getattr(element, "proto", None)
        if proto is not None:
            parts.append(text_format.MessageToString(proto, as_utf8=True))
        try:
            value = element.value
        except Exception:  # noqa: BLE001 -- elements without a value
            continue
        parts.append(value.to_csv() if hasattr(value, "to_csv") else str(value))
    return "\n".join(parts)


def render_app(published: Path, access_log: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Sign in through the form as a clinical user and render every page; (page, text) pairs."""
    monkeypatch.setenv("PULSO_PUBLISHED", str(published))
    monkeypatch.setenv("PULSO_APP_ACCESS_LOG", str(access_log))
    monkeypatch.delenv("PULSO_APP_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=90)
    at.secrets["pulso"] = {"users": {APP_USER: {"password": APP_PASSWORD, "roles": ["clinical"]}}}
    at.run()
    shown = [("sign-in", element_texts(at))]
    at.text_input(key="sign_in_user").input(APP_USER)
    at.text_input(key="sign_in_password").input(APP_PASSWORD)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["pulso_identity"].name == APP_USER and at.session_state["pulso_identity"].clinical
    at.date_input(key="period_es").set_value((DAYS[0], DAYS[-1]))
    at.run()
    for page in PAGES:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        shown.append((f"app page {page}", element_texts(at)))
    return shown


# --- searching -------------------------------------------------------------------------------------------

_NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
)
_NOT_TEXT = ("DATE", "TIME", "TIMESTAMP", "BOOLEAN", "INTERVAL")


def relation_places(
    con: duckdb.DuckDBPyConnection, relation: str, where: str, numbers: dict[int, str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """A relation's text columns as (place, distinct values joined) to search, planted numbers found in its
    numeric columns as (place, what), and how many columns were looked at."""
    texts, number_hits = [], []
    columns = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()  # noqa: S608
    for name, kind, *_ in columns:
        col = '"' + name.replace('"', '""') + '"'
        if kind.startswith(_NUMERIC):
            found = con.execute(
                f"SELECT DISTINCT CAST({col} AS DOUBLE) FROM {relation} "  # noqa: S608
                f"WHERE CAST({col} AS DOUBLE) IN (SELECT unnest($n::DOUBLE[]))",
                {"n": list(numbers)},
            ).fetchall()
            number_hits += [(f"{where}.{name}", numbers[int(v)]) for (v,) in found]
        elif not kind.startswith(_NOT_TEXT):
            values = con.execute(f"SELECT DISTINCT CAST({col} AS VARCHAR) FROM {relation}").fetchall()  # noqa: S608
            texts.append((f"{where}.{name}", "\n".join(v for (v,) in values if v is not None)))
    return texts, number_hits, len(columns)


def warehouse_places(
    path: Path, numbers: dict[int, str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() ORDER BY ALL"
        ).fetchall()
        texts, hits, ncols = [], [], 0
        for schema, table in tables:
            t, h, n = relation_places(con, f'"{schema}"."{table}"', f"{path.name}:{schema}.{table}", numbers)
            texts, hits, ncols = texts + t, hits + h, ncols + n
        return texts, hits, len(tables), ncols
    finally:
        con.close()


def file_places(folder: Path, label: str) -> list[tuple[str, str]]:
    """Every file under ``folder`` as text (bytes decoded; undecodable bytes replaced)."""
    return [
        (f"{label}/{p.relative_to(folder)}", p.read_bytes().decode("utf-8", "replace"))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def find(places: list[tuple[str, str]], needles: dict[str, str]) -> list[tuple[str, str, str]]:
    hits = []
    for where, text in places:
        folded = text.casefold()
        hits += [(where, what, needle) for needle, what in needles.items() if needle in folded]
    return hits


def keyed(key: str, uid: str) -> str:
    return hmac.new(key.encode(), uid.encode(), hashlib.sha256).hexdigest()


# --- the test --------------------------------------------------------------------------------------------


def test_planted_people_never_come_out_and_the_pseudonym_is_keyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    root, sources = tmp_path / "run", tmp_path / "sources"
    simulate(sources)
    planted = plant_psychology_people(sources / "events")
    needles = personal_needles()
    # The planted values are in the sources: the search below has something to find.
    source_text = "\n".join(
        gzip.decompress(p.read_bytes()).decode("utf-8") for p in sorted((sources / "events").glob("date=*/*.jsonl.gz"))
    ).casefold()
    for value in (
        CLIENT["name"],
        CLIENT["email"],
        CLIENT["phone"],
        CLIENT["dni"],
        CLIENT["license_number"],
        PATIENT["last_name"],
        PATIENT["email"],
        PATIENT["phone"],
        PATIENT["dni"],
        PROFESSIONAL["email"],
        PROFESSIONAL["license_number"],
        planted.client_uid,
        planted.patient_uid,
    ):
        assert value.casefold() in source_text, value
    assert planted.patient_lines >= 3 and planted.professional_lines >= 1

    # 1. The whole build (quality checks included) as a separate process, its run stored in DAGSTER_HOME.
    root.mkdir()
    t_build = time.monotonic()
    build = subprocess.run(
        [sys.executable, "-m", "pipelines.build"],
        cwd=REPO,
        env=build_env(root, sources),
        capture_output=True,
        text=True,
        timeout=600,
    )
    build_seconds = time.monotonic() - t_build
    assert build.returncode == 0, build.stderr[-3000:]

    # 2. Alerts to a Slack stand-in; 3. events again with another key; 4. exporter; 5. dashboards and rules.
    receiver = Receiver()
    try:
        alert_logs = run_alerts(root, sources, receiver, monkeypatch)
    finally:
        receiver.down()
    assert receiver.requests, "the alerts posted nothing: the Slack search would prove nothing"
    other_logs = load_events_with_other_key(root, sources, monkeypatch)
    metrics_text = scrape_exporter(root / "published", root / "exporter.log")
    assert "pulso_published_version" in metrics_text and 'niche="psychology"' in metrics_text
    generated = tmp_path / "generated"
    for module in ("dashboards.generate", "alerts.generate"):
        subprocess.run(
            [sys.executable, "-m", module, "--out", str(generated / module)],
            cwd=REPO,
            check=True,
            capture_output=True,
            env=build_env(root, sources),
        )
    # 6. The executive view, every page, as a clinical user.
    access_log = root / "access.log"
    pages = render_app(root / "published", access_log, monkeypatch)
    assert all("Psicología" in text for page, text in pages if page == "app page reliability")  # detail shown

    # The planted people are in the warehouse, under their keyed pseudonym only; psychology apart.
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    other = duckdb.connect(str(root / "other.duckdb"), read_only=True)
    try:

        def count(c, sql: str, *params) -> int:
            return c.execute(sql, list(params)).fetchall()[0][0]

        client_rows = count(con, "SELECT count(*) FROM raw.events WHERE user_key = ?", keyed(KEY, planted.client_uid))
        patient_rows = count(
            con, "SELECT count(*) FROM psychology.events WHERE user_key = ?", keyed(KEY, planted.patient_uid)
        )
        assert client_rows > 0 and patient_rows > 0
        assert (
            count(
                con,
                "SELECT count(*) FROM psychology.payment_updates p JOIN psychology.events e USING (event_id) "
                "WHERE e.user_key = ?",
                keyed(KEY, planted.patient_uid),
            )
            > 0
        )
        assert count(con, "SELECT count(*) FROM raw.events WHERE user_key = ?", keyed(KEY, planted.patient_uid)) == 0
        assert count(con, "SELECT count(*) FROM raw.events WHERE niche IN ('psychology', 'dentist')") == 0
        assert count(con, "SELECT count(*) FROM psychology.events WHERE niche NOT IN ('psychology', 'dentist')") == 0
        # Keyed: another key gives other ids for the same people (same rows), and neither is a plain hash.
        assert (
            count(other, "SELECT count(*) FROM raw.events WHERE user_key = ?", keyed(OTHER_KEY, planted.client_uid))
            == client_rows
        )
        assert (
            count(
                other,
                "SELECT count(*) FROM psychology.events WHERE user_key = ?",
                keyed(OTHER_KEY, planted.patient_uid),
            )
            == patient_rows
        )
        keys_a = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT user_key FROM raw.events UNION SELECT DISTINCT user_key FROM psychology.events"
            ).fetchall()
        }
        keys_b = {
            r[0]
            for r in other.execute(
                "SELECT DISTINCT user_key FROM raw.events UNION SELECT DISTINCT user_key FROM psychology.events"
            ).fetchall()
        }
        assert len(keys_a) == len(keys_b) > 100 and not keys_a & keys_b
        for uid in (planted.client_uid, planted.patient_uid):
            assert hashlib.sha256(uid.encode()).hexdigest() not in keys_a | keys_b
        # Professionals are pseudonymized too: the planted psychologist's onboarding is stored under the
        # keyed pseudonym of their app id, a different one under the other key.
        pro_sql = "SELECT DISTINCT professional_id FROM psychology.events WHERE type = 'professional.onboarded'"
        pros_a = {r[0] for r in con.execute(pro_sql).fetchall()}
        pros_b = {r[0] for r in other.execute(pro_sql).fetchall()}
        assert keyed(KEY, "professional:" + planted.professional_id) in pros_a
        assert keyed(OTHER_KEY, "professional:" + planted.professional_id) in pros_b
        assert len(pros_a) == len(pros_b) and not pros_a & pros_b
        # The two broken lines are quarantined (the file and row named), and the counts reconcile.
        loads = con.execute(
            "SELECT sum(rows_read), sum(rows_loaded), sum(rows_quarantined) FROM ops.loads WHERE source = 'events'"
        ).fetchall()[0]
        assert loads[0] == loads[1] + loads[2] and loads[2] == 2
        quarantined = con.execute(
            'SELECT source_file, row_number, reason, "row" FROM quarantine.rows '
            "WHERE source = 'events' ORDER BY row_number"
        ).fetchall()
        assert [(Path(f).name, n) for f, n, _, _ in quarantined] == [
            (planted.broken_file.name, r) for r in planted.broken_rows
        ]
        assert quarantined[0][2].startswith("occurred_at is not an ISO timestamp")
        assert quarantined[1][2].startswith("not valid JSON")
        # What quarantine keeps of the refused line: its non-personal fields and the pseudonym, withheld names.
        kept = json.loads(quarantined[0][3])
        assert (kept["event_id"], kept["occurred_at"], kept["user_key"]) == (
            "privacy-broken-1",
            "27/11/2026 10:30",
            keyed(KEY, planted.patient_uid),
        )
        assert {"user.name", "user.email", "user.phone", "user.dni", "payload.payment.payer"} <= set(kept["_withheld"])
        assert quarantined[1][3].startswith("[withheld: ")
    finally:
        con.close()
        other.close()

    # The access log: who saw which sensitive niche's detail on which page, and nothing else.
    log_records = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert log_records and all(set(r) == {"at", "user", "page", "niches"} for r in log_records)
    assert {r["user"] for r in log_records} == {APP_USER}
    assert "reliability" in {r["page"] for r in log_records}
    assert all(r["niches"] and set(r["niches"]) <= {"psychology", "dentist"} for r in log_records)

    # Search everything for every planted value, the raw ids of the planted people and both keys.
    search_needles = {
        **needles,
        planted.client_uid.casefold(): "client app user id",
        planted.patient_uid.casefold(): "patient app user id",
        planted.professional_id.casefold(): "professional app id",
        KEY.casefold(): "pseudonym key",
        OTHER_KEY.casefold(): "other pseudonym key",
    }
    numbers = planted_numbers()
    places: list[tuple[str, str]] = []
    number_hits: list[tuple[str, str]] = []
    tables = columns = 0
    for db in ("warehouse.duckdb", "other.duckdb"):
        t, h, nt, nc = warehouse_places(root / db, numbers)
        places, number_hits, tables, columns = places + t, number_hits + h, tables + nt, columns + nc
        places += [(f"{db} file bytes", (root / db).read_bytes().decode("utf-8", "replace"))]
    published = file_places(root / "published", "published")
    places += published
    reader = duckdb.connect()
    parquet_files = sorted((root / "published").rglob("*.parquet"))
    for path in parquet_files:
        t, h, nc = relation_places(reader, f"read_parquet('{path}')", f"published/{path.name}", numbers)
        places, number_hits, columns = places + t, number_hits + h, columns + nc
    reader.close()
    places += [("exporter /metrics", metrics_text), ("exporter output", (root / "exporter.log").read_text())]
    places += file_places(generated, "generated")
    places += file_places(REPO / "alerts" / "prometheus", "alerts/prometheus")
    places += file_places(REPO / "alerts" / "alertmanager", "alerts/alertmanager")
    places += [
        (f"slack request {i}", json.dumps(body, ensure_ascii=False)) for i, (_, body) in enumerate(receiver.requests)
    ]
    places += pages
    places += [("access log", access_log.read_text())]
    places += [("build stdout", build.stdout), ("build stderr", build.stderr)]
    places += file_places(root / "dagster_home", "dagster home")
    stored = dg.DagsterInstance.from_config(str(root / "dagster_home"))
    runs = stored.get_runs()
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    stored_logs = stored.all_logs(runs[0].run_id)
    assert any(e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION" for e in stored_logs)
    places += [("build run's stored event log", "\n".join(repr(e) for e in stored_logs))]
    stored.dispose()
    places += [("alert runs' event log", alert_logs), ("other-key run's event log", other_logs)]
    out, err = capfd.readouterr()
    places += [
        ("captured stdout", out),
        ("captured stderr", err),
        ("captured logs", caplog.text),
        ("captured log records", "\n".join(repr(r.__dict__) for r in caplog.records)),
    ]

    hits = find(places, search_needles)
    found = sorted({(where, what) for where, what, _ in hits} | set(number_hits))
    assert not found, f"personal data or a key found (place, what): {found}"
    print(
        f"privacy: {len(search_needles)} values and {len(numbers)} numbers searched in {len(places)} places "
        f"({tables} warehouse tables, {len(parquet_files)} published Parquet files, {columns} columns, "
        f"{len(receiver.requests)} Slack requests, {len(pages)} app pages, {len(log_records)} access log records, "
        f"{sum(len(t) for _, t in places) / 1e6:.0f} MB of text); build {build_seconds:.1f}s, "
        f"whole test {time.monotonic() - t0:.1f}s"
    )
