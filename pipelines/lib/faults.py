"""Test-only fault injection: kill the pipeline at a named point to prove it recovers.

``PULSO_CRASH_AT=<point>[@<n>]`` makes the process SIGKILL itself the ``n``-th time (default: the first)
it passes ``crash_point("<point>")``. Unset (always, outside tests) it does nothing but read one
environment variable. SIGKILL, not an exception: no ``finally``, no ``atexit``, no flush — what a power
cut or the OOM killer does. ``tests/test_reliability_crash.py`` uses it; ``docs/reliability.md`` lists
the points.

Points:

- ``replace:<schema.table>``: inside :func:`pipelines.lib.warehouse.replace_days`, after the days' old rows
  are deleted and before the new ones are inserted (a half-written staging table or mart);
- ``load:<source>``: inside :func:`pipelines.lib.warehouse.record_load`, after a load's rows are written and
  before its audit entry (``ops.loads``);
- ``publish:files-written``: after a publish wrote every new part file, before the manifest commit;
- ``publish:committed``: after the manifest commit, before the superseded files are removed.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV = "PULSO_CRASH_AT"
_passed: Counter[str] = Counter()


def crash_point(point: str) -> None:
    """SIGKILL this process here if ``$PULSO_CRASH_AT`` names ``point`` (and this is its n-th pass)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, nth = spec.partition("@")
    if name != point:
        return
    _passed[point] += 1
    if _passed[point] == int(nth or 1):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
