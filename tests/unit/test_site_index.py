"""A site keeps its index (and so its addresses) across `down` and `up`: its cluster stored
Service IPs derived from it, which cannot change. So a stopped site's index is not free."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios.stack.node import INDEX_FILE, IndexClaims, NodeFailed, choose_index, index_taken

ROUTES = "10.96.7.0/24 via 10.251.7.2 dev aios7\n10.251.7.0/24 dev aios7 proto kernel\n"


def test_an_index_is_taken_by_its_link_or_any_of_its_routes() -> None:
    assert index_taken(7, {"lo", "aios7"}, "")
    assert index_taken(7, {"lo"}, ROUTES)
    assert not index_taken(8, {"lo", "aios7"}, ROUTES)


def test_a_new_site_takes_the_first_index_no_site_uses_or_holds() -> None:
    assert choose_index(None, {"lo", "aios1"}, ROUTES, {}) == 2
    assert choose_index(None, {"lo"}, "", {}) == 1
    stopped = {1: Path("/a"), 2: Path("/b")}
    assert choose_index(None, {"lo", "aios3"}, ROUTES, stopped) == 4


def test_a_site_gets_its_own_index_back_or_a_clear_refusal() -> None:
    assert choose_index(9, {"lo", "aios1"}, ROUTES, {1: Path("/a")}) == 9, "its own, though lower"
    with pytest.raises(NodeFailed, match="in use by another site"):
        choose_index(7, {"lo"}, ROUTES, {})
    with pytest.raises(NodeFailed, match="also recorded by the site in /a"):
        choose_index(9, {"lo"}, "", {9: Path("/a")})


def node_directory(root: Path, name: str, index: int | None) -> Path:
    directory = root / name / "node"
    directory.mkdir(parents=True)
    if index is not None:
        (directory / INDEX_FILE).write_text(f"{index}\n")
    return directory


def test_a_claim_holds_while_its_directory_records_the_index(tmp_path: Path) -> None:
    claims = IndexClaims(tmp_path / "claims")
    stopped = node_directory(tmp_path, "stopped", 3)
    removed = node_directory(tmp_path, "removed", 4)
    moved = node_directory(tmp_path, "moved", 5)
    me = node_directory(tmp_path, "me", 6)
    for index, directory in ((3, stopped), (4, removed), (5, moved), (6, me)):
        claims.claim(index, directory)
    (removed / INDEX_FILE).unlink()
    removed.rmdir()
    (moved / INDEX_FILE).write_text("8\n")

    assert claims.held_by_others(me) == {3: stopped}, "removed and moved claims lapsed"
    assert 6 in claims.held_by_others(stopped), "mine, seen from another site"
