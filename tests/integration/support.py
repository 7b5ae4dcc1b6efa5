"""Helpers shared by the integration tests (imported as a module: pytest puts this
folder on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any], timeout: float = 180, interval: float = 0.5, what: str = ""
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail saying what and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"{what or 'condition'} not reached after {timeout}s; last value: {last!r}"
    )
