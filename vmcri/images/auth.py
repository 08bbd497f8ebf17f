"""Registry credentials, as CRI's ``AuthConfig`` carries them; never printed.

``repr`` and ``str`` hide every secret, so an ``Auth`` may end up in a log line
or a traceback without leaking it.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from vmcri.errors import DeadlineExceeded, InvalidArgument


@dataclass(frozen=True, repr=False)
class Auth:
    username: str = ""
    password: str = ""
    auth: str = ""  # base64("username:password"), as in docker's config.json
    identity_token: str = ""  # an OAuth2 refresh token for the registry's token server
    registry_token: str = ""  # a bearer token sent to the registry as is

    def __repr__(self) -> str:
        return f"Auth(username={self.username!r}, secrets=<hidden>)"

    __str__ = __repr__

    def basic(self) -> tuple[str, str] | None:
        """The username and password, from the fields or the ``auth`` blob.

        Raises InvalidArgument when ``auth`` is not base64 of ``user:password``.
        """
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                decoded = base64.b64decode(self.auth, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise InvalidArgument("auth.auth: not base64 of 'username:password'") from exc
            user, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidArgument("auth.auth: not base64 of 'username:password'")
            return user, password
        return None

    @property
    def empty(self) -> bool:
        secrets = (
            self.username,
            self.password,
            self.auth,
            self.identity_token,
            self.registry_token,
        )
        return not any(secrets)


NO_AUTH = Auth()


@dataclass
class Deadline:
    """An absolute point on the monotonic clock by which a pull must be done."""

    at: float  # time.monotonic() value; float("inf") for none

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(float("inf") if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> float:
        """Seconds left; raises DeadlineExceeded naming ``what`` when none are."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceeded(f"{what}: deadline exceeded")
        return left

    def timeout(self, cap: float = 60.0) -> float:
        """A socket timeout that never outlives the deadline."""
        return max(0.05, min(cap, self.remaining()))
