"""CI runs every real service or fails: the program list, its paths, and the conftest hook under ``CI``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import services

REPO = Path(__file__).resolve().parents[1]

SAMPLE = """
import pytest

from tests.fixtures import services

services.PROGRAMS["ghost"] = services.Program("ghost-package", ("/nonexistent/bin/ghost",))


def test_needs_a_missing_program():
    services.require("ghost")


@services.skip_unless("ghost")
def test_marked_for_a_missing_program():
    pass


@pytest.fixture
def ghost():
    return services.require("ghost")


def test_fixture_needs_a_missing_program(ghost):
    pass


def test_skipped_for_another_reason():
    pytest.skip("not relevant on this platform")


@pytest.mark.skipif(True, reason="a plain skipif")
def test_plain_skipif():
    pass


def test_passes():
    pass
"""


def run_sample(tmp_path: Path, ci: str | None) -> dict[str, str]:
    """Runs SAMPLE with the suite's conftest as a plugin; the outcome of each test by name."""
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the suite's conftest, started fast
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-rA",
            "-q",
            "test_sample.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outcomes = {}
    for line in proc.stdout.splitlines():
        # "-rA" summary lines: "PASSED test_sample.py::test_passes", "SKIPPED [1] test_sample.py:9: reason",
        # "FAILED test_sample.py::test_x - reason" / "ERROR test_sample.py::test_y - reason"
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR"):
            outcomes[rest.split("::")[1].split(" ")[0]] = word
        elif word == "SKIPPED":
            outcomes.setdefault("skipped reasons", "")
            outcomes["skipped reasons"] += rest + "\n"
    outcomes["stdout"] = proc.stdout
    return outcomes


def test_without_ci_a_missing_service_is_a_skip(tmp_path: Path) -> None:
    out = run_sample(tmp_path, None)
    assert out.get("test_passes") == "PASSED", out["stdout"]
    assert "FAILED" not in out.values() and "ERROR" not in out.values(), out["stdout"]
    assert out["skipped reasons"].count("missing service: ghost (Debian ghost-package: make sysdeps)") == 3


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_service_fails_and_other_skips_stay_skips(tmp_path: Path, ci: str) -> None:
    out = run_sample(tmp_path, ci)
    assert out.get("test_needs_a_missing_program") == "FAILED", out["stdout"]
    assert out.get("test_marked_for_a_missing_program") == "ERROR", out["stdout"]  # setup phase
    assert out.get("test_fixture_needs_a_missing_program") == "ERROR", out["stdout"]
    assert out.get("test_passes") == "PASSED", out["stdout"]
    skipped = out["skipped reasons"]
    assert "not relevant on this platform" in skipped and "a plain skipif" in skipped
    assert "missing service" not in skipped
    assert "under CI a missing real service fails the run" in out["stdout"]


def test_ci_false_keeps_skips(tmp_path: Path) -> None:
    out = run_sample(tmp_path, "false")
    assert "FAILED" not in out.values() and "ERROR" not in out.values(), out["stdout"]


def test_programs_are_found_at_the_path_the_tests_run_them_from(tmp_path: Path, monkeypatch) -> None:
    # a bare name is looked up on PATH; an absolute path must be that executable file
    tool = tmp_path / "bin" / "promtool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tool.parent))
    assert services.find("promtool") is None  # not executable yet
    tool.chmod(0o755)
    assert services.find("promtool") == str(tool)
    assert services.find("prometheus") is None
    monkeypatch.setitem(services.PROGRAMS, "chromium", services.Program("chromium", (str(tmp_path / "chromium"),)))
    assert services.find("chromium") is None
    assert services.missing_reason("promtool") is None
    assert services.missing_reason("chromium", "prometheus", "promtool") == (
        "missing service: chromium, prometheus (Debian chromium prometheus: make sysdeps)"
    )
    assert {"chromium", "prometheus", "prometheus-alertmanager"} <= set(services.missing_packages())


def test_sysdeps_lists_what_is_missing_from_the_same_table(tmp_path: Path) -> None:
    """``.ci/sysdeps.sh`` reads the tests' own table: with an empty PATH every name-found program is missing."""
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "tests/fixtures/services.py"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    listed = set(proc.stdout.split())
    assert {"prometheus", "prometheus-alertmanager"} <= listed
    check = subprocess.run(
        [sys.executable, "tests/fixtures/services.py", "--check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert check.returncode == 1
    assert "alertmanager: not found at prometheus-alertmanager or alertmanager (Debian prometheus-alertmanager)" in (
        check.stderr
    )
