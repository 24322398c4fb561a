"""Loaders from source files to the warehouse's raw and staging layers (plain functions, no Dagster).

- :mod:`.metrics` — Prometheus samples → hourly counter increases and per-minute gauges.
- :mod:`.billing` — AWS CUR 2.0 deliveries (manifest-driven) → ``raw.billing_line_items``.
- :mod:`.events` — app event log (gzip JSON Lines) → pseudonymized, deduplicated events and payments.
- :mod:`.fx` — daily ARS per USD quotes, carried forward over days without a quote.

Every loader returns a :class:`pipelines.lib.warehouse.LoadResult` (rows read = loaded + quarantined).
"""
