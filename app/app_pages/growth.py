"""Growth: active users and MoM growth, bookings, ARR, psychologists onboarded vs the month-6 goals."""

import streamlit as st

from app import charts, render, session, views
from app import formatting as fmt

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_growth")
session.record_sensitive(ctx, "growth", [ctx.scope.niche])

growth = views.mom_growth(view)
cards = {c.kpi: c for c in views.kpi_cards(view, [ctx.catalog.kpi(k) for k in ("active_users", "bookings")])}
c1, c2, c3 = st.columns(3)
c1.metric(
    ctx.t("mom_growth"),
    fmt.percent(growth.mom, ctx.lang, 1),
    border=True,
    help=ctx.t("mom_help", day=fmt.day(ctx.scope.end, ctx.lang)),
    delta=None if growth.mom_target is None else f"{ctx.t('goal')}: {fmt.percent(growth.mom_target, ctx.lang, 0)}",
    delta_color="off",
    delta_arrow="off",
)
for col, kpi in ((c2, "active_users"), (c3, "bookings")):
    render.metric(col, cards[kpi], ctx.t("vs_previous"))

series = views.kpi_series(ctx.con, ctx.catalog, ["active_users", "bookings"], ctx.scope, ctx.rates)
left, right = st.columns(2)
with left:
    st.subheader(views.catalog_name(ctx.catalog.kpi("active_users"), ctx.lang))
    render.chart(
        ctx,
        charts.daily_lines(
            {cards["active_users"].label: [(p.day, p.value) for p in series["active_users"]]}, "users", ctx.lang, ""
        ),
    )
with right:
    st.subheader(views.catalog_name(ctx.catalog.kpi("bookings"), ctx.lang))
    render.chart(
        ctx,
        charts.daily_lines(
            {cards["bookings"].label: [(p.day, p.value) for p in series["bookings"]]}, "count", ctx.lang, ""
        ),
    )

st.subheader(ctx.t("month6_goals"))
goals = views.month6_goals(view)
for _, row in goals.raw.iterrows():
    progress = row.iloc[3]
    if progress is not None and not fmt.is_missing(progress):
        label = goals.display.loc[_, goals.display.columns[0]]
        st.progress(min(max(float(progress), 0.0), 1.0), text=f"{label}: {fmt.percent(progress, ctx.lang, 1)}")
render.table(ctx, goals)
