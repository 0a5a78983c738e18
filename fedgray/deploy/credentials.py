"""A federation's credentials: a CA, the SuperLink's TLS certificate, a key pair per site.

Written by :func:`create_credentials` (never over an existing file; private keys mode 0600)::

    DIR/ca/ca.key                  the CA's private key: stays with the operator, offline
    DIR/ca/ca.crt                  the CA certificate
    DIR/superlink/ca.crt           } what the SuperLink machine holds: its TLS certificate
    DIR/superlink/superlink.crt    } (SANs 127.0.0.1, localhost and the given hostnames),
    DIR/superlink/superlink.key    } its key, and the sites' public keys to register
    DIR/superlink/site-keys/site-N.pub
    DIR/sites/site-N/ca.crt        } what site N's machine holds: the CA certificate to
    DIR/sites/site-N/node.key      } verify the SuperLink and its node-authentication key
    DIR/sites/site-N/node.key.pub  } (EC P-384, OpenSSH format, as Flower 1.42 reads them)
    DIR/sites/site-N/publisher.pem } and the publisher's public key, which it pins
    DIR/publisher/publisher.key    the key the operator signs each run's config with
                                   (Ed25519, PEM; ``fedgray deploy submit --sign-key``)
    DIR/publisher/publisher.pem    its public half

The sites' keys are made here for convenience (one command for a trial federation); a site
may instead make its own (``ssh-keygen -t ecdsa -b 384``) and send only the ``.pub`` file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
VALID_DAYS = 365
SITE_PREFIX = "site-"
PUBLISHER_FILE = "publisher.pem"


class CredentialError(ValueError):
    """A credential file exists already, or is missing where a command needs it."""


@dataclass(frozen=True)
class SiteCredentials:
    """One site's files: the CA certificate, its private key, its public key."""

    name: str
    ca_cert: Path
    private_key: Path
    public_key: Path
    publisher: Path


@dataclass(frozen=True)
class Credentials:
    """Where :func:`create_credentials` wrote (or :func:`read_credentials` found) the files."""

    root: Path
    ca_key: Path
    ca_cert: Path
    superlink_ca_cert: Path
    superlink_cert: Path
    superlink_key: Path
    sites: tuple[SiteCredentials, ...]
    publisher_key: Path
    publisher: Path


def site_name(index: int) -> str:
    """The name of site ``index`` (``site-0``, ``site-1``, ...)."""
    return f"{SITE_PREFIX}{index}"


def _layout(root: Path, num_sites: int) -> Credentials:
    sites = tuple(
        SiteCredentials(
            name,
            root / "sites" / name / "ca.crt",
            root / "sites" / name / "node.key",
            root / "sites" / name / "node.key.pub",
            root / "sites" / name / PUBLISHER_FILE,
        )
        for name in (site_name(i) for i in range(num_sites))
    )
    return Credentials(
        root=root,
        ca_key=root / "ca" / "ca.key",
        ca_cert=root / "ca" / "ca.crt",
        superlink_ca_cert=root / "superlink" / "ca.crt",
        superlink_cert=root / "superlink" / "superlink.crt",
        superlink_key=root / "superlink" / "superlink.key",
        sites=sites,
        publisher_key=root / "publisher" / "publisher.key",
        publisher=root / "publisher" / PUBLISHER_FILE,
    )


def registered_key(credentials: Credentials, site: SiteCredentials) -> Path:
    """The copy of ``site``'s public key the SuperLink machine keeps for registration."""
    return credentials.root / "superlink" / "site-keys" / f"{site.name}.pub"


def _write_new(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    except FileExistsError:
        raise CredentialError(f"{path}: exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name | None,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    hosts: tuple[str, ...] = (),
) -> x509.Certificate:
    """A certificate for ``public_key``; self-signed CA when ``issuer`` is None. With key
    identifiers and key usage, so that strict verifiers (``openssl verify -x509_strict``,
    recent TLS stacks) accept the chain."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    is_ca = issuer is None
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create_credentials(
    out_dir: str | Path, num_sites: int, *, hosts: tuple[str, ...] = ()
) -> Credentials:
    """Create a CA, a SuperLink certificate for 127.0.0.1, localhost and ``hosts``, an
    authentication key pair per site and the publisher's signing key pair in ``out_dir``;
    refuses to overwrite any file."""
    if num_sites < 1:
        raise CredentialError(f"sites: must be >= 1, got {num_sites}")
    files = _layout(Path(out_dir), num_sites)
    site_paths = [
        p for s in files.sites for p in (s.ca_cert, s.private_key, s.public_key, s.publisher)
    ]
    site_paths += [registered_key(files, s) for s in files.sites]
    core = (files.ca_key, files.ca_cert, files.superlink_cert, files.superlink_key)
    publisher_files = (files.publisher_key, files.publisher)
    for path in (*core, *publisher_files, files.superlink_ca_cert, *site_paths):
        if path.exists():
            raise CredentialError(f"{path}: exists; refusing to overwrite it")
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _certificate("fedgray federation CA", ca_key.public_key(), None, ca_key)
    link_key = ec.generate_private_key(ec.SECP384R1())
    all_hosts = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))
    link_cert = _certificate(
        "fedgray superlink", link_key.public_key(), ca_cert.subject, ca_key, hosts=all_hosts
    )
    _write_new(files.ca_key, _pem_key(ca_key), private=True)
    _write_new(files.ca_cert, _pem_cert(ca_cert))
    _write_new(files.superlink_ca_cert, _pem_cert(ca_cert))
    _write_new(files.superlink_cert, _pem_cert(link_cert))
    _write_new(files.superlink_key, _pem_key(link_key), private=True)
    publisher = ed25519.Ed25519PrivateKey.generate()
    publisher_pem = publisher.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(files.publisher_key, _pem_key(publisher), private=True)
    _write_new(files.publisher, publisher_pem)
    for site in files.sites:
        node_key = ec.generate_private_key(ec.SECP384R1())
        public = node_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        private = node_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        _write_new(site.ca_cert, _pem_cert(ca_cert))
        _write_new(site.publisher, publisher_pem)
        _write_new(site.private_key, private, private=True)
        _write_new(site.public_key, public + f" {site.name}\n".encode())
        _write_new(registered_key(files, site), public + f" {site.name}\n".encode())
    return files


def read_credentials(root: str | Path) -> Credentials:
    """The credentials under ``root`` as :func:`create_credentials` wrote them, one site per
    public key in ``superlink/site-keys/`` (``site-0.pub`` on: what the SuperLink's machine
    holds), or one line naming the first missing file."""
    root = Path(root).resolve()  # Flower's processes run in other folders
    keys = root / "superlink" / "site-keys"
    count = 0
    while (keys / f"{site_name(count)}.pub").is_file():
        count += 1
    files = _layout(root, count)
    for path in (files.superlink_ca_cert, files.superlink_cert, files.superlink_key):
        if not path.is_file():
            raise CredentialError(f"{path}: not found (create it with fedgray deploy credentials)")
    if count == 0:
        raise CredentialError(f"{keys / 'site-0.pub'}: not found (no site key to register)")
    return files
