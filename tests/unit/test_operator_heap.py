"""The operator's heap trim gives freed memory below live allocations back to the system."""

from __future__ import annotations

from pathlib import Path

from aios.operator.runtime.heap import trimmer

BLOCK = 64 * 1024
"""Below glibc's mmap threshold (128 KB), so each block is carved from a heap."""


def anonymous_kb() -> int:
    """This process's anonymous resident memory (``RssAnon``), in KB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_a_trim_returns_the_holes_that_free_leaves_between_live_blocks() -> None:
    trim = trimmer()
    assert trim is not None, "the C library here is glibc: it has malloc_trim"
    trim()
    blocks = [bytes(BLOCK) for _ in range(1024)]  # 64 MB, every page touched
    del blocks[::2]  # 32 MB of holes, each between two live blocks: free keeps them
    before = anonymous_kb()
    assert trim() is True
    given_back = before - anonymous_kb()
    assert given_back > 16 * 1024, f"only {given_back} KB given back of 32 MB of holes"
    assert len(blocks) == 512  # the live blocks stay
