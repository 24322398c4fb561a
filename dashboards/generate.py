"""Write Pulso's dashboards and Grafana provisioning files.

    python -m dashboards.generate [--out build/grafana] [--prometheus-url http://localhost:9090]
                                  [--dashboards-path /var/lib/grafana/dashboards/pulso] [--as-of YYYY-MM-DD]

Thresholds use the catalog targets in force on ``--as-of`` (default: today in Argentina).
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from grafanalib._gen import DashboardEncoder

from dashboards.panels import DATASOURCE_UID
from dashboards.templates import all_dashboards
from pipelines.lib.catalog import Catalog, load_catalog

DEFAULT_OUT = Path("build/grafana")
DEFAULT_PROMETHEUS_URL = "http://localhost:9090"
DEFAULT_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/pulso"


def dashboard_json(catalog: Catalog, day: date) -> dict[str, dict]:
    """Every dashboard as Grafana JSON, keyed by uid."""
    out = {}
    for board in all_dashboards(catalog, day):
        data = json.loads(json.dumps(board.to_json_data(), cls=DashboardEncoder))
        if data["uid"] in out:
            raise ValueError(f"two dashboards share the uid {data['uid']!r}")
        out[data["uid"]] = data
    return out


def datasource_provisioning(prometheus_url: str) -> dict:
    """The Prometheus datasource with the fixed uid every panel references."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Pulso Prometheus",
                "type": "prometheus",
                "uid": DATASOURCE_UID,
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": "15s"},
            }
        ],
    }


def dashboard_provisioning(dashboards_path: str) -> dict:
    """A file provider: dashboards come from code only (no UI edits, no deletions)."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "pulso",
                "orgId": 1,
                "folder": "Pulso",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": dashboards_path, "foldersFromFilesStructure": False},
            }
        ],
    }


def generate(
    out: Path = DEFAULT_OUT,
    prometheus_url: str = DEFAULT_PROMETHEUS_URL,
    dashboards_path: str = DEFAULT_DASHBOARDS_PATH,
    day: date | None = None,
    catalog: Catalog | None = None,
) -> list[Path]:
    """Write dashboards and provisioning files under ``out``; returns the paths written."""
    catalog = catalog or load_catalog()
    day = day or datetime.now(ZoneInfo(catalog.timezone)).date()
    out = Path(out)
    written = []
    boards = out / "dashboards"
    boards.mkdir(parents=True, exist_ok=True)
    for stale in boards.glob("*.json"):  # a niche removed from the catalog loses its dashboard
        stale.unlink()
    for uid, data in dashboard_json(catalog, day).items():
        path = boards / f"{uid}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    for kind, payload in (
        ("datasources", datasource_provisioning(prometheus_url)),
        ("dashboards", dashboard_provisioning(dashboards_path)),
    ):
        path = out / "provisioning" / kind / "pulso.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(payload, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate Pulso's Grafana dashboards and provisioning files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--prometheus-url", default=DEFAULT_PROMETHEUS_URL)
    parser.add_argument(
        "--dashboards-path", default=DEFAULT_DASHBOARDS_PATH, help="where Grafana sees <out>/dashboards"
    )
    parser.add_argument("--as-of", type=date.fromisoformat, default=None, help="day whose targets set the thresholds")
    args = parser.parse_args(argv)
    written = generate(args.out, args.prometheus_url, args.dashboards_path, args.as_of)
    print(f"wrote {sum(p.suffix == '.json' for p in written)} dashboards and provisioning into {args.out}")


if __name__ == "__main__":
    main()
