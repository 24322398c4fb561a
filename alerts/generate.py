"""Write the Prometheus rule files and the Alertmanager config generated from the catalog.

    python -m alerts.generate [--out alerts] [--webhook-file /etc/alertmanager/secrets/slack_webhook_url]

The output is checked in (``alerts/prometheus/``, ``alerts/alertmanager/``); tests/test_rules.py fails
when it differs from what this command produces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alerts.rules import DEFAULT_WEBHOOK_FILE, render
from pipelines.lib.catalog import load_catalog

DEFAULT_OUT = Path(__file__).resolve().parent


def generate(
    out: Path = DEFAULT_OUT, webhook_file: str = DEFAULT_WEBHOOK_FILE, catalog_path: str | None = None
) -> list[Path]:
    """Render every file into ``out`` and return the paths written."""
    catalog = load_catalog(catalog_path)
    written = []
    for rel, text in render(catalog, webhook_file).items():
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder holding prometheus/ and alertmanager/")
    parser.add_argument(
        "--webhook-file", default=DEFAULT_WEBHOOK_FILE, help="Slack webhook URL file as Alertmanager sees it"
    )
    parser.add_argument("--catalog", default=None, help="catalog YAML (default: $PULSO_CATALOG or the bundled one)")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.webhook_file, args.catalog):
        print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
