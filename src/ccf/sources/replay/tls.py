"""TLS for the replay exchange: a local certificate authority and a server certificate.

Clients such as cryptofeed accept only ``wss://`` addresses, so with
``replay.tls`` the exchange serves ``https://`` and ``wss://``. On first use
it makes, in ``replay.tls_dir``, a private CA (``ca.pem``) and a certificate
for ``localhost``, ``127.0.0.1`` and ``replay.host`` signed by it
(``server.pem``, ``server.key``); later starts reuse them until they expire
or no longer name the host. Nothing leaves the machine and no system trust
store is touched: a client trusts the replay by trusting ``ca.pem``::

    SSL_CERT_FILE=<tls_dir>/ca.pem python my_client.py      # Python's ssl, aiohttp, websockets
    ssl.create_default_context(cafile="<tls_dir>/ca.pem")    # in code

A CA plus a leaf, rather than one self-signed leaf, because Python 3.13's
default context verifies strictly (X509_STRICT), which refuses a leaf that
acts as its own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

_VALID_DAYS = 365
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path  # what clients trust
    cert: Path
    key: Path


def default_tls_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ccf" / "replay-tls"


def _names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    else:
        if str(ip) != "127.0.0.1":
            names.append(x509.IPAddress(ip))
    return names


def _usable(files: TlsFiles, host: str) -> bool:
    """True when the files exist, parse, cover ``host`` and are not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        x509.load_pem_x509_certificate(files.ca.read_bytes())
        serialization.load_pem_private_key(files.key.read_bytes(), None)
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return all(n in san for n in _names(host))


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def ensure_certificate(tls_dir: Path, host: str) -> TlsFiles:
    """The CA and server certificate in ``tls_dir``, made now when missing or unusable."""
    files = TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server.key")
    if _usable(files, host):
        return files
    tls_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CCF replay exchange local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write(
        files.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        private=True,
    )
    _write(files.cert, leaf.public_bytes(pem))
    _write(files.ca, ca.public_bytes(pem))
    log.info("part=exchange symbol=- made a TLS certificate dir=%s host=%s", tls_dir, host)
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context that trusts the replay's CA (and nothing else)."""
    return ssl.create_default_context(cafile=str(files.ca))
