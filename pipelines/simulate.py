"""Generate BarberPro's source files (metrics, billing, events, FX) deterministically.

    python -m pipelines.simulate --profile demo --out data/sources/demo [--end YYYY-MM-DD] [--seed N] [--no-incidents]
        [--openmetrics FILE --om-start ISO --om-end ISO] [--canary name=... --canary dni=...]

Same profile + seed + end gives byte-identical files. See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from pipelines.lib.simulator import (
    DEFAULT_SEED,
    PROFILES,
    Canaries,
    simulate,
    write_openmetrics,
)

CANARY_KEYS = ("name", "email", "phone", "dni", "license_number")


def _canaries(items: list[str]) -> Canaries | None:
    if not items:
        return None
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in CANARY_KEYS or not value:
            raise argparse.ArgumentTypeError(
                f"--canary {item!r}: use KEY=VALUE with KEY one of {', '.join(CANARY_KEYS)}"
            )
        values[key] = value
    return Canaries(**values)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES))
    parser.add_argument(
        "--out", required=True, type=Path, help="folder to write (metrics/, billing/, events/, fx/ ...)"
    )
    parser.add_argument("--end", type=date.fromisoformat, help="last Argentina day (default: yesterday in Argentina)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--canary",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"plant a known personal value ({', '.join(CANARY_KEYS)}) for privacy tests",
    )
    parser.add_argument(
        "--before-restatement", action="store_true", help="write only the first CUR delivery of the restated month"
    )
    parser.add_argument(
        "--openmetrics", type=Path, help="also write the samples of [--om-start, --om-end) as OpenMetrics"
    )
    parser.add_argument("--om-start")
    parser.add_argument("--om-end")
    parser.add_argument("--no-incidents", action="store_true", help="inject no incidents (clean data)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.openmetrics and not (args.om_start and args.om_end):
        parser.error("--openmetrics needs --om-start and --om-end (ISO timestamps, UTC unless an offset is given)")
    try:
        canaries = _canaries(args.canary)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    result = simulate(
        args.profile,
        args.out,
        end=args.end,
        seed=args.seed,
        canaries=canaries,
        restate_billing=not args.before_restatement,
        progress=not args.quiet,
        incidents=not args.no_incidents,
    )
    print(
        f"{result.profile}: {result.start}..{result.end} -> {args.out} in {result.seconds:.1f}s "
        f"({result.metric_rows:,} metric samples, {result.event_stats['lines']:,} event lines, "
        f"{len(result.incidents)} incidents)"
    )
    if args.openmetrics:
        n = write_openmetrics(args.out, args.openmetrics, args.om_start, args.om_end)
        print(f"OpenMetrics: {n:,} samples -> {args.openmetrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
