"""Evaluate the anomaly detector on the simulator's injected incidents (``make eval``).

    python -m alerts.evaluate [--sources data/sources/demo] [--benchmarks docs/benchmarks.md] [--no-write]

Reads the simulator's source files (``incidents.json`` is the ground truth), builds the watched series
the way production does (5-minute operational series from the metric samples; daily cost through the
warehouse's own CUR loader; daily MercadoPago success from the payment events), runs the detector,
matches every alert episode to the incidents and reports per incident type: recall, detection delay,
and per metric: precision and false alerts per week. The results replace the "Anomaly detection and
forecasts" section of ``docs/benchmarks.md`` (with the month-end cost forecast backtest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import duckdb
import polars as pl

from alerts.detection.monitor import Finding, Policy, daily_series, load_policy, scan
from alerts.detection.operational import Series, build_series, load_operational
from alerts.detection.payments import METRIC as INTRADAY_METRIC
from alerts.detection.payments import IntradayConfig, build_payment_series, decision_counts, decisions, read_updates
from alerts.forecast.forecast import backtest_month_end
from bench.report import replace_section
from pipelines.lib.catalog import ALL, load_catalog
from pipelines.lib.ingest.billing import build_cost_items_daily, load_cur2
from pipelines.lib.ingest.metrics import FileMetricsReader
from pipelines.lib.sources.billing_load import load_billing_files
from pipelines.lib.storage import LocalStorage
from pipelines.lib.warehouse import prepare

SECTION = "## Anomaly detection and forecasts"
#: Which metrics can reveal each incident type (the detector is judged on these).
INCIDENT_METRICS = {
    "outage": ("error_ratio", "requests"),
    "latency_regression": ("latency_p95_ms",),
    "traffic_spike": ("requests", "concurrent_users"),
    "cache_degradation": ("cache_hit_ratio",),
    "cost_spike": ("infra_cost_usd",),
    "payment_rejection_surge": ("mercadopago_success_ratio", "mercadopago_success_intraday"),
}
GOAL_DELAY = {"infra_cost_usd": timedelta(days=1), "mercadopago_success_ratio": timedelta(days=1)}
GOAL_DELAY_DEFAULT = timedelta(minutes=15)
#: The issue's goal per incident type: operational within 15 minutes, cost and payments within a day.
TYPE_GOAL = {"cost_spike": timedelta(days=1), "payment_rejection_surge": timedelta(days=1)}
INTRADAY_METRICS = {INTRADAY_METRIC}  # 15-minute buckets (alerts/detection/payments.py)


class EvaluationError(RuntimeError):
    """The sources cannot be evaluated; the message names the folder and what is missing."""


@dataclass(frozen=True)
class Incident:
    id: str
    type: str
    start: datetime
    end: datetime
    scope: dict[str, str | None]


def load_incidents(root: Path) -> list[Incident]:
    """The ground truth written by the simulator."""
    path = root / "incidents.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvaluationError(
            f"{path}: missing; generate it with `python -m pipelines.simulate --profile demo --out {root}`"
        ) from exc
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{path}: not valid JSON ({exc})") from exc
    items = data["incidents"] if isinstance(data, dict) else data
    return [
        Incident(
            i["id"],
            i["type"],
            datetime.fromisoformat(i["start"].replace("Z", "+00:00")),
            datetime.fromisoformat(i["end"].replace("Z", "+00:00")),
            {k: i.get(k) for k in ("niche", "country", "region", "service")},
        )
        for i in items
    ]


def _days(root: Path) -> list[date]:
    profile = json.loads((root / "profile.json").read_text(encoding="utf-8"))
    first, last = date.fromisoformat(profile["start"]), date.fromisoformat(profile["end"])
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def cost_series(root: Path, timezone: str, days: list[date] | None = None) -> tuple[list[Series], pl.DataFrame]:
    """Daily amortized cost (total, per niche, per niche x service) through the warehouse's billing loaders:
    the series of ``days`` (all if None) and the frame of every day (the forecast backtest uses all)."""
    con = duckdb.connect(":memory:")
    prepare(con)
    load_cur2(con, LocalStorage(root / "billing"))
    load_billing_files(con, LocalStorage(root / "billing"))  # legacy CUR / FOCUS files, as raw_billing does
    build_cost_items_daily(con)
    frame = pl.from_arrow(
        con.sql(
            "SELECT day, coalesce(nullif(niche_tag, ''), 'shared') AS niche, coalesce(service_tag, 'untagged') AS service, "
            "sum(cost_micros)::BIGINT AS micros FROM staging.cost_items_daily GROUP BY ALL ORDER BY ALL"
        ).to_arrow_table()
    )
    con.close()
    frame = frame.with_columns((pl.col("micros").cast(pl.Float64) / 1e6).alias("cost_usd"))
    window = frame.filter(pl.col("day").is_between(days[0], days[-1])) if days else frame
    series = daily_series(
        window,
        "infra_cost_usd",
        "cost_usd",
        {"total": (), "niche": ("niche",), "niche_service": ("niche", "service")},
        timezone,
    )
    return series, frame


def payment_series(root: Path, timezone: str, days: list[date] | None = None) -> list[Series]:
    """Daily MercadoPago success (total and per country) from the payment events' latest states.

    Only non-personal fields are read (ids, status, status_detail, where, when).
    """
    catalog = load_catalog()
    pay = catalog.section("payments")
    files = sorted((root / "events").glob("date=*/*.jsonl.gz"))
    if not files:
        return []
    con = duckdb.connect(":memory:")
    listing = ", ".join(f"'{f.as_posix()}'" for f in files)
    columns = (
        "{'event_id': 'VARCHAR', 'type': 'VARCHAR', 'niche': 'VARCHAR', 'country': 'VARCHAR', "
        "'region': 'VARCHAR', 'payload': 'JSON'}"
    )
    rows = pl.from_arrow(
        con.sql(
            f"""
        WITH ev AS (
            SELECT niche, country, region,
                   json_extract_string(payload, '$.payment.id') AS payment_id,
                   json_extract_string(payload, '$.payment.status') AS status,
                   json_extract_string(payload, '$.payment.date_created')::TIMESTAMPTZ AS created,
                   json_extract_string(payload, '$.payment.date_last_updated')::TIMESTAMPTZ AS updated
            FROM read_json([{listing}], format = 'newline_delimited', columns = {columns})
            WHERE type = 'payment.updated' AND json_extract_string(payload, '$.provider') = 'mercadopago'
        ), latest AS (
            SELECT payment_id, arg_max(status, updated) AS status, min(created) AS created,
                   any_value(niche) AS niche, any_value(country) AS country, any_value(region) AS region
            FROM ev GROUP BY payment_id
        )
        SELECT timezone($tz, created)::DATE AS day, niche, country, region,
               count(*) FILTER (WHERE list_contains($success, status))::DOUBLE AS success,
               count(*) FILTER (WHERE list_contains($final, status))::DOUBLE AS final
        FROM latest GROUP BY ALL ORDER BY ALL
        """,  # noqa: S608 -- the file list and column spec are ours
            params={"tz": timezone, "success": pay["success_statuses"], "final": pay["final_statuses"]},
        ).to_arrow_table()
    )
    con.close()
    if days:
        rows = rows.filter(pl.col("day").is_between(days[0], days[-1]))
    out = []
    for grain in ((), ("country",)):
        keys = list(grain)
        groups = rows.select(keys).unique().iter_rows(named=True) if keys else [{}]
        for g in groups:
            flt = pl.lit(True)
            for k in keys:
                flt = flt & (pl.col(k) == g[k])
            cells = rows.filter(flt)
            agg = cells.group_by("day").agg(pl.col("success", "final").sum()).sort("day")
            agg = agg.with_columns(pl.when(pl.col("final") > 0).then(pl.col("success") / pl.col("final")).alias("v"))
            stamps = agg.select(
                pl.col("day").cast(pl.Datetime("us")).dt.replace_time_zone(timezone).dt.convert_time_zone("UTC")
            )["day"].to_list()
            out.append(
                Series(
                    "mercadopago_success_ratio",
                    {k: g[k] for k in keys} or {"country": ALL},
                    stamps,
                    agg["v"].to_numpy().astype("float64"),
                    None,
                )
            )
    return out


def intraday_payment_series(
    root: Path, config: IntradayConfig | None = None, days: list[date] | None = None
) -> list[Series]:
    """MercadoPago decisions per 15 minutes from the event folders (of ``days`` if given, by AR day of the
    decision), as the 15-minute schedule builds them."""
    from pipelines.lib.warehouse import day_bounds_utc

    config = config or IntradayConfig.from_policy()
    storage = LocalStorage(root / "events")
    folders = sorted({date.fromisoformat(k.split("/", 1)[0][5:]) for k in storage.list("") if k.startswith("date=")})
    if days:
        folders = [d for d in folders if days[0] - timedelta(days=1) <= d <= days[-1] + timedelta(days=1)]
    if not folders:
        return []
    updates, _ = read_updates(storage, folders)
    start, end = (day_bounds_utc(days[0])[0], day_bounds_utc(days[-1])[1]) if days else (None, None)
    return build_payment_series(decision_counts(decisions(updates), config.step_minutes, start, end), config)


@lru_cache(maxsize=1)
def _intraday_step() -> int:
    return IntradayConfig.from_policy().step_minutes


def _resolution(metric: str, step: timedelta) -> timedelta:
    """How long a point of this metric's series covers (an alert is known when it is complete)."""
    if metric in GOAL_DELAY:
        return timedelta(days=1)
    if metric in INTRADAY_METRICS:
        return timedelta(minutes=_intraday_step())
    return step


def _scope_compatible(series_scope: dict[str, str], incident: Incident) -> bool:
    """A series can reveal an incident when each of its scoped dimensions matches (or the incident spans it)."""
    for dim, value in series_scope.items():
        if value in (ALL, None):
            continue
        wanted = incident.scope.get(dim)
        if wanted is not None and wanted != value:
            return False
    return True


def match(findings: list[Finding], incidents: list[Incident], step: timedelta, weeks: float) -> dict:
    """Recall and delay per incident type; precision and false alerts per week per metric."""
    per_type: dict[str, dict] = {}
    matched_findings: set[int] = set()
    for inc in incidents:
        metrics = INCIDENT_METRICS.get(inc.type, ())
        best: tuple[timedelta, Finding] | None = None
        entry = per_type.setdefault(
            inc.type, {"injected": 0, "detected": 0, "delays": [], "within_goal": 0, "by_metric": {}}
        )
        for idx, f in enumerate(findings):
            resolution = _resolution(f.series.metric, step)
            if f.series.metric not in metrics or not _scope_compatible(f.series.scope, inc):
                continue
            if not (inc.start - resolution <= f.episode.start <= inc.end):
                continue
            matched_findings.add(idx)
            # Known when the bucket (or day) holding the first anomalous point is complete.
            delay = max(f.episode.start + resolution - inc.start, timedelta(0))
            if best is None or delay < best[0]:
                best = (delay, f)
        for metric in metrics:
            delays = [
                max(f.episode.start + _resolution(metric, step) - inc.start, timedelta(0))
                for f in findings
                if f.series.metric == metric
                and _scope_compatible(f.series.scope, inc)
                and inc.start - _resolution(metric, step) <= f.episode.start <= inc.end
            ]
            per_metric_delay = entry["by_metric"].setdefault(metric, [])
            if delays:
                per_metric_delay.append(min(delays))
        entry["injected"] += 1
        if best:
            entry["detected"] += 1
            entry["delays"].append(best[0])
            goal = TYPE_GOAL.get(inc.type, GOAL_DELAY_DEFAULT)
            entry["within_goal"] += best[0] <= goal
    # An alert during an incident on a related metric/scope counts as true even if another alert won the delay.
    for idx, f in enumerate(findings):
        if idx in matched_findings:
            continue
        for inc in incidents:
            window_end = inc.end + (timedelta(days=1) if f.series.metric in GOAL_DELAY else timedelta(hours=2))
            if _scope_compatible(f.series.scope, inc) and inc.start - step <= f.episode.start <= window_end:
                matched_findings.add(idx)
                break
    per_metric: dict[str, dict] = {}
    for idx, f in enumerate(findings):
        m = per_metric.setdefault(f.series.metric, {"alerts": 0, "true": 0, "false": 0})
        m["alerts"] += 1
        m["true" if idx in matched_findings else "false"] += 1
    for m in per_metric.values():
        m["precision"] = m["true"] / m["alerts"] if m["alerts"] else None
        m["false_per_week"] = m["false"] / weeks if weeks else None
    # Which series and when: the false alerts themselves, for diagnosis (`--report-json`).
    false_alerts = [
        {
            "key": f.series.key,
            "start": f.episode.start.isoformat(),
            "direction": f.episode.direction,
            "actual": f.episode.actual,
            "expected": f.episode.expected,
            "minutes": (f.episode.last_anomalous - f.episode.start).total_seconds() / 60,
        }
        for idx, f in enumerate(findings)
        if idx not in matched_findings
    ]
    return {"per_type": per_type, "per_metric": per_metric, "false_alerts": false_alerts}


def _fmt_delay(delays: list[timedelta]) -> str:
    if not delays:
        return "—"
    minutes = sorted(d.total_seconds() / 60 for d in delays)
    worst = minutes[-1]
    return f"{worst / 60:.1f} h" if worst >= 120 else f"{worst:.0f} min"


INTRO = (
    "Measured by `make eval` (`python -m alerts.evaluate`) on the simulator's sources, one subsection per "
    "run (each run replaces only its own). Operational series are 5-minute buckets read from the metric "
    "samples by the alerts' own aggregation (the same code fills `staging.ops_5m` for the 15-minute job); "
    "daily cost comes through the warehouse's CUR loader; daily MercadoPago success from the payment events' "
    "latest states; intraday MercadoPago success from the decisions per 15 minutes (trailing hour). The "
    "first 14 days of each run are history only; incidents starting in them are not counted. Reproduce:\n\n"
    "```\n"
    "make eval                                                    # demo (generated if missing)\n"
    "python -m pipelines.simulate --profile demo --end 2026-11-27 --no-incidents --out <clean>\n"
    "PULSO_SOURCES=<clean> make eval                              # clean run: false alerts only\n"
    "python -m pipelines.simulate --profile m6-year --end 2026-11-27 --out <m6>   # ~28 min, ~3.5 GB\n"
    "python -m alerts.evaluate --sources <m6> --last-days 190     # its last 190 days (6 incidents)\n"
    "```"
)
FOOTER = (
    "Goals: every injected incident detected within 15 minutes (operational) or a day (cost, payments); at "
    "most 1 false alert per KPI per week on clean data. A *false alert* is an episode (any grain: total, niche, "
    "region; niche x service for cost; so a KPI's figure sums its grains) that matches no injected incident; "
    "delay is from the incident's start to the end of the first anomalous bucket (5 minutes; 15 minutes for "
    "the intraday payments; a day for daily series). Month-end cost intervals are calibrated on the series' "
    "own replayed errors (split-conformal; see docs/alerts.md); forecasts of one month share its actual total, "
    "so a backtest over few months measures coverage on few independent outcomes."
)


def label(meta: dict) -> str:
    """The run's subsection title: profile, clean or not, window."""
    text = meta["profile"] + (", clean (no incidents)" if meta.get("clean") else "")
    if meta.get("last_days"):
        text += f", last {meta['days']} days"
    return text


def render(report: dict, meta: dict) -> str:
    """This run's subsection (``### <label>``) as Markdown."""
    lines = [
        f"### {label(meta)}",
        "",
        f"{meta['days']} days ({meta['first_day']} .. {meta['last_day']}), {meta['incidents']} injected incidents "
        f"judged, seed {meta['seed']}; {meta['series']} series watched, evaluated in {meta['seconds']:.0f} s on "
        "this machine (shared, loaded).",
    ]
    if report["per_type"]:
        lines += [
            "",
            "| incident type | injected | detected | recall | worst delay | within goal |",
            "|---|---|---|---|---|---|",
        ]
        for kind in sorted(report["per_type"]):
            e = report["per_type"][kind]
            recall = e["detected"] / e["injected"] if e["injected"] else 0
            goal = "1 day" if kind in TYPE_GOAL else "15 min"
            lines.append(
                f"| {kind} | {e['injected']} | {e['detected']} | {recall:.0%} | {_fmt_delay(e['delays'])} | "
                f"{e['within_goal']}/{e['injected']} (goal {goal}) |"
            )
        lines += [
            "",
            "Delay per watched metric (worst over the incidents of the type that metric caught):",
            "",
            "| incident type | metric | caught | worst delay |",
            "|---|---|---|---|",
        ]
        for kind in sorted(report["per_type"]):
            e = report["per_type"][kind]
            for metric, delays in sorted(e.get("by_metric", {}).items()):
                lines.append(f"| {kind} | {metric} | {len(delays)}/{e['injected']} | {_fmt_delay(delays)} |")
    lines += [
        "",
        "| metric | alert episodes | matching an incident | precision | false alerts / week |",
        "|---|---|---|---|---|",
    ]
    for metric in sorted(report["per_metric"]):
        m = report["per_metric"][metric]
        prec = "—" if meta.get("clean") or m["precision"] is None else f"{m['precision']:.0%}"  # clean: all false
        lines.append(f"| {metric} | {m['alerts']} | {m['true']} | {prec} | {m['false_per_week']:.2f} |")
    if not report["per_metric"]:
        lines.append("| (none) | 0 | 0 | — | 0.00 |")
    bt = meta.get("backtest")
    if bt:
        lines += [
            "",
            f"Month-end cost forecast backtest (a forecast on every day of every complete month of the "
            f"whole bill, "
            f"{bt['rows']} forecasts over {bt['months']}): **MAPE {bt['mape']:.2f}%** (goal ≤ 5%), "
            f"90% interval coverage **{bt['coverage']:.0%}** (nominal 90%); first week of each month MAPE "
            f"{bt['mape_first_week']:.2f}%, last week {bt['mape_last_week']:.2f}%.",
        ]
    return "\n".join(lines) + "\n"


SUBSECTION_ORDER = ("demo", "demo, clean (no incidents)")


def section(existing: str, own: str) -> str:
    """The whole section: intro, every run's subsection (``own`` replacing its namesake), footer."""
    blocks: dict[str, str] = {}
    current = None
    for line in existing.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            blocks[current] = line + "\n"
        elif line.startswith("Goals: "):
            current = None
        elif current is not None:
            blocks[current] += line + "\n"
    title = own.splitlines()[0][4:].strip()
    blocks[title] = own
    order = sorted(
        blocks, key=lambda t: (SUBSECTION_ORDER.index(t) if t in SUBSECTION_ORDER else len(SUBSECTION_ORDER), t)
    )
    body = "\n".join(blocks[t].rstrip("\n") + "\n" for t in order)
    return f"{SECTION}\n\n{INTRO}\n\n{body}\n{FOOTER}\n"


def write_section(path: Path, text: str) -> None:
    """Replace (or add) this run's subsection, keeping the other runs', in the shared benchmarks file."""
    existing = ""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        if SECTION in lines:
            start = lines.index(SECTION)
            stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            existing = "\n".join(lines[start + 1 : stop])
    replace_section(section(existing, text), path)


def evaluate(root: Path, policy: Policy | None = None, last_days: int | None = None) -> tuple[dict, dict]:
    """Run the whole evaluation on one simulator output folder (its last ``last_days`` days if given);
    returns (report, meta)."""
    from pipelines.lib.warehouse import day_bounds_utc

    t0 = time.monotonic()
    catalog = load_catalog()
    policy = policy or load_policy(catalog=catalog)
    if not (root / "metrics").is_dir():
        raise EvaluationError(f"{root}: no metrics/ folder; generate the sources with `python -m pipelines.simulate`")
    days = _days(root)
    if last_days:
        if last_days < 21:
            raise EvaluationError(f"--last-days {last_days}: needs at least 21 (14 days of history + a week)")
        days = days[-last_days:]
    judged_from = day_bounds_utc(days[min(14, len(days) - 1)])[0]
    all_incidents = load_incidents(root)
    incidents = [i for i in all_incidents if i.start >= judged_from and i.start < day_bounds_utc(days[-1])[1]]
    profile = json.loads((root / "profile.json").read_text(encoding="utf-8"))
    reader = FileMetricsReader(LocalStorage(root / "metrics"))
    step = policy.step_minutes
    frames = load_operational(reader, days, step)
    series = build_series(frames, step)
    del frames
    cost, cost_frame = cost_series(root, catalog.timezone, days) if (root / "billing").is_dir() else ([], None)
    series += cost
    series += payment_series(root, catalog.timezone, days)
    series += intraday_payment_series(root, days=days)
    findings, _ = scan(series, policy)
    weeks = max((len(days) - 14) / 7, 1e-9)
    report = match(findings, incidents, timedelta(minutes=step), weeks)
    meta = {
        "profile": profile.get("profile", root.name),
        "days": len(days),
        "incidents": len(incidents),
        "clean": not all_incidents,
        "last_days": last_days,
        "first_day": days[0].isoformat(),
        "last_day": days[-1].isoformat(),
        "seed": profile.get("seed"),
        "series": len(series),
    }
    if cost_frame is not None and not cost_frame.is_empty():
        total = cost_frame.group_by("day").agg(pl.col("micros").sum()).sort("day")
        bt = backtest_month_end(total["day"].to_list(), [Decimal(int(m)) / Decimal(10**6) for m in total["micros"]])
        if bt.height:
            inside = ((bt["lower"] <= bt["actual"]) & (bt["actual"] <= bt["upper"])).mean()
            dom = bt["as_of"].dt.day()
            meta["backtest"] = {
                "rows": bt.height,
                "months": (
                    f"{bt['month'].min()} .. {bt['month'].max()} ({bt['month'].n_unique()} months)"
                    if bt["month"].n_unique() > 2
                    else ", ".join(sorted(set(bt["month"])))
                ),
                "mape": bt["ape"].mean(),
                "coverage": inside,
                "mape_first_week": bt.filter(dom <= 7)["ape"].mean() or 0.0,
                "mape_last_week": bt.filter(dom >= 22)["ape"].mean() or 0.0,
            }
    meta["seconds"] = time.monotonic() - t0
    return report, meta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m alerts.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=Path(os.environ.get("PULSO_SOURCES", "data/sources/demo")))
    parser.add_argument("--benchmarks", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--no-write", action="store_true", help="print the section, do not edit docs/benchmarks.md")
    parser.add_argument("--report-json", type=Path, help="also write the raw figures (and every false alert) here")
    parser.add_argument("--last-days", type=int, help="evaluate only the last N days (a long profile such as m6-year)")
    args = parser.parse_args(argv)
    if not (args.sources / "incidents.json").exists():
        # `make eval` on a fresh checkout: generate the simulator's demo sources first (as `make data` does).
        from pipelines.simulate import main as simulate

        print(f"alerts.evaluate: no sources at {args.sources}; generating the demo profile there", file=sys.stderr)
        if simulate(["--profile", "demo", "--out", str(args.sources), "--quiet"]) != 0:
            print(f"alerts.evaluate: the simulator failed to write {args.sources}", file=sys.stderr)
            return 2
    try:
        report, meta = evaluate(args.sources, last_days=args.last_days)
    except EvaluationError as exc:
        print(f"alerts.evaluate: {exc}", file=sys.stderr)
        return 2
    text = render(report, meta)
    print(text)
    if args.report_json:
        args.report_json.write_text(
            json.dumps({"report": report, "meta": meta}, default=str, indent=1), encoding="utf-8"
        )
    if not args.no_write:
        write_section(args.benchmarks, text)
        print(f"wrote the section to {args.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
