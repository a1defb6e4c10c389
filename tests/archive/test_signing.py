"""The archive's signing key: from a file or base64, generated for local development."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from activity_sinks.archive_errors import SigningKeyError
from activity_sinks.signing import (
    DEV_SIGNING_KEY_PATH,
    key_id,
    load_public_key,
    load_signing_key,
    public_key_pem,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.archive.records import raw_key_base64


def test_unset_key_generates_a_development_key_once_into_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    first = load_signing_key(None)
    second = load_signing_key(None)

    assert (tmp_path / DEV_SIGNING_KEY_PATH).read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    assert key_id(first.public_key()) == key_id(second.public_key())


def test_base64_and_pem_file_load_the_same_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "public.pem").write_bytes(public_key_pem(key.public_key()))

    loaded = load_signing_key(raw_key_base64(key))

    assert key_id(loaded.public_key()) == key_id(key.public_key())
    assert key_id(load_public_key(str(tmp_path / "public.pem"))) == key_id(key.public_key())


def test_key_of_the_wrong_length_is_refused_with_its_size() -> None:
    with pytest.raises(SigningKeyError, match=r"decodes to 16 bytes; a raw Ed25519 private key"):
        load_signing_key(base64.b64encode(b"x" * 16).decode())


def test_text_that_is_neither_file_nor_base64_is_refused() -> None:
    with pytest.raises(SigningKeyError, match=r"neither an existing file nor base64"):
        load_signing_key("/no/such/key.pem")
