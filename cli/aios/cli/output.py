"""``--output text|json|yaml`` for every aiosctl command: people read text (coloured where
the terminal supports it), scripts read JSON or YAML on stdout."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer
import yaml


class Output(StrEnum):
    text = "text"
    json = "json"
    yaml = "yaml"


Format = typer.Option(Output.text, "--output", "-o", help="text, json or yaml.")


def emit(document: Any, output: Output) -> None:
    """Print ``document`` as JSON or YAML; text output is each command's own."""
    if output is Output.json:
        print(json.dumps(document, indent=2))
    elif output is Output.yaml:
        print(yaml.safe_dump(document, sort_keys=False), end="")
