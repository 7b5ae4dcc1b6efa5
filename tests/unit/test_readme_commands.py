"""Every ``aiosctl`` command line the README shows exists, with the options it uses: a
command that drifts from the CLI fails here, even in a block that is prose, not a test
(the walkthroughs themselves run in ``tests/integration/test_readme.py``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aios.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"
COMMAND = re.compile(r"(?:^|[\s(`])(?:\.venv/bin/)?aiosctl ([a-z][^\n`#|)]*)")


def command_lines() -> list[str]:
    """Each ``aiosctl ...`` the README shows in a code block or inline code, as typed."""
    text = README.read_text().replace("\\\n", " ")
    return sorted({m.group(1).strip() for m in COMMAND.finditer(text)})


def split(line: str) -> tuple[list[str], list[str]]:
    """(the command path, e.g. ["audit", "verify"]; the options it uses)."""
    words = [w for w in shlex.split(line.replace("…", "").replace("[", " ").replace("]", " "))]
    path: list[str] = []
    for word in words:
        if word.startswith("-") or not re.fullmatch(r"[a-z]+", word) or len(path) == 2:
            break
        path.append(word)
    options = [w.split("=")[0] for w in words if re.fullmatch(r"--?[a-z][a-z-]*(=.*)?", w)]
    return path, options


def help_text(path: list[str]) -> str:
    """The help of the longest prefix of ``path`` that is a command."""
    runner = CliRunner()
    for end in range(len(path), 0, -1):
        result = runner.invoke(app, [*path[:end], "--help"], env={"COLUMNS": "200"})
        if result.exit_code == 0:
            return result.output
    raise AssertionError(f"aiosctl {' '.join(path)}: no such command")


def test_the_readme_shows_aiosctl_at_all() -> None:
    assert len(command_lines()) >= 10


@pytest.mark.parametrize("line", command_lines())
def test_each_aiosctl_line_of_the_readme_exists_with_its_options(line: str) -> None:
    path, options = split(line)
    assert path, f"not a command: aiosctl {line}"
    text = help_text(path)
    unknown = [o for o in options if o not in ("-h", "--help") and o not in text]
    assert not unknown, f"aiosctl {line}: no option {unknown} in its help"
