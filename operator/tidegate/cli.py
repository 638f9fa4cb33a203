"""The `tidegate` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _dev(args: argparse.Namespace) -> int:
    from tidegate.dev import environment

    state_dir = Path(args.state_dir) if args.state_dir else environment.default_state_dir()
    if args.action == "up":
        info = environment.start_environment(state_dir)
        print(f"# local environment up in {info.started_in_seconds}s; state in {state_dir}")
        print(info.exports())
        return 0
    if args.action == "down":
        environment.stop_environment(state_dir)
        print(f"# local environment in {state_dir} stopped")
        return 0
    running = environment.load_info(state_dir)
    if running is None:
        print(f"no environment is running in {state_dir}; run `tidegate dev up`", file=sys.stderr)
        return 1
    print(running.exports())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tidegate.dev.demo import run_demo

    return run_demo()


def _crds(args: argparse.Namespace) -> int:
    from tidegate.crd import render_crd

    sys.stdout.write(render_crd())
    return 0


def _run(args: argparse.Namespace) -> int:
    from tidegate.runner import run_operator

    return run_operator(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        prometheus_url=args.prometheus_url,
        health_listen=args.health_listen,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidegate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="the local control plane, Prometheus and gateway")
    dev.add_argument("action", choices=["up", "down", "env"])
    dev.add_argument("--state-dir", help="default: $TIDEGATE_STATE_DIR or ./.state/dev")
    dev.set_defaults(handler=_dev)

    demo = commands.add_parser("demo", help="a canary promoted and a bad one rolled back, live")
    demo.set_defaults(handler=_demo)

    crds = commands.add_parser("crds", help="print the CustomResourceDefinition YAML")
    crds.set_defaults(handler=_crds)

    run = commands.add_parser("run", help="run the operator")
    run.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    run.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--prometheus-url", help="default Prometheus for rollouts that name none")
    run.add_argument("--health-listen", default="0.0.0.0:8080", help="liveness/readiness endpoint")
    run.set_defaults(handler=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
