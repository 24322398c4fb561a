"""Daily partitions in Argentina time, and the days of a (possibly multi-day) run.

The first partition is ``$PULSO_PARTITION_START``, else the ``start`` of the configured sources'
``profile.json`` (local sources), else a year before the catalog's plan start. ``end_offset=1`` makes
today's (in-progress) day a partition so the intraday schedule can refresh it.
"""

from __future__ import annotations

import json
import os
from datetime import date, timedelta

import dagster as dg

from pipelines.lib.catalog import load_catalog
from pipelines.lib.sources.config import sources_root


def partition_start() -> str:
    """The first partition day (ISO)."""
    env = os.environ.get("PULSO_PARTITION_START")
    if env:
        return date.fromisoformat(env).isoformat()
    profile = sources_root() / "profile.json"
    try:
        start = json.loads(profile.read_text(encoding="utf-8")).get("start")
        if start:
            return date.fromisoformat(str(start)[:10]).isoformat()
    except (OSError, ValueError, AttributeError):
        pass  # no local profile: fall back to the plan
    return (load_catalog().plan["start"] - timedelta(days=365)).isoformat()


daily_partitions = dg.DailyPartitionsDefinition(
    start_date=partition_start(), timezone=load_catalog().timezone, end_offset=1
)


def run_days(context: dg.AssetExecutionContext) -> list[date]:
    """Every AR day of the run's partition range (one day for a single-partition run)."""
    keys = context.partition_keys
    return sorted(date.fromisoformat(k) for k in keys)
