"""Start, watch and stop one process of the local site, with its log in a file."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PR_SET_PDEATHSIG = 1
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aios-spawner")


class ComponentFailed(RuntimeError):
    """A component did not become healthy; carries its log tail for the test report."""

    def __init__(self, name: str, reason: str, log: Path | None) -> None:
        tail = log_tail(log) if log else ""
        super().__init__(
            f"{name}: {reason}" + (f"\n--- last lines of {log} ---\n{tail}" if tail else "")
        )
        self.name = name


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16_384))
            return "\n".join(handle.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A loopback port that is free now (the kernel picks it) and that this process has not
    handed out before: the kernel may pick a just-released port again, and two ports taken
    for one component (Kafka's broker and controller) or by components starting in
    parallel must differ."""
    with _HANDED_OUT_LOCK:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def _die_with_parent(supervisor: int) -> None:
    """In the child: get SIGTERM when the supervisor dies, so nothing is left behind.

    The kernel sends it when the *thread* that forked the child exits, so every child is
    forked by ``_SPAWNER``, one thread that lives as long as the supervisor. A supervisor
    that died between the fork and this call sends nothing: the child sees it has been
    handed to another parent, and goes at once.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        os._exit(1)


class ManagedProcess:
    """One component process: its own process group, its log file, a health probe."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        inherit_env: bool = True,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.probe: Callable[[], bool] | None = None
        self.probe_timeout = 0.0

    def start(self) -> ManagedProcess:
        return _SPAWNER.submit(self._spawn).result()

    def _spawn(self) -> ManagedProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_healthy(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` until it answers True; fail with the log tail on exit or timeout."""
        self.probe, self.probe_timeout = probe, timeout  # what a restart waits for again
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not self.running():
                code = self.popen.returncode if self.popen else None
                raise ComponentFailed(
                    self.name, f"exited with code {code} before it was healthy", self.log
                )
            try:
                if probe():
                    return
            except Exception as error:  # a probe failing is the normal state while starting
                last_error = f"{type(error).__name__}: {error}"
            time.sleep(0.25)
        raise ComponentFailed(
            self.name, f"not healthy after {timeout:.0f}s ({last_error})", self.log
        )

    def restart(self) -> None:
        """Stop, start again with the same command, and wait for the probe it last passed:
        a component's crash or upgrade, as the fault suite inflicts it."""
        assert self.probe is not None, f"{self.name} was never waited for"
        self.stop()
        self.start()
        self.wait_healthy(self.probe, self.probe_timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        terminate_group(self.popen.pid, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)


def terminate_group(pid: int, grace: float = 10.0) -> None:
    """Stop a process group led by ``pid``: polite first, then forceful."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (reaping the leader if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
