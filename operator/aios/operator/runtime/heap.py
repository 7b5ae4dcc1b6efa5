"""Freed memory handed back to the system, not kept by the C allocator.

glibc's ``free`` returns memory to the system only from the top of a heap; what is freed
below a live allocation stays in the process's resident set. The operator frees much of
what it allocates (watch events, API responses, applied manifests) between objects it
keeps, so its heaps fill with such holes. ``malloc_trim`` gives their whole pages back.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

TRIM_EVERY = 30.0
"""Seconds between two trims: a trim walks the heaps (a few ms at the operator's size)."""


def trimmer() -> Callable[[], bool] | None:
    """glibc's ``malloc_trim(0)``, which says whether it gave memory back; None elsewhere
    (musl has no such call: it returns freed memory itself)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own C library
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: bool(trim(0))


async def trim_forever(every: float = TRIM_EVERY) -> None:
    """Trim the heaps every ``every`` seconds, for the process's life."""
    trim = trimmer()
    if trim is None:
        return
    while True:
        await asyncio.sleep(every)
        trim()
