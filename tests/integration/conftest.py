"""Fixtures that run the real local site once per test session.

A component that cannot be obtained or does not start fails the tests that need it with
its log tail (``ComponentFailed`` / ``ComponentUnavailable``); nothing is skipped.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aios.stack.components import ComponentUnavailable
from aios.stack.platform import install_crds, site_environment, start_operator
from aios.stack.pods import PodSupervisor
from aios.stack.process import ComponentFailed, ManagedProcess
from aios.stack.site import Site


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Every real component, started on loopback ports in a fresh directory."""
    local = Site(tmp_path_factory.mktemp("site"))
    try:
        local.start()
    except (ComponentFailed, ComponentUnavailable) as error:
        pytest.fail(f"the local site did not start: {error}", pytrace=False)
    yield local
    local.stop()


@pytest.fixture(scope="session")
def crds(site: Site) -> list[str]:
    return install_crds(site)


@pytest.fixture(scope="session")
def operator(site: Site, crds: list[str], pods: PodSupervisor) -> ManagedProcess:
    try:
        # Policies audit existing objects every few seconds, not every minute.
        return start_operator(site, {**pods.environment(), "AIOS_POLICY_AUDIT_INTERVAL": "3"})
    except ComponentFailed as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def pods(site: Site) -> Iterator[PodSupervisor]:
    """The local kubelet: aios pods bound to the kwok node run as host processes."""
    supervisor = PodSupervisor(site.endpoints.kubeconfig, site.directory / "pods").start()
    yield supervisor
    supervisor.stop()


@pytest.fixture
def namespace(site: Site, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    readable = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    name = f"t-{readable[5:40].strip('-')}-{uuid.uuid4().hex[:6]}"
    site.kubectl(["create", "namespace", name])
    yield name
    site.kubectl(["delete", "namespace", name, "--wait=false"])


class Kubectl:
    """The site's kubectl with JSON helpers; failures raise with kubectl's stderr."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        return self.site.kubectl(list(args), stdin=stdin)

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run without raising, for tests that expect a rejection."""
        from aios.stack.components import KUBERNETES

        return subprocess.run(
            [
                str(KUBERNETES.binary("kubectl")),
                f"--kubeconfig={self.site.endpoints.kubeconfig}",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "-o", "json"))


@pytest.fixture(scope="session")
def kubectl(site: Site) -> Kubectl:
    return Kubectl(site)


@pytest.fixture(scope="session")
def site_env(site: Site) -> dict[str, str]:
    return site_environment(site)


REPO = Path(__file__).resolve().parents[2]
