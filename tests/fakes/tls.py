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
from cryptography.hazmat.primitives.asymmetric import ec
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


def make_tls(directory: str | Path | None = None) -> TlsFiles:
    """Write a fresh CA and a server certificate for 127.0.0.1/localhost into ``directory``.

    Without ``directory`` a temporary directory is used. Returns (cert_file, key_file, ca_file).
    """
    target = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="faketls-"))
    target.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(minutes=5)
    not_after = now + dt.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Mailfiler fake CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    cert_file = target / "server.pem"
    key_file = target / "server.key"
    ca_file = target / "ca.pem"
    cert_file.write_bytes(cert.public_bytes(pem) + ca_pem)
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    ca_file.write_bytes(ca_pem)
    return TlsFiles(str(cert_file), str(key_file), str(ca_file))


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
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

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
