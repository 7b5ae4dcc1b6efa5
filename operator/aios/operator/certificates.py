"""The admission webhook's TLS: a CA and a serving certificate the operator issues itself
and renews before they expire.

The serving certificate is renewed once two thirds of its life have passed; the API server
keeps trusting it because the CA does not change. The CA is renewed the same way, and the
bundle the API server trusts holds the new and the previous CA until the previous one
expires, so no handshake fails during a rotation.

Replicas behind one Service must be trusted through one bundle: they are given a shared CA
(``load_ca``, e.g. from the Helm chart's Secret), which they never rotate themselves; each
still issues and renews its own serving certificate under it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RENEW_AFTER = 2 / 3
BACKDATE = datetime.timedelta(minutes=1)  # tolerate clocks slightly behind ours


def due(
    certificate: x509.Certificate, now: datetime.datetime, fraction: float = RENEW_AFTER
) -> bool:
    """Whether ``fraction`` of the certificate's lifetime (from its issue) has passed."""
    start = certificate.not_valid_before_utc + BACKDATE
    end = certificate.not_valid_after_utc
    return now >= start + (end - start) * fraction


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    seconds: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(seconds=seconds))
    )


@dataclass(frozen=True)
class KeyPair:
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue_ca(now: datetime.datetime, seconds: int) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = f"aios-webhook-ca-{now:%Y%m%d%H%M%S}"
    certificate = (
        _builder(subject, _name(subject), key, now, seconds)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def load_ca(certificate_pem: bytes, key_pem: bytes) -> KeyPair:
    """A CA issued elsewhere; it must be a CA whose key matches its certificate."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise ValueError("the webhook CA certificate is not a CA (basicConstraints)")
    if key.public_key() != certificate.public_key():
        raise ValueError("the webhook CA key does not match its certificate")
    return KeyPair(certificate, key)  # type: ignore[arg-type]


def issue_serving(ca: KeyPair, hosts: list[str], now: datetime.datetime, seconds: int) -> KeyPair:
    """A serving certificate for ``hosts`` (DNS names or IP addresses) signed by ``ca``."""
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(hosts[0], ca.certificate.subject, key, now, seconds)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


@dataclass(frozen=True)
class Rotation:
    serving: bool  # a new serving certificate: reload it into the server's TLS context
    ca: bool  # a new CA: the bundle changed, the webhook configuration must follow


class WebhookCertificates:
    """The files the webhook server reads: ``ca.crt`` (bundle), and one ``tls-<serial>``
    pair per serving certificate (a new name per rotation, so a server watching the old
    files is not restarted by a renewal that needs no new bundle)."""

    def __init__(
        self,
        directory: Path,
        hosts: list[str],
        serving_seconds: int,
        ca_seconds: int | None = None,
        ca: KeyPair | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("the webhook certificate needs at least one host name or address")
        self.directory = directory
        self.hosts = hosts
        self.serving_seconds = serving_seconds
        self.ca_seconds = ca_seconds or serving_seconds * 12
        self.cas: list[KeyPair] = [ca] if ca is not None else []  # newest first
        self.shared_ca = ca is not None  # issued elsewhere: used, never renewed here
        self.serving: KeyPair | None = None

    @property
    def bundle_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def cert_path(self) -> Path:
        assert self.serving is not None
        return self.directory / f"tls-{self.serving.certificate.serial_number:x}.crt"

    @property
    def key_path(self) -> Path:
        assert self.serving is not None
        return self.directory / f"tls-{self.serving.certificate.serial_number:x}.key"

    def ensure(self, now: datetime.datetime) -> Rotation:
        """Issue what is missing or due; write the files; say what changed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        new_ca = not self.shared_ca and (not self.cas or due(self.cas[0].certificate, now))
        if new_ca:
            self.cas.insert(0, issue_ca(now, self.ca_seconds))
        self.cas = [self.cas[0]] + [
            ca for ca in self.cas[1:] if ca.certificate.not_valid_after_utc > now
        ]
        new_serving = new_ca or self.serving is None or due(self.serving.certificate, now)
        if new_serving:
            self.serving = issue_serving(self.cas[0], self.hosts, now, self.serving_seconds)
            _write(self.key_path, self.serving.key_pem(), private=True)
            _write(self.cert_path, self.serving.certificate_pem())
        if new_ca or len(self.cas) != self._bundle_size():
            _write(self.bundle_path, b"".join(ca.certificate_pem() for ca in self.cas))
        return Rotation(serving=new_serving, ca=new_ca)

    def _bundle_size(self) -> int:
        if not self.bundle_path.exists():
            return 0
        return len(x509.load_pem_x509_certificates(self.bundle_path.read_bytes()))

    def prune(self) -> None:
        """Delete serving certificate files other than the current ones."""
        current = {self.cert_path, self.key_path}
        for path in self.directory.glob("tls-*"):
            if path not in current:
                path.unlink(missing_ok=True)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        tmp.chmod(0o600)
    tmp.replace(path)
