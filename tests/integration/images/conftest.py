"""One real registry per module, with the busybox test images pushed once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.registry import LocalRegistry, registry_or_skip


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with registry_or_skip(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture()
def conf(tmp_path: Path, registry: LocalRegistry) -> Path:
    path = tmp_path / "registries.conf"
    path.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    return path
