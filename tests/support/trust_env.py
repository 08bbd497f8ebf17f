"""A node that requires signed images: keys, stores, a policy and a real daemon using them.

Shared by the image-trust integration tests and the hostile-store security tests. The
registry's repositories map to requirements so one daemon serves every case::

    <host>/gpg/...      signedBy the "release" GPG key, lookaside file:// store
    <host>/web/...      signedBy "release", lookaside served over http on loopback
    <host>/cosign/...   sigstoreSigned by the trusted P-256 key, registry attachments
    <host>/open/...     insecureAcceptAnything
    anything else       reject (the policy's default)

Signing is Debian's ``skopeo copy --sign-by`` (simple signing, written to the
``lookaside-staging`` stores), and ``cryptography`` for sigstore (see signing.py).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.daemon.conftest import RunningDaemon, start_daemon, stop_daemon
from tests.support.layers import Layer, busybox_layer
from tests.support.push import PushedImage, push_image
from tests.support.registry import LocalRegistry, registries_conf_for
from tests.support.signing import GpgHome, SigstoreKey, new_sigstore_key, public_pem
from vmcri.api import api_pb2 as pb
from vmcri.host.mounts import HostMounter, mount_points


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``directory``; yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class TrustNode:
    tmp: Path
    registry: LocalRegistry
    gpg: GpgHome
    release: str  # fingerprint of the trusted GPG key
    other: str  # a key the policy does not trust
    cosign: SigstoreKey  # trusted sigstore key
    cosign_other: SigstoreKey
    registries_d: Path
    file_store: Path  # the file:// lookaside
    web_store: Path  # what the http lookaside serves
    policy: Path
    policy_dir: Path
    daemon: RunningDaemon

    @property
    def host(self) -> str:
        return self.registry.host

    def push(self, repo: str, runnable: bool = False) -> PushedImage:
        """A small image of its own (one unique layer) at ``<host>/<repo>``; ``runnable``:
        on a busybox base, so a container of it can be created."""
        layer = Layer("gzip").file("id", uuid.uuid4().bytes)
        layers = [busybox_layer(), layer] if runnable else [layer]
        return push_image(self.host, repo, layers, config={"Cmd": ["/bin/true"]})

    def skopeo_copy(
        self, src: str, dst: str, sign_by: str | None = None, identity: str | None = None
    ) -> None:
        """Copy within the registry, signing the copy (written to the staging store)."""
        args = ["skopeo", "--insecure-policy", "--registries.d", str(self.registries_d), "copy"]
        args += ["--src-tls-verify=false", "--dest-tls-verify=false"]
        if sign_by:
            args += ["--sign-by", sign_by]
        if identity:
            args += ["--sign-identity", identity]
        args += [f"docker://{self.host}/{src}", f"docker://{self.host}/{dst}"]
        subprocess.run(args, env=self.gpg.env, check=True, capture_output=True, timeout=120)

    def signed_image(
        self,
        repo: str,
        sign_by: str | None = None,
        identity: str | None = None,
        runnable: bool = False,
    ) -> str:
        """A new image copied to ``repo`` (name:tag) by skopeo, signed; its manifest digest."""
        src = f"src/{uuid.uuid4().hex[:12]}:1"
        pushed = self.push(src, runnable)
        self.skopeo_copy(src, repo, sign_by=sign_by or self.release, identity=identity)
        return pushed.manifest_digest

    def pull(self, image: str, namespace: str = "") -> str:
        """PullImage through the daemon's CRI socket; returns the image ref."""
        request = pb.PullImageRequest(image=pb.ImageSpec(image=image))
        if namespace:
            meta = pb.PodSandboxMetadata(name="p", uid=uuid.uuid4().hex, namespace=namespace)
            request.sandbox_config.CopyFrom(pb.PodSandboxConfig(metadata=meta))
        resp = self.daemon.images().PullImage(request, timeout=120)
        return str(resp.image_ref)

    def image_files(self) -> set[str]:
        """Every path under the daemon's image store (what a refused pull must not change)."""
        root = self.daemon.root / "images"
        return {str(p.relative_to(root)) for p in root.rglob("*")}


def _policy(node_host: str, keys: Path, release_key: Path, cosign_pub: Path) -> dict[str, object]:
    signed = [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(release_key)}]
    return {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                f"{node_host}/gpg": signed,
                f"{node_host}/web": signed,
                f"{node_host}/cosign": [{"type": "sigstoreSigned", "keyPath": str(cosign_pub)}],
                f"{node_host}/open": [{"type": "insecureAcceptAnything"}],
            },
            "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }


@contextlib.contextmanager
def trust_node(tmp: Path, registry: LocalRegistry) -> Iterator[TrustNode]:
    """Keys, stores, policy and a daemon enforcing it; everything stopped on the way out."""
    keys = tmp / "keys"
    keys.mkdir()
    with GpgHome(tmp / "gnupg") as gpg:
        release, other = gpg.generate("release"), gpg.generate("other")
        release_key = keys / "release.asc"
        release_key.write_bytes(gpg.public_key(release))
        cosign, cosign_other = new_sigstore_key("p256"), new_sigstore_key("p256")
        cosign_pub = keys / "cosign.pub"
        cosign_pub.write_bytes(public_pem(cosign))
        file_store, web_store = tmp / "sigstore-file", tmp / "sigstore-web"
        file_store.mkdir()
        web_store.mkdir()
        with serve_directory(web_store) as web_url:
            registries_d = tmp / "registries.d"
            registries_d.mkdir()
            h = registry.host
            (registries_d / "node.yaml").write_text(
                "docker:\n"
                f"  {h}:\n"
                f"    lookaside: file://{file_store}\n"
                f"    lookaside-staging: file://{file_store}\n"
                f"  {h}/web:\n"
                f"    lookaside: {web_url}\n"
                f"    lookaside-staging: file://{web_store}\n"
                f"  {h}/cosign:\n"
                "    use-sigstore-attachments: true\n"
            )
            policy = tmp / "policy.json"
            policy.write_text(json.dumps(_policy(h, keys, release_key, cosign_pub)))
            policy_dir = tmp / "policies"
            policy_dir.mkdir()
            conf = registries_conf_for(tmp / "registries.conf", h)
            (tmp / "config.toml").write_text(
                f'registries_conf = "{conf}"\n[network]\nenabled = false\n'
                f'[image_trust]\npolicy = "{policy}"\nregistries_d = "{registries_d}"\n'
                f'signature_policy_dir = "{policy_dir}"\n'
            )
            (tmp / "daemon").mkdir()
            daemon = start_daemon(tmp / "daemon", config=tmp / "config.toml")
            try:
                yield TrustNode(
                    tmp, registry, gpg, release, other, cosign, cosign_other, registries_d,
                    file_store, web_store, policy, policy_dir, daemon,
                )  # fmt: skip
            finally:
                stop_daemon(daemon)
                # A VM pod's daemon leaves its host-only mounts to whoever owns the tree.
                HostMounter().unmount_below(tmp)
                assert mount_points(tmp) == []
