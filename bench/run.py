"""``python -m bench.run``: run every benchmark module of this folder that defines ``run(results)``.

The warehouse benchmark runs first (it is the one the others' scale figures come from); the rest follow
in name order. ``--only name[,name]`` picks some. A failing benchmark is reported and the others still run;
the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

FIRST = ("warehouse",)


def discover() -> list[str]:
    """Names of ``bench/*.py`` modules (not this runner) in run order."""
    folder = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name not in {"run", "__init__"})
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print one line per benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    args = parser.parse_args(argv)
    names = discover()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
        names = [n for n in names if n in wanted]
    results: dict[str, Any] = {}
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if not callable(getattr(module, "run", None)):
            continue
        t0 = time.monotonic()
        print(f"bench {name}: running", flush=True)
        try:
            module.run(results)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            print(f"bench {name}: FAILED after {time.monotonic() - t0:.0f}s", flush=True)
            continue
        print(f"bench {name}: done in {time.monotonic() - t0:.0f}s", flush=True)
    print("figures written to docs/benchmarks.md" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
