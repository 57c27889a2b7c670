"""A throw-away certificate authority and a server certificate for 127.0.0.1 and localhost.

The CA is a real CA (basicConstraints CA:TRUE, keyCertSign) and the server certificate is signed
by it with subjectAltName IP:127.0.0.1, DNS:localhost and extendedKeyUsage serverAuth, so strict
verifiers (OpenSSL 3 with X509_STRICT, as Python 3.13 sets by default) accept it. The CA file can be
given as ``verify=`` to httpx and requests, or through SSL_CERT_FILE / REQUESTS_CA_BUNDLE.

EC P-256 keys keep generation to a few milliseconds; the files are made once per process.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class TlsFiles(NamedTuple):
    """PEM files: the server certificate (with the CA appended), its key and the CA alone."""

    cert_file: str
    key_file: str
    ca_file: str


_LOCK = threading.Lock()
_CACHE: TlsFiles | None = None


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mailfiler test fakes"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; an EC server key signs and agrees keys (ECDHE)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class Authority:
    """A throw-away CA in ``directory`` (``ca.pem``) that issues server certificates.

    Its own class so tests that need certificates for other names (127.0.0.2, a foreign host)
    issue them from a CA of their own with the same extensions."""

    def __init__(self, directory: str | Path, name: str = "Mailfiler fake CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        self.ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        cert = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(self.ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.ca_file = str(self.dir / "ca.pem")
        Path(self.ca_file).write_bytes(self.ca_pem)

    def issue(self, *names: str, stem: str | None = None) -> tuple[str, str]:
        """A server certificate for ``names`` (IP addresses or DNS names; the first is the
        subject) with this CA appended, and its key: files ``<stem>.pem`` and ``<stem>.key``
        (``stem`` defaults to the first name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            _builder(_name(names[0]), self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        cert_file = self.dir / f"{stem or names[0]}.pem"
        key_file = self.dir / f"{stem or names[0]}.key"
        cert_file.write_bytes(cert.public_bytes(pem) + self.ca_pem)
        key_file.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        key_file.chmod(0o600)
        return str(cert_file), str(key_file)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    """Valid from five minutes ago (clock skew) for two days: longer than any test run."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
    )


def make_tls(directory: str | Path | None = None) -> TlsFiles:
    """Write a fresh CA and a server certificate for 127.0.0.1/localhost into ``directory``.

    Without ``directory`` a temporary directory is used. Returns (cert_file, key_file, ca_file).
    """
    target = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="faketls-"))
    authority = Authority(target)
    cert_file, key_file = authority.issue("127.0.0.1", "localhost", stem="server")
    return TlsFiles(cert_file, key_file, authority.ca_file)


def shared_tls() -> TlsFiles:
    """One set of files per process (made on first use), so each fake starts in milliseconds."""
    global _CACHE
    with _LOCK:
        if _CACHE is None or not all(Path(f).exists() for f in _CACHE):
            _CACHE = make_tls()
        return _CACHE


def ca_bundle(files: TlsFiles) -> str:
    """The public CAs (certifi, else the system file) plus the fake CA, for REQUESTS_CA_BUNDLE /
    SSL_CERT_FILE: requests ignores ``Session.verify`` (and so msal's ``verify=``) whenever
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE is set (psf/requests#3829)."""
    bundle = Path(files.ca_file).with_name("bundle.pem")
    if not bundle.exists():
        try:
            import certifi

            public = Path(certifi.where()).read_bytes()
        except ImportError:  # pragma: no cover - certifi comes with httpx and requests
            default = ssl.get_default_verify_paths().cafile
            public = Path(default).read_bytes() if default else b""
        bundle.write_bytes(public + b"\n" + Path(files.ca_file).read_bytes())
    return str(bundle)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+, as Graph's latestSupportedTlsVersion v1_2)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx


def app_certificate() -> tuple[str, str, str]:
    """A self-signed certificate an Entra app could hold: (private key PEM, certificate PEM,
    SHA-1 thumbprint in hex, as msal's certificate credential takes it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    thumbprint = cert.fingerprint(hashes.SHA1()).hex()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode(), thumbprint
