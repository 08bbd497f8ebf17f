"""runc create failures the image causes are FAILED_PRECONDITION naming the cause."""

from __future__ import annotations

import pytest

from vmcri.agent.guest.runc_errors import image_refusal

START = "runc create failed: unable to start container process: "


@pytest.mark.parametrize(
    ("errors", "cause"),
    [
        (START + 'exec: "nope": executable file not found in $PATH', "no executable 'nope'"),
        (
            START + 'exec: "/no/such": stat /no/such: no such file or directory',
            "'/no/such' does not exist in the image",
        ),
        (START + 'exec: "/etc": permission denied', "'/etc' cannot be executed"),
        (START + 'exec: "/bin/arm": exec format error', "(exec format error)"),
        (
            START + "error during container init: mkdir /etc/passwd: not a directory",
            "'/etc/passwd' in the image is a file",
        ),
        (
            START + 'chdir to cwd ("/data") set in config.json failed: permission denied',
            "working directory '/data'",
        ),
        ("executable file `nope` not found in $PATH: No such file or directory", "'nope'"),
        (
            "executable file `/no/such` not found in $PATH: No such file or directory",
            "'/no/such' does not exist in the image",
        ),
        ("chdir to `/etc/hosts`: Not a directory", "working directory '/etc/hosts'"),
    ],
)
def test_the_images_refusals_name_their_cause(errors: str, cause: str) -> None:
    refusal = image_refusal("c1", errors)
    assert refusal is not None and refusal.code == "FAILED_PRECONDITION"
    assert cause in refusal.message and errors in refusal.message


@pytest.mark.parametrize(
    "errors",
    [
        START + "error during container init: error setting cgroup config: write memory.max",
        START + "can't copy bootstrap data to pipe: write init-p: broken pipe",
        "(no runc log)",
    ],
)
def test_the_nodes_failures_are_not_the_images(errors: str) -> None:
    assert image_refusal("c1", errors) is None
