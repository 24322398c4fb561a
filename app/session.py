"""Streamlit glue shared by every page: sign-in gate, sidebar controls and the page context.

Kept thin on purpose; the logic it calls (auth, queries, formatting, views) is tested without Streamlit.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pandas as pd
import streamlit as st

from app import auth, views
from app.formatting import AR_TZ, day, moment
from app.i18n import DEFAULT_LANG, catalog_name, t
from app.queries import Scope, checked_scope, fx_rates, has_table
from pipelines.lib.catalog import ALL, Catalog, load_catalog
from pipelines.lib.published import Manifest, NotPublishedError, PublishedReader, default_root, read_manifest

CTX_KEY = "pulso_ctx"
LANG_DRAWN_KEY = "pulso_lang_drawn"
IDENTITY_KEY = "pulso_identity"
DEFAULT_DAYS = 30
# Published tables the view reads (ops_hourly is not needed: loading less keeps first render fast).
TABLES = (
    "kpi_daily",
    "slo_daily",
    "incidents",
    "cost_daily",
    "payments_daily",
    "latency_daily",
    "alert_history",
    "fx_daily",
    "cache_daily",
)


@dataclass
class PageContext:
    """Everything a page needs for one run: one published snapshot and the user's choices."""

    con: duckdb.DuckDBPyConnection
    manifest: Manifest
    catalog: Catalog
    scope: Scope
    lang: str
    identity: auth.Identity
    rates: dict[date, Decimal]
    hidden_niches: tuple[str, ...]
    first_day: date
    last_day: date
    logged: set[str] = field(default_factory=set)

    def t(self, key: str, **params: Any) -> str:
        return t(key, self.lang, **params)


def window_start(start: date, end: date) -> date:
    """First day a page over [start, end] needs (its previous period, 60 days for MoM growth), rounded
    down to a Monday so nearby choices share one loaded snapshot."""
    needed = min(Scope(start, end).previous().start, end - timedelta(days=59))
    return needed - timedelta(days=needed.weekday())


class _SharedReader:
    """One reader per (published root, window), shared by sessions, with a lock so a page gets a
    (connection, manifest) pair of the same published state."""

    def __init__(self, root: str, since: date | None = None):
        # Only the days from ``since`` on: the app never needs a year of history to draw a month, and
        # loading the window keeps the first render of the overview fast (docs/benchmarks.md).
        self.reader = PublishedReader(root, tables=TABLES, since=since)
        self.lock = threading.Lock()
        self.warming = False
        self.last_good: tuple[duckdb.DuckDBPyConnection, Manifest] | None = None

    def snapshot(self) -> tuple[duckdb.DuckDBPyConnection, Manifest]:
        with self.lock:
            error: Exception | None = None
            for attempt in range(3):
                try:
                    con, manifest = self.reader.read()  # one load: the connection and its own manifest
                    self.last_good = (con, manifest)
                    return con.cursor(), manifest
                except NotPublishedError:
                    raise  # the page says which command builds it
                except RuntimeError as exc:  # publishes landing faster than a load: wait, try again
                    error = exc
                    time.sleep(0.2 * (attempt + 1))
            if self.last_good is not None:
                # Still one complete published state, only older: better than no page at all.
                con, manifest = self.last_good
                return con.cursor(), manifest
            raise RuntimeError(str(error))


# Readers live for the process (module state survives reruns), at most a few windows per root.
_READERS: OrderedDict[tuple[str, date | None], _SharedReader] = OrderedDict()
_READERS_LOCK = threading.Lock()
MAX_READERS = 8


def _shared_reader(root: str, since: date | None) -> _SharedReader:
    with _READERS_LOCK:
        key = (root, since)
        reader = _READERS.get(key)
        if reader is None:
            reader = _READERS[key] = _SharedReader(root, since)
        _READERS.move_to_end(key)
        while len(_READERS) > MAX_READERS:
            _READERS.popitem(last=False)
        return reader


def clear_readers() -> None:
    """Forget every loaded snapshot and computed view (benchmarks measure a cold start with it)."""
    with _READERS_LOCK:
        _READERS.clear()
    with _VIEWS_LOCK:
        _VIEWS.clear()


def default_period(manifest: Manifest) -> tuple[date, date, date]:
    """(first day with data, last day, start of the default 30-day period) from the manifest alone."""
    kpi_days = manifest.days("kpi_daily")
    data_through = manifest.data.get("data_through")
    last = date.fromisoformat(data_through) if data_through else (kpi_days[-1] if kpi_days else None)
    last = last or datetime.now(AR_TZ).date()
    first = kpi_days[0] if kpi_days else last
    return first, last, max(first, last - timedelta(days=DEFAULT_DAYS - 1))


# Results of whole views (the overview's cards and targets) per published state and choice. Keyed by
# the manifest's publish id and version, so a new publish is never served from an older computation.
_VIEWS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_VIEWS_LOCK = threading.Lock()
_COMPUTING: dict[tuple[Any, ...], threading.Lock] = {}
MAX_VIEWS = 32


def memo(manifest: Manifest, name: str, choice: tuple[Any, ...], compute: Any) -> Any:
    """``compute()`` once per (published state, view name, choice); later calls reuse the result."""
    key = (str(manifest.root), manifest.version, manifest.data.get("publish_id"), name, *choice)
    with _VIEWS_LOCK:
        computing = _COMPUTING.setdefault(key, threading.Lock())
    with computing:  # a page asking while the prewarm computes the same view waits for it, not twice
        with _VIEWS_LOCK:
            if key in _VIEWS:
                _VIEWS.move_to_end(key)
                return _VIEWS[key]
        result = compute()
        with _VIEWS_LOCK:
            _VIEWS[key] = result
            _COMPUTING.pop(key, None)
            while len(_VIEWS) > MAX_VIEWS:
                _VIEWS.popitem(last=False)
        return result


def overview(
    con: duckdb.DuckDBPyConnection,
    manifest: Manifest,
    catalog: Catalog,
    scope: Scope,
    language: str,
    rates: dict[date, Decimal],
    hidden: tuple[str, ...],
) -> tuple[list[views.Card], views.Table]:
    """The overview's cards and targets table for one choice, computed once per published state."""

    def compute() -> tuple[list[views.Card], views.Table]:
        view = views.View(con, catalog, scope, language, rates, hidden)
        return views.kpi_cards(view), views.targets_table(view)

    return memo(manifest, "overview", (scope, language, hidden), compute)


def prewarm() -> None:
    """While the sign-in form is on screen, load the default period's snapshot in the background and
    compute the default overview from it, so the first page after signing in renders from memory.
    Nothing is shown before signing in."""
    root = str(default_root())
    try:
        _, last, start = default_period(read_manifest(root))
    except (NotPublishedError, OSError, ValueError, KeyError):
        return  # the page after sign-in reports it
    reader = _shared_reader(root, window_start(start, last))
    if reader.warming:
        return
    reader.warming = True

    def load() -> None:
        try:
            with contextlib.suppress(Exception):  # a failure is reported by the page's own read
                con, manifest = reader.snapshot()  # under the reader's lock: a page asking meanwhile waits
                catalog = load_catalog()
                scope = Scope(start, last)
                rates = fx_rates(con, scope.previous().start, last)
                # both roles: the overview hides sensitive niches from users without the clinical role
                for hidden in ((), catalog.sensitive_niches):
                    overview(con, manifest, catalog, scope, DEFAULT_LANG, rates, hidden)
        finally:
            reader.warming = False

    threading.Thread(target=load, name="pulso-prewarm", daemon=True).start()


LANGUAGES = ("es", "en")
CURRENCIES = ("USD", "ARS")


def lang() -> str:
    """The chosen language (session state), Spanish by default."""
    chosen = st.session_state.get("lang", DEFAULT_LANG)
    return chosen if chosen in LANGUAGES else DEFAULT_LANG


def _offered(value: Any, options: Any) -> bool:
    try:
        return value in options
    except TypeError:  # an unhashable or odd value: not one of ours
        return False


def forget_unknown(key: str, ok: Any) -> None:
    """Drop a session value the page never offered (stale, or set from outside) before its widget is
    built, so the widget falls back to its default: filters only ever hold values the page listed."""
    if key in st.session_state and not ok(st.session_state[key]):
        del st.session_state[key]


def _period_ok(value: Any, first: date, last: date) -> bool:
    days = list(value) if isinstance(value, tuple | list) else [value]
    return (
        1 <= len(days) <= 2
        and all(isinstance(d, date) and not isinstance(d, datetime) and first <= d <= last for d in days)
        and days == sorted(days)
    )


def language_switch(where: Any) -> str:
    """The language control (also shown on the sign-in page)."""
    forget_unknown("lang", lambda v: _offered(v, LANGUAGES))
    return where.radio(
        "Idioma / Language",
        ["es", "en"],
        key="lang",
        horizontal=True,
        format_func=lambda code: {"es": "Español (AR)", "en": "English"}[code],
    )


def _secrets() -> dict[str, Any]:
    try:
        return st.secrets.to_dict()
    except Exception as exc:
        if str(exc).startswith("Error parsing secrets file"):
            # Streamlit found a secrets file it cannot parse: say so (never echoing the parser's text,
            # which could quote a line of the file) instead of treating it as no configuration at all.
            raise auth.AccessConfigError(
                "the Streamlit secrets file is not valid TOML: fix it or remove it "
                "(access cannot be configured from it)"
            ) from None
        return {}  # no secrets.toml at all: the environment may still configure access


PRELOAD_KEY = "pulso-preload"
PRELOAD_TEXT = "·"  # the only text of the hidden preload elements


def preload_frontend() -> None:
    """Hidden, empty elements of the kinds the first page draws (card, table, download, date and list
    controls), so the browser fetches their scripts while the sign-in form is on screen rather than
    after it: Streamlit loads each element's code on first use. No data is in them."""
    st.html(f"<style>.st-key-{PRELOAD_KEY} {{display: none !important}}</style>")
    with st.container(key=PRELOAD_KEY):
        st.metric(PRELOAD_TEXT, PRELOAD_TEXT)
        st.table(pd.DataFrame({PRELOAD_TEXT: [PRELOAD_TEXT]}))
        st.download_button(PRELOAD_TEXT, b"", file_name="preload.txt", key="pulso_preload_download", disabled=True)
        st.date_input(PRELOAD_TEXT, value=None, key="pulso_preload_date", disabled=True, label_visibility="hidden")
        st.selectbox(PRELOAD_TEXT, [PRELOAD_TEXT], key="pulso_preload_select", disabled=True, label_visibility="hidden")


def require_identity() -> auth.Identity:
    """The signed-in user, or render the sign-in form and stop the run."""
    st.session_state.pop(LANG_DRAWN_KEY, None)
    identity = st.session_state.get(IDENTITY_KEY)
    if isinstance(identity, auth.Identity):
        return identity
    language = lang()
    try:
        config = auth.load_access_config(_secrets(), os.environ)
    except auth.AccessConfigError as exc:
        st.error(str(exc))  # names the secrets entry, never a value
        st.stop()
    if config.oidc_enabled:
        oidc = auth.oidc_identity(config, st.user.to_dict())
        if oidc is not None:
            st.session_state[IDENTITY_KEY] = oidc
            return oidc
    prewarm()
    language_switch(st.sidebar)
    st.session_state[LANG_DRAWN_KEY] = True  # this run's sidebar has the language control already
    gate = st.empty()  # the sign-in form, cleared when the user gets in
    with gate.container():
        st.title(t("app_title", language))
        if not config.configured:
            st.error(t("auth_not_configured", language))
            st.stop()
        st.write(t("sign_in_intro", language))
        with st.form("sign_in", border=True):
            user = st.text_input(t("user", language), key="sign_in_user")
            password = st.text_input(t("password", language), type="password", key="sign_in_password")
            submitted = st.form_submit_button(t("sign_in", language), type="primary")
        if config.oidc_enabled and st.button(t("sign_in_sso", language)):
            st.login()
        preload_frontend()
        if submitted:
            identity = auth.check_password(config, user, password)
            if identity is None:
                st.error(t("bad_credentials", language))
    if submitted and identity is not None:
        st.session_state[IDENTITY_KEY] = identity
        st.session_state.pop("sign_in_password", None)
        # The page is drawn in this same run (no rerun): signing in costs one script run, not two.
        gate.empty()
        return identity
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def sign_out() -> None:
    st.session_state.pop(IDENTITY_KEY, None)
    st.session_state.pop(CTX_KEY, None)


def _manifest() -> Manifest:
    try:
        return read_manifest(default_root())
    except NotPublishedError:
        st.error(t("no_store", lang()))
        st.stop()
    except (OSError, ValueError, KeyError) as exc:
        st.error(t("store_error", lang(), kind=type(exc).__name__))
        st.stop()
    raise AssertionError("unreachable")


def _snapshot(since: date | None) -> tuple[duckdb.DuckDBPyConnection, Manifest]:
    root = str(default_root())
    try:
        return _shared_reader(root, since).snapshot()
    except NotPublishedError:
        st.error(t("no_store", lang()))
        st.stop()
    except (duckdb.Error, RuntimeError, OSError, ValueError, KeyError) as exc:
        st.error(t("store_error", lang(), kind=type(exc).__name__))
        st.stop()
    raise AssertionError("unreachable")


def _niches_present(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> list[str]:
    present = set()
    if has_table(con, "kpi_daily"):
        present = {r[0] for r in con.execute("SELECT DISTINCT niche FROM kpi_daily WHERE niche <> 'all'").fetchall()}
    return [n for n in catalog.niche_ids if n in present] or [n.id for n in catalog.live_niches("now")]


def _countries_present(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> list[str]:
    present = set()
    if has_table(con, "kpi_daily"):
        present = {
            r[0] for r in con.execute("SELECT DISTINCT country FROM kpi_daily WHERE country <> 'all'").fetchall()
        }
    return [c.id for c in catalog.countries if c.id in present] or [c.id for c in catalog.live_countries("now")]


def build_context(identity: auth.Identity) -> PageContext:
    """Render the sidebar controls and return the context of this run (stored for the pages)."""
    catalog = load_catalog()
    # Drawn already when the user signed in during this run (one widget per key and run).
    language = lang() if st.session_state.pop(LANG_DRAWN_KEY, False) else language_switch(st.sidebar)
    # Bounds of the date control from the manifest alone (cheap); the data is loaded for the window
    # the chosen period needs, below.
    first, last, default_start = default_period(_manifest())
    sb = st.sidebar
    # The date format is part of the widget's identity, so there is one widget per language and the
    # chosen range is kept under our own key: switching language keeps the period.
    forget_unknown(f"period_{language}", lambda v: _period_ok(v, first, last))
    kept = st.session_state.get("pulso_period")
    if not (isinstance(kept, tuple) and len(kept) == 2 and _period_ok(kept, first, last)):
        kept = (default_start, last)
    picked = sb.date_input(
        t("date_range", language),
        value=kept,
        min_value=first,
        max_value=last,
        format="DD/MM/YYYY" if language == "es" else "YYYY-MM-DD",
        key=f"period_{language}",
    )
    if isinstance(picked, tuple | list):
        start, end = (picked[0], picked[-1]) if picked else (default_start, last)
    else:
        start = end = picked
    st.session_state["pulso_period"] = (start, end)
    con, manifest = _snapshot(window_start(start, end))
    hidden = () if identity.clinical else catalog.sensitive_niches
    niches = [ALL] + [n for n in _niches_present(con, catalog) if n not in hidden]
    niche_names = {n.id: catalog_name(n, language) for n in catalog.niches}
    # Like the period: one widget per language (labels differ), the choice kept under our own key.
    kept_niche = st.session_state.get("pulso_niche", ALL)
    forget_unknown(f"niche_{language}", lambda v: _offered(v, niches))
    niche = sb.selectbox(
        t("niche", language),
        niches,
        key=f"niche_{language}",
        index=niches.index(kept_niche) if kept_niche in niches else 0,
        format_func=lambda n: t("all", language) if n == ALL else niche_names.get(n, n),
    )
    countries = [ALL] + _countries_present(con, catalog)
    country_names = {c.id: catalog_name(c, language) for c in catalog.countries}
    kept_country = st.session_state.get("pulso_country", ALL)
    forget_unknown(f"country_{language}", lambda v: _offered(v, countries))
    country = sb.selectbox(
        t("country", language),
        countries,
        key=f"country_{language}",
        index=countries.index(kept_country) if _offered(kept_country, countries) else 0,
        format_func=lambda c: t("all", language) if c == ALL else country_names.get(c, c),
    )
    st.session_state["pulso_niche"], st.session_state["pulso_country"] = niche, country
    # Rates for the previous period too: the cards compare against it in the same currency.
    rates = fx_rates(con, Scope(start, end).previous().start, end)
    currency_options = list(CURRENCIES)
    forget_unknown("currency", lambda v: _offered(v, currency_options))
    currency = sb.radio(t("currency", language), currency_options, key="currency", horizontal=True, disabled=not rates)
    if not rates:
        currency = "USD"
        sb.caption(t("fx_missing", language))
    elif currency == "ARS" and sum(1 for d in rates if d >= start) < (end - start).days + 1:
        sb.caption(t("fx_gap", language))
    sb.divider()
    sb.caption(t("signed_in_as", language, user=identity.name))
    if sb.button(t("sign_out", language), key="sign_out"):
        sign_out()
        st.rerun()
    if hidden:
        names = ", ".join(niche_names[n] for n in hidden)
        sb.caption(t("restricted", language, niches=names))
    # Every filter came from the lists above; checked once more at the query boundary.
    scope = checked_scope(Scope(start, end, niche or ALL, country or ALL, ALL, currency), catalog)
    ctx = PageContext(con, manifest, catalog, scope, language, identity, rates, hidden, first, last)
    st.session_state[CTX_KEY] = ctx
    return ctx


def context() -> PageContext:
    """The context the entry script built for this run."""
    return st.session_state[CTX_KEY]


def header(ctx: PageContext, title_key: str) -> None:
    """Page title, freshness of the published data and the period compared."""
    st.title(ctx.t(title_key))
    published = ctx.manifest.published_at.astimezone(AR_TZ)
    through = ctx.manifest.data.get("data_through")
    complete = ctx.manifest.data.get("complete_through")
    st.caption(
        ctx.t(
            "freshness",
            published=moment(published, ctx.lang),
            through=day(date.fromisoformat(through), ctx.lang) if through else ctx.t("no_data"),
            complete=day(date.fromisoformat(complete), ctx.lang) if complete else ctx.t("no_data"),
        )
    )
    prev = ctx.scope.previous()
    st.caption(
        ctx.t(
            "period_caption",
            start=day(ctx.scope.start, ctx.lang),
            end=day(ctx.scope.end, ctx.lang),
            pstart=day(prev.start, ctx.lang),
            pend=day(prev.end, ctx.lang),
        )
    )


def record_sensitive(ctx: PageContext, page: str, niches: list[str] | set[str]) -> None:
    """Append to the access log when a (clinical) user sees a sensitive niche's detail; once per view."""
    shown = sorted(set(niches) & set(ctx.catalog.sensitive_niches))
    if not shown:
        return
    key = f"{page}|{','.join(shown)}|{ctx.scope.start}|{ctx.scope.end}|{ctx.scope.niche}|{ctx.scope.country}"
    seen: set[str] = st.session_state.setdefault("pulso_logged_views", set())
    if key in seen:
        return
    auth.log_sensitive_view(auth.access_log_path(os.environ), ctx.identity, page, shown)
    seen.add(key)
