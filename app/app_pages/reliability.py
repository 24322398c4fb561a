"""Reliability: availability and error budget per niche and country, incidents, latency vs SLA."""

import streamlit as st

from app import formatting as fmt
from app import render, session, views

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_reliability")

st.subheader(ctx.t("availability_by"))
availability = views.availability_table(view)
render.table(ctx, availability)

st.subheader(ctx.t("incidents"))
incidents = views.incidents_table(view)
target = ctx.catalog.target("mttr_minutes", ctx.scope.end)
worst = incidents.raw.iloc[:, 5].max() if not incidents.empty else None
c1, c2, c3 = st.columns(3)
c1.metric(ctx.t("incident_count"), fmt.number(len(incidents.raw), ctx.lang), border=True)
c2.metric(
    ctx.t("worst_recovery"),
    fmt.kpi_value(None if worst is None or fmt.is_missing(worst) else float(worst), "minutes", ctx.lang, "USD"),
    border=True,
)
c3.metric(ctx.t("recovery_target"), fmt.kpi_value(target, "minutes", ctx.lang, "USD"), border=True)
render.table(ctx, incidents, "incidents_none")

st.subheader(ctx.t("latency_by_region"))
render.table(ctx, views.latency_table(view))

shown = set(availability.raw.iloc[:, 0]) | set(incidents.raw.iloc[:, 2]) | {ctx.scope.niche}
session.record_sensitive(ctx, "reliability", shown)
