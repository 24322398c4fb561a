"""The executive view rendered by Streamlit's AppTest over the fixture store: every page, both
languages, both currencies, the sign-in gate, the clinical role and the access log.

Period under test: 2026-11-21..27 (day indexes 53..59 of the fixture), compared with 11-14..20.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from app.auth import Identity
from app.session import PRELOAD_TEXT
from pipelines.lib.published import publish
from tests.fixtures.app.store import build_store, kpi_rows

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
PAGES = ["overview", "reliability", "economics", "growth", "payments", "geography", "alerts"]
SECRETS = {
    "pulso": {"password": "shared-Secr3t-pw", "users": {"ana": {"password": "ana-Secr3t-pw", "roles": ["clinical"]}}}
}
ANA = Identity("ana", ("clinical",))
LUIS = Identity("luis", ())


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("published")
    build_store(root)
    return root


@pytest.fixture
def env(store, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PULSO_PUBLISHED", str(store))
    monkeypatch.setenv("PULSO_APP_ACCESS_LOG", str(tmp_path / "access.log"))
    monkeypatch.delenv("PULSO_APP_PASSWORD", raising=False)
    return tmp_path / "access.log"


def texts(at: AppTest) -> str:
    """Everything the page shows as one string (titles, captions, metrics, table cells, messages)."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "caption", "markdown", "info", "error", "warning", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    for m in at.metric:
        parts += [m.label, m.value, m.delta or ""]
    for df in data_tables(at):
        parts += [str(c) for c in df.value.columns] + [str(v) for v in df.value.to_numpy().ravel()]
    parts += [str(e.proto.label) for e in at.get("download_button")]
    return "\n".join(parts)


def metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta or "") for m in data_metrics(at)}


def data_metrics(at: AppTest) -> list:
    """Cards with data (not the sign-in page's hidden, empty preload card)."""
    return [m for m in at.metric if m.label != PRELOAD_TEXT]


def data_tables(at: AppTest) -> list:
    """Tables and grids with data (not the sign-in page's hidden, empty preload table)."""
    return [*at.dataframe, *(t for t in at.table if PRELOAD_TEXT not in t.value.columns)]


def table(at: AppTest, index: int) -> list[list[str]]:
    return at.dataframe[index].value.to_numpy().tolist()


def targets(at: AppTest) -> list[list[str]]:
    """The overview's targets table (a static table, not a grid)."""
    return at.table[0].value.to_numpy().tolist()


def open_app(
    identity: Identity | None = ANA,
    lang: str = "es",
    currency: str = "USD",
    period: tuple[date, date] | None = (date(2026, 11, 21), date(2026, 11, 27)),
    niche: str | None = None,
    page: str = "overview",
) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets.update(SECRETS)
    if identity is not None:
        at.session_state["pulso_identity"] = identity
    at.run()
    if identity is None:
        return at
    if lang != "es":
        at.radio(key="lang").set_value(lang).run()
    if currency != "USD":
        at.radio(key="currency").set_value(currency)
    if period is not None:
        at.date_input(key=f"period_{lang}").set_value(period)
    if niche is not None:
        at.selectbox(key=f"niche_{lang}").set_value(niche)
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


# --- sign-in ------------------------------------------------------------------------------------


def test_nothing_is_shown_before_signing_in(env):
    at = open_app(identity=None)
    assert not at.exception
    assert not data_tables(at) and not data_metrics(at)
    assert [b.label for b in at.button] == ["Iniciar sesión"]
    assert "Ingresá para ver los datos de Pulso." in texts(at)


def test_wrong_password_is_refused_and_secrets_never_shown(env):
    at = open_app(identity=None)
    at.text_input(key="sign_in_user").input("luis")
    at.text_input(key="sign_in_password").input("guess")
    at.button[0].click().run()
    assert "Usuario o contraseña incorrectos." in texts(at)
    assert not data_tables(at) and not data_metrics(at)
    assert "pulso_identity" not in at.session_state


def test_sign_in_with_named_account_then_every_page_renders(env):
    at = open_app(identity=None)
    at.text_input(key="sign_in_user").input("ana")
    at.text_input(key="sign_in_password").input("ana-Secr3t-pw")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["pulso_identity"] == ANA
    for page in PAGES:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        shown = texts(at)
        for secret in ("ana-Secr3t-pw", "shared-Secr3t-pw"):
            assert secret not in shown
        for bad in ("nan", "NaN", "inf", "None", "Traceback"):
            assert bad not in shown.split() and "Traceback" not in shown, (page, bad)


def test_unconfigured_access_says_how_to_configure(env):
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert "PULSO_APP_PASSWORD" in texts(at)
    assert not data_tables(at)


def test_missing_store_says_which_command_builds_it(env, tmp_path, monkeypatch):
    monkeypatch.setenv("PULSO_PUBLISHED", str(tmp_path / "nothing-here"))
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["pulso_identity"] = ANA
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Todavía no hay datos publicados. Generalos con `make build` (o `make run`) y recargá la página."
    ]
    assert str(tmp_path) not in texts(at)


# --- overview -----------------------------------------------------------------------------------


def test_overview_in_spanish_usd(env):
    at = open_app()
    m = metrics(at)
    assert m["Costo de infraestructura"] == ("US$ 10.920", "+US$ 490,00")
    assert m["Tiempo de respuesta p95"] == ("300 ms", "0 ms")
    assert m["Éxito de pagos MercadoPago"][0] == "93,38 %"
    assert m["Ingresos por dólar de infraestructura"][0] == "7,44"
    assert m["Margen de infraestructura"][0] == "86,55 %"
    assert m["Usuarios concurrentes pico"] == ("1.590", "+70")
    assert m["Velocidad de escalado"] == ("sin datos", "")
    rows = {r[0]: r for r in targets(at)}
    assert rows["Costo de infraestructura"][1:6] == [
        "US$ 1.590,00",
        "≤ US$ 2.000,00",
        "≤ US$ 5.000,00",
        "≤ US$ 12.000,00",
        "● En camino",
    ]
    assert rows["Tiempo de respuesta p95"][1:6] == ["300 ms", "≤ 200 ms", "≤ 150 ms", "≤ 100 ms", "● Fuera de meta"]
    assert rows["Velocidad de escalado"][1] == "sin datos" and rows["Velocidad de escalado"][5] == "● Sin datos"
    assert rows["Ingresos anuales recurrentes"][4] == "≥ US$ 500.000,00"
    shown = texts(at)
    # the 14 KPIs with a target in force on 27/11: p95 and MP success off track, MTTR and scaling no data
    assert ":green-badge[10 en camino] :red-badge[2 fuera de meta] :gray-badge[2 sin datos]" in shown
    assert "datos hasta 27/11/2026 · cerrados hasta 26/11/2026" in shown
    assert "Período 21/11/2026 – 27/11/2026 · comparado con 14/11/2026 – 20/11/2026" in shown
    assert "Descargar CSV" in shown


def test_overview_in_english_ars(env):
    at = open_app(lang="en", currency="ARS")
    m = metrics(at)
    # sum over the days of cost x that day's rate; 2026-11-22 has no quote and uses the 21st's
    assert m["Infrastructure cost"][0] == "ARS 11.53M"  # 11,530,260 on the card's help
    assert m["MercadoPago payment success"][0] == "93.38%"
    assert m["Revenue per infra dollar"][0] == "7.44"  # a ratio: the same in any currency
    rows = {r[0]: r for r in targets(at)}
    assert rows["Infrastructure cost"][1] == "ARS 1,683,810.00"  # 1590 USD x 1059 on 2026-11-27
    assert rows["Infrastructure cost"][2] == "≤ ARS 2,118,000.00"
    assert rows["Availability (30 days)"][1:3] == ["99.95%", "≥ 99.90%"]
    assert "data through 2026-11-27 · complete through 2026-11-26" in texts(at)
    assert "Period 2026-11-21 – 2026-11-27" in texts(at)


def test_every_table_has_a_csv_download(env):
    for page in PAGES:
        at = open_app(page=page)
        downloads = [b for b in at.get("download_button")]
        assert len(downloads) == len(data_tables(at)), page
        assert all(b.proto.label == "Descargar CSV" for b in downloads)


# --- other pages --------------------------------------------------------------------------------


def test_reliability_clinical_sees_psychology_and_is_logged(env):
    at = open_app(page="reliability")
    assert table(at, 0) == [
        ["Barbería", "Argentina", "99,950 %", "50,0 %", "● En camino"],
        ["Psicología", "Argentina", "99,800 %", "50,0 %", "● Fuera de meta"],
    ]
    assert table(at, 1) == [
        ["27/11/2026 09:00", "abierto", "Barbería", "Argentina", "Córdoba", "abierto"],
        ["25/11/2026 10:50", "25/11/2026 11:02", "Barbería", "Argentina", "Buenos Aires", "12,0 min"],
        ["24/11/2026 15:00", "24/11/2026 15:05", "Psicología", "Argentina", "Córdoba", "5,0 min"],
    ]
    assert table(at, 2) == [
        ["Buenos Aires", "Argentina", "250 ms", "≤ 200 ms", "200 ms", "90,00 %", "4.200", "● Fuera de meta"],
        ["Córdoba", "Argentina", "450 ms", "≤ 200 ms", "200 ms", "60,00 %", "1.400", "● Fuera de meta"],
    ]
    assert metrics(at)["Incidentes"][0] == "3" and metrics(at)["Peor recuperación"][0] == "12,0 min"
    log = [json.loads(x) for x in env.read_text().splitlines()]
    assert [(x["user"], x["page"], x["niches"]) for x in log] == [("ana", "reliability", ["psychology"])]


def test_without_clinical_role_psychology_detail_is_hidden(env):
    at = open_app(identity=LUIS, page="reliability")
    assert [r[0] for r in table(at, 0)] == ["Barbería"]
    assert all(r[2] != "Psicología" for r in table(at, 1))
    assert "Psicología" not in at.selectbox(key="niche_es").options
    assert "El detalle de Psicología, Odontología está restringido al rol clínico." in texts(at)
    at.switch_page("app_pages/economics.py").run()
    assert [r[0] for r in table(at, 1)] == ["Barbería"]  # per-niche economics
    assert not env.exists()  # nothing sensitive was shown, nothing logged


def test_economics_in_both_currencies(env):
    at = open_app(page="economics")
    assert table(at, 1)[0][:3] == ["Barbería", "US$ 6.552,00", "US$ 48.720,00"]  # 0.6 x 10920, 0.6 x 81200
    assert table(at, 2) == [
        ["Web", "US$ 5.460,00", "50,0 %"],
        ["API", "US$ 4.060,00", "37,2 %"],
        ["Pagos", "US$ 1.400,00", "12,8 %"],
        ["Total", "US$ 10.920,00", "100,0 %"],
    ]
    assert table(at, 4) == [
        ["Barbería", "US$ 840,00", "60,0 %"],
        ["Psicología", "US$ 560,00", "40,0 %"],
        ["Total", "US$ 1.400,00", "100,0 %"],
    ]
    at = open_app(page="economics", lang="en", currency="ARS")
    services = {r[0]: r[1] for r in table(at, 2)}
    assert services["Total"] == "ARS 11,530,260.00"
    assert services["Payments"] == f"ARS {200 * (1053 + 1053 + 1055 + 1056 + 1057 + 1058 + 1059):,}.00"


def test_growth_page(env):
    at = open_app(page="growth", lang="en")
    m = metrics(at)
    assert m["MoM active-user growth"] == ("55.0%", "Goal: 50%")  # 50,700 / 32,700 - 1
    assert m["Active users"][0] == "1,980"
    assert m["Bookings"] == ("1,092", "+49")
    goals = {r[0]: r for r in table(at, 0)}
    assert goals["ARR"][1:4] == ["US$309,000.00", "≥ US$500,000.00", "61.8%"]
    assert goals["Psychologists onboarded"][1:4] == ["395", "≥ 500", "79.0%"]
    # judged against today's target (1,400 users), not the month-6 goal still months away
    assert goals["Peak concurrent users"][1:5] == ["1,590", "≥ 15,000", "10.6%", "● On track"]


def test_payments_page(env):
    at = open_app(page="payments")
    assert metrics(at)["Éxito de pagos MercadoPago"][0] == "93,38 %"
    by_method = {r[0]: r for r in table(at, 1)}
    assert by_method["visa"][1:4] == ["756", "707", "93,52 %"]
    assert by_method["master"][1:4] == ["301", "280", "93,02 %"]
    assert table(at, 2) == [
        ["cc_rejected_insufficient_amount", "35", "50,0 %"],
        ["cc_rejected_high_risk", "21", "30,0 %"],
        ["cc_rejected_other_reason", "14", "20,0 %"],
    ]
    at = open_app(page="payments", currency="ARS", lang="en")
    by_method = {r[0]: r for r in table(at, 1)}
    assert by_method["visa"][4] == "ARS 7,000,000.00"  # (90 + 10) x 10,000 ARS x 7 days, exact


def test_geography_page_and_niche_filter(env):
    at = open_app(page="geography")
    rows = {r[0]: r for r in table(at, 0)}
    assert rows["Buenos Aires"][2] == "250 ms" and rows["Córdoba"][2] == "450 ms"
    assert rows["Buenos Aires"][6] == "819" and rows["Córdoba"][6] == "273"  # bookings 0.75 / 0.25 of 1,092
    assert rows["Buenos Aires"][7] == "US$ 60.900,00"
    assert rows["Buenos Aires"][8] == "94,24 %" and rows["Córdoba"][8] == "83,33 %"  # 131/139, 10/12
    at = open_app(page="geography", niche="psychology")
    rows = {r[0]: r for r in table(at, 0)}
    assert rows["Córdoba"][8] == "83,33 %" and rows["Buenos Aires"][8] == "sin datos"
    log = [json.loads(x) for x in env.read_text().splitlines()]
    assert ("geography", ["psychology"]) in [(x["page"], x["niches"]) for x in log]


def test_alerts_empty_and_absent_then_published(env, store, tmp_path, monkeypatch):
    at = open_app(page="alerts")
    assert [e.value for e in at.info] == ["Sin alertas en el período."]
    root = tmp_path / "with-alerts"
    shutil.copytree(store, root)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE alert_history AS SELECT DATE '2026-11-26' AS day, 'al-1' AS alert_id, "
        "'infra_cost_usd' AS kpi, 'ticket' AS severity, 'firing' AS state, "
        "TIMESTAMPTZ '2026-11-26 15:00:00+00' AS started_at, NULL::TIMESTAMPTZ AS resolved_at, "
        "1250.5 AS actual, 1000.0 AS expected, 900.0 AS lower, 1100.0 AS upper, "
        '\'[{"dimension": "niche", "value": "barber", "contribution": 200.5, '
        '"share_of_deviation": 0.8}, {"dimension": "niche", "value": "psychology", '
        '"contribution": 50.0, "share_of_deviation": 0.2}]\' AS top_contributors, \'1\' AS message_ts'
    )
    publish(con, {"alert_history": "alert_history"}, [date(2026, 11, 26)], root)
    monkeypatch.setenv("PULSO_PUBLISHED", str(root))
    at = open_app(page="alerts", lang="en")
    explanation = (
        "Infrastructure cost at US$1,250.50, expected US$1,000.00 (US$900.00 – US$1,100.00) since 2026-11-26 12:00."
    )
    assert table(at, 0) == [
        [
            "2026-11-26 12:00",
            "Infrastructure cost",
            "ticket",
            "firing",
            "US$1,250.50",
            "US$900.00 – US$1,100.00",
            "Niche Barber: +US$200.50 (80.0%); Niche Psychology: +US$50.00 (20.0%)",
            explanation,
        ]
    ]
    assert explanation in [m.value for m in at.markdown]  # also on the alert's card
    at = open_app(page="alerts", identity=LUIS)  # no clinical role: psychology is not named
    assert "Vertical Barbería: +US$ 200,50 (80,0 %); Vertical 🔒 Restringido: +US$ 50,00 (20,0 %)" in texts(at)


def test_without_fx_table_money_stays_in_usd(env, store, tmp_path, monkeypatch):
    root = tmp_path / "no-fx"
    shutil.copytree(store, root)
    con = duckdb.connect()
    con.execute("CREATE TABLE fx_daily (day DATE, ars_per_usd DECIMAL(18,6))")
    from tests.fixtures.app.store import DAYS

    publish(con, {"fx_daily": "fx_daily"}, DAYS, root)  # no rows: every day dropped
    monkeypatch.setenv("PULSO_PUBLISHED", str(root))
    at = open_app()
    assert at.radio(key="currency").disabled
    assert metrics(at)["Costo de infraestructura"][0] == "US$ 10.920"
    assert "No hay cotizaciones ARS/USD publicadas (tabla `fx_daily`): los montos se muestran en USD." in texts(at)


def test_oidc_sign_in_when_configured(env):
    auth_section = {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
        "cookie_secret": "cookie-Secr3t",
        "client_id": "pulso",
        "client_secret": "client-Secr3t",
        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
    }
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets.update(
        {**SECRETS, "auth": auth_section, "pulso": {**SECRETS["pulso"], "roles": {"dra@example.com": ["clinical"]}}}
    )
    at.user = {"is_logged_in": False}
    at.run()
    assert "Ingresar con SSO" in [b.label for b in at.button] and not data_metrics(at)
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets.update(
        {**SECRETS, "auth": auth_section, "pulso": {**SECRETS["pulso"], "roles": {"dra@example.com": ["clinical"]}}}
    )
    at.user = {"is_logged_in": True, "email": "dra@example.com", "name": "Dra"}
    at.run()
    assert not at.exception
    assert at.session_state["pulso_identity"] == Identity("dra@example.com", ("clinical",))
    assert "Sesión: dra@example.com" in texts(at)
    assert all(secret not in texts(at) for secret in ("cookie-Secr3t", "client-Secr3t"))


def test_nan_or_inf_that_slips_into_the_store_reads_as_no_data(env, store, tmp_path, monkeypatch):
    root = tmp_path / "nan"
    shutil.copytree(store, root)
    con = duckdb.connect()
    frame = kpi_rows()  # noqa: F841 - read by DuckDB below
    con.execute(
        "CREATE TABLE kpi_daily AS SELECT day::DATE AS day, kpi, niche, country, region, "
        "CASE WHEN kpi = 'infra_cost_usd' AND day::DATE = DATE '2026-11-27' THEN 'NaN'::DOUBLE "
        "     WHEN kpi = 'cache_hit_ratio' THEN 'Infinity'::DOUBLE ELSE value::DOUBLE END AS value, "
        "unit, target::DOUBLE AS target, status FROM frame"
    )
    publish(con, {"kpi_daily": "kpi_daily"}, [date(2026, 11, 27)], root)
    monkeypatch.setenv("PULSO_PUBLISHED", str(root))
    at = open_app(lang="en")
    rows = {r[0]: r for r in targets(at)}
    assert rows["Infrastructure cost"][1] == "no data" and rows["Cache hit rate"][1] == "no data"
    assert rows["Infrastructure cost"][5] == "● No data"
    # the card sums the six days that have a value: 10,920 - 1,590
    assert metrics(at)["Infrastructure cost"][0] == "US$9,330.00"
    shown = texts(at)
    assert not {"nan", "NaN", "inf", "Infinity"} & set(shown.replace("%", " ").split())


def test_country_filter_and_sign_out(env):
    at = open_app()
    at.selectbox(key="country_es").set_value("AR").run()
    rows = {r[0]: r for r in targets(at)}
    assert rows["Costo de infraestructura"][6] == "total (sin apertura)"  # cost is published by niche only
    assert rows["Reservas"][1] == "159" and rows["Reservas"][6] == ""  # 100 + 59 bookings, all in Argentina
    at.button(key="sign_out").click().run()
    assert not data_metrics(at) and not data_tables(at)
    assert "Iniciar sesión" in [b.label for b in at.button]
