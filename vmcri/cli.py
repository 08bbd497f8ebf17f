"""The ``vmcri`` command: serve, config, images, agent."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from vmcri import __version__
from vmcri.config import DEFAULT_CONFIG_TEXT, load_config, with_overrides
from vmcri.errors import VmcriError
from vmcri.logs import setup_logging

log = logging.getLogger("vmcri")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmcri", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vmcri {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the CRI daemon")
    serve.add_argument("--config", type=Path, help="TOML config (default /etc/vmcri/config.toml)")
    serve.add_argument("--socket", help="CRI unix socket path")
    serve.add_argument("--root", help="persistent state directory")
    serve.add_argument("--state", help="runtime state directory")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    config = commands.add_parser("config", help="configuration helpers")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser("default", help="print the default config with comments")
    check = config_commands.add_parser("check", help="validate a config file")
    check.add_argument("path", type=Path)

    agent = commands.add_parser("agent", help="run the in-guest agent (inside a VM)")
    agent.add_argument("args", nargs=argparse.REMAINDER)

    try:
        from vmcri.images.cli import add_commands
    except ImportError:
        pass
    else:
        add_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from vmcri.daemon import Daemon
    from vmcri.handlers.registry import parse_options

    config = with_overrides(
        load_config(args.config),
        socket=args.socket,
        root=args.root,
        state=args.state,
        log_level=args.log_level,
    )
    parse_options(config)
    setup_logging(config.log_level)
    daemon = Daemon(config)
    daemon.start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        from vmcri.agent.main import main as agent_main

        agent_status: int = agent_main(argv[1:])
        return agent_status
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "config":
            if args.config_command == "default":
                sys.stdout.write(DEFAULT_CONFIG_TEXT)
                return 0
            from vmcri.handlers.registry import parse_options

            parse_options(load_config(args.path))
            print(f"{args.path}: ok")
            return 0
        handler = getattr(args, "func", None)
        if handler is not None:
            result: int = handler(args)
            return result
    except VmcriError as exc:
        print(f"vmcri: {exc.message}", file=sys.stderr)
        return 2
    return 1
