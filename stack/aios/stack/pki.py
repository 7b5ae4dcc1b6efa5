"""The local site's certificates: one CA and the service-account signing key, generated
once per site directory; the serving and client certificates of the API server and the
node, issued for the node's addresses each time the site starts."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class SitePki:
    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    service_account_key: Path
    service_account_pub: Path
    front_proxy_cert: Path
    front_proxy_key: Path


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str = "") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:  # Kubernetes reads a client certificate's O as the user's group
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    dns_names: list[str],
    ips: list[str],
    days: int = 365,
    usages: tuple[x509.ObjectIdentifier, ...] = (x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,),
    organization: str = "",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by the site CA: serving (also for webhooks), client, or both."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def ensure_site_pki(directory: Path) -> SitePki:
    """Create the CA, front-proxy certificate and service-account key unless they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = SitePki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        apiserver_cert=directory / "apiserver.crt",
        apiserver_key=directory / "apiserver.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
        front_proxy_cert=directory / "front-proxy-client.crt",
        front_proxy_key=directory / "front-proxy-client.key",
    )
    if pki.service_account_pub.exists():
        return pki
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("aios-local-site-ca"))
        .issuer_name(_name("aios-local-site-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.ca_key, ca_key)
    proxy_cert, proxy_key = issue_certificate(
        ca_cert, ca_key, "front-proxy-client", [], [], usages=(CLIENT,)
    )
    _write_pair(directory / "front-proxy-client", proxy_cert, proxy_key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


CLIENT = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
SERVER = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH


def _write_pair(stem: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    stem.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(stem.with_suffix(".key"), key)


def issue_node_certificates(
    pki: SitePki, node_name: str, node_address: str, api_service_ip: str
) -> None:
    """The certificates that name the node's addresses, which a site may change between
    runs: the API server's serving certificate, the kubelet's serving and client
    certificates, kube-proxy's, and the API server's client certificate for the kubelet
    (logs, exec)."""
    ca_cert, ca_key = _site_ca(pki)
    directory = pki.ca_cert.parent
    issued = {
        "apiserver": issue_certificate(
            ca_cert,
            ca_key,
            "kube-apiserver",
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ["127.0.0.1", node_address, api_service_ip],
        ),
        "kubelet": issue_certificate(ca_cert, ca_key, node_name, [node_name], [node_address]),
        "kubelet-client": issue_certificate(
            ca_cert,
            ca_key,
            f"system:node:{node_name}",
            [],
            [],
            usages=(CLIENT,),
            organization="system:nodes",
        ),
        "kube-proxy": issue_certificate(
            ca_cert, ca_key, "system:kube-proxy", [], [], usages=(CLIENT,)
        ),
        "apiserver-kubelet-client": issue_certificate(
            ca_cert,
            ca_key,
            "kube-apiserver-kubelet-client",
            [],
            [],
            usages=(CLIENT,),
            organization="system:masters",
        ),
    }
    for stem, (cert, key) in issued.items():
        _write_pair(directory / stem, cert, key)


def _site_ca(pki: SitePki) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return ca_cert, ca_key


def issue_tls_directory(
    pki: SitePki, directory: Path, common_name: str, dns_names: list[str], ips: list[str]
) -> None:
    """``ca.crt``, ``tls.crt`` and ``tls.key`` in ``directory``, laid out as a mounted TLS
    Secret is: one certificate that both serves and is a client, for servers that talk
    mutual TLS with each other (KEDA's operator and its metrics adapter)."""
    ca_cert, ca_key = _site_ca(pki)
    cert, key = issue_certificate(
        ca_cert, ca_key, common_name, dns_names, ips, usages=(SERVER, CLIENT)
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / "tls.key", key)
