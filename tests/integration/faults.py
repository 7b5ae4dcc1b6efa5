"""The failures a site sees, and the tests that inflict each one on the real components.

A test marked ``@pytest.mark.fault(SCENARIO)`` causes that failure and asserts that no
reading is lost, no decision or action repeats, and every refusal says why. At the end of
a run the session prints one table, scenario against result; a scenario no test of the run
causes says so (the README carries the table).
"""

from __future__ import annotations

from collections.abc import Iterable

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
    """The tests by file and name (node ids without the directory)."""
    names = dict.fromkeys(node.rsplit("/", 1)[-1].split("[")[0] for node, _ in found)
    return ", ".join(f"`{name}`" for name in names) or "—"
