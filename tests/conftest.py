"""Suite-wide pytest configuration."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.services import MISSING


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under ``CI``, a test skipped because a real service is missing fails instead.

    CI runs on a possibly brand-new machine where ``.ci/sysdeps.sh`` installed every program the suite
    drives; a skip there means the integration tests did not run, and a green run would say they passed.
    Only skips raised by ``tests/fixtures/services.py`` (reason starting with ``MISSING``) are turned;
    every other skip stays a skip.
    """
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and call.excinfo is not None and _under_ci()):
        return
    reason = str(call.excinfo.value.msg if hasattr(call.excinfo.value, "msg") else call.excinfo.value)
    if call.excinfo.errisinstance(pytest.skip.Exception) and reason.startswith(MISSING):
        report.outcome = "failed"
        report.longrepr = f"{reason} -- under CI a missing real service fails the run (.ci/sysdeps.sh installs it)"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep each ``xdist_group`` on one worker under ``--dist loadgroup``.

    pytest-xdist 3.8 tags grouped tests by assigning ``item._nodeid``; pytest 9.2 keeps the node id in
    ``item._id``, so the tag is lost and a group's tests spread over both workers (each then builds the
    group's module fixtures). Re-apply the same ``<nodeid>@<group>`` tag the scheduler reads.
    """
    if not getattr(config.option, "loadgroup", False) and getattr(config.option, "dist", "no") != "loadgroup":
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        )
        if names and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
