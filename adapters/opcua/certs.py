"""Application instance certificates: generated once, then reused on every start.

A server trusts a client by its certificate, so regenerating one on each start (as some peers do)
forces an operator to re-trust ingestd after every restart. The source keeps its certificate in its
state directory::

    <state_dir>/pki/client_cert.der    self-signed X.509 (DER), SAN = application URI + host name
    <state_dir>/pki/client_key.pem     RSA 2048 private key (PKCS#8 PEM, mode 0600)

Only :mod:`cryptography` is used here (no OPC UA library).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertPair",
    "application_uri_of",
    "ensure_client_certificate",
    "generate_self_signed",
    "load_cert_der",
    "load_key_der",
]

CERT_NAME = "client_cert.der"
KEY_NAME = "client_key.pem"
VALIDITY_DAYS = 3650


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path
    application_uri: str
    created: bool
    """True when this call generated the pair (first start)."""


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


def generate_self_signed(
    key_path: Path,
    cert_path: Path,
    application_uri: str,
    *,
    hostname: str | None = None,
    common_name: str = "ingestd",
    days: int = VALIDITY_DAYS,
    server: bool = False,
    key: rsa.RSAPrivateKey | None = None,
) -> None:
    """Write a self-signed OPC UA application instance certificate (DER) and its key (PEM)."""
    host = hostname or socket.gethostname()
    if key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_atomic(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ), 0o600)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(application_uri), x509.DNSName(host),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
            key_agreement=False, key_cert_sign=True, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.DER), 0o644)


def _load_cert(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if _is_pem(data):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _is_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def load_cert_der(path: Path) -> bytes:
    """A certificate file (PEM or DER) as DER bytes; raises ValueError when it is not one."""
    return _load_cert(path).public_bytes(serialization.Encoding.DER)


def load_key_der(path: Path, password: str | None = None) -> bytes:
    """A private key file (PEM or DER, optionally encrypted) as unencrypted PKCS#8 DER, in memory only.
    Raises ValueError/TypeError for a wrong password or a file that is not a key."""
    data = path.read_bytes()
    secret = password.encode("utf-8") if password else None
    key = serialization.load_pem_private_key(data, secret) if _is_pem(data) \
        else serialization.load_der_private_key(data, secret)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def application_uri_of(cert_path: Path) -> str | None:
    """The first URI in the certificate's SubjectAltName (the OPC UA application URI)."""
    cert = _load_cert(cert_path)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def ensure_client_certificate(pki_dir: Path, application_uri: str) -> CertPair:
    """Reuse ``pki_dir``'s certificate and key, generating them only when absent.

    A key without a certificate gets a new certificate for the same key; a certificate without its
    key is an error (the operator must restore the key or delete the certificate) — the identity the
    server trusts is never replaced silently. The returned application URI is the certificate's own.
    """
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = pki_dir / CERT_NAME, pki_dir / KEY_NAME
    if cert.exists() and key.exists():
        return CertPair(cert, key, application_uri_of(cert) or application_uri, created=False)
    if cert.exists():
        raise FileNotFoundError(
            f"{cert} exists but its private key {key} is missing; restore the key, or delete the "
            "certificate to generate a new identity (the server must then trust it again)"
        )
    existing = _load_key(key) if key.exists() else None
    generate_self_signed(key, cert, application_uri, key=existing)
    return CertPair(cert, key, application_uri, created=True)
