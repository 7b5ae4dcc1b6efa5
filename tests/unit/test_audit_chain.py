"""The hash chain and its verifier, without a broker: every kind of tampering is named."""

from __future__ import annotations

import json

import pytest

from aios.connectors.audit import (
    GENESIS,
    AuditRecord,
    AuditWriter,
    canonical,
    chain,
    digest,
    event,
    verify,
)


def build(n: int) -> list[str]:
    """A chain of ``n`` records, as the appender would store them."""
    raws, head = [], GENESIS
    for seq in range(n):
        document = event("action-step", f"Action a-{seq}", {"step": "execute", "n": seq})
        record = chain(
            document, seq, head, {"topic": "aios.audit.events", "partition": 0, "offset": seq}
        )
        raws.append(canonical(record))
        head = record["hash"]
    return raws


def test_an_untouched_chain_verifies() -> None:
    result = verify(build(6))
    assert result.ok and result.first_bad is None and result.count == 6
    assert verify([]).ok


def test_records_link_to_their_predecessor() -> None:
    records = [AuditRecord.parse(raw) for raw in build(3)]
    assert records[0].prev_hash == GENESIS
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    assert all(digest(r.document) == r.hash for r in records)


@pytest.mark.parametrize("position", [0, 3, 5])
def test_a_flipped_byte_names_that_record(position: int) -> None:
    raws = build(6)
    index = raws[position].index(f"Action a-{position}") + len("Action a-")
    raw = raws[position]
    raws[position] = raw[:index] + chr(ord(raw[index]) ^ 1) + raw[index + 1 :]
    result = verify(raws)
    assert not result.ok and result.first_bad == position
    assert "changed" in result.reason


def test_a_flip_that_breaks_the_json_names_that_record() -> None:
    raws = build(4)
    raws[2] = raws[2].replace("{", "[", 1)
    result = verify(raws)
    assert (result.ok, result.first_bad) == (False, 2)
    assert "unreadable" in result.reason


def test_reformatting_is_a_change() -> None:
    raws = build(3)
    raws[1] = json.dumps(json.loads(raws[1]), indent=1)
    assert verify(raws).first_bad == 1


@pytest.mark.parametrize("removed", [0, 2, 4])
def test_a_removed_record_names_the_record_after_it(removed: int) -> None:
    raws = build(6)
    del raws[removed]
    result = verify(raws)
    assert (result.ok, result.first_bad) == (False, removed)
    assert f"seq {removed + 1}" in result.reason and "removed" in result.reason


def test_a_removed_last_record_is_not_detectable_without_an_anchor() -> None:
    # Truncation of the tail leaves a valid (shorter) chain: the count is what tells.
    raws = build(4)
    assert verify(raws[:-1]).count == 3


def test_a_swapped_pair_names_the_first_of_them() -> None:
    raws = build(6)
    raws[2], raws[3] = raws[3], raws[2]
    result = verify(raws)
    assert (result.ok, result.first_bad) == (False, 2)
    assert "seq 3" in result.reason


def test_an_inserted_record_is_named_even_with_a_valid_hash() -> None:
    raws = build(5)
    previous = AuditRecord.parse(raws[1])
    forged = chain(event("action-step", "forged", {}), 2, previous.hash, {"offset": 99})
    raws.insert(2, canonical(forged))
    result = verify(raws)
    assert (result.ok, result.first_bad) == (False, 2)
    assert "inserted" in result.reason


def test_events_need_a_known_kind() -> None:
    with pytest.raises(ValueError, match="unknown audit kind"):
        event("gossip", "x", {})


def test_an_event_names_its_site_when_the_process_has_one() -> None:
    assert event("reconcile", "x", {}, site="city-b")["site"] == "city-b"
    assert "site" not in event("reconcile", "x", {})  # records before sites had none
    assert AuditWriter(site="city-c").site == "city-c"
