"""Signed checkpoints of the audit chain: what the chain alone cannot catch (a truncated
tail, a log chained afresh) and what a forged or foreign signature looks like."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aios.connectors import audit
from aios.connectors import audit_checkpoint as checkpoints

LOG = "aios.audit.log"


def chained(count: int, note: str = "") -> list[audit.AuditRecord]:
    records, head = [], audit.GENESIS
    for seq in range(count):
        event = audit.event("admission", f"ModelDeployment city/m{seq}", {"i": seq, "note": note})
        record = audit.chain(event, seq, head, {"topic": "events", "partition": 0, "offset": seq})
        head = record["hash"]
        records.append(audit.AuditRecord.parse(audit.canonical(record)))
    return records


def key_file(tmp_path: Path, name: str = "private.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def sign(records: list[audit.AuditRecord], key: Path) -> checkpoints.SignedCheckpoint:
    head = records[-1]
    checkpoint = checkpoints.Checkpoint(LOG, head.seq, head.hash, audit.now_rfc3339())
    return checkpoints.FileSigner(key).sign(checkpoint)


def test_the_log_as_signed_and_the_records_appended_since_hold(tmp_path: Path) -> None:
    records = chained(30)
    signed = sign(records[:20], key_file(tmp_path))
    result = checkpoints.check(records, signed)
    assert result.ok, result.reason
    assert "seq 19" in result.reason and "10 records appended since" in result.reason


def test_records_deleted_at_the_tail_are_counted(tmp_path: Path) -> None:
    records = chained(30)
    signed = sign(records, key_file(tmp_path))
    truncated = records[:-10]
    assert audit.verify(truncated).ok  # the chain alone cannot tell
    result = checkpoints.check(truncated, signed)
    assert not result.ok and result.missing == 10
    assert "10 records missing at the tail" in result.reason and "seq 20 to 29" in result.reason


def test_a_log_chained_afresh_is_a_rewrite(tmp_path: Path) -> None:
    signed = sign(chained(30), key_file(tmp_path))
    forged = chained(30, note="edited")
    assert audit.verify(forged).ok
    result = checkpoints.check(forged, signed)
    assert not result.ok and "the log was rewritten: record seq 29" in result.reason


def test_a_checkpoint_edited_to_fit_a_truncated_log_fails_its_signature(tmp_path: Path) -> None:
    records = chained(30)
    signed = sign(records, key_file(tmp_path))
    edited = checkpoints.SignedCheckpoint.from_json(
        signed.to_json()
        .replace(f'"seq":{records[-1].seq}', '"seq":19')
        .replace(records[-1].hash, records[19].hash)
    )
    assert edited.checkpoint.seq == 19
    result = checkpoints.check(records[:20], edited)
    assert not result.ok and result.reason.startswith("bad signature")


def test_only_pinned_keys_vouch_and_a_rotated_key_is_named(tmp_path: Path) -> None:
    old, new = key_file(tmp_path, "old.pem"), key_file(tmp_path, "new.pem")
    old_public = checkpoints.load_private_key(old).public_key()
    new_public = checkpoints.load_private_key(new).public_key()
    records = chained(5)
    by_new = sign(records, new)
    assert by_new.key_id == checkpoints.key_id(new_public) != checkpoints.key_id(old_public)

    only_old = {checkpoints.key_id(old_public): old_public}
    refused = checkpoints.check(records, by_new, only_old)
    assert not refused.ok and f"by {by_new.key_id}: not a trusted key" in refused.reason
    both = {**only_old, checkpoints.key_id(new_public): new_public}
    assert checkpoints.check(records, by_new, both).ok


def test_a_checkpoint_carrying_someone_elses_key_is_not_pinned_trust(tmp_path: Path) -> None:
    """An attacker re-signs with their own key: fine for a verifier who pins nothing (it is
    told so), refused by one who pins the site's key."""
    records = chained(5)
    site_key = checkpoints.load_private_key(key_file(tmp_path, "site.pem")).public_key()
    forged = sign(records, key_file(tmp_path, "attacker.pem"))
    assert checkpoints.check(records, forged).ok
    pinned = {checkpoints.key_id(site_key): site_key}
    assert not checkpoints.check(records, forged, pinned).ok


def test_the_signed_form_round_trips_and_rejects_other_documents(tmp_path: Path) -> None:
    signed = sign(chained(3), key_file(tmp_path))
    assert checkpoints.SignedCheckpoint.from_json(signed.to_json()) == signed
    with pytest.raises(ValueError, match="not a signed audit checkpoint"):
        checkpoints.SignedCheckpoint.from_json('{"log": "x"}')


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="Ed25519"):
        checkpoints.FileSigner(path).sign(checkpoints.Checkpoint(LOG, 0, "0" * 64, "now"))
