"""``python -m pipelines.build``: materialize the whole warehouse through Dagster, in process, and print a summary.

The days default to the configured sources' ``profile.json`` (``start``..``end``), else to the days present
in the metrics and events folders. ``--incremental`` builds only from the newest day already in the warehouse
(re-finalizing it) to the newest source day. Running it twice gives the same marts (idempotent partitions).
With ``DAGSTER_HOME`` set the run is recorded in that instance (visible in ``make dagster``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb

from pipelines.lib.kpis import PUBLISHED_TABLES
from pipelines.lib.sources.config import source_location, sources_root
from pipelines.lib.warehouse import warehouse_path


def source_days() -> tuple[date, date]:
    """First and last day of the configured sources (profile.json, else the metrics/events folders)."""
    profile = sources_root() / "profile.json"
    if profile.is_file():
        data = json.loads(profile.read_text(encoding="utf-8"))
        return date.fromisoformat(data["start"]), date.fromisoformat(data["end"])
    found: set[date] = set()
    for source in ("metrics", "events"):
        location = source_location(source)
        if location.startswith(("s3://", "http://", "https://")):
            continue
        for folder in Path(location).rglob("date=*"):
            try:
                found.add(date.fromisoformat(folder.name[5:]))
            except ValueError:
                continue
    if not found:
        raise SystemExit(f"no source days found under {sources_root()} (run `make data` or pass --start/--end)")
    return min(found), max(found)


def newest_built_day() -> date | None:
    """The newest day with metrics in the warehouse, or None if it has none yet."""
    path = warehouse_path()
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        return con.execute("SELECT max(day) FROM staging.metric_gauges_minutely").fetchall()[0][0]
    except duckdb.Error:
        return None
    finally:
        con.close()


DAGSTER_YAML = """# Written by Pulso (pipelines/build.py): one DuckDB writer at a time, no telemetry (network only to loopback).
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def ensure_dagster_home(home: str | os.PathLike[str] | None = None) -> Path | None:
    """Create ``$DAGSTER_HOME/dagster.yaml`` (pool limit, telemetry off) if missing; turn telemetry off in
    an existing one that does not say. Returns the file, or None without a Dagster home."""
    home = home or os.environ.get("DAGSTER_HOME")
    if not home:
        return None
    path = Path(home) / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(DAGSTER_YAML, encoding="utf-8")
    elif "telemetry:" not in path.read_text(encoding="utf-8"):
        with path.open("a", encoding="utf-8") as fh:
            fh.write("\ntelemetry:\n  enabled: false\n")
    return path


def run(start: date, end: date, quiet: bool = False) -> dg.ExecuteInProcessResult:
    """Materialize every warehouse asset for ``start..end`` in one Dagster run (in process)."""
    from pipelines.definitions import defs

    definitions = defs()
    job = definitions.resolve_job_def("warehouse_job")
    ensure_dagster_home()
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    # Dagster's own step events are DEBUG; the console shows INFO and up (the assets' warnings about
    # quarantined rows or skipped deliveries) unless PULSO_LOG_LEVEL says otherwise. The run's full event
    # log is still stored in DAGSTER_HOME.
    level = os.environ.get("PULSO_LOG_LEVEL", "WARNING" if quiet else "INFO").upper()
    return job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": level}}}},
        tags={
            "dagster/asset_partition_range_start": start.isoformat(),
            "dagster/asset_partition_range_end": end.isoformat(),
            "pulso/kind": "build",
        },
        raise_on_error=True,
    )


def summary(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per asset: rows and the load reconciliation, from the materialization metadata."""
    lines = []
    seen = set()
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        key = mat.asset_key.to_user_string()
        if key in seen:
            continue
        seen.add(key)
        md = {k: v.value for k, v in mat.metadata.items()}
        parts = [f"{key:18s}"]
        if "rows_read" in md:
            parts.append(
                f"read {md['rows_read']:>10,} loaded {md['rows_loaded']:>10,} quarantined {md['rows_quarantined']:>6,}"
            )
        if "dagster/row_count" in md:
            parts.append(f"rows {md['dagster/row_count']:>10,}")
        if key == "published_marts":
            parts.append(
                f"manifest v{md.get('manifest_version')} complete_through {md.get('complete_through')} "
                f"data_through {md.get('data_through')}"
            )
        lines.append("  ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, help="first AR day (default: the sources' first day)")
    parser.add_argument("--end", type=date.fromisoformat, help="last AR day (default: the sources' last day)")
    parser.add_argument(
        "--incremental", action="store_true", help="only from the newest day already built to the newest source day"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="console shows only warnings and errors (the run's event log keeps everything)",
    )
    args = parser.parse_args(argv)
    first, last = source_days()
    start, end = args.start or first, args.end or last
    if args.incremental:
        built = newest_built_day()
        if built is not None:
            start = max(start, min(built, end))
    if end < start:
        raise SystemExit(f"nothing to build: end {end} is before start {start}")
    os.environ.setdefault("PULSO_PARTITION_START", first.isoformat())
    t0 = time.monotonic()
    print(f"pulso build: {start}..{end} ({(end - start).days + 1} days) from {sources_root()} -> {warehouse_path()}")
    result = run(start, end, quiet=args.quiet)
    for line in summary(result):
        print("  " + line)
    print(
        f"pulso build: {'ok' if result.success else 'FAILED'} in {time.monotonic() - t0:.1f}s; published tables: "
        f"{', '.join(PUBLISHED_TABLES)}"
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
