"""Pushing images to a registry with the plain v2 API (monolithic uploads)."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from tests.support.layers import Layer, busybox_layer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"


class Pusher:
    """Uploads blobs and manifests to ``host`` with the v2 API (monolithic uploads)."""

    def __init__(self, host: str, authorization: str | None = None) -> None:
        self.host = host
        self.authorization = authorization

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.host, timeout=60)
        hdrs = dict(headers or {})
        if self.authorization:
            hdrs["Authorization"] = self.authorization
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp

    def blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self._request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
            return digest
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/")
        if resp.status != 202:
            raise RuntimeError(f"upload start: HTTP {resp.status}")
        location = resp.getheader("Location") or ""
        parts = urllib.parse.urlsplit(location)
        sep = "&" if parts.query else ""
        target = f"{parts.path}?{parts.query}{sep}digest={digest}"
        resp = self._request(
            "PUT",
            target,
            data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if resp.status != 201:
            raise RuntimeError(f"blob upload {digest}: HTTP {resp.status}")
        return digest

    def manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        resp = self._request(
            "PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type}
        )
        if resp.status != 201:
            raise RuntimeError(f"manifest {repo}:{ref}: HTTP {resp.status}")
        return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class PushedImage:
    manifest_digest: str  # what a pull by digest names (the index's, if one was pushed)
    config_digest: str  # the image ID
    diff_ids: list[str]
    layer_digests: list[str]


def push_image(
    host: str,
    name: str,
    layers: list[Layer],
    *,
    config: dict[str, Any] | None = None,
    docker_types: bool = False,
    index: bool = False,
    authorization: str | None = None,
    bad_diff_id: bool = False,
) -> PushedImage:
    """Push an image built from ``layers`` as ``name`` ("repo:tag")."""
    repo, _, tag = name.rpartition(":")
    pusher = Pusher(host, authorization)
    descs, diff_ids = [], []
    for layer in layers:
        blob, media, diff_id = layer.blob()
        if docker_types:
            media = "application/vnd.docker.image.rootfs.diff.tar.gzip"
        digest = pusher.blob(repo, blob)
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
        diff_ids.append(diff_id)
    if bad_diff_id:
        diff_ids[-1] = "sha256:" + "0" * 64
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "vmcri tests"} for _ in layers],
    }
    cfg_raw = json.dumps(cfg, sort_keys=True).encode()
    cfg_digest = pusher.blob(repo, cfg_raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker_types else OCI_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG if docker_types else OCI_CONFIG,
            "digest": cfg_digest,
            "size": len(cfg_raw),
        },
        "layers": descs,
    }
    raw = json.dumps(manifest).encode()
    mtype = manifest["mediaType"]
    assert isinstance(mtype, str)
    if not index:
        digest = pusher.manifest(repo, tag, raw, mtype)
        return PushedImage(digest, cfg_digest, diff_ids, [str(d["digest"]) for d in descs])
    m_digest = pusher.manifest(repo, "sha256:" + hashlib.sha256(raw).hexdigest(), raw, mtype)
    # A decoy for another platform first, so platform selection is really exercised.
    decoy = {**manifest, "layers": []}
    decoy_raw = json.dumps(decoy).encode()
    decoy_digest = pusher.manifest(
        repo, "sha256:" + hashlib.sha256(decoy_raw).hexdigest(), decoy_raw, mtype
    )
    idx = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": mtype,
                "digest": decoy_digest,
                "size": len(decoy_raw),
                "platform": {"os": "linux", "architecture": "arm64"},
            },
            {
                "mediaType": mtype,
                "digest": m_digest,
                "size": len(raw),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ],
    }
    idx_raw = json.dumps(idx).encode()
    digest = pusher.manifest(repo, tag, idx_raw, OCI_INDEX)
    return PushedImage(digest, cfg_digest, diff_ids, [str(d["digest"]) for d in descs])


def push_busybox_image(
    host: str,
    name: str,
    *,
    extra_layers: list[Layer] | None = None,
    user: str | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    compression: str = "gzip",
    index: bool = False,
) -> PushedImage:
    """Push busybox (plus ``extra_layers``) as ``name``; returns what was pushed."""
    config: dict[str, Any] = {
        "Env": env or ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": cmd if cmd is not None else ["sh"],
    }
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    if user is not None:
        config["User"] = user
    return push_image(
        host, name, [busybox_layer(compression), *(extra_layers or [])], config=config, index=index
    )
