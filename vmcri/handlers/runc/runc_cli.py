"""The runc command line (runc 1.1), with a private ``--root`` per backend."""

from __future__ import annotations

import json
from collections.abc import Sequence

from vmcri.errors import HostCommandError
from vmcri.handlers.runc.host import CommandResult, Host

_GONE = ("does not exist", "not exist", "no such file")


class Runc:
    """Thin wrapper: builds argv, runs it through the injected :class:`Host`."""

    def __init__(self, host: Host, binary: str, root: str) -> None:
        self.host = host
        self.binary = binary
        self.root = root

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def _run(self, *args: str, timeout: float = 60.0) -> CommandResult:
        return self.host.run(self.argv(*args), timeout=timeout)

    @staticmethod
    def _fail(what: str, result: CommandResult) -> HostCommandError:
        text = result.stderr.decode(errors="replace").strip()
        return HostCommandError(
            f"runc {what}: {text or 'exit status ' + str(result.returncode)}",
            returncode=result.returncode,
            stderr=text,
        )

    def state(self, container_id: str) -> dict[str, object] | None:
        """``runc state``: None when runc does not know the container.

        Raises HostCommandError for other failures or unreadable output.
        """
        result = self._run("state", container_id)
        if result.returncode != 0:
            text = result.stderr.decode(errors="replace").lower()
            if any(g in text for g in _GONE):
                return None
            raise self._fail("state", result)
        try:
            state = json.loads(result.stdout)
        except ValueError as exc:
            raise HostCommandError(f"runc state {container_id}: bad JSON: {exc}") from exc
        if not isinstance(state, dict):
            raise HostCommandError(f"runc state {container_id}: not an object")
        return state

    def start(self, container_id: str) -> None:
        """Raises HostCommandError."""
        result = self._run("start", container_id)
        if result.returncode != 0:
            raise self._fail("start", result)

    def kill(self, container_id: str, signal: str, all_processes: bool = False) -> bool:
        """Signal the container; False when it is not running (or gone).

        Raises HostCommandError for other failures.
        """
        args = ["kill", *(["--all"] if all_processes else []), container_id, signal]
        result = self._run(*args)
        if result.returncode == 0:
            return True
        text = result.stderr.decode(errors="replace").lower()
        if (
            "not running" in text
            or "process already finished" in text
            or any(g in text for g in _GONE)
        ):
            return False
        raise self._fail("kill", result)

    def delete(self, container_id: str) -> None:
        """``runc delete --force``; an unknown container is success. Raises HostCommandError."""
        result = self._run("delete", "--force", container_id)
        if result.returncode != 0:
            text = result.stderr.decode(errors="replace").lower()
            if any(g in text for g in _GONE):
                return
            raise self._fail("delete", result)

    def update(self, container_id: str, resources_path: str) -> None:
        """``runc update -r <file>``; raises HostCommandError."""
        result = self._run("update", "-r", resources_path, container_id)
        if result.returncode != 0:
            raise self._fail("update", result)

    def exec_argv(self, container_id: str, pid_file: str, cmd: Sequence[str]) -> list[str]:
        return self.argv("exec", "--pid-file", pid_file, container_id, *cmd)
