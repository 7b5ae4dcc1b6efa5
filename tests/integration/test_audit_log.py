"""The audit trail against the real broker: writers → one appender → hash-chained log,
exactly once across restarts, mirrored to a file, verified and traced by aiosctl, its head
signed into a ConfigMap of the real API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kubernetes import client
from support import wait_for

from aios.connectors import audit, kafka
from aios.connectors import audit_checkpoint as checkpoints
from aios.connectors.kube import api_client
from aios.stack.site import Site


@pytest.fixture
def topics(site: Site) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"t.audit.events.{suffix}", f"t.audit.log.{suffix}"


def drain(appender: audit.Appender, expected: int) -> None:
    """Run the appender until ``expected`` events are chained (fails after 30 rounds)."""
    chained = 0
    for _ in range(30):
        chained += appender.run_once(1.0)
        if chained >= expected:
            return
    raise AssertionError(f"chained {chained} of {expected} events")


def aiosctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aios.cli.main", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env} if env else None,
    )


def produce_raw(bootstrap: str, topic: str, lines: list[str]) -> None:
    kafka.ensure_topics(kafka.admin(bootstrap), [audit.log_topic_spec(topic)])
    producer = kafka.producer(bootstrap)
    for line in lines:
        producer.produce(topic, line.encode())
    assert producer.flush(10) == 0


def test_events_from_several_writers_become_one_verified_chain(
    site: Site, topics: tuple[str, str], tmp_path: Path
) -> None:
    events, log = topics
    bootstrap = site.endpoints.kafka_bootstrap
    writers = [audit.AuditWriter(bootstrap, topic=events) for _ in range(3)]
    ids = [
        writers[i % 3].record("action-step", f"action/a{i}", {"step": "execute", "i": i})
        for i in range(9)
    ]
    appender = audit.Appender(bootstrap, events, log, file=tmp_path / "audit.jsonl").open()
    drain(appender, 9)
    records = wait_for(lambda: len(found := audit.read_log(bootstrap, log)) == 9 and found, 30)
    assert [r.seq for r in records] == list(range(9))
    assert [r.event_id for r in records] == ids
    assert [r.details["i"] for r in records] == list(range(9))
    assert audit.verify(records).ok
    assert audit.read_file(tmp_path / "audit.jsonl") == [r.raw for r in records]

    described = kafka.describe_topics(kafka.admin(bootstrap), [log])[log]
    assert described.partitions == 1
    assert described.config["retention.ms"] == "-1"
    assert described.config["cleanup.policy"] == "delete"
    appender.close()


def test_a_retried_event_is_chained_once_and_bad_input_is_kept_with_its_reason(
    site: Site, topics: tuple[str, str]
) -> None:
    events, log = topics
    bootstrap = site.endpoints.kafka_bootstrap
    writer = audit.AuditWriter(bootstrap, topic=events)
    writer.record("action-step", "action/x", {"step": "execute"}, event_id="x:execute")
    writer.record("action-step", "action/x", {"step": "execute"}, event_id="x:execute")
    producer = kafka.producer(bootstrap)
    producer.produce(events, b"{not json")
    assert producer.flush(10) == 0
    appender = audit.Appender(bootstrap, events, log).open()
    drain(appender, 2)
    records = wait_for(lambda: len(found := audit.read_log(bootstrap, log)) == 2 and found, 30)
    assert [r.kind for r in records] == ["action-step", audit.MALFORMED]
    assert "Expecting property name" in records[1].details["reason"]
    assert audit.verify(records).ok
    appender.close()


def test_a_standby_appender_waits_then_takes_over_and_continues_the_chain(
    site: Site, topics: tuple[str, str], tmp_path: Path
) -> None:
    events, log = topics
    bootstrap = site.endpoints.kafka_bootstrap
    writer = audit.AuditWriter(bootstrap, topic=events)
    mirror = tmp_path / "audit.jsonl"
    first = audit.Appender(bootstrap, events, log, file=mirror).open()
    for i in range(3):
        writer.record("reconcile", f"Policy p{i}", {"generation": i})
    drain(first, 3)

    # A second operator replica: it joins, stands by while the first appends (no fencing).
    second = audit.Appender(bootstrap, events, log, file=mirror).open()
    writer.record("reconcile", "Policy late", {"generation": 9})
    assert second.run_once(2.0) == 0
    drain(first, 1)
    assert second.run_once(1.0) == 0

    first.close()  # the active replica goes: the standby takes the partition over
    writer.record("reconcile", "Policy later", {"generation": 10})
    drain(second, 1)
    records = wait_for(lambda: len(found := audit.read_log(bootstrap, log)) == 5 and found, 30)
    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    assert [r.subject for r in records[3:]] == ["Policy late", "Policy later"]
    assert records[4].prev_hash == records[3].hash
    assert audit.verify(records).ok

    # A crash after the commit but before the mirror write: the next active appender
    # catches the mirror up as soon as it holds the partition.
    mirror.write_text("".join(f"{r.raw}\n" for r in records[:2]))
    second.close()
    third = audit.Appender(bootstrap, events, log, file=mirror).open()
    for _ in range(30):
        third.run_once(1.0)
        if audit.read_file(mirror) == [r.raw for r in records]:
            break
    assert audit.read_file(mirror) == [r.raw for r in records]
    third.close()


def test_the_tail_holds_the_latest_records_and_reads_each_once(
    site: Site, topics: tuple[str, str]
) -> None:
    """What every dry-run Policy looks back at: the last records, fetched incrementally."""
    events, log = topics
    bootstrap = site.endpoints.kafka_bootstrap
    writer = audit.AuditWriter(bootstrap, topic=events)
    appender = audit.Appender(bootstrap, events, log).open()
    tail = audit.AuditTail(bootstrap, 3, topic=log)

    def chain(first: int, count: int) -> None:
        for i in range(first, first + count):
            writer.record("reconcile", f"Policy p{i}", {"generation": i})
        drain(appender, count)
        wait_for(lambda: len(audit.read_log(bootstrap, log)) == first + count, 30)

    held = audit.AuditTail(bootstrap, 3, topic=log, fresh_for=3600)
    chain(0, 5)
    before = tail.latest()
    assert [r.subject for r in before] == ["Policy p2", "Policy p3", "Policy p4"]
    assert held.latest() == before
    chain(5, 2)
    after = tail.latest()
    assert [r.subject for r in after] == ["Policy p4", "Policy p5", "Policy p6"]
    assert after[0] is before[2]  # not fetched and parsed again
    assert tail.latest() == after
    assert held.latest() == before, "a look stands for the next ones while fresh"
    tail.close()
    held.close()
    appender.close()


@pytest.mark.fault("audit tampered with")
def test_aiosctl_audit_verify_names_the_tampered_record(
    site: Site, topics: tuple[str, str], tmp_path: Path
) -> None:
    events, log = topics
    bootstrap = site.endpoints.kafka_bootstrap
    writer = audit.AuditWriter(bootstrap, topic=events)
    for i in range(6):
        writer.record("admission", f"ModelDeployment pilot/m{i}", {"allowed": True, "i": i})
    appender = audit.Appender(bootstrap, events, log).open()
    drain(appender, 6)
    appender.close()
    raws = audit.read_raw_log(bootstrap, log)

    untouched = aiosctl("verify", "--bootstrap", bootstrap, "--topic", log, "--no-checkpoint")
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr
    assert "6 records, chain intact" in untouched.stdout

    flipped = list(raws)
    at = flipped[2].index('"i":2') + 4
    flipped[2] = flipped[2][:at] + "3" + flipped[2][at + 1 :]  # one byte: 2 → 3
    deleted = raws[:3] + raws[4:]
    swapped = [*raws[:1], raws[2], raws[1], *raws[3:]]
    for name, lines, position, seq in [
        ("flipped", flipped, 2, 2),
        ("deleted", deleted, 3, 4),
        ("swapped", swapped, 1, 2),
    ]:
        tampered = f"{log}.{name}"
        produce_raw(bootstrap, tampered, lines)
        result = aiosctl(
            "verify", "--bootstrap", bootstrap, "--topic", tampered, "--no-checkpoint", "-o", "json"
        )
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        verdict = json.loads(result.stdout)
        assert verdict["ok"] is False and verdict["firstBad"] == position, (name, verdict)
        assert f"seq {seq}" in verdict["reason"], (name, verdict)

        copy = tmp_path / f"{name}.jsonl"
        copy.write_text("".join(f"{line}\n" for line in lines))
        from_file = aiosctl("verify", "--file", str(copy))
        assert from_file.returncode == 1 and f"record #{position}" in from_file.stdout


def replace_topic(bootstrap: str, topic: str, lines: list[str]) -> None:
    """What someone with admin rights on Kafka can do: delete the log and write another."""
    client = kafka.admin(bootstrap)
    kafka.delete_topics(client, [topic])
    wait_for(lambda: not kafka.describe_topics(client, [topic]), what=f"{topic} deleted")
    produce_raw(bootstrap, topic, lines)
    wait_for(lambda: audit.read_raw_log(bootstrap, topic) == lines, what=f"{topic} rewritten")


@pytest.mark.fault("audit tampered with")
def test_a_truncated_or_rechained_log_fails_against_its_signed_checkpoint(
    site: Site,
    topics: tuple[str, str],
    namespace: str,
    site_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The appender signs its head into the ConfigMap on the real API server; deleting the
    newest records, re-chaining the whole topic, editing the checkpoint or signing with
    another key each fail `aiosctl audit verify`, named; rotating the key holds."""
    events, log = topics
    bootstrap = site.endpoints.kafka_bootstrap
    monkeypatch.setenv("KUBECONFIG", site.endpoints.kubeconfig)
    key = tmp_path / "private.pem"
    key.write_bytes(private_pem())
    store = checkpoints.ConfigMapStore(api_client(), namespace)
    signer = checkpoints.FileSigner(key)
    writer = audit.AuditWriter(bootstrap, topic=events)
    for i in range(30):
        writer.record("admission", f"ModelDeployment city/m{i}", {"allowed": True, "i": i})
    appender = audit.Appender(
        bootstrap, events, log, checkpoints=checkpoints.Checkpointer(log, signer, store, 0)
    ).open()
    drain(appender, 30)
    appender.close()
    signed = store.read(log)
    assert signed is not None and signed.checkpoint.seq == 29
    raws = audit.read_raw_log(bootstrap, log)
    site_key = public_key_file(tmp_path / "site.pub", key)
    args = ("verify", "--bootstrap", bootstrap, "--topic", log, "-n", namespace)

    def verify(*extra: str) -> tuple[int, dict[str, Any]]:
        result = aiosctl(*args, *extra, "-o", "json", env=site_env)
        assert result.returncode in (0, 1), result.stderr
        return result.returncode, json.loads(result.stdout)

    code, intact = verify("--public-key", str(site_key))
    assert code == 0 and intact["checkpoint"]["ok"] and intact["checkpoint"]["seq"] == 29, intact
    text = aiosctl(*args, env=site_env)
    assert "checkpoint of seq 29" in text.stdout and "pin yours with --public-key" in text.stdout

    # A copy exported with its checkpoint holds away from the cluster; the copy cut short fails.
    copy, kept = tmp_path / "audit.jsonl", tmp_path / "checkpoint.json"
    exported = aiosctl("export", str(copy), "--checkpoint", str(kept), *args[1:], env=site_env)
    assert "exported 30 records" in exported.stdout and "seq 29" in exported.stdout, exported
    assert copy.read_text().splitlines() == raws
    offline = ("verify", "--file", str(copy), "--checkpoint", str(kept), "-o", "json")
    copied = aiosctl(*offline, "--public-key", str(site_key))
    assert copied.returncode == 0 and json.loads(copied.stdout)["checkpoint"]["ok"], copied
    copy.write_text("".join(f"{raw}\n" for raw in raws[:-3]))
    cut = aiosctl(*offline, "--public-key", str(site_key))
    assert cut.returncode == 1 and json.loads(cut.stdout)["checkpoint"]["missing"] == 3, cut

    replace_topic(bootstrap, log, raws[:-10])
    code, truncated = verify("--public-key", str(site_key))
    assert code == 1 and truncated["checkpoint"]["missing"] == 10, truncated
    assert "10 records missing at the tail" in truncated["reason"], truncated
    assert audit.verify(audit.read_raw_log(bootstrap, log)).ok  # the chain alone is fooled

    rechained = rechain([json.loads(raw) for raw in raws], edit=lambda d: d.update(i=-1))
    replace_topic(bootstrap, log, rechained)
    code, rewritten = verify("--public-key", str(site_key))
    assert code == 1 and "the log was rewritten: record seq 29" in rewritten["reason"], rewritten

    # ...and the checkpoint edited to fit the truncated log
    replace_topic(bootstrap, log, raws[:-10])
    edited = (
        signed.to_json()
        .replace('"seq":29', '"seq":19')
        .replace(signed.checkpoint.hash, json.loads(raws[19])["hash"])
    )
    core = client.CoreV1Api(api_client())
    core.patch_namespaced_config_map(checkpoints.CONFIGMAP, namespace, {"data": {log: edited}})
    code, forged = verify("--public-key", str(site_key))
    assert code == 1 and forged["reason"].startswith("bad signature"), forged

    # Rotation: a new key in the file signs the next checkpoint; a verifier trusts the keys
    # it pinned, old and new.
    replace_topic(bootstrap, log, raws)
    core.patch_namespaced_config_map(
        checkpoints.CONFIGMAP, namespace, {"data": {log: signed.to_json()}}
    )
    assert verify("--public-key", str(site_key))[0] == 0
    key.write_bytes(private_pem())
    new_key = public_key_file(tmp_path / "new.pub", key)
    writer.record("admission", "ModelDeployment city/after-rotation", {"allowed": True})
    appender = audit.Appender(
        bootstrap, events, log, checkpoints=checkpoints.Checkpointer(log, signer, store, 0)
    ).open()
    drain(appender, 1)
    appender.close()
    code, old_only = verify("--public-key", str(site_key))
    assert code == 1 and "not a trusted key" in old_only["reason"], old_only
    code, rotated = verify("--public-key", str(site_key), "--public-key", str(new_key))
    assert code == 0 and rotated["checkpoint"]["seq"] == 30, rotated


def private_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_file(path: Path, private: Path) -> Path:
    public = checkpoints.load_private_key(private).public_key()
    path.write_text(checkpoints.public_pem(public))
    return path


def rechain(documents: list[dict[str, Any]], edit: Callable[[dict[str, Any]], None]) -> list[str]:
    """The log with every record's details edited and chained afresh, as the appender would."""
    lines, head = [], audit.GENESIS
    for document in documents:
        edit(document["details"])
        event = {k: v for k, v in document.items() if k not in ("seq", "prevHash", "hash")}
        record = {**event, "seq": document["seq"], "prevHash": head}
        record["hash"] = audit.digest(record)
        head = record["hash"]
        lines.append(audit.canonical(record))
    return lines
