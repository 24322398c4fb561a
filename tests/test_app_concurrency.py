"""Pages keep loading while Dagster-style publishes land: no error, and never a mixed or half state.

A thread re-publishes the last 7 days of ``kpi_daily`` with every total shifted by k = 1, 2, 3, ...
Each page render must show one k everywhere: the targets table's last-day cost (1590 + k) and the
card's 7-day sum (10,920 + 7 k) must come from the same publish.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from app.auth import Identity
from app.session import _SharedReader
from pipelines.lib.published import publish
from tests.fixtures.app.store import DAYS, build_store, kpi_rows

APP = str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py")
LAST7 = DAYS[-7:]


def parse_usd_es(text: str) -> Decimal:
    return Decimal(text.removeprefix("US$ ").replace(".", "").replace(",", "."))


class Publisher(threading.Thread):
    """Publishes shifted kpi_daily states until stopped; records errors instead of dying silently."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.stop, self.published, self.errors = root, threading.Event(), 0, []

    def run(self) -> None:
        con = duckdb.connect()
        frame = kpi_rows()  # noqa: F841 - read by DuckDB below
        con.execute(
            "CREATE TABLE base AS SELECT day::DATE AS day, kpi, niche, country, region, "
            "value::DOUBLE AS value, unit, target::DOUBLE AS target, status FROM frame"
        )
        k = 0
        while not self.stop.is_set():
            k += 1
            try:
                # The fixture's rule shifted by k (total grain: value + k), built fresh for each publish.
                con.execute(
                    "CREATE OR REPLACE TABLE kpi_daily AS SELECT day, kpi, niche, country, region, "
                    "CASE WHEN niche = 'all' AND country = 'all' THEN value + ? ELSE value END AS value, "
                    "unit, target, status FROM base",
                    [k],
                )
                publish(con, {"kpi_daily": "kpi_daily"}, LAST7, self.root)
                self.published += 1
                # Real publishes are minutes apart; back to back with no pause a reader loading the
                # whole store can be starved (PublishedReader gives up after its retries).
                self.stop.wait(0.15)
            except Exception as exc:  # surfaced by the test
                self.errors.append(exc)
                return


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "published"
    build_store(root)
    monkeypatch.setenv("PULSO_PUBLISHED", str(root))
    monkeypatch.setenv("PULSO_APP_ACCESS_LOG", str(tmp_path / "access.log"))  # never the repo's data/
    return root


def test_reader_snapshots_are_whole_publishes(store):
    reader = _SharedReader(str(store))
    publisher = Publisher(store)
    publisher.start()
    seen = set()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
            con, manifest = reader.snapshot()
            shifts = con.execute(
                "SELECT DISTINCT round(value - (1000 + 10 * (day - DATE '2026-09-29')), 6) FROM kpi_daily "
                "WHERE kpi = 'infra_cost_usd' AND niche = 'all' AND day >= ?",
                [LAST7[0]],
            ).fetchall()
            assert len(shifts) == 1, shifts  # one publish's values across all 7 days
            seen.add(shifts[0][0])
    finally:
        publisher.stop.set()
        publisher.join(30)
    assert not publisher.errors
    assert len(seen) >= 3  # publishes really landed while reading


def test_pages_render_while_publishing(store):
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["pulso_identity"] = Identity("ana", ("clinical",))
    at.run()
    at.date_input(key="period_es").set_value((LAST7[0], LAST7[-1]))
    at.run()
    publisher = Publisher(store)
    publisher.start()
    shifts = set()
    try:
        for i in range(4):
            if i % 3 == 2:
                at.switch_page("app_pages/economics.py").run()
                assert not at.exception, at.exception
                at.switch_page("app_pages/overview.py")
            at.run()
            assert not at.exception, at.exception
            actual = parse_usd_es(
                next(r[1] for r in at.table[0].value.to_numpy().tolist() if r[0] == "Costo de infraestructura")
            )
            card = parse_usd_es(next(m.value for m in at.metric if m.label == "Costo de infraestructura"))
            k = actual - 1590
            assert card == 10920 + 7 * k, (actual, card)
            shifts.add(k)
    finally:
        publisher.stop.set()
        publisher.join(30)
    assert not publisher.errors
    assert publisher.published > 0 and len(shifts) >= 2
