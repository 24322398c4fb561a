"""The executive view's filters cannot inject SQL (issue #7, item 7).

Hostile filter values are pushed in two ways: into the query module directly (bypassing the app's
controls) and into a running app's session state (where a tampered or stale session would put them).
Every query binds its values as parameters and groups only by allow-listed columns, so: no error page,
no stack trace, no rows outside the filter, and the published files stay byte for byte the same.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import queries
from app.auth import Identity
from app.queries import Scope, ScopeError, checked_scope
from pipelines.lib.catalog import load_catalog
from pipelines.lib.published import PublishedReader
from tests.fixtures.app.store import build_store

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
PERIOD = Scope(date(2026, 11, 21), date(2026, 11, 27))
HOSTILE = [
    "'; DROP TABLE kpi_daily; --",
    "' OR 1=1 --",
    "barber' OR '1'='1",
    'barber" OR "1"="1',
    "all' UNION SELECT * FROM duckdb_settings() --",
    "ñandú 🦀 \u202egnp.exe",  # unicode, with a right-to-left override
    "barber\x00",
    "x" * 1_000_000,  # a huge value
]


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under the published root with its content hash."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("published")
    build_store(root)
    return root


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_query_module_binds_every_filter_value(store, hostile):
    before = fingerprint(store)
    catalog = load_catalog()
    con = PublishedReader(store).read().con
    counts = {
        t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]  # noqa: S608 - fixed names
        for t in ("kpi_daily", "cost_daily", "payments_daily", "incidents", "cache_daily")
    }
    rates = queries.fx_rates(con, PERIOD.start, PERIOD.end)
    for column in ("niche", "country", "region"):
        # (a region is only published within a country)
        scope = PERIOD.with_(**{column: hostile}, **({"country": "AR"} if column == "region" else {}))
        # the app's boundary check refuses it, without echoing the value back
        with pytest.raises(ScopeError) as refused:
            checked_scope(scope, catalog)
        assert hostile[:20] not in str(refused.value)
        # and the queries themselves, given the value anyway, match no row: nothing outside the filter
        # (KPIs published by niche, country and region: a KPI without a dimension shows its total)
        assert queries.kpi_series(con, catalog, ["peak_concurrent_users", "cache_hit_ratio"], scope, rates) == {
            "peak_concurrent_users": [],
            "cache_hit_ratio": [],
        }
        assert queries.period_value(con, catalog, "peak_concurrent_users", scope, rates).value is None
        assert queries.incidents(con, scope) == []
        assert queries.payments_by(con, catalog, scope, "payment_method") == []
        assert queries.rejections(con, scope) == []
        assert queries.latency_buckets(con, scope) == []
        assert queries.cache_counts(con, scope) is None
        assert queries.mercadopago_counts(con, catalog, scope) == {}
        if column != "region":  # (a niche x country table)
            assert queries.availability_by_niche_country(con, PERIOD.end, scope) == []
        if column == "niche":
            assert queries.cost_by(con, scope, "service", rates) == {}
    # a grouping column is never caller text
    with pytest.raises(ValueError, match="cannot group"):
        queries.cost_by(con, PERIOD, hostile, rates)
    with pytest.raises(ValueError, match="cannot group"):
        queries.payments_by(con, catalog, PERIOD, hostile)
    # nothing was dropped or changed, in the snapshot or on disk
    for table, n in counts.items():
        assert con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0] == n  # noqa: S608 - fixed names
    assert fingerprint(store) == before


def test_scope_check_accepts_catalog_values_and_refuses_odd_types():
    catalog = load_catalog()
    assert checked_scope(PERIOD.with_(niche="barber", country="AR", region="cordoba", currency="ARS"), catalog)
    for bad in (
        PERIOD.with_(niche=None),
        PERIOD.with_(country=["AR"]),
        PERIOD.with_(currency="EUR' --"),
        PERIOD.with_(start=PERIOD.end, end=PERIOD.start),
        PERIOD.with_(start="2026-11-01"),
    ):
        with pytest.raises(ScopeError):
            checked_scope(bad, catalog)


def _overview(store: Path, tamper: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets.update({"pulso": {"password": "shared-Secr3t-pw"}})
    at.session_state["pulso_identity"] = Identity("ana", ("clinical",))
    for key, value in (tamper or {}).items():
        at.session_state[key] = value
    at.run()
    return at


def _shown(at: AppTest) -> str:
    parts = [
        str(e.value)
        for kind in ("title", "caption", "markdown", "error", "warning", "exception")
        for e in getattr(at, kind)
    ]
    parts += [f"{m.label}={m.value}|{m.delta}" for m in at.metric]
    parts += [str(v) for df in [*at.dataframe, *at.table] for v in df.value.to_numpy().ravel()]
    return "\n".join(parts)


def test_tampered_session_filters_fall_back_to_defaults(store, tmp_path, monkeypatch):
    """Every filter's session value set to hostile text: the page renders as if untouched (the default
    period, all niches and countries, Spanish, USD), with no error and no stack trace."""
    monkeypatch.setenv("PULSO_PUBLISHED", str(store))
    monkeypatch.setenv("PULSO_APP_ACCESS_LOG", str(tmp_path / "access.log"))
    before = fingerprint(store)
    clean = _overview(store)
    assert not clean.exception and clean.metric
    for hostile in (HOSTILE[0], HOSTILE[1], HOSTILE[5], HOSTILE[7]):
        tamper = {
            key: hostile for key in ("pulso_niche", "pulso_country", "niche_es", "country_es", "lang", "currency")
        }
        tamper.update(pulso_period=(hostile, hostile), period_es=hostile)
        at = _overview(store, tamper)
        assert not at.exception, at.exception
        assert not at.error
        shown = _shown(at)
        assert "Traceback" not in shown and hostile[:20] not in shown
        assert shown == _shown(clean)  # same numbers as the untouched page: no row outside the filter
    assert fingerprint(store) == before
