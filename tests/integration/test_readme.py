"""The README runs: its walkthroughs, executed as a user types them.

A fenced block whose info string is ``bash test=FLOW`` is part of walkthrough FLOW (the
README's way of marking a block to run, as doc-test tools mark theirs; other blocks are
prose). Each flow runs in one shell, block after block in README order, from the
repository's root, with a home and a site directory of its own, so what one block exports
(``eval "$(aiosctl env)"``) the next one has. A block marked ``teardown`` runs last, even
after a failure. A ``text output`` block right after a test block lists lines its output
must show (whitespace collapsed; ``…`` stands for anything). Placeholders such as
``<workflow id>`` are filled when the block runs, from the site's state or from what the
previous block printed, as a reader copies an id from it. A block marked
``browser=STEP`` is followed by what the reader does next in a browser (``BROWSER_STEPS``),
done in headless Chromium: the README's screenshots of the console come from there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from console_support import card, headless_chromium, live_text, screenshot, sign_in
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from support import wait_for

from aios.connectors.temporal import connect as connect_temporal
from aios.stack.components import cache_root

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
BLOCK_TIMEOUT = 1200


@dataclass
class Block:
    flow: str
    body: str
    line: int
    teardown: bool
    browser: str = ""
    output: list[str] = field(default_factory=list)


def readme_blocks(text: str) -> list[Block]:
    """The test blocks of ``text`` in order, each with the output block that follows it."""
    found: list[Block] = []
    previous_end = -1
    for match in FENCE.finditer(text):
        words = match.group("info").split()
        options = dict(w.split("=", 1) if "=" in w else (w, "") for w in words[1:])
        line = text.count("\n", 0, match.start()) + 1
        if words[:1] == ["bash"] and "test" in options:
            found.append(
                Block(
                    options["test"],
                    match.group("body"),
                    line,
                    "teardown" in options,
                    options.get("browser", ""),
                )
            )
        elif words[:1] == ["text"] and "output" in options and found:
            between = text[previous_end : match.start()]
            assert not between.strip(), f"README line {line}: an output block follows its block"
            found[-1].output = [s.strip() for s in match.group("body").splitlines() if s.strip()]
        previous_end = match.end()
    return found


def flows() -> dict[str, list[Block]]:
    result: dict[str, list[Block]] = {}
    for block in readme_blocks(README.read_text()):
        result.setdefault(block.flow, []).append(block)
    return result


def shows(output: str, expected: str) -> bool:
    """Whether ``output`` has a line with ``expected``'s words in order (``…``: anything)."""
    parts = [" ".join(p.split()) for p in expected.split("…")]
    pattern = ".*".join(re.escape(p) for p in parts)
    return any(re.search(pattern, " ".join(line.split())) for line in output.splitlines())


def waiting_action(env: dict[str, str], printed: str) -> str:
    """The id of an action waiting for approval, once the site has one."""

    async def find() -> str | None:
        client = await connect_temporal(env["AIOS_TEMPORAL_ADDRESS"])
        query = "WorkflowType='ActionWorkflow' AND ExecutionStatus='Running'"
        async for execution in client.list_workflows(query):
            state = await client.get_workflow_handle(execution.id).query("state")
            if state.get("phase") == "awaiting-approval":
                return execution.id
        return None

    found: str = wait_for(
        lambda: asyncio.run(find()), BLOCK_TIMEOUT, what="an action waiting for approval"
    )
    return found


def audited_action(env: dict[str, str], printed: str) -> str:
    """The action id the previous block printed (``follow it with: aiosctl audit trace ID``),
    once policy's answer is in the audit log (``trace --wait``): it is appended a moment
    after the action starts, and a reader takes longer than that to copy the id."""
    found = re.search(r"aiosctl audit trace (\S+)", printed)
    assert found, f"no action id in the previous block's output:\n{printed}"
    action_id = found.group(1)
    trace = ["audit", "trace", action_id, "--wait", str(BLOCK_TIMEOUT), "-o", "json"]
    traced = subprocess.run(
        [str(REPO / ".venv/bin/aiosctl"), *trace],
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT + 120,
    )
    assert traced.returncode == 0, f"action {action_id} not audited: {traced.stderr}"
    assert json.loads(traced.stdout)["policyDecisions"], f"no policy decision for {action_id}"
    return action_id


PLACEHOLDERS: dict[str, Callable[[dict[str, str], str], str]] = {
    "<workflow id>": waiting_action,
    "<action id>": audited_action,
}


def supervisor_in_the_console(
    driver: WebDriver, env: dict[str, str], output: str, directory: Path
) -> None:
    """Alice signs in with the token the block printed: the street-cleaning dispatch the city
    asked waits for her with its lineage and her Approve button, and the overview shows the
    city's intent, model and gateway. The README's screenshots."""
    url, token = env["AIOS_CONSOLE_URL"], output.split()[-1]
    sign_in(driver, url, token)
    waiting = card(driver, url, timeout=BLOCK_TIMEOUT)
    for shown in ("dispatch-street-cleaning", "via gateway district-7", "pm25-anomaly@"):
        assert shown in waiting.text, f"{shown!r} not in the card:\n{waiting.text}"
    assert waiting.find_elements(By.CSS_SELECTOR, "button.approve"), "she may approve it"
    screenshot(driver, directory, "inbox")
    driver.get(f"{url}/overview")
    for row in ("intent", "model", "gateway"):
        name = {"intent": "pm25-alerting", "model": "pm25-anomaly", "gateway": "district-7"}[row]
        assert "True" in live_text(driver, f'tr[data-{row}="default/{name}"]'), f"{name} Ready"
    screenshot(driver, directory, "overview")


BROWSER_STEPS: dict[str, Callable[[WebDriver, dict[str, str], str, Path], None]] = {
    "console": supervisor_in_the_console
}


class Shell:
    """One user's shell: each block runs in bash and leaves its environment to the next."""

    def __init__(self, env: dict[str, str], state: Path) -> None:
        self.env, self.state = env, state
        self.printed = ""  # the previous block's output
        self.browser: WebDriver | None = None

    def run(self, block: Block) -> str:
        body = block.body
        for placeholder, resolve in PLACEHOLDERS.items():
            if placeholder in body:
                body = body.replace(placeholder, shlex.quote(resolve(self.env, self.printed)))
        script = f"set -euo pipefail\n{body}\nenv -0 > {shlex.quote(str(self.state))}\n"
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"README line {block.line} failed (exit {result.returncode}):\n{body}\n"
            f"--- output ---\n{result.stdout[-4000:]}\n--- errors ---\n{result.stderr[-4000:]}"
        )
        pairs = (p.split("=", 1) for p in self.state.read_text().split("\0") if "=" in p)
        self.env, self.printed = dict(pairs), result.stdout
        missing = [line for line in block.output if not shows(result.stdout, line)]
        assert not missing, (
            f"README line {block.line}: the output lacks {missing}:\n{result.stdout[-4000:]}"
        )
        if block.browser:
            assert self.browser is not None, f"README line {block.line}: no browser"
            BROWSER_STEPS[block.browser](self.browser, self.env, result.stdout, self.state.parent)
        return result.stdout


@pytest.fixture
def shell(tmp_path: Path, flow: str) -> Iterator[Shell]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AIOS_SITE_DIR": str(tmp_path / "site"),
        "AIOS_CACHE": str(cache_root()),
    }
    shell = Shell(env, tmp_path / "env")
    if not any(b.browser for b in flows()[flow]):
        yield shell
        return
    with headless_chromium() as shell.browser:
        yield shell


@pytest.mark.parametrize("flow", sorted(flows()))
def test_the_readme_walkthrough_runs(flow: str, shell: Shell) -> None:
    blocks = flows()[flow]
    try:
        for block in blocks:
            if not block.teardown:
                shell.run(block)
    finally:
        for block in blocks:
            if block.teardown:
                shell.run(block)


def test_the_readme_marks_its_walkthroughs() -> None:
    """The walkthroughs are there, and each ends by taking its site down again."""
    found = flows()
    assert {"city", "chart"} <= set(found)
    assert {b.browser for bs in found.values() for b in bs if b.browser} <= set(BROWSER_STEPS)
    for flow, blocks in found.items():
        assert any("aiosctl down" in b.body for b in blocks if b.teardown or b is blocks[-1]), flow
