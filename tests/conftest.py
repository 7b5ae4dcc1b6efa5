"""How ``make test``'s two workers (``pytest --numprocesses=2``) share the suite.

One worker runs the tests on the session's site (``integration/conftest.py``); the other,
beside it, runs the unit tests and the tests that start a site or a server of their own, then
a few of the session site's modules on a session site of its own, so that both finish at
about the same time. The split is by test id prefix, which the controller knows alone (it
collects nothing itself).
"""

from __future__ import annotations

import time
from subprocess import Popen
from typing import Any

import pytest

from aios.stack.components import KSERVE

pytest_plugins = ("faults",)
"""The fault suite's table (``faults``): here, where the controller of ``-n`` loads it."""

BESIDE_THE_SESSION_SITE = (
    "tests/unit/",
    "tests/integration/test_admission_tls.py",
    "tests/integration/test_aiosctl_site.py",
    "tests/integration/test_edge_agent.py::test_kafka_down_for_a_minute",
    "tests/integration/test_helm.py",
    "tests/integration/test_policy_library.py",
    "tests/integration/test_policy_opa.py",
    "tests/integration/test_readme.py",
)
"""Tests that never use the session's site: one that does is refused (it would start a
second session site in the other worker)."""


ON_A_SECOND_SITE = (
    "tests/integration/test_model_kserve.py",
    "tests/integration/test_operator_restart.py",
    "tests/integration/test_replay.py",
    "tests/integration/test_rollout_replay.py",
    "tests/integration/test_rollout_restart.py",
)
"""Session-site modules that the worker beside the session's site runs once its own tests are
done, on a session site of its own (its start and the chart's install cost about a minute and
a half), so that both workers finish at about the same time: modules that restart, replay,
install or remove whole components (KServe), so they disturb no other test's site either.
The fortnight of real readings (test_outcomes_replay) went back to the session's site: with
it here this worker was the last to finish in six of seven runs, by 2.7 minutes on average."""

BESIDE, SECOND_SITE, SESSION_SITE = "beside", "second-site", "session-site"
SHARE_NAMES = {
    BESIDE: "beside the session's site",
    SECOND_SITE: "on a second session site",
    SESSION_SITE: "the session's site",
}


def beside_the_session_site(nodeid: str) -> bool:
    return nodeid.startswith(BESIDE_THE_SESSION_SITE)


def work_unit(nodeid: str) -> str:
    """Which of the three work units a test is in. The scheduler gives each worker one, and
    the third to the worker whose unit runs out first: the one beside the session's site."""
    if beside_the_session_site(nodeid):
        return BESIDE
    return SECOND_SITE if nodeid.startswith(ON_A_SECOND_SITE) else SESSION_SITE


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class SiteSharing(LoadScopeScheduling):
        """Work units by site: the session site's tests, the rest, and those moved to a
        second session site."""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return SiteSharing(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if beside_the_session_site(item.nodeid) and "site" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(
                f"{item.nodeid} uses the session's site: move it out of BESIDE_THE_SESSION_SITE"
            )


KSERVE_TESTS = "tests/integration/test_model_kserve.py"
"""The only tests that need KServe's controller: it is built beside the tests (the last Go
build, 2.4 minutes of both cores from empty caches), not before them."""

STARTED = pytest.StashKey[float]()
SHARES = pytest.StashKey[set[str]]()
KSERVE_BUILD = pytest.StashKey[Popen[bytes] | None]()
WORKER_TIMES: dict[str, tuple[str, float]] = {}
"""What each worker ran and for how long (seconds), as the controller heard: the slower one
is ``make test``'s share of the 60-minute budget."""


def runs(config: pytest.Config, module: str) -> bool:
    """Whether the command line's paths take in ``module`` (given or under a folder given)."""
    wanted = config.rootpath / module
    for arg in config.args:
        given = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if given == wanted or given in wanted.parents:
            return True
    return False


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[STARTED] = time.monotonic()
    session.config.stash[SHARES] = set()
    # The controller (or a run without workers) starts KServe's build once, in the idle CPU
    # the tests leave; the fixture that installs KServe waits for it (hack/obtain.sh's lock).
    starts = not hasattr(session.config, "workerinput") and runs(session.config, KSERVE_TESTS)
    session.config.stash[KSERVE_BUILD] = KSERVE.obtain_in_background() if starts else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[SHARES].add(SHARE_NAMES[work_unit(item.nodeid)])


def pytest_sessionfinish(session: pytest.Session) -> None:
    build = session.config.stash.get(KSERVE_BUILD, None)
    if build is not None:  # no process outlives the session (it is done long before, mostly)
        build.wait()
    output = getattr(session.config, "workeroutput", None)
    if output is not None:  # a worker: tell the controller
        output["seconds"] = time.monotonic() - session.config.stash[STARTED]
        output["share"] = ", ".join(sorted(session.config.stash[SHARES]))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    output = getattr(node, "workeroutput", None) or {}
    if "seconds" in output:
        WORKER_TIMES[node.gateway.id] = (output["share"], output["seconds"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for worker, (ran, seconds) in sorted(WORKER_TIMES.items()):
        terminalreporter.write_line(f"worker {worker} ({ran or 'nothing'}): {seconds / 60:.1f} min")
