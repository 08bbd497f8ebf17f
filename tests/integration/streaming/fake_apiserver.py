"""A stand-in for kube-apiserver + kubelet, so real ``kubectl exec/port-forward`` reach vmcri.

It answers the few reads kubectl makes (discovery, the pod), and for an exec or
port-forward request it asks vmcri over CRI for a streaming URL, as kubelet does, then
relays the client's connection, unchanged but for the request line, to that URL: the
upgrade and everything after it is kubectl talking to vmcri's streaming server.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

UrlFor = Callable[[str, dict[str, list[str]]], str]  # (kind, query) -> streaming URL

POD_PATH = "/api/v1/namespaces/default/pods/"


def _pod(name: str, container: str) -> dict[str, object]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "uid": "uid-1"},
        "spec": {"containers": [{"name": container, "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": container,
                    "ready": True,
                    "restartCount": 0,
                    "image": "busybox",
                    "imageID": "",
                    "state": {"running": {}},
                }
            ],
        },
    }


DISCOVERY = {
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    },
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
            },
            {
                "name": "pods/exec",
                "singularName": "",
                "namespaced": True,
                "kind": "PodExecOptions",
                "verbs": ["create", "get"],
            },
            {
                "name": "pods/portforward",
                "singularName": "",
                "namespaced": True,
                "kind": "PodPortForwardOptions",
                "verbs": ["create", "get"],
            },
        ],
    },
}


class FakeApiServer:
    def __init__(self, url_for: UrlFor, pod: str, container: str) -> None:
        self._url_for = url_for
        self._pod, self._container = pod, container
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:  # keep-alive: kubectl reuses the connection for its reads
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                url = urlsplit(target)
                self.requests.append(f"{method} {url.path}")
                kind = url.path.rsplit("/", 1)[-1]
                if method == "POST" or kind in ("exec", "portforward", "attach"):
                    self._relay(conn, kind, parse_qs(url.query), lines, rest)
                    return
                self._answer_get(conn, url.path)

    def _answer_get(self, conn: socket.socket, path: str) -> None:
        body: object
        status = "200 OK"
        if path in DISCOVERY:
            body = DISCOVERY[path]
        elif path == POD_PATH + self._pod:
            body = _pod(self._pod, self._container)
        else:
            status = "404 Not Found"
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 404,
                "reason": "NotFound",
                "message": f"{path} not found",
            }
        payload = json.dumps(body).encode()
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )

    def _relay(
        self,
        conn: socket.socket,
        kind: str,
        query: dict[str, list[str]],
        lines: list[str],
        rest: bytes,
    ) -> None:
        target = urlsplit(self._url_for(kind, query))
        assert target.hostname == "127.0.0.1"
        method = lines[0].split(" ")[0]
        head = [f"{method} {target.path} HTTP/1.1", *lines[1:]]
        upstream = socket.create_connection((target.hostname, target.port))
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + rest)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join(60)
        upstream.close()
