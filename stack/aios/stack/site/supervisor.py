"""A site run by a supervisor process (``aiosctl up``), seen from another one: wait until it
is ready, or stop it and whatever it left behind (``aiosctl down``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from aios.stack.node import NodeState, teardown
from aios.stack.process import log_tail, terminate_group
from aios.stack.site.state import SiteState


def stop_running_site(directory: Path, timeout: float = 60) -> bool:
    """Stop the site a supervisor runs in ``directory``; return False when none runs."""
    try:
        state = SiteState.load(directory)
    except FileNotFoundError:
        return False
    terminate_group(state.supervisor_pid, grace=timeout)
    for pid in state.processes.values():  # anything the supervisor could not stop
        terminate_group(pid, grace=5)
    node = NodeState.load(directory / "node" / "node.json")
    if node is not None:  # a supervisor killed before it could tear its node down
        teardown(node)
        (directory / "node" / "node.json").unlink(missing_ok=True)  # its own teardown won
    state.ready, state.processes = False, {}
    state.save()
    return True


def wait_for_site(directory: Path, timeout: float) -> SiteState:
    """Wait until a supervisor reports its site ready (for ``aiosctl up --detach``); fail
    at once, with the end of its log, when the supervisor dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = SiteState.load(directory)
            if state.ready:
                return state
            if state.supervisor_pid and not process_alive(state.supervisor_pid):
                tail = log_tail(directory / "supervisor.log", 30) or (
                    f"(its log is empty: supervisor {state.supervisor_pid} died before it "
                    "logged anything, as when it is killed)"
                )
                raise RuntimeError(f"the site in {directory} did not start:\n{tail}")
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the site in {directory} was not ready after {timeout:.0f}s")


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (a detached supervisor is reaped by init, not by us)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
