"""The `tidegate-dev` command: the local environment and the demo, never part of the operator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _environment(args: argparse.Namespace) -> int:
    from tidegate_devenv import environment

    state_dir = Path(args.state_dir) if args.state_dir else environment.default_state_dir()
    if args.command == "up":
        info = environment.start_environment(state_dir)
        print(f"# local environment up in {info.started_in_seconds}s; state in {state_dir}")
        print(info.exports())
        return 0
    if args.command == "down":
        environment.stop_environment(state_dir)
        print(f"# local environment in {state_dir} stopped")
        return 0
    running = environment.load_info(state_dir)
    if running is None:
        print(f"no environment is running in {state_dir}; run `tidegate-dev up`", file=sys.stderr)
        return 1
    print(running.exports())
    return 0


def _demo(_: argparse.Namespace) -> int:
    from tidegate_devenv.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidegate-dev", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "up": "start etcd, the control plane, kwok nodes, Prometheus and the dev gateway",
        "down": "stop everything `up` started",
        "env": "print the shell exports of a running environment",
    }
    for name, text in helps.items():
        command = commands.add_parser(name, help=text)
        command.add_argument("--state-dir", help="default: $TIDEGATE_STATE_DIR or ./.state/dev")
        command.set_defaults(handler=_environment)
    demo = commands.add_parser("demo", help="a canary promoted and a bad one rolled back, live")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
