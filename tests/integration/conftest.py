"""Fixtures that run the real local site once per test session.

A component that cannot be obtained or does not start fails the tests that need it with
its log tail (``ComponentFailed`` / ``ComponentUnavailable``); nothing is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from model_support import STABLE, apply, ready
from support import SESSION_VALUES, wait_for

from aios.connectors import opa
from aios.connectors.kafka import EXTRA_CONFIG_ENV
from aios.stack import release
from aios.stack.components import ComponentUnavailable
from aios.stack.platform import site_environment
from aios.stack.process import ComponentFailed
from aios.stack.site import Site, kubectl_argv


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test on a site reports what is wrong with the site (a component that
    exited, a node that is not Ready or evicts, the release's pods that are not Ready)
    beside its own error, which often shows only the symptom."""
    report = yield
    fixtures = getattr(item, "funcargs", {})
    site = fixtures.get("site")
    if report.failed and isinstance(site, Site):
        problems = site.problems([fixtures["operator"]] if "operator" in fixtures else [])
        report.sections.append(("the site", "\n".join(problems) or "nothing wrong found"))
    return report


@pytest.fixture(scope="session", autouse=True)
async def opa_connections_closed() -> AsyncIterator[None]:
    """The OPA connections the tests' shared event loop keeps are closed with the session,
    not left to the garbage collector (each an "Unclosed client session" at exit)."""
    yield
    await opa.close_clients()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Every real component, started on loopback ports in a fresh directory."""
    local = Site(tmp_path_factory.mktemp("site"))
    try:
        local.start()
    except (ComponentFailed, ComponentUnavailable) as error:
        pytest.fail(f"the local site did not start: {error}", pytrace=False)
    with pytest.MonkeyPatch.context() as environment:
        # Like a user's ``eval "$(aiosctl env)"``: the tests' Kafka clients are the admin.
        environment.setenv(EXTRA_CONFIG_ENV, local.endpoints.kafka_config)
        yield local
    local.stop()


@pytest.fixture(scope="session")
def operator(site: Site) -> str:
    """aios installed by its Helm chart, from the images built here: the operator runs as
    the chart's pod, under the chart's RBAC only. Returns the release's namespace."""
    try:
        release.install(site, SESSION_VALUES)
    except (ComponentFailed, ComponentUnavailable) as error:
        pytest.fail(f"aios could not be installed: {error}", pytrace=False)
    return release.NAMESPACE


@pytest.fixture(scope="session")
def crds(operator: str) -> None:
    """The CRDs come with the chart."""


@pytest.fixture
def model_dir() -> Iterator[Path]:
    """A directory for model repositories that the node's pods can read through a hostPath
    (uid 65532: pytest's own temporary directories are private to root)."""
    found = Path(tempfile.mkdtemp(prefix="aios-test-models-"))
    found.chmod(0o755)
    yield found
    shutil.rmtree(found, ignore_errors=True)


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
        return subprocess.run(
            kubectl_argv(self.site.endpoints.kubeconfig, self.site.directory, list(args)),
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


@pytest.fixture
def stable_served(
    kubectl: Kubectl, operator: str, namespace: str
) -> Callable[[Callable[[str], dict[str, Any]]], dict[str, Any]]:
    """Where every rollout test starts: ``manifest(STABLE)`` applied in the test's namespace
    and Ready (its status returned); the test then applies the next version."""

    def serve(manifest: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        apply(kubectl, namespace, manifest(STABLE))
        found: dict[str, Any] = wait_for(lambda: ready(kubectl, namespace), timeout=180)
        return found

    return serve


@pytest.fixture(scope="session")
def site_env(site: Site) -> dict[str, str]:
    return site_environment(site)


REPO = Path(__file__).resolve().parents[2]


class Receiver:
    """Listens on the host's end of the node's link, where pods (action workers) reach it;
    ``calls`` holds (path, headers, body) of every POST."""

    def __init__(self, address: str, status: int = 200) -> None:
        self.calls: list[tuple[str, dict[str, str], Any]] = []
        self.status = status
        self.failures: dict[str, int] = {}
        """Per path, how many more POSTs to answer 500 (a target that fails at first)."""
        self.answered: list[tuple[str, int]] = []
        self.taken: list[tuple[str, str]] = []
        """(path, Idempotency-Key) of each POST answered with success: what the target did."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    parsed: Any = json.loads(body)
                except ValueError:
                    parsed = body.decode(errors="replace")
                receiver.calls.append((self.path, dict(self.headers), parsed))
                status = receiver.status
                if receiver.failures.get(self.path, 0) > 0:
                    receiver.failures[self.path] -= 1
                    status = 500
                receiver.answered.append((self.path, status))
                if status < 300:
                    receiver.taken.append((self.path, self.headers.get("Idempotency-Key", "")))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def idempotency_keys(self) -> list[str]:
        return [headers.get("Idempotency-Key", "") for _, headers, _ in self.calls]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver(site: Site) -> Iterator[Receiver]:
    """A real HTTP endpoint that counts the action webhooks it receives."""
    found = Receiver(site.endpoints.host_address)
    yield found
    found.close()
