"""The failures a site sees, and the tests that inflict each one on the real components.

A test marked ``@pytest.mark.fault(SCENARIO)`` causes that failure and asserts that no
reading is lost, no decision or action repeats, and every refusal says why. At the end of
a run the session prints one table, scenario against result; a scenario no test of the run
causes says so (the README carries the table).

A plugin of the top-level ``conftest`` (``pytest_plugins``): with ``--numprocesses`` only
the controller prints the summary, and it loads no conftest below ``tests/`` (it collects
nothing itself); the workers mark the reports, the controller reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

SCENARIOS = (
    "operator killed mid-reconcile",
    "operator killed mid-rollout",
    "runner killed mid-batch",
    "worker killed mid-action",
    "Kafka down 60 s (the edge buffers)",
    "edge agent SIGKILLed",
    "model server down (fallback)",
    "OPA down (fail closed)",
    "Temporal restarted while an action waits for approval",
    "API server restarted during a rollout",
    "network partition between a runner and its model server",
    "edge buffer's disk full",
    "malformed custom resource",
    "malformed event",
    "audit tampered with",
    "admission webhook down",
)
NO_TEST = "no test in this run"
PROPERTY = "aios-fault"
"""How a test's fault scenario reaches the reports (and with ``-n``, the controller)."""
RESULTS: dict[str, dict[str, str]] = {}
"""Per scenario, the outcome of each test that causes it, by node id."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault(scenario): causes one of faults.SCENARIOS")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("fault"):
            (scenario,) = mark.args
            if scenario not in SCENARIOS:
                raise pytest.UsageError(f"{item.nodeid}: unknown fault scenario {scenario!r}")
            item.user_properties.append((PROPERTY, scenario))
            RESULTS.setdefault(scenario, {})[item.nodeid] = "not run"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test's outcome is its call's, or its setup's when that failed."""
    if report.when != "call" and report.passed:
        return
    for name, scenario in report.user_properties:
        if name == PROPERTY:
            RESULTS.setdefault(scenario, {})[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("fault suite")
        for row in table({s: list(found.items()) for s, found in RESULTS.items()}):
            terminalreporter.write_line(row)


def table(results: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Markdown rows: each scenario, its tests' outcomes (``passed``, ``failed``, …), and
    one result: passed only when every test of it ran and passed."""
    rows = ["| scenario | result | tests |", "|---|---|---|"]
    for scenario in SCENARIOS:
        found = results.get(scenario, [])
        rows.append(f"| {scenario} | {verdict(o for _, o in found)} | {tests(found)} |")
    return rows


def verdict(outcomes: Iterable[str]) -> str:
    seen = list(outcomes)
    if not seen:
        return NO_TEST
    if all(o == "passed" for o in seen):
        return "passed"
    return "failed" if "failed" in seen else "not run"


def tests(found: list[tuple[str, str]]) -> str:
    """The tests by file and name (node ids without the directory), sorted: with two
    workers, reports arrive in any order."""
    names = sorted({node.rsplit("/", 1)[-1].split("[")[0] for node, _ in found})
    return ", ".join(f"`{name}`" for name in names) or "—"
