"""Sealed artifacts: round trip, every refusal (corruption at many offsets), keys, CLI."""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from fedgray.backbone import SealedBackbone, SealedError, create_clip, get_tokenizer
from fedgray.backbone.artifact import (
    FORMAT_VERSION,
    HEADER,
    SIGNATURE_BYTES,
    load_artifact,
    read_manifest,
)
from fedgray.backbone.keys import ArtifactError, read_content_key, read_signing_key
from fedgray.cli import main
from fedgray.config import ConfigError
from fedgray.materials import open_backbone
from fedgray.owner.keys import KeyFiles, generate_keys
from fedgray.owner.revocation import write_revocations
from fedgray.owner.seal import seal
from fedgray.resolver import load_config


@dataclass(frozen=True)
class Sealed:
    """A micro CLIP, its keys and its artifact (sealed at ``gray``)."""

    model: nn.Module
    keys: KeyFiles
    path: Path


def _micro() -> nn.Module:
    torch.manual_seed(0)
    return create_clip("fedgray-micro", None)


def _seal(model: nn.Module, keys: KeyFiles, path: Path, *, level: str = "gray") -> Path:
    key_files = {"signing_key": keys.signing_key, "content_key": keys.content_key}
    seal(model, path, name="fedgray-micro", level=level, **key_files)
    return path


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    root = tmp_path_factory.mktemp("artifact")
    keys = generate_keys(root / "keys")
    model = _micro()
    return Sealed(model, keys, _seal(model, keys, root / "micro.fgs"))


def _load(path: Path, keys: KeyFiles, **options: object) -> SealedBackbone:
    return load_artifact(path, verify_key=keys.verify_key, content_key=keys.content_key, **options)


def _refused(path: Path, keys: KeyFiles, match: str | None = None) -> str:
    with pytest.raises(ArtifactError, match=match) as error:
        _load(path, keys)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_round_trip_gives_the_unsealed_outputs(sealed: Sealed) -> None:
    backbone = _load(sealed.path, sealed.keys)
    plain = SealedBackbone(
        sealed.model, get_tokenizer("fedgray-micro"), name="fedgray-micro", level="gray"
    )
    assert backbone.interface == plain.interface
    torch.manual_seed(1)
    pixels = torch.rand(4, 3, 32, 32)
    tokens = plain.tokenize(["a red circle", "a blue star", "the digit 3", "a small square"])
    with torch.no_grad():
        assert torch.equal(backbone.encode_image(pixels), plain.encode_image(pixels))
        assert torch.equal(backbone.encode_text(tokens), plain.encode_text(tokens))
    manifest = read_manifest(sealed.path, verify_key=sealed.keys.verify_key)
    assert manifest.name == "fedgray-micro" and manifest.format_version == FORMAT_VERSION
    assert manifest.level.value == "gray" and manifest.entry_points == ()


def test_missing_file_wrong_keys_and_garbage_are_refused(sealed: Sealed, tmp_path: Path) -> None:
    _refused(tmp_path / "none.fgs", sealed.keys, "artifact file not found")
    other = generate_keys(tmp_path / "other")
    wrong_verify = KeyFiles(other.signing_key, other.verify_key, sealed.keys.content_key)
    _refused(sealed.path, wrong_verify, "signature does not verify")
    wrong_content = KeyFiles(other.signing_key, sealed.keys.verify_key, other.content_key)
    _refused(sealed.path, wrong_content, "do not decrypt")
    (tmp_path / "garbage.fgs").write_bytes(b"not an artifact at all" * 10)
    _refused(tmp_path / "garbage.fgs", sealed.keys, "not a fedgray sealed artifact")
    (tmp_path / "empty.fgs").write_bytes(b"")
    _refused(tmp_path / "empty.fgs", sealed.keys, "not a fedgray sealed artifact")
    with pytest.raises(ArtifactError, match="verification key file not found"):
        load_artifact(sealed.path, verify_key=tmp_path / "no.pem", content_key=other.content_key)


def test_other_format_version_and_unsigned_file_are_refused(sealed: Sealed, tmp_path: Path) -> None:
    blob = sealed.path.read_bytes()
    magic, _, length = HEADER.unpack_from(blob)
    future = tmp_path / "future.fgs"
    future.write_bytes(HEADER.pack(magic, FORMAT_VERSION + 1, length) + blob[HEADER.size :])
    _refused(future, sealed.keys, f"format version {FORMAT_VERSION + 1}")
    end = HEADER.size + length
    unsigned = tmp_path / "unsigned.fgs"
    unsigned.write_bytes(blob[:end] + bytes(SIGNATURE_BYTES) + blob[end + SIGNATURE_BYTES :])
    _refused(unsigned, sealed.keys, "signature does not verify")
    truncated = tmp_path / "truncated.fgs"
    for size in (HEADER.size + 3, end + 10, len(blob) - 1):
        truncated.write_bytes(blob[:size])
        _refused(truncated, sealed.keys)


def test_a_flipped_byte_anywhere_is_refused(sealed: Sealed, tmp_path: Path) -> None:
    blob = sealed.path.read_bytes()
    _, _, length = HEADER.unpack_from(blob)
    end = HEADER.size + length
    sections = [range(HEADER.size), range(HEADER.size, end), range(end, end + 76)]
    offsets = {o for section in sections for o in list(section)[:: max(1, len(section) // 12)]}
    offsets |= {end + 76 + i * (len(blob) - end - 77) // 12 for i in range(13)}
    assert len(offsets) >= 50
    corrupt = tmp_path / "corrupt.fgs"
    reasons = set()
    for offset in sorted(offsets):
        damaged = bytearray(blob)
        damaged[offset] ^= 0x01
        corrupt.write_bytes(bytes(damaged))
        reasons.add(_refused(corrupt, sealed.keys).split(": ", 1)[1].split(" (")[0])
    assert {
        "not a fedgray sealed artifact",
        f"artifact format version {FORMAT_VERSION ^ 1}; this fedgray reads {FORMAT_VERSION}",
        "signature does not verify with " + str(sealed.keys.verify_key),
        "the weights do not decrypt with " + str(sealed.keys.content_key),
    } <= reasons


def test_level_is_capped_by_the_signed_manifest(sealed: Sealed) -> None:
    assert _load(sealed.path, sealed.keys).level.value == "gray"
    assert _load(sealed.path, sealed.keys, level="black").level.value == "black"
    for level in ("gray+", "white"):
        with pytest.raises(SealedError, match="sealed for level 'gray' at most"):
            _load(sealed.path, sealed.keys, level=level)
    with pytest.raises(ArtifactError, match="holds 'fedgray-micro', not the configured"):
        _load(sealed.path, sealed.keys, name="fedgray-tiny")


def test_gray_plus_artifact_publishes_entry_points(sealed: Sealed, tmp_path: Path) -> None:
    path = _seal(sealed.model, sealed.keys, tmp_path / "plus.fgs", level="gray+")
    backbone = _load(path, sealed.keys)
    manifest = read_manifest(path, verify_key=sealed.keys.verify_key)
    assert backbone.level.value == "gray+"
    assert [e["tower"] for e in manifest.entry_points] == ["image", "text"]
    assert [e.layers for e in backbone.interface.entry_points] == [
        e["layers"] for e in manifest.entry_points
    ]


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path)
    assert stat.S_IMODE(keys.signing_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.content_key.stat().st_mode) == 0o600
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        generate_keys(tmp_path)
    keys.verify_key.unlink()
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        generate_keys(tmp_path)
    assert not keys.verify_key.exists()
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == {
        p: b for p, b in before.items() if p != keys.verify_key
    }
    with pytest.raises(ArtifactError, match="not an unencrypted Ed25519 private key"):
        read_signing_key(keys.content_key)
    with pytest.raises(ArtifactError, match="not a 256-bit content key"):
        read_content_key(keys.signing_key)


def test_config_needs_both_keys_and_resolves_paths(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="backbone.artifact: a sealed artifact needs"):
        load_config(None, ["backbone.artifact=a.fgs", "backbone.verify_key=v.pem"])
    monkeypatch.chdir(tmp_path)
    config = load_config(
        None, ["backbone.artifact=a.fgs", "backbone.verify_key=v.pem", "backbone.content_key=c"]
    )
    assert config.backbone.artifact == str(tmp_path / "a.fgs")
    assert config.backbone.content_key == str(tmp_path / "c")


def test_site_opens_the_configured_artifact(sealed: Sealed) -> None:
    keys = sealed.keys
    config = load_config(
        None,
        [
            "backbone.name=fedgray-micro",
            f"backbone.artifact={sealed.path}",
            f"backbone.verify_key={keys.verify_key}",
            f"backbone.content_key={keys.content_key}",
            "backbone.level=black",
            "backbone.query_budget=3",
        ],
    )
    backbone = open_backbone(config, progress=False)
    assert backbone.level.value == "black" and backbone.query_budget == 3


def test_cli_keys_seal_and_adapt_on_the_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    keys = tmp_path / "keys"
    assert main(["keys", "--out", str(keys)]) == 0
    assert main(["keys", "--out", str(keys)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    artifact = tmp_path / "micro.fgs"
    seal_args = ["seal", "--name", "fedgray-micro", "--pretrained", "none", "--out", str(artifact)]
    seal_args += ["--signing-key", str(keys / "owner-signing.pem")]
    assert main([*seal_args, "--content-key", str(keys / "content.key")]) == 0
    assert "sealed fedgray-micro (level gray" in capsys.readouterr().out
    config = Path(__file__).resolve().parents[2] / "configs" / "adapt_sketch.yaml"
    overrides = [
        "backbone.name=fedgray-micro",
        f"backbone.artifact={artifact}",
        f"backbone.verify_key={keys / 'owner-verify.pem'}",
        f"backbone.content_key={keys / 'content.key'}",
        "train.steps=2",
        "train.eval_every=2",
        "data.train_size=64",
        "data.test_size=32",
        "output.name=sealed",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["adapt", str(config), *sets, "--quiet", "--output", str(tmp_path)]) == 0
    assert "run folder:" in capsys.readouterr().out
    assert (tmp_path / "sealed" / "adapters.pt").is_file()
    damaged = bytearray(artifact.read_bytes())
    damaged[-100] ^= 0xFF
    artifact.write_bytes(bytes(damaged))
    sets[-1] = "output.name=damaged"  # a finished run folder is never reused
    assert main(["adapt", str(config), *sets, "--quiet", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedgray: error: ") and err.count("\n") == 1 and "do not decrypt" in err


@pytest.mark.parametrize("command", ["keys", "seal"])
def test_keys_and_seal_have_help_for_every_option(
    command: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    options = ["--out"] if command == "keys" else ["--name", "--pretrained", "--signing-key"]
    assert all(option in text for option in options)


def _sealed_version(sealed: Sealed, path: Path, version: int, key: Path | None = None) -> Path:
    owner = {"signing_key": sealed.keys.signing_key, "content_key": sealed.keys.content_key}
    seal(
        sealed.model, path, name="fedgray-micro", level="white", version=version,
        artifact_key=key, **owner,
    )  # fmt: skip
    return path


def test_a_replayed_older_artifact_is_refused(sealed: Sealed, tmp_path: Path) -> None:
    """The owner replaced a white artifact with a gray one (version 2); the attacker
    still has the old file, validly signed, and puts it where the site loads from."""
    old = _sealed_version(sealed, tmp_path / "v1.fgs", 1)
    current = _sealed_version(sealed, tmp_path / "v2.fgs", 2)
    assert _load(current, sealed.keys, min_version=2).level.value == "white"
    assert _load(old, sealed.keys).module is not None  # control: unpinned, the old one opens
    _refused_with(old, sealed.keys, "version 1, older than the lowest this site accepts (2)",
                  min_version=2)  # fmt: skip
    swapped = tmp_path / "site.fgs"  # the site's configured path, overwritten
    swapped.write_bytes(old.read_bytes())
    config = load_config(None, [
        "backbone.name=fedgray-micro", f"backbone.artifact={swapped}",
        f"backbone.verify_key={sealed.keys.verify_key}",
        f"backbone.content_key={sealed.keys.content_key}", "backbone.min_version=2",
    ])  # fmt: skip
    with pytest.raises(ArtifactError, match="older than the lowest this site accepts"):
        open_backbone(config, progress=False)
    with pytest.raises(ConfigError, match="backbone.min_version: applies to backbone.artifact"):
        load_config(None, ["backbone.min_version=2"])


def _refused_with(path: Path, keys: KeyFiles, match: str, **options: object) -> None:
    """One line naming the file at fault: the artifact, or the revocation list."""
    with pytest.raises(ArtifactError, match=re.escape(match)) as error:
        _load(path, keys, **options)
    named = options["revocations"] if "signature" in match or "serial" in match else path
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{named}: ")


def test_one_artifacts_key_opens_no_other(sealed: Sealed, tmp_path: Path) -> None:
    first = _sealed_version(sealed, tmp_path / "a.fgs", 1, key=tmp_path / "a.key")
    second = _sealed_version(sealed, tmp_path / "b.fgs", 2, key=tmp_path / "b.key")
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    verify = sealed.keys.verify_key
    for path, key in ((first, "a.key"), (second, "b.key")):  # each its own key, and the owner's
        load_artifact(path, verify_key=verify, content_key=tmp_path / key)
        load_artifact(path, verify_key=verify, content_key=sealed.keys.content_key)
    for path, key in ((first, "b.key"), (second, "a.key")):
        with pytest.raises(ArtifactError, match="neither the owner's content key nor this"):
            load_artifact(path, verify_key=verify, content_key=tmp_path / key)
    with pytest.raises(ArtifactError, match="a.key: key file exists"):
        _sealed_version(sealed, tmp_path / "c.fgs", 3, key=tmp_path / "a.key")


def test_a_revoked_artifact_is_refused_and_a_forged_list_too(
    sealed: Sealed, tmp_path: Path
) -> None:
    leaked = _sealed_version(sealed, tmp_path / "leaked.fgs", 1)
    kept = _sealed_version(sealed, tmp_path / "kept.fgs", 1)
    leaked_id = read_manifest(leaked, verify_key=sealed.keys.verify_key).artifact_id
    revoked = tmp_path / "revoked.fgr"
    write_revocations(revoked, [leaked_id], signing_key=sealed.keys.signing_key)
    _refused_with(leaked, sealed.keys, f"artifact {leaked_id} is revoked by its owner",
                  revocations=revoked)  # fmt: skip
    _load(kept, sealed.keys, revocations=revoked)
    # The attacker shortens the owner's list (the same signature over another body) ...
    blob = revoked.read_bytes()
    forged = tmp_path / "forged.fgr"
    forged.write_bytes(blob.replace(leaked_id.encode(), b"0" * len(leaked_id)))
    _refused_with(leaked, sealed.keys, "revocation list's signature does not verify",
                  revocations=forged)  # fmt: skip
    # ... or signs an empty list with a key of its own.
    own = generate_keys(tmp_path / "attacker")
    forged = tmp_path / "own.fgr"
    write_revocations(forged, [], signing_key=own.signing_key)
    _refused_with(leaked, sealed.keys, "revocation list's signature does not verify",
                  revocations=forged)  # fmt: skip
    assert main(["revoke", leaked_id, "--signing-key", str(sealed.keys.signing_key),
                 "--out", str(tmp_path / "cli.fgr")]) == 0  # fmt: skip
    _refused_with(leaked, sealed.keys, "is revoked by its owner", revocations=tmp_path / "cli.fgr")


def test_a_replayed_older_revocation_list_is_refused(
    sealed: Sealed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner's list named nothing (serial 1), then the leaked artifact (serial 2); the
    attacker kept the first, validly signed, and swaps it in for the current one."""
    monkeypatch.setenv("FEDGRAY_CACHE", str(tmp_path / "site-cache"))  # the site's own dir
    leaked = _sealed_version(sealed, tmp_path / "leaked.fgs", 1)
    leaked_id = read_manifest(leaked, verify_key=sealed.keys.verify_key).artifact_id
    current = tmp_path / "revocations.fgr"
    owner = sealed.keys.signing_key
    assert write_revocations(current, [], signing_key=owner) == 1
    old = tmp_path / "old.fgr"
    old.write_bytes(current.read_bytes())  # what the attacker keeps
    _load(leaked, sealed.keys, revocations=current)  # accepted then: nothing revoked yet
    assert write_revocations(current, [leaked_id], signing_key=owner) == 2  # one more
    _refused_with(leaked, sealed.keys, "is revoked by its owner", revocations=current)
    current.write_bytes(old.read_bytes())  # the replay
    _refused_with(leaked, sealed.keys, "serial 1 is older than serial 2, which this site has seen",
                  revocations=current)  # fmt: skip
    # The record outlives the process: it is a file in the site's cache dir.
    assert (tmp_path / "site-cache" / "revocation-serials.json").is_file()
    # What is not covered: a site that never saw serial 2 accepts serial 1.
    monkeypatch.setenv("FEDGRAY_CACHE", str(tmp_path / "fresh-site"))
    _load(leaked, sealed.keys, revocations=current)
    # The CLI numbers lists itself; an explicit serial must be positive.
    args = ["revoke", leaked_id, "--signing-key", str(owner), "--out", str(tmp_path / "c.fgr")]
    assert main(args) == 0 and main(args) == 0
    assert write_revocations(tmp_path / "c.fgr", [], signing_key=owner) == 3
    with pytest.raises(ArtifactError, match="--serial 0: must be at least 1"):
        write_revocations(tmp_path / "d.fgr", [], signing_key=owner, serial=0)
