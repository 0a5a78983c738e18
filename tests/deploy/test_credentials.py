"""Federation credentials: what Flower 1.42 can read, certificates that verify, no overwrite."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key

from fedgray.deploy.credentials import (
    CredentialError,
    create_credentials,
    read_credentials,
    registered_key,
)


def test_the_superlink_certificate_is_signed_by_the_ca_for_loopback_and_given_hosts(
    tmp_path: Path,
) -> None:
    files = create_credentials(tmp_path, 2, hosts=("link.example.org", "10.0.0.5"))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.superlink_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "link.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    ]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert files.superlink_ca_cert.read_bytes() == files.ca_cert.read_bytes()


def test_site_keys_load_as_flower_loads_them_and_private_files_are_private(
    tmp_path: Path,
) -> None:
    files = create_credentials(tmp_path, 2)
    for site in files.sites:
        private = load_ssh_private_key(site.private_key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        assert try_load_public_key(site.public_key) == try_load_public_key(
            registered_key(files, site)
        )
        assert site.private_key.stat().st_mode & 0o077 == 0
        assert site.ca_cert.read_bytes() == files.ca_cert.read_bytes()
    assert files.ca_key.stat().st_mode & 0o077 == 0
    assert files.superlink_key.stat().st_mode & 0o077 == 0
    first, second = (try_load_public_key(s.public_key) for s in files.sites)
    assert first != second


def test_existing_credentials_are_never_overwritten(tmp_path: Path) -> None:
    files = create_credentials(tmp_path, 1)
    before = files.ca_key.read_bytes()
    with pytest.raises(CredentialError, match="ca.key: exists; refusing to overwrite it"):
        create_credentials(tmp_path, 1)
    assert files.ca_key.read_bytes() == before


def test_read_credentials_finds_every_site_or_names_the_missing_file(tmp_path: Path) -> None:
    create_credentials(tmp_path / "ok", 3)
    assert [s.name for s in read_credentials(tmp_path / "ok").sites] == [
        "site-0",
        "site-1",
        "site-2",
    ]
    with pytest.raises(
        CredentialError, match=r"empty/superlink/ca.crt: not found \(create it with"
    ):
        read_credentials(tmp_path / "empty")


def test_a_superlink_machine_holding_only_its_folder_finds_every_site(tmp_path: Path) -> None:
    """What the operator copies to the SuperLink's machine is ``creds/superlink/`` alone
    (no ``sites/``): every site's key is still found and registered; none is one line."""
    made = create_credentials(tmp_path / "made", 3)
    shutil.copytree(made.root / "superlink", tmp_path / "link" / "superlink")
    found = read_credentials(tmp_path / "link")
    assert [s.name for s in found.sites] == ["site-0", "site-1", "site-2"]
    assert [registered_key(found, s).read_bytes() for s in found.sites] == [
        s.public_key.read_bytes() for s in made.sites
    ]
    for key in (tmp_path / "link" / "superlink" / "site-keys").iterdir():
        key.unlink()
    with pytest.raises(CredentialError, match=r"site-keys/site-0.pub: not found \(no site key"):
        read_credentials(tmp_path / "link")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_the_certificates_pass_strict_x509_verification(tmp_path: Path) -> None:
    """Key identifiers and key usage present: ``openssl verify -x509_strict`` accepts the
    SuperLink's certificate under the CA (it refused it without them)."""
    files = create_credentials(tmp_path, 1)
    done = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(files.ca_cert)]
        + [str(files.superlink_cert)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{files.superlink_cert}: OK"
