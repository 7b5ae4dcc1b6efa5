"""Processes that fill the component cache at once (``make``'s parallel jobs, a test
run beside ``make run`` on a fresh machine) all get a complete copy: one fills it, the
others wait and take it (``components.exclusive``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hang import HANG_SECONDS

from aios.stack.components import HACK, Component, versions

FILL = """
import sys
from importlib.metadata import version
import pytriton  # imported before the start, so the copies overlap
from aios.stack.components import triton
version("nvidia-pytriton")
print("ready", flush=True)
sys.stdin.readline()  # all at once
print(triton().root)
"""


def test_processes_filling_the_triton_cache_at_once_all_get_it_complete(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "AIOS_CACHE": str(tmp_path)}
    fillers = [
        subprocess.Popen(
            [sys.executable, "-c", FILL],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for filler in fillers:
        assert filler.stdout is not None and filler.stdout.readline() == "ready\n"
    for filler in fillers:  # go, all of them, before waiting for any
        assert filler.stdin is not None
        filler.stdin.write("go\n")
        filler.stdin.flush()
    results = [filler.communicate(timeout=HANG_SECONDS) for filler in fillers]
    assert [f.returncode for f in fillers] == [0] * 4, [err[-800:] for _, err in results]
    roots = {Path(out.strip()) for out, _ in results}
    [root] = roots
    assert (root / ".complete").exists()
    assert (root / "backends" / "python" / "triton_python_backend_stub").exists()


def test_a_component_built_in_the_background_is_waited_for_and_then_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOS_CACHE", str(tmp_path))
    crds = Component("prometheus-operator-crds", "PROMETHEUS_OPERATOR_VERSION")
    build = crds.obtain_in_background()
    assert build is not None
    home = crds.ensure()  # obtain.sh's lock: it waits for the build under way, or builds
    assert sorted(p.name for p in (home / "crds").iterdir()) == [
        "monitoring.coreos.com_podmonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
        "monitoring.coreos.com_servicemonitors.yaml",
    ]
    assert build.wait(timeout=HANG_SECONDS) == 0
    assert crds.obtain_in_background() is None  # cached: nothing to start


@pytest.fixture
def silent_proxy() -> Iterator[tuple[str, socket.socket]]:
    """A module proxy that accepts connections and never answers: a build stuck downloading."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", server


@pytest.mark.parametrize("ending", ["fails", "is interrupted"])
def test_a_build_leaves_no_scratch_folder_however_it_ends(
    ending: str, tmp_path: Path, silent_proxy: tuple[str, socket.socket]
) -> None:
    proxy, server = silent_proxy
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "AIOS_CACHE": str(tmp_path / "cache"),
        "TMPDIR": str(scratch),  # where mktemp makes the build's folder
        "GOMODCACHE": str(tmp_path / "modules"),  # nothing cached: etcd must be downloaded
        "GOPROXY": "off" if ending == "fails" else proxy,
        "GOTOOLCHAIN": "local",
    }
    build = subprocess.Popen(
        [str(HACK / "obtain.sh"), "etcd"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    if ending == "is interrupted":
        server.settimeout(HANG_SECONDS)
        connection, _ = server.accept()  # go is downloading, inside the scratch folder
        assert [p.name for p in scratch.iterdir()] != []
        os.killpg(build.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        connection.close()
    _, stderr = build.communicate(timeout=HANG_SECONDS)
    assert build.returncode == (1 if ending == "fails" else 130), stderr[-800:]
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "cache" / "etcd" / versions()["ETCD_VERSION"] / ".complete").exists()
