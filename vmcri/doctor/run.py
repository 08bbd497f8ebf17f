"""Which checks run for a configuration: host-wide ones, then each handler's.

A handler's checks come from its configured backend (``handlers/registry.py``), so
nothing here knows which backends exist.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmcri.config import Config
from vmcri.doctor import host_checks, trust_checks
from vmcri.doctor.model import Check
from vmcri.handlers.registry import BACKENDS, BackendKind, load_ref, parse_options
from vmcri.handlers.state_dirs import BACKENDS_DIR


def _cni_dirs(config: Config) -> tuple[Path, list[Path]]:
    # Read through getattr: the [network] table is young and may change shape.
    network = getattr(config, "network", None)
    conf_dir = getattr(network, "cni_conf_dir", "/etc/cni/net.d")
    bin_dirs = getattr(network, "cni_bin_dirs", ("/usr/lib/cni", "/opt/cni/bin"))
    return Path(conf_dir), [Path(d) for d in bin_dirs]


def run_checks(config: Config) -> list[Check]:
    """Every check for ``config``; raises ConfigError when a handler's options are wrong."""
    conf_dir, bin_dirs = _cni_dirs(config)
    checks = [
        host_checks.check_cgroups(config.cgroup_driver),
        host_checks.check_cni(conf_dir, bin_dirs),
        host_checks.check_nft(getattr(getattr(config, "network", None), "enabled", True)),
        host_checks.check_disk(config.root_dir),
        trust_checks.check_image_trust(config.image_trust),
    ]
    options = parse_options(config)
    backends = config.root_dir / BACKENDS_DIR
    for name, handler in config.runtimes.items():
        checks += backend_checks(BACKENDS[handler.backend], name, options[name], backends)
    return checks


def backend_checks(kind: BackendKind, handler: str, options: object, backends: Path) -> list[Check]:
    """The checks ``kind`` registered (``BackendKind.doctor``), for one handler of it."""
    checks: Callable[[str, Any, Path], list[Check]] = load_ref(kind.doctor)
    return checks(handler, options, backends)
