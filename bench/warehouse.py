"""Warehouse benchmark: build ``m6-year`` from scratch, then one new day incrementally.

``run(results)`` (called by ``python -m bench.run``, i.e. ``make bench``):

1. uses the m6-year sources in ``$PULSO_BENCH_SOURCES`` (default ``data/sources/m6-year``), generating them
   with the simulator when absent (that time is reported separately, it is not the build);
2. **full build**: ``python -m pipelines.build`` over every day but the last, into a fresh warehouse and
   published folder under ``$PULSO_BENCH_DIR`` (default ``data/bench``);
3. **incremental day**: the same command for the last day only, on top of that warehouse;

each in its own process, measuring wall time and peak RSS (``wait4`` rusage of the child), then writes the
figures to the "Warehouse" section of ``docs/benchmarks.md``. Goals: incremental day < 5% of the full build,
full year < 24 GiB. ``python -m bench.warehouse --days 30`` benchmarks a shorter range for a quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import replace_section

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = Path(os.environ.get("PULSO_BENCH_MD", ROOT / "docs" / "benchmarks.md"))
SECTION = "Warehouse"
GOAL_RSS_GIB = 24.0
GOAL_INCREMENTAL_SHARE = 0.05


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; wall seconds and the child's peak RSS (GiB); raise if it fails (log tail in message)."""
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd[1:])} failed with exit code {code}; log {log}:\n{tail}")
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(usage.ru_maxrss / 1024 / 1024, 2)}  # ru_maxrss is KiB


def ensure_sources(folder: Path, env: dict[str, str], log_dir: Path) -> float | None:
    """Generate m6-year into ``folder`` if it has no ``profile.json``; returns the seconds it took (or None)."""
    if (folder / "profile.json").is_file():
        return None
    folder.parent.mkdir(parents=True, exist_ok=True)
    figures = measure(
        [sys.executable, "-m", "pipelines.simulate", "--profile", "m6-year", "--out", str(folder), "--quiet"],
        env,
        log_dir / "simulate.log",
    )
    return figures["wall_s"]


def write_section(f: dict[str, Any], path: Path = BENCHMARKS_MD) -> None:
    """Replace (or add) the "## Warehouse" section of docs/benchmarks.md, keeping every other section."""
    share = f["incremental"]["wall_s"] / f["full"]["wall_s"] if f["full"]["wall_s"] else float("nan")
    full_ok = f["full"]["peak_rss_gib"] < GOAL_RSS_GIB
    body = (
        f"## {SECTION}\n\n"
        f"`python -m bench.warehouse` (also `make bench`): `python -m pipelines.build` (Dagster in process, every "
        f"asset and data-quality check) on the simulator's `{f['profile']}` profile, measured {f['measured_at']} on "
        f"the shared 2-core machine (other engineers' jobs running alongside; 23 GiB RAM). Full build: "
        f"{f['full_days']} days ({f['full_range']}) into an empty warehouse, one Dagster run (single-run backfill). "
        f"Incremental: the next day ({f['incremental_day']}) on top of it.\n\n"
        "| run | wall time | peak RSS |\n|---|---|---|\n"
        f"| full build, {f['full_days']} days | {f['full']['wall_s'] / 60:.1f} min ({f['full']['wall_s']:,.0f} s) | "
        f"{f['full']['peak_rss_gib']} GiB (goal < {GOAL_RSS_GIB:g} GiB: {'met' if full_ok else 'NOT met'}) |\n"
        f"| incremental day | {f['incremental']['wall_s']:,.1f} s | {f['incremental']['peak_rss_gib']} GiB |\n\n"
        f"Incremental day / full build = {share:.1%} (goal < {GOAL_INCREMENTAL_SHARE:.0%}: "
        f"{'met' if share < GOAL_INCREMENTAL_SHARE else 'NOT met'}). Warehouse file after both: "
        f"{f['warehouse_gib']} GiB; source files: {f['sources_gib']} GiB ({f['metric_samples']:,} metric samples read).\n"
        + (
            f"\nGenerating the sources (not part of the build): {f['simulate_s']:,.0f} s.\n"
            if f.get("simulate_s")
            else ""
        )
        + (f"\n{f['note']}\n" if f.get("note") else "")
    )
    replace_section(body, path)


def _loaded_samples(path: Path) -> int:
    """Metric samples the builds read (from the warehouse's load audit)."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(
            con.execute("SELECT coalesce(sum(rows_read), 0) FROM ops.loads WHERE source = 'metrics'").fetchall()[0][0]
        )
    finally:
        con.close()


def _size_gib(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 2**30, 2)
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**30, 2)


def run(results: dict[str, Any] | None = None, days: int | None = None, note: str = "") -> dict[str, Any]:
    """Benchmark the full and the incremental build; write docs/benchmarks.md and ``results['warehouse']``."""
    sources = Path(os.environ.get("PULSO_BENCH_SOURCES", ROOT / "data" / "sources" / "m6-year"))
    work = Path(os.environ.get("PULSO_BENCH_DIR", ROOT / "data" / "bench"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # ephemeral Dagster instance
    simulate_s = ensure_sources(sources, env, work)
    profile = json.loads((sources / "profile.json").read_text(encoding="utf-8"))
    first, last = date.fromisoformat(profile["start"]), date.fromisoformat(profile["end"])
    if days:
        first = max(first, last - timedelta(days=days))
    env.update(
        {
            "PULSO_SOURCES": str(sources),
            "PULSO_WAREHOUSE": str(work / "warehouse.duckdb"),
            "PULSO_PUBLISHED": str(work / "published"),
            "PULSO_PSEUDONYM_KEY": "bench-only-key",
            "PULSO_PARTITION_START": first.isoformat(),
            "GX_ANALYTICS_ENABLED": "False",
            "PULSO_SECRETS_DIR": str(work / ".secrets"),
        }
    )
    build = [sys.executable, "-m", "pipelines.build"]
    full_end = last - timedelta(days=1)
    full = measure([*build, "--start", first.isoformat(), "--end", full_end.isoformat()], env, work / "full.log")
    incremental = measure(
        [*build, "--start", last.isoformat(), "--end", last.isoformat()], env, work / "incremental.log"
    )
    samples = _loaded_samples(work / "warehouse.duckdb")
    figures = {
        "profile": profile.get("profile", "m6-year"),
        "full_days": (full_end - first).days + 1,
        "full_range": f"{first}..{full_end}",
        "incremental_day": last.isoformat(),
        "full": full,
        "incremental": incremental,
        "warehouse_gib": _size_gib(work / "warehouse.duckdb"),
        "sources_gib": _size_gib(sources),
        "metric_samples": int(samples),
        "simulate_s": simulate_s,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "note": note,
    }
    write_section(figures)
    if results is not None:
        results["warehouse"] = figures
    return figures


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m bench.warehouse [--days N]``."""
    parser = argparse.ArgumentParser(description="Warehouse full and incremental build on m6-year")
    parser.add_argument("--days", type=int, help="only the last N days before the incremental one (quick check)")
    parser.add_argument("--note", default="", help="a sentence added under the figures")
    args = parser.parse_args(argv)
    figures = run(days=args.days, note=args.note)
    print(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
