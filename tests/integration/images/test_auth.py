"""Basic (htpasswd) and bearer-token auth against a real docker-registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.push import push_busybox_image
from tests.support.registry import LocalRegistry
from tests.support.token_server import TokenServer
from vmcri.errors import PermissionDenied
from vmcri.images.auth import Auth
from vmcri.images.service import ImageService

pytestmark = pytest.mark.integration


def _conf(tmp: Path, host: str) -> Path:
    path = tmp / "r.conf"
    path.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    return path


def test_bearer_token_auth(tmp_path: Path, registry: LocalRegistry) -> None:
    pushed = push_busybox_image(registry.host, "private/app:1", cmd=["true"])
    token = TokenServer(tmp_path / "token", users={"alice": "s3cret"})
    with LocalRegistry(tmp_path / "tok", storage=registry.storage, token=token) as reg:
        conf = _conf(tmp_path, reg.host)
        ref = f"{reg.host}/private/app:1"
        with pytest.raises(PermissionDenied):
            ImageService(tmp_path / "r0", conf).pull(ref)
        with pytest.raises(PermissionDenied):
            ImageService(tmp_path / "r1", conf).pull(ref, Auth(username="alice", password="no"))
        svc = ImageService(tmp_path / "r2", conf)
        assert svc.pull(ref, Auth(username="alice", password="s3cret")) == pushed.config_digest
        assert token.issued >= 1
        # docker's "auth" field: base64 of user:password.
        svc3 = ImageService(tmp_path / "r3", conf)
        assert svc3.pull(ref, Auth(auth="YWxpY2U6czNjcmV0")) == pushed.config_digest


def test_registry_token_is_sent_as_is(tmp_path: Path, registry: LocalRegistry) -> None:
    push_busybox_image(registry.host, "private/tok:1", cmd=["true"])
    token = TokenServer(tmp_path / "token", users={})
    with LocalRegistry(tmp_path / "tok", storage=registry.storage, token=token) as reg:
        claims_token = token.sign(
            {
                "iss": token.issuer,
                "sub": "x",
                "aud": token.service,
                "exp": 4_000_000_000,
                "nbf": 0,
                "iat": 0,
                "jti": "1",
                "access": [{"type": "repository", "name": "private/tok", "actions": ["pull"]}],
            }
        )
        svc = ImageService(tmp_path / "root", _conf(tmp_path, reg.host))
        svc.pull(f"{reg.host}/private/tok:1", Auth(registry_token=claims_token))
        assert token.issued == 0


def test_basic_auth(tmp_path: Path, registry: LocalRegistry) -> None:
    pushed = push_busybox_image(registry.host, "basic/app:1", cmd=["true"])
    with LocalRegistry(tmp_path / "basic", storage=registry.storage, htpasswd={"bob": "pw"}) as reg:
        conf = _conf(tmp_path, reg.host)
        with pytest.raises(PermissionDenied):
            ImageService(tmp_path / "r0", conf).pull(f"{reg.host}/basic/app:1")
        svc = ImageService(tmp_path / "r1", conf)
        assert svc.pull(f"{reg.host}/basic/app:1", Auth(username="bob", password="pw")) == (
            pushed.config_digest
        )
