"""Just enough HTTP/1.1 for an upgrade: parse one bounded request head, write one response.

Nothing after the upgrade is HTTP, so no keep-alive, no bodies, no chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from vmcri.errors import InvalidArgument

MAX_HEAD = 16 * 1024

REASONS = {
    101: "Switching Protocols",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]  # lower-case names
    rest: bytes  # bytes the client sent after the head (already the upgraded protocol)

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0].strip() if values else ""

    def header_tokens(self, name: str) -> list[str]:
        """Every comma-separated token of every line of header ``name``, in order."""
        return [
            token.strip()
            for line in self.headers.get(name.lower(), [])
            for token in line.split(",")
            if token.strip()
        ]


class HeadBuffer:
    """Collects a request head from chunks as they arrive; reading is the caller's business.

    Deadlines live with the caller (``vmcri.http.admission``), which reads without
    blocking; here only the size and the syntax are bounded.
    """

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, chunk: bytes) -> HttpRequest | None:
        """The request once its head is complete, else None.

        Raises InvalidArgument for a head over MAX_HEAD bytes or one that does not parse.
        """
        searched = max(0, len(self._data) - 3)  # the end marker may straddle two chunks
        self._data += chunk
        end = self._data.find(b"\r\n\r\n", searched)
        if end > MAX_HEAD or (end < 0 and len(self._data) > MAX_HEAD + 3):
            raise InvalidArgument(f"request head over {MAX_HEAD} bytes")
        if end < 0:
            return None
        return parse_head(bytes(self._data[:end]), bytes(self._data[end + 4 :]))


def parse_head(head: bytes, rest: bytes) -> HttpRequest:
    """Raises InvalidArgument for a malformed request line or header line."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError as exc:
        raise InvalidArgument("malformed request line") from exc
    if not version.startswith("HTTP/1."):
        raise InvalidArgument(f"unsupported HTTP version {version[:16]!r}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise InvalidArgument("malformed header line")
        headers.setdefault(name.lower(), []).append(value.strip())
    url = urlsplit(target)
    return HttpRequest(method, url.path, parse_qs(url.query), headers, rest)


def response(status: int, headers: list[tuple[str, str]] | None = None, body: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    payload = body.encode()
    if status != 101:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(payload)}"]
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
