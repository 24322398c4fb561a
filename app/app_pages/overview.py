"""Overview: how many targets are on track, the period's KPI cards and the strategy's targets table."""

import streamlit as st

from app import render, session, views

ctx = session.context()
session.header(ctx, "page_overview")
session.record_sensitive(ctx, "overview", [ctx.scope.niche])

# Computed once per published state and choice (the default one while the sign-in form was shown).
cards, targets = session.overview(ctx.con, ctx.manifest, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
counts = views.status_summary(targets)
colors = {"ok": "green", "warn": "orange", "breach": "red", "no_data": "gray"}
st.markdown(" ".join(f":{colors[s]}-badge[{n} {ctx.t('status_' + s).lower()}]" for s, n in counts.items() if n))

st.subheader(ctx.t("headline"))
render.cards(ctx, cards)

st.subheader(ctx.t("targets_table"))
st.caption(ctx.t("targets_caption", day=views.fmt.day(ctx.scope.end, ctx.lang)))
render.table(ctx, targets, static=True)
