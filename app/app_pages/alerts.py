"""Alerts: recent anomaly alerts with the explanation the alerting wrote (``alert_history``)."""

import streamlit as st

from app import render, session, views

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_alerts")

st.subheader(ctx.t("alerts_title"))
render.table(ctx, views.alerts_table(view), "no_alerts")
