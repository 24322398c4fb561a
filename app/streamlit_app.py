"""Pulso executive view: entry point (``make app`` = ``streamlit run app/streamlit_app.py``).

Signs the user in, renders the shared controls, then runs the chosen page of ``app_pages/``. Reads only
published data (``PULSO_PUBLISHED``) through ``PublishedReader``; never the warehouse.
"""

import sys
from pathlib import Path

# `streamlit run app/streamlit_app.py` puts app/ on sys.path; the packages live one level up.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from app import charts, session, views  # noqa: E402, F401 - imported up front: the sign-in page pays for it, not the first page
from app.i18n import t  # noqa: E402

st.set_page_config(page_title="Pulso", page_icon=":material/monitoring:", layout="wide")

identity = session.require_identity()
ctx = session.build_context(identity)
lang = ctx.lang
pages = [
    st.Page("app_pages/overview.py", title=t("page_overview", lang), icon=":material/dashboard:", default=True),
    st.Page("app_pages/reliability.py", title=t("page_reliability", lang), icon=":material/verified:"),
    st.Page("app_pages/economics.py", title=t("page_economics", lang), icon=":material/payments:"),
    st.Page("app_pages/growth.py", title=t("page_growth", lang), icon=":material/trending_up:"),
    st.Page("app_pages/payments.py", title=t("page_payments", lang), icon=":material/credit_card:"),
    st.Page("app_pages/geography.py", title=t("page_geography", lang), icon=":material/public:"),
    st.Page("app_pages/alerts.py", title=t("page_alerts", lang), icon=":material/notifications:"),
]
st.navigation(pages, position="top").run()
