"""The local site's static tokens: the admin's and its people's, kept across restarts."""

from __future__ import annotations

import csv
from pathlib import Path

from aios.stack.cluster import ADMIN_TOKEN_USER, LOCAL_PEOPLE, static_tokens


def rows(path: Path) -> dict[str, list[str]]:
    return {row[1]: row for row in csv.reader(path.read_text().splitlines())}


def test_each_user_gets_a_token_with_their_groups(tmp_path: Path) -> None:
    tokens = static_tokens(tmp_path / "tokens.csv", tmp_path / "people")
    assert set(tokens) == {ADMIN_TOKEN_USER, *LOCAL_PEOPLE}
    assert len(set(tokens.values())) == len(tokens), "no two users share a token"
    written = rows(tmp_path / "tokens.csv")
    assert written[ADMIN_TOKEN_USER][3] == "system:masters"
    alice = written["alice"]
    assert alice[0] == tokens["alice"] and alice[3].split(",") == list(LOCAL_PEOPLE["alice"])
    assert (
        '"street-cleaning-supervisors,air-quality-leads"' in (tmp_path / "tokens.csv").read_text()
    )
    assert (tmp_path / "people" / "alice.token").read_text().strip() == tokens["alice"]
    assert (tmp_path / "tokens.csv").stat().st_mode & 0o077 == 0, "readable by the owner only"


def test_a_restart_keeps_the_tokens_and_adds_missing_people(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(f"admin-token,{ADMIN_TOKEN_USER},{ADMIN_TOKEN_USER},system:masters\n")
    first = static_tokens(path, tmp_path / "people")
    assert first[ADMIN_TOKEN_USER] == "admin-token", "an older site's admin token stays"
    again = static_tokens(path, tmp_path / "people")
    assert again == first
