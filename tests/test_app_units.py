"""Executive view logic without Streamlit: formatting, sign-in, access log, queries over the fixture store.

Expected numbers are computed by hand from the fixture's rules (tests/fixtures/app/store.py); the
period used throughout is 2026-11-21..27 (day indexes 53..59), compared with 11-14..20 (46..52).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from app import auth
from app import formatting as fmt
from app.i18n import TEXTS
from app.queries import (
    PERIOD_RULES,
    Scope,
    fx_rates,
    histogram_quantile,
    kpi_series,
    latency_quantile_ms,
    mercadopago_counts,
    period_value,
)
from app.views import View, cost_by_service, kpi_cards, mom_growth, shared_split, targets_table
from pipelines.lib.catalog import load_catalog
from pipelines.lib.published import PublishedReader
from tests.fixtures.app.store import build_store

PERIOD = Scope(date(2026, 11, 21), date(2026, 11, 27))


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    build_store(root)
    return PublishedReader(root).snapshot().cursor()


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# --- formatting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decimals", "es", "en"),
    [
        (1234.56, 2, "1.234,56", "1,234.56"),
        (Decimal("1234567.005"), 2, "1.234.567,01", "1,234,567.01"),  # half-up on the exact decimal
        (-0.004, 2, "0,00", "0.00"),  # never "-0"
        (999, 0, "999", "999"),
        (-1500, 0, "-1.500", "-1,500"),
    ],
)
def test_numbers_in_both_languages(value, decimals, es, en):
    assert fmt.number(value, "es", decimals) == es
    assert fmt.number(value, "en", decimals) == en


@pytest.mark.parametrize("missing", [None, float("nan"), float("inf"), float("-inf"), Decimal("NaN")])
def test_missing_values_read_as_no_data_never_nan(missing):
    assert fmt.number(missing, "es") == "sin datos"
    assert fmt.kpi_value(missing, "usd", "en", "USD") == "no data"
    assert fmt.percent(missing, "en") == "no data"
    assert fmt.kpi_delta(missing, "ratio", "es", "USD") is None


def test_money_percent_dates_and_deltas():
    assert fmt.money(Decimal("1234.5"), "es", "USD") == "US$ 1.234,50"
    assert fmt.money(Decimal("1234.5"), "es", "ARS") == "$ 1.234,50"
    assert fmt.money(Decimal("-1234.5"), "en", "USD") == "-US$1,234.50"
    assert fmt.money(Decimal("1234.5"), "en", "ARS") == "ARS 1,234.50"
    assert fmt.percent(0.9995, "es") == "99,95 %"
    assert fmt.percent(0.9995, "en") == "99.95%"
    assert fmt.day(date(2026, 11, 27), "es") == "27/11/2026"
    assert fmt.day(date(2026, 11, 27), "en") == "2026-11-27"
    # 02:30 UTC on the 28th is 23:30 on the 27th in Argentina.
    from datetime import UTC

    assert fmt.moment(datetime(2026, 11, 28, 2, 30, tzinfo=UTC), "es") == "27/11/2026 23:30"
    assert fmt.kpi_delta(Decimal("-0.0012"), "ratio", "es", "USD") == "-0,12 p.p."
    assert fmt.kpi_delta(490, "usd", "en", "USD") == "+US$490.00"
    assert fmt.kpi_value(12.04, "minutes", "es", "USD") == "12,0 min"
    assert fmt.money_compact(Decimal("9999.5"), "es", "USD") == "US$ 9.999,50"
    assert fmt.money_compact(Decimal("309000"), "en", "USD") == "US$309,000"
    assert fmt.money_compact(Decimal("11530260"), "es", "ARS") == "$ 11,53 M"


def test_every_text_has_both_languages():
    assert all(set(v) == {"es", "en"} for v in TEXTS.values())


# --- sign-in and access log ---------------------------------------------------------------------

SECRETS = {
    "pulso": {
        "password": "shared-pw",
        "users": {"ana": {"password": "ana-pw", "roles": ["clinical"]}},
        "roles": {"dra@example.com": ["clinical"]},
    }
}


def test_password_check_accounts_shared_and_wrong():
    config = auth.load_access_config(SECRETS, {})
    assert auth.check_password(config, "ana", "ana-pw") == auth.Identity("ana", ("clinical",))
    assert auth.check_password(config, "ana", "shared-pw") is None  # a named account needs its own password
    assert auth.check_password(config, "luis", "shared-pw") == auth.Identity("luis", ())
    assert auth.check_password(config, "luis", "nope") is None
    assert auth.check_password(config, "bad name;", "shared-pw") is None
    assert auth.check_password(config, "luis", "") is None
    assert "shared-pw" not in repr(config) and "ana-pw" not in repr(config)


def test_environment_password_and_unconfigured_access():
    config = auth.load_access_config({}, {"PULSO_APP_PASSWORD": "env-pw"})
    assert auth.check_password(config, "luis", "env-pw") == auth.Identity("luis", ())
    assert not auth.load_access_config({}, {}).configured


def test_malformed_secrets_name_the_entry_not_the_value():
    with pytest.raises(auth.AccessConfigError, match=r"\[pulso.users.ana\]") as err:
        auth.load_access_config({"pulso": {"users": {"ana": {"roles": ["clinical"]}}}}, {})
    with pytest.raises(auth.AccessConfigError, match="roles") as err2:
        auth.load_access_config({"pulso": {"users": {"ana": {"password": "p4ss-x", "roles": 3}}}}, {})
    assert "p4ss-x" not in str(err.value) + str(err2.value)


def test_oidc_identity_takes_roles_by_email():
    config = auth.load_access_config(
        {**SECRETS, "auth": {"redirect_uri": "http://127.0.0.1/oauth2callback", "cookie_secret": "x"}}, {}
    )
    assert config.oidc_enabled
    assert auth.oidc_identity(config, {"is_logged_in": True, "email": "dra@example.com"}).clinical
    assert not auth.oidc_identity(config, {"is_logged_in": True, "email": "x@example.com"}).clinical
    assert auth.oidc_identity(config, {"is_logged_in": False}) is None


def test_access_log_records_user_page_and_niche_only(tmp_path: Path):
    from datetime import UTC

    path = tmp_path / "logs" / "access.log"
    auth.log_sensitive_view(
        path,
        auth.Identity("ana", ("clinical",)),
        "reliability",
        ["psychology"],
        at=datetime(2026, 11, 27, 15, 0, tzinfo=UTC),
    )
    auth.log_sensitive_view(path, auth.Identity("ana", ("clinical",)), "economics", ["psychology"])
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {
        "at": "2026-11-27T15:00:00+00:00",
        "user": "ana",
        "page": "reliability",
        "niches": ["psychology"],
    }
    assert [x["page"] for x in lines] == ["reliability", "economics"]
    assert auth.access_log_path({}) == Path("data/app_access.log")
    assert auth.access_log_path({"PULSO_APP_ACCESS_LOG": str(path)}) == path


# --- queries ------------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_like_prometheus():
    inf = float("inf")
    # 400 requests: 170 <= 0.1 s, 280 <= 0.15, 330 <= 0.2, 380 <= 0.3, 400 <= 0.5
    buckets = [(0.1, 170), (0.15, 280), (0.2, 330), (0.3, 380), (0.5, 400), (inf, 400)]
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.3)  # rank 380 ends the 0.3 bucket
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.05 * 30 / 110)
    assert histogram_quantile(0.99, [(0.1, 10), (inf, 100)]) == 0.1  # in +Inf: highest finite bound
    assert histogram_quantile(0.95, []) is None
    assert histogram_quantile(0.95, [(0.1, 0), (inf, 0)]) is None


def test_every_catalog_kpi_has_a_period_rule(catalog):
    assert set(catalog.kpi_ids) <= set(PERIOD_RULES)


def test_fx_forward_fills_the_missing_day(con):
    rates = fx_rates(con, date(2026, 11, 21), date(2026, 11, 23))
    assert rates == {
        date(2026, 11, 21): Decimal(1053),
        date(2026, 11, 22): Decimal(1053),
        date(2026, 11, 23): Decimal(1055),
    }


def test_period_values_merge_never_average(con, catalog):
    rates = fx_rates(con, PERIOD.previous().start, PERIOD.end)
    value = lambda kpi, scope=PERIOD: period_value(con, catalog, kpi, scope, rates).value  # noqa: E731
    assert value("infra_cost_usd") == Decimal("10920")  # 7 x 1000 + 10 x (53+...+59)
    assert value("infra_cost_usd", PERIOD.previous()) == Decimal("10430")
    assert value("infra_cost_usd", PERIOD.with_(currency="ARS")) == Decimal("11530260")  # day-by-day rates
    assert float(value("revenue_per_infra_usd")) == pytest.approx(81200 / 10920)
    assert float(value("infra_margin_ratio")) == pytest.approx(1 - 10920 / 81200)
    assert value("latency_p95_ms") == pytest.approx(300.0)  # merged buckets of both regions
    assert value("latency_p95_ms", PERIOD.with_(country="AR", region="cordoba")) == pytest.approx(450.0)
    assert value("mercadopago_success_ratio") == pytest.approx(141 / 151)  # Todo Pago ignored
    assert value("peak_concurrent_users") == 1590.0  # max
    assert value("arr_usd") == Decimal("309000")  # latest
    assert value("scaling_time_minutes") is None
    assert value("bookings", PERIOD.with_(niche="barber")) == pytest.approx(0.6 * 1092)
    assert value("cache_hit_ratio") == pytest.approx(0.92)  # 6,440 hits of 7,000 requests


def test_cache_hit_ratio_of_a_period_is_summed_hits_over_summed_requests(catalog):
    """Day 1: 1 hit of 4 requests (25 %); day 2: 1,000 of 1,000 (100 %). The two-day ratio is
    1,001 / 1,004 = 99.70 %: not the mean of the daily ratios (62.5 %) nor the last day's (100 %)."""
    d1, d2 = date(2026, 11, 26), date(2026, 11, 27)
    mem = duckdb.connect()
    mem.execute(
        "CREATE TABLE cache_daily (day DATE, niche VARCHAR, country VARCHAR, region VARCHAR, hits DOUBLE, requests DOUBLE)"
    )
    mem.execute(
        "INSERT INTO cache_daily VALUES (?, 'barber', 'AR', 'buenos_aires', 1, 4), "
        "(?, 'barber', 'AR', 'buenos_aires', 990, 990), (?, 'psychology', 'AR', 'cordoba', 10, 10)",
        [d1, d2, d2],
    )
    mem.execute(
        "CREATE TABLE kpi_daily (day DATE, kpi VARCHAR, niche VARCHAR, country VARCHAR, region VARCHAR, "
        "value DOUBLE, unit VARCHAR, target DOUBLE, status VARCHAR)"
    )
    mem.execute(
        "INSERT INTO kpi_daily VALUES (?, 'cache_hit_ratio', 'all', 'all', 'all', 0.25, 'ratio', 0.9, 'breach'), "
        "(?, 'cache_hit_ratio', 'all', 'all', 'all', 1.0, 'ratio', 0.9, 'ok')",
        [d1, d2],
    )
    two_days = Scope(d1, d2)
    value = period_value(mem, catalog, "cache_hit_ratio", two_days, {})
    assert value.value == pytest.approx(1001 / 1004) and value.split
    assert period_value(mem, catalog, "cache_hit_ratio", two_days.with_(niche="psychology"), {}).value == 1.0
    assert period_value(mem, catalog, "cache_hit_ratio", Scope(d1, d1), {}).value == 0.25
    assert period_value(mem, catalog, "cache_hit_ratio", two_days.with_(country="UY"), {}).value is None  # no traffic
    cards = {c.kpi: c for c in kpi_cards(View(mem, catalog, two_days, "en", {}), [catalog.kpi("cache_hit_ratio")])}
    assert cards["cache_hit_ratio"].value == "99.70%"  # the mean of ratios would read 62.50%
    assert cards["cache_hit_ratio"].help.startswith("Cache hits / cache requests, summed over the period.")


def test_latency_and_payments_by_niche(con, catalog):
    assert latency_quantile_ms(con, 0.95, PERIOD.with_(niche="psychology")) == pytest.approx(300.0)
    counts = mercadopago_counts(con, catalog, PERIOD.with_(niche="psychology"))["all"]
    assert (counts.final, counts.successful) == (84, 70)


def test_series_converts_each_day_at_its_rate(con, catalog):
    rates = fx_rates(con, PERIOD.start, PERIOD.end)
    points = kpi_series(con, catalog, ["infra_cost_usd"], PERIOD.with_(currency="ARS"), rates)["infra_cost_usd"]
    assert [p.value for p in points[:3]] == [Decimal(1530 * 1053), Decimal(1540 * 1053), Decimal(1550 * 1055)]
    assert points[0].target == Decimal(2000 * 1053)


def test_views_overview_tables_and_cards(con, catalog):
    rates = fx_rates(con, PERIOD.previous().start, PERIOD.end)
    view = View(con, catalog, PERIOD, "en", rates)
    table = targets_table(view).display.set_index("KPI")
    assert table.loc["Infrastructure cost", "Actual"] == "US$1,590.00"
    assert table.loc["Infrastructure cost", "Current target"] == "≤ US$2,000.00"
    assert table.loc["Infrastructure cost", "Month-6 target"] == "≤ US$12,000.00"
    assert table.loc["Scaling time", "Actual"] == "no data"
    assert table.loc["Scaling time", "Status"] == "● No data"
    assert table.loc["Response time p95", "Status"] == "● Off track"
    status = targets_table(view).status  # what render.py colors: one status per cell
    assert status.iloc[0].tolist() == [None, None, None, None, None, "breach"]
    assert status.iloc[7, 5] == "no_data"
    cards = {c.kpi: c for c in kpi_cards(view)}
    assert cards["infra_cost_usd"].value == "US$10,920"
    assert "US$10,920.00" in cards["infra_cost_usd"].help  # exact amount behind the short card
    assert cards["infra_cost_usd"].delta == "+US$490.00"
    assert cards["infra_cost_usd"].delta_color == "inverse"
    assert cards["infra_cost_usd"].chart == [1000.0 + 10 * i for i in range(53, 60)]
    assert cards["scaling_time_minutes"].value == "no data" and cards["scaling_time_minutes"].chart is None


def test_views_costs_exact_and_growth(con, catalog):
    rates = fx_rates(con, PERIOD.previous().start, PERIOD.end)
    view = View(con, catalog, PERIOD, "es", rates)
    services = cost_by_service(view).raw
    assert dict(zip(services.iloc[:, 0], services.iloc[:, 1], strict=True)) == {
        "web": "5460",
        "api": "4060",
        "payments": "1400",
        "total": "10920",
    }
    split = shared_split(View(con, catalog, PERIOD, "es", rates, hidden_niches=("psychology",))).display
    assert split.values.tolist() == [
        ["Barbería", "US$ 840,00", "60,0 %"],
        ["🔒 Restringido", "US$ 560,00", "40,0 %"],
        ["Total", "US$ 1.400,00", "100,0 %"],
    ]
    growth = mom_growth(view)
    assert (growth.last30, growth.previous30) == (50700.0, 32700.0)
    assert float(growth.mom) == pytest.approx(50700 / 32700 - 1)


def test_csv_twin_keeps_raw_values(con, catalog):
    import csv
    import io

    rates = fx_rates(con, PERIOD.start, PERIOD.end)
    view = View(con, catalog, PERIOD.with_(currency="ARS"), "es", rates)
    rows = list(csv.reader(io.StringIO(targets_table(view).csv().decode())))
    assert rows[0] == ["Indicador", "Real", "Meta vigente", "Meta mes 3", "Meta mes 6", "Estado"]
    cost = next(r for r in rows if r[0] == "infra_cost_usd")
    assert cost[1:6] == ["1683810", "2118000", "5295000", "12708000", "ok"]  # USD x 1059, exact
    scaling = next(r for r in rows if r[0] == "scaling_time_minutes")
    assert scaling[1] == "" and scaling[5] == "no_data"


def test_filter_on_a_dimension_the_kpi_lacks_shows_the_total_and_says_so(con, catalog):
    view = View(con, catalog, PERIOD.with_(country="AR"), "en", {})
    table = targets_table(view).display.set_index("KPI")
    assert table.loc["Infrastructure cost", "Grain"] == "total (not split)"  # cost is published by niche only
    assert table.loc["Infrastructure cost", "Actual"] == "US$1,590.00"
    assert table.loc["Bookings", "Grain"] == "" and table.loc["Bookings", "Actual"] == "159"  # AR = all of it


def test_shared_or_untagged_service_is_named(con, catalog):
    view = View(con, catalog, PERIOD, "en", {})
    assert [view.service_name(s) for s in ("web", "payments", "shared", "")] == [
        "Web",
        "Payments",
        "Shared / untagged",
        "Shared / untagged",
    ]


def test_sparkline_is_light_svg_scaled_to_its_box():
    from app.charts import sparkline_svg

    svg = sparkline_svg([10.0, 20.0, float("nan"), 15.0], height=36)
    # three finite points across the width 0..100; highest at the top margin (2), lowest at the bottom (34)
    assert '<polyline points="0.00,34.00 50.00,2.00 100.00,18.00"' in svg
    assert svg.startswith("<svg") and "script" not in svg
    assert sparkline_svg([1.0]) == "" and sparkline_svg([None, float("inf")]) == ""  # no line from <2 values
    assert '<polyline points="0.00,18.00 100.00,18.00"' in sparkline_svg([5.0, 5.0], height=36)  # flat: mid-box
