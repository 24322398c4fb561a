"""Alerts: recent anomaly alerts with the explanation the alerting wrote (``alert_history``)."""

import streamlit as st

from app import render, session, views

ctx = session.context()
view = views.View(ctx.con, ctx.catalog, ctx.scope, ctx.lang, ctx.rates, ctx.hidden_niches)
session.header(ctx, "page_alerts")

st.subheader(ctx.t("alerts_title"))
alerts = views.alerts_table(view)
if alerts.empty:
    st.info(ctx.t("no_alerts"))
else:
    colors = {"page": "red", "ticket": "orange"}
    for _, row in alerts.display.head(20).iterrows():
        severity, state = row.iloc[2], row.iloc[3]
        with st.container(border=True):
            st.markdown(
                f":{colors.get(severity, 'gray')}-badge[{severity}] :gray-badge[{state}] **{row.iloc[1]}** · {row.iloc[0]}"
            )
            st.write(row.iloc[7])
            st.caption(f"{ctx.t('drivers')}: {row.iloc[6]}")
    with st.expander(ctx.t("alerts_title")):
        render.table(ctx, alerts, "no_alerts")
