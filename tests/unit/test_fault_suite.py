"""The fault suite's table is printed where ``make test`` shows it: by the controller of
``pytest --numprocesses=2``, which collects nothing and loads no conftest below ``tests/``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faults
import pytest
from hang import HANG_SECONDS

SUITE = """
import pytest


@pytest.mark.fault("malformed event")
def test_sends_a_malformed_event() -> None:
    assert True


@pytest.mark.fault("audit tampered with")
def test_tampers_with_the_audit_log() -> None:
    assert False, "the tampered record was not named"


@pytest.mark.fault("audit tampered with")
def test_truncates_the_audit_log() -> None:
    pass
"""


def run_suite(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (directory / "conftest.py").write_text('pytest_plugins = ("faults",)\n')
    (directory / "test_suite.py").write_text(SUITE)
    tests = str(Path(faults.__file__).parent)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([tests, *sys.path]),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # xdist alone: half the child's start-up
    }
    plugins = ["-p", "no:cacheprovider", "-p", "xdist.plugin"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, *args, str(directory)],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )


def test_the_controller_of_two_workers_prints_each_scenarios_result(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--numprocesses=2")
    assert run.returncode == 1, run.stdout + run.stderr  # one test fails
    rows = [line for line in run.stdout.splitlines() if line.startswith("|")]
    assert "| malformed event | passed | `test_suite.py::test_sends_a_malformed_event` |" in rows
    assert (
        "| audit tampered with | failed | `test_suite.py::test_tampers_with_the_audit_log`, "
        "`test_suite.py::test_truncates_the_audit_log` |"
    ) in rows
    assert f"| OPA down (fail closed) | {faults.NO_TEST} | — |" in rows
    assert len(rows) == len(faults.SCENARIOS) + 2  # header and rule


def test_an_unknown_scenario_is_refused_naming_the_test(tmp_path: Path) -> None:
    (tmp_path / "test_unknown.py").write_text(
        'import pytest\n\n\n@pytest.mark.fault("the moon fell")\ndef test_moon() -> None:\n'
        "    pass\n"
    )
    run = run_suite(tmp_path)
    assert run.returncode != 0
    assert "test_unknown.py::test_moon: unknown fault scenario 'the moon fell'" in (
        run.stdout + run.stderr
    )


def test_the_suites_top_level_conftest_loads_it(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("faults")
