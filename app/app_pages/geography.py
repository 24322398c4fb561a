"""Geography: the period's KPIs by city / region."""

import streamlit as st

from app import render, session, views

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_geography")
session.record_sensitive(ctx, "geography", [ctx.scope.niche])

st.subheader(ctx.t("by_region"))
render.table(ctx, views.geography_table(view))
