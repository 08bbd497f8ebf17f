"""The ``vmcri`` command: serve, stop, doctor, config, images, agent."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from vmcri import __version__
from vmcri.config import DEFAULT_CONFIG_TEXT, load_config, with_overrides
from vmcri.errors import VmcriError
from vmcri.logs import setup_logging
from vmcri.stop_signal import StopSignals

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

    stop = commands.add_parser("stop", help="stop the running daemon; its pods keep running")
    stop.add_argument("--config", type=Path, help="TOML config (default /etc/vmcri/config.toml)")
    stop.add_argument("--state", help="runtime state directory of the daemon to stop")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")

    doctor = commands.add_parser("doctor", help="what this host offers and what vmcri does")
    doctor.add_argument("--config", type=Path, help="TOML config (default /etc/vmcri/config.toml)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")

    config = commands.add_parser("config", help="configuration helpers")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser("default", help="print the default config with comments")
    config_commands.add_parser("reference", help="print the config reference (Markdown)")
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
    stop = StopSignals((signal.SIGTERM, signal.SIGINT))
    daemon = Daemon(config)
    daemon.start()
    received = stop.wait()
    log.info("signal %s: shutting down", received.name)
    daemon.stop()
    return 0


def _stop(args: argparse.Namespace) -> int:
    from vmcri.control import stop_daemon

    config = with_overrides(load_config(args.config), state=args.state)
    pid = stop_daemon(config.state_dir, args.timeout)
    if pid is None:
        print(f"vmcri: no daemon holds {config.state_dir}")
    else:
        print(f"vmcri: stopped the daemon (pid {pid}); its pods keep running")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from vmcri.doctor.model import pods_can_run
    from vmcri.doctor.report import render_json, render_table
    from vmcri.doctor.run import run_checks

    checks = run_checks(load_config(args.config))
    sys.stdout.write(render_json(checks) if args.json else render_table(checks))
    return 0 if pods_can_run(checks) else 1


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
        if args.command == "stop":
            return _stop(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "config":
            if args.config_command == "default":
                sys.stdout.write(DEFAULT_CONFIG_TEXT)
                return 0
            if args.config_command == "reference":
                from vmcri.config_reference import render_reference

                sys.stdout.write(render_reference(DEFAULT_CONFIG_TEXT))
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
