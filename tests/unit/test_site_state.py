"""``site.json`` while a site starts: its components start in parallel threads, and each
records its process as it spawns it (``SiteState.note_process``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aios.stack.site.state import SiteState


@pytest.fixture
def threads_switching_often() -> Iterator[None]:
    """Threads take turns between almost any two steps, as on a loaded machine."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("threads_switching_often")
def test_components_recording_their_processes_at_once_all_reach_site_json(
    tmp_path: Path,
) -> None:
    state = SiteState(directory=str(tmp_path), supervisor_pid=1)
    components, each = 8, 100

    def start(component: int) -> None:
        for i in range(each):
            name = f"c{component}-{i}"
            state.note_process(name, component * each + i, tmp_path / f"{name}.log")

    with ThreadPoolExecutor(max_workers=components) as pool:
        for future in [pool.submit(start, c) for c in range(components)]:
            future.result()  # a save reading the tables while another thread writes raises

    saved = json.loads((tmp_path / "site.json").read_text())
    assert len(saved["processes"]) == len(saved["logs"]) == components * each
    assert SiteState.load(tmp_path).processes == state.processes
    state.forget_process("c0-0")
    assert "c0-0" not in SiteState.load(tmp_path).processes
