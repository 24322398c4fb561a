"""Payments: MercadoPago success rate over time, by payment method and by rejection reason."""

import streamlit as st

from app import charts, render, session, views

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_payments")
session.record_sensitive(ctx, "payments", [ctx.scope.niche])

card = views.kpi_cards(view, [ctx.catalog.kpi("mercadopago_success_ratio")])[0]
render.metric(st, card, ctx.t("vs_previous"))

st.subheader(ctx.t("mp_success_over_time"))
daily = views.payments_daily_table(view)
target = [
    (d, ctx.catalog.target("mercadopago_success_ratio", d))
    for d in views.mercadopago_daily(ctx.con, ctx.catalog, ctx.scope)
]
counts = views.mercadopago_daily(ctx.con, ctx.catalog, ctx.scope)
render.chart(
    ctx,
    charts.daily_lines(
        {
            ctx.t("success_rate"): [(d, c.success_ratio) for d, c in sorted(counts.items())],
            ctx.t("goal"): sorted(target),
        },
        "ratio",
        ctx.lang,
        "",
        dashed=(ctx.t("goal"),),
    ),
)
with st.expander(ctx.t("daily")):
    render.table(ctx, daily)

left, right = st.columns(2)
with left:
    st.subheader(ctx.t("by_method"))
    render.table(ctx, views.payments_method_table(view))
with right:
    st.subheader(ctx.t("by_reason"))
    render.table(ctx, views.rejections_table(view), "no_rejections")
