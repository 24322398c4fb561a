"""Overview: the strategy's targets table and the period's KPI cards."""

import streamlit as st

from app import render, session, views

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_overview")
session.record_sensitive(ctx, "overview", [ctx.scope.niche])

st.subheader(ctx.t("headline"))
render.cards(ctx, views.kpi_cards(view))

st.subheader(ctx.t("targets_table"))
st.caption(ctx.t("targets_caption", day=views.fmt.day(ctx.scope.end, ctx.lang)))
render.table(ctx, views.targets_table(view))
