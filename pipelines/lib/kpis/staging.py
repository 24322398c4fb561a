"""Event staging: per-day users, bookings, onboarded professionals and the final state of each payment.

Tables with a ``user_key`` (and every row of a sensitive niche) stay in their own schema: ``staging.*``
for most niches, ``psychology.*`` for the sensitive ones (same table names). Marts only ever read them
through :func:`both`, which unions the two, and only publish aggregates.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import duckdb

from pipelines.lib.catalog import load_catalog
from pipelines.lib.ingest.events import ensure_event_tables
from pipelines.lib.warehouse import replace_days, table_exists

EVENT_STAGING = {"raw": "staging", "psychology": "psychology"}


def both(table: str) -> str:
    """SQL unioning ``staging.<table>`` and ``psychology.<table>``."""
    return f"(SELECT * FROM staging.{table} UNION ALL SELECT * FROM psychology.{table})"  # noqa: S608


def build_event_staging(con: duckdb.DuckDBPyConnection, days: Iterable[date]) -> dict[str, int]:
    """Rebuild the event staging tables for ``days`` (and payments/onboarding in full; they are small).

    - ``user_days(day, niche, country, region, user_key)``: distinct users with an event that day;
    - ``bookings_created(day, niche, country, region, booking_id)``: distinct bookings created;
    - ``onboarded(professional_id, niche, country, region, day)``: first verified onboarding;
    - ``payments_final``: one row per payment id, its latest ``date_last_updated`` state (ties: the
      later-arriving, then the larger event id, so the result is deterministic).
    """
    ensure_event_tables(con)
    catalog = load_catalog()
    final = list(catalog.section("payments")["final_statuses"])
    day_list = sorted(set(days))
    counts: dict[str, int] = {}
    for source, target in EVENT_STAGING.items():
        replace_days(
            con,
            f"{target}.user_days",
            f"SELECT DISTINCT day, niche, country, region, user_key FROM {source}.events WHERE user_key IS NOT NULL",  # noqa: S608
            day_list,
        )
        replace_days(
            con,
            f"{target}.bookings_created",
            f"SELECT DISTINCT day, niche, country, region, booking_id FROM {source}.events "  # noqa: S608
            "WHERE type = 'booking.created' AND booking_id IS NOT NULL",
            day_list,
        )
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {target}.onboarded AS
            SELECT professional_id, arg_min(niche, occurred_at) AS niche, arg_min(country, occurred_at) AS country,
                   arg_min(region, occurred_at) AS region, min(day) AS day
            FROM {source}.events
            WHERE type = 'professional.onboarded' AND professional_id IS NOT NULL AND coalesce(license_verified, false)
            GROUP BY professional_id
            """  # noqa: S608
        )
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {target}.payments_final AS
            SELECT payment_id,
                   arg_max(p, (date_last_updated, arrival_day, event_id)) AS last
            FROM {source}.payment_updates p GROUP BY payment_id
            """  # noqa: S608
        )
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {target}.payments_final AS
            SELECT payment_id, last.niche, last.country, last.region, last.provider,
                   last.payment_method_id AS payment_method, last.payment_type_id AS payment_type,
                   last.status, last.status_detail, last.currency_id AS currency, last.transaction_amount,
                   last.transaction_amount_refunded,
                   last.date_created, timezone($tz, last.date_created)::DATE AS day,
                   list_contains($final, last.status) AS is_final
            FROM {target}.payments_final
            """,  # noqa: S608
            {"tz": catalog.timezone, "final": final},
        )
        counts[f"{target}.payments_final"] = con.execute(f"SELECT count(*) FROM {target}.payments_final").fetchall()[0][  # noqa: S608
            0
        ]  # noqa: S608
    return counts


def event_staging_ready(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the event staging tables exist."""
    return table_exists(con, "staging.user_days") and table_exists(con, "psychology.user_days")
