"""Small Streamlit renderers shared by the pages (tables with CSV download, charts, cards)."""

from __future__ import annotations

import base64
from typing import Any

import streamlit as st

from app.charts import sparkline_svg
from app.session import PageContext
from app.views import STATUS_COLORS, Card, Table


def table(ctx: PageContext, tbl: Table, empty_key: str = "no_rows", static: bool = False) -> None:
    """A formatted table and its CSV download; a clear sentence instead of an empty grid.

    ``static`` draws plain HTML (``st.table``) instead of the interactive grid: the overview's targets
    table is the page's last element and the grid's script made its first render about a second slower
    in the browser (docs/benchmarks.md)."""
    if tbl.empty:
        st.info(ctx.t(empty_key))
        return
    data: Any = tbl.display
    if tbl.status is not None:
        css = tbl.status.map(lambda s: f"color: {STATUS_COLORS[s]}; font-weight: 600" if s else "")
        data = tbl.display.style.apply(lambda _: css, axis=None)
    if static:
        st.table(data.hide() if hasattr(data, "hide") else data.style.hide(), border="horizontal")
    else:
        # Short tables show whole; long daily lists scroll.
        st.dataframe(data, hide_index=True, width="stretch", height="content" if len(tbl.display) <= 25 else "auto")
    st.download_button(
        ctx.t("download_csv"),
        tbl.csv(),
        file_name=f"pulso_{tbl.name}_{ctx.scope.start}_{ctx.scope.end}.csv",
        mime="text/csv",
        key=f"csv_{tbl.name}",
        icon=":material/download:",
    )


def chart(ctx: PageContext, figure: Any) -> None:
    """An Altair chart, or "no data" (never an empty chart)."""
    if figure is None:
        st.info(ctx.t("no_rows"))
        return
    st.altair_chart(figure, width="stretch")


def cards(ctx: PageContext, items: list[Card], per_row: int = 4) -> None:
    """KPI cards in rows: value, change against the previous period, sparkline."""
    ctx_vs_previous = ctx.t("vs_previous")
    for i in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, card in zip(cols, items[i : i + per_row], strict=False):
            metric(col, card, ctx_vs_previous)


def metric(where: Any, card: Card, vs_previous: str) -> None:
    """One KPI card (value, delta against the previous period, sparkline).

    The sparkline is an SVG image inside the card's border rather than ``st.metric(chart_data=...)``: a
    chart widget per card made the overview's first render several seconds slower in the browser
    (docs/benchmarks.md, "Executive view")."""
    box = where.container(border=True)
    box.metric(
        card.label,
        card.value,
        delta=card.delta,
        delta_color=card.delta_color,  # type: ignore[arg-type]
        delta_arrow=card.delta_arrow,  # type: ignore[arg-type]
        delta_description=vs_previous if card.delta else None,
        help=card.help,
    )
    svg = sparkline_svg(card.chart or [])
    if svg:
        # as an image (a data URI): st.html keeps <img> and drops inline <svg>
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        box.html(f'<img src="data:image/svg+xml;base64,{data}" alt="" style="width:100%;height:36px;display:block">')
