"""A site keeps its index (and so its addresses) across `down` and `up`: its cluster stored
Service IPs derived from it, which cannot change."""

from __future__ import annotations

import pytest

from aios.stack.node import NodeFailed, choose_index, index_taken

ROUTES = "10.96.7.0/24 via 10.251.7.2 dev aios7\n10.251.7.0/24 dev aios7 proto kernel\n"


def test_an_index_is_taken_by_its_link_or_any_of_its_routes() -> None:
    assert index_taken(7, {"lo", "aios7"}, "")
    assert index_taken(7, {"lo"}, ROUTES)
    assert not index_taken(8, {"lo", "aios7"}, ROUTES)


def test_a_new_site_takes_the_first_free_index() -> None:
    assert choose_index(None, {"lo", "aios1"}, ROUTES) == 2
    assert choose_index(None, {"lo"}, "") == 1


def test_a_site_gets_its_own_index_back_or_a_clear_refusal() -> None:
    assert choose_index(9, {"lo", "aios1"}, ROUTES) == 9, "its own, though a lower one is free"
    with pytest.raises(NodeFailed, match="in use by another site"):
        choose_index(7, {"lo"}, ROUTES)
