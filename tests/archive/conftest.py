"""Fixtures of the archive tests: a signing key and an archive on each filesystem."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import fsspec
import pytest
from activity_sinks.archive import ArchiveStore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArchiveStore]:
    """An empty archive in a local directory, then on fsspec's memory filesystem."""
    if request.param == "local":
        yield ArchiveStore(tmp_path / "archive")
        return
    url = f"memory://archive-{uuid4().hex}"
    yield ArchiveStore(url)
    memory = fsspec.filesystem("memory")
    if memory.exists(url):
        memory.rm(url, recursive=True)


@pytest.fixture
def local_store(tmp_path: Path) -> ArchiveStore:
    return ArchiveStore(tmp_path / "archive")
