"""Unit economics: daily cost vs budget, per-niche economics, cost by service, shared-cost split."""

import streamlit as st

from app import charts, render, session, views

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_economics")

render.cards(ctx, views.kpi_cards(view, [ctx.catalog.kpi(k) for k in views.ECONOMICS_KPIS if k in ctx.catalog.kpi_ids]))

st.subheader(ctx.t("cost_vs_budget"))
table, points = views.cost_vs_budget(view)
render.chart(
    ctx,
    charts.daily_lines(
        {ctx.t("cost"): [(p.day, p.value) for p in points], ctx.t("budget"): [(p.day, p.target) for p in points]},
        "usd",
        ctx.lang,
        ctx.scope.currency,
        dashed=(ctx.t("budget"),),
    ),
)
with st.expander(ctx.t("daily")):
    render.table(ctx, table)

st.subheader(ctx.t("per_niche"))
per_niche = views.niche_economics(view)
render.table(ctx, per_niche)

left, right = st.columns(2)
with left:
    st.subheader(ctx.t("cost_by_service"))
    render.table(ctx, views.cost_by_service(view))
    render.table(ctx, views.allocation_table(view))
with right:
    st.subheader(ctx.t("shared_split"))
    st.caption(ctx.t("shared_rule"))
    split = views.shared_split(view)
    render.table(ctx, split)

session.record_sensitive(
    ctx, "economics", set(per_niche.raw.iloc[:, 0]) | set(split.raw.iloc[:, 0]) | {ctx.scope.niche}
)
