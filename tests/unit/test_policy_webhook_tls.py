"""The webhook's certificates: issued, renewed at two thirds of their life, the CA bundle
overlapping old and new CAs; and the webhook settings read from the environment."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from aios.operator.certificates import WebhookCertificates, due, issue_ca
from aios.operator.settings import WebhookSettings

T0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
DAY = 86400


def bundle(certs: WebhookCertificates) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(certs.bundle_path.read_bytes())


def serving(certs: WebhookCertificates) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certs.cert_path.read_bytes())


def test_first_issue_writes_a_serving_certificate_signed_by_the_bundle(tmp_path: Path) -> None:
    certs = WebhookCertificates(tmp_path, ["127.0.0.1", "aios.example"], 30 * DAY)
    rotation = certs.ensure(T0)
    assert rotation.serving and rotation.ca
    cert, (ca,) = serving(certs), bundle(certs)
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["aios.example"]
    assert oct(certs.key_path.stat().st_mode)[-3:] == "600"


def test_nothing_changes_before_two_thirds_of_the_lifetime(tmp_path: Path) -> None:
    certs = WebhookCertificates(tmp_path, ["127.0.0.1"], 30 * DAY)
    certs.ensure(T0)
    serial = serving(certs).serial_number
    rotation = certs.ensure(T0 + datetime.timedelta(days=19))
    assert not rotation.serving and not rotation.ca
    assert serving(certs).serial_number == serial


def test_the_serving_certificate_is_renewed_under_the_same_ca(tmp_path: Path) -> None:
    certs = WebhookCertificates(tmp_path, ["127.0.0.1"], 30 * DAY)
    certs.ensure(T0)
    old_path, old_serial = certs.cert_path, serving(certs).serial_number
    rotation = certs.ensure(T0 + datetime.timedelta(days=21))
    assert rotation.serving and not rotation.ca
    assert certs.cert_path != old_path and old_path.exists(), "the old files stay until pruned"
    assert serving(certs).serial_number != old_serial
    (ca,) = bundle(certs)
    serving(certs).verify_directly_issued_by(ca)
    certs.prune()
    assert not old_path.exists() and certs.cert_path.exists()


def test_a_renewed_ca_overlaps_with_the_old_one_until_it_expires(tmp_path: Path) -> None:
    certs = WebhookCertificates(tmp_path, ["127.0.0.1"], 30 * DAY, ca_seconds=90 * DAY)
    certs.ensure(T0)
    (old_ca,) = bundle(certs)
    rotation = certs.ensure(T0 + datetime.timedelta(days=61))
    assert rotation.ca and rotation.serving
    new_ca, kept = bundle(certs)
    assert kept.serial_number == old_ca.serial_number
    serving(certs).verify_directly_issued_by(new_ca)
    certs.ensure(T0 + datetime.timedelta(days=91))
    assert [c.serial_number for c in bundle(certs)] == [new_ca.serial_number]


def test_due_at_two_thirds() -> None:
    certs = WebhookCertificates(Path("/nonexistent"), ["x"], 3 * DAY)
    ca = issue_ca(T0, 3 * DAY)
    assert not due(ca.certificate, T0 + datetime.timedelta(days=1, hours=23))
    assert due(ca.certificate, T0 + datetime.timedelta(days=2))
    with pytest.raises(ValueError, match="at least one host"):
        WebhookCertificates(Path("/nonexistent"), [], DAY)
    assert certs.ca_seconds == 36 * DAY


def test_webhook_settings_from_the_environment() -> None:
    off = WebhookSettings.from_env({})
    assert not off.enabled and off.failure_policy == "Fail"
    local = WebhookSettings.from_env(
        {
            "AIOS_WEBHOOK_HOST": "127.0.0.1",
            "AIOS_WEBHOOK_PORT": "9555",
            "AIOS_WEBHOOK_FAILURE_POLICY": "Ignore",
        }
    )
    assert local.enabled and local.port == 9555 and local.hosts() == ["127.0.0.1"]
    assert local.failure_policy == "Ignore"
    cluster = WebhookSettings.from_env({"AIOS_WEBHOOK_SERVICE": "aios-system/aios-operator"})
    assert cluster.hosts() == [
        "aios-operator.aios-system.svc",
        "aios-operator.aios-system.svc.cluster.local",
    ]
    with pytest.raises(ValueError, match="Fail or Ignore"):
        WebhookSettings.from_env({"AIOS_WEBHOOK_FAILURE_POLICY": "Maybe"})
    with pytest.raises(ValueError, match="namespace/name"):
        WebhookSettings.from_env({"AIOS_WEBHOOK_SERVICE": "just-a-name"})
