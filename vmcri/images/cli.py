"""``vmcri images pull|ls|rm|inspect``: the image store, without the daemon.

Works directly on ``<root>/images`` (``--root``, default from the config). Do
not run it against the root of a daemon that is pulling at the same moment:
the store's locks are per process (see ARCHITECTURE notes in vmcri.images).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

from vmcri.config import load_config
from vmcri.images.auth import NO_AUTH, Auth, Deadline
from vmcri.images.pull import PullProgress
from vmcri.images.service import ImageService
from vmcri.images.trust.verifier import ImageTrust, TrustSettings


def add_commands(subparsers: Any) -> None:
    """Add ``images`` with its sub-commands to the main parser's subparsers."""
    images = subparsers.add_parser("images", help="pull, list, inspect and remove images")
    images.add_argument("--config", type=Path, help="TOML config (default /etc/vmcri/config.toml)")
    images.add_argument("--root", type=Path, help="vmcri root (default: the config's root)")
    images.add_argument("--registries-conf", type=Path, help="containers-registries.conf(5)")
    sub = images.add_subparsers(dest="images_command", required=True)

    pull = sub.add_parser("pull", help="pull an image")
    pull.add_argument("image")
    pull.add_argument("--username", default="")
    pull.add_argument(
        "--password-stdin", action="store_true", help="read the registry password from stdin"
    )
    pull.add_argument("--timeout", type=float, default=None, help="seconds")
    pull.add_argument("--quiet", "-q", action="store_true", help="print only the image ID")
    pull.add_argument(
        "--signature-policy", type=Path, help="containers-policy.json(5) (default: the config's)"
    )
    pull.add_argument(
        "--registries-d", type=Path, help="containers-registries.d(5) dir (default: the config's)"
    )
    pull.add_argument(
        "--namespace", default="", help="check against this namespace's policy, as for its pods"
    )
    pull.set_defaults(func=_pull)

    ls = sub.add_parser("ls", help="list images")
    ls.add_argument("filter", nargs="?", default="")
    ls.add_argument("--quiet", "-q", action="store_true", help="print only image IDs")
    ls.set_defaults(func=_ls)

    rm = sub.add_parser("rm", help="remove images (with all their tags)")
    rm.add_argument("images", nargs="+")
    rm.set_defaults(func=_rm)

    inspect = sub.add_parser("inspect", help="print an image record as JSON")
    inspect.add_argument("image")
    inspect.set_defaults(func=_inspect)


def _service(args: argparse.Namespace, trust: ImageTrust | None = None) -> ImageService:
    config = load_config(args.config)
    root = args.root or config.root_dir
    conf = args.registries_conf or Path(config.registries_conf)
    return ImageService(root, conf, trust=trust)


def _trust(args: argparse.Namespace) -> ImageTrust:
    """The daemon's signature policy, with the command line's overrides."""
    settings = TrustSettings.of(load_config(args.config).image_trust)
    if args.signature_policy is not None:
        settings = replace(settings, policy=args.signature_policy)
    if args.registries_d is not None:
        settings = replace(settings, registries_d=args.registries_d)
    return ImageTrust.load(settings)


class ProgressDisplay:
    """One status line, redrawn in place; only used when stdout is a terminal."""

    def __init__(self, out: TextIO, name: str) -> None:
        self._out = out
        self._name = name

    def __call__(self, p: PullProgress) -> None:
        line = (
            f"{self._name}: {p.phase} layers {p.layers_done}/{p.layers_total} "
            f"{_human(p.bytes_done)}/{_human(p.bytes_total)}"
        )
        self._out.write("\r\x1b[2K" + line)
        self._out.flush()
        if p.phase == "done":
            self._out.write("\n")


def _pull(args: argparse.Namespace) -> int:
    auth = NO_AUTH
    if args.username or args.password_stdin:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else ""
        auth = Auth(username=args.username, password=password)
    service = _service(args, _trust(args))
    progress = ProgressDisplay(sys.stdout, args.image) if sys.stdout.isatty() else None
    deadline = Deadline.after(args.timeout)
    image_id = service.pull(args.image, auth, deadline, progress, namespace=args.namespace)
    print(image_id if args.quiet else f"pulled {args.image}: {image_id}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    records = _service(args).list(args.filter)
    if args.quiet:
        for r in records:
            print(r.id)
        return 0
    print(f"{'IMAGE':<60} {'IMAGE ID':<15} {'SIZE':>9}")
    for r in records:
        names = r.repo_tags or tuple(d.split("@")[0] + "@<none>" for d in r.repo_digests)
        for name in names or ("<none>",):
            print(f"{name:<60} {r.id[7:20]:<15} {_human(r.size):>9}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    service = _service(args)
    for ref in args.images:
        record = service.status(ref)
        service.remove(ref)
        print(f"removed {record.id}" if record else f"{ref}: not present")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    service = _service(args)
    record = service.status(args.image)
    if record is None:
        print(f"vmcri: image {args.image!r} is not present", file=sys.stderr)
        return 1
    doc = asdict(record)
    doc["layer_dirs"] = [str(service.layers.diff_dir(layer.chain_id)) for layer in record.layers]
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write(os.linesep)
    return 0


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{n}B"
