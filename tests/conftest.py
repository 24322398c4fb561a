"""Suite-wide pytest configuration."""

from __future__ import annotations

import pytest


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
