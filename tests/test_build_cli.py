"""``python -m pipelines.build`` helpers that need no warehouse."""

from __future__ import annotations

import yaml

from pipelines.build import ensure_dagster_home


def test_dagster_home_gets_one_writer_and_no_telemetry(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    path = ensure_dagster_home()
    config = yaml.safe_load(path.read_text())
    assert config == {"concurrency": {"pools": {"default_limit": 1}}, "telemetry": {"enabled": False}}
    # An operator's own file is kept; only telemetry is turned off when it does not say.
    path.write_text("run_queue:\n  max_concurrent_runs: 3\n")
    ensure_dagster_home()
    assert yaml.safe_load(path.read_text()) == {
        "run_queue": {"max_concurrent_runs": 3},
        "telemetry": {"enabled": False},
    }
    path.write_text("telemetry:\n  enabled: true\n")
    ensure_dagster_home()
    assert yaml.safe_load(path.read_text()) == {"telemetry": {"enabled": True}}  # said explicitly: respected
    monkeypatch.delenv("DAGSTER_HOME")
    assert ensure_dagster_home() is None
