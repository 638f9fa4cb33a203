"""The `tidegate` command."""

from __future__ import annotations

import argparse
import sys


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
