"""The `tidegate-dev` command: the local environment and the demo, never part of the operator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tidegate_devenv.delayed import seconds_arg

ROUTE_DELAY_ENV = "TIDEGATE_ROUTE_DELAY"


def _environment(args: argparse.Namespace) -> int:
    from tidegate_devenv import environment, regions

    state_dir = Path(args.state_dir) if args.state_dir else environment.default_state_dir()
    if args.command == "up":
        delay = route_delay(args.route_delay)
        if args.clusters > 1:
            return _regions_up(state_dir, args.clusters, delay)
        info = environment.start_environment(state_dir, route_delay=delay)
        print(f"# local environment up in {info.started_in_seconds}s; state in {state_dir}")
        _say_delay(delay)
        print(info.exports())
        return 0
    if args.command == "down":
        # Whichever kind runs there: stopping regions also stops a single environment's
        # processes (its table is the state directory's own).
        regions.stop_regions(state_dir)
        environment.stop_environment(state_dir)
        print(f"# local environment in {state_dir} stopped")
        return 0
    several = regions.load_regions(state_dir)
    running = several or environment.load_info(state_dir)
    if running is None:
        print(f"no environment is running in {state_dir}; run `tidegate-dev up`", file=sys.stderr)
        return 1
    print(running.exports())
    return 0


def route_delay(flag: float | None) -> float:
    """--route-delay, else $TIDEGATE_ROUTE_DELAY, else 0 (changes applied at once)."""
    if flag is not None:
        return flag
    raw = os.environ.get(ROUTE_DELAY_ENV, "").strip()
    try:
        return seconds_arg(raw) if raw else 0.0
    except argparse.ArgumentTypeError as error:
        raise SystemExit(f"tidegate-dev: ${ROUTE_DELAY_ENV}: {error}") from None


def _regions_up(state_dir: Path, clusters: int, delay: float) -> int:
    from tidegate_devenv.readers import DEFAULT_NAMESPACE, write_reader_secrets
    from tidegate_devenv.regions import region_names, start_regions, stop_regions

    info = start_regions(state_dir, region_names(clusters), route_delay=delay)
    try:
        write_reader_secrets(info, DEFAULT_NAMESPACE)
    except BaseException:
        stop_regions(state_dir)
        raise
    print(
        f"# {clusters} regions ({', '.join(info.names)}) up in {info.started_in_seconds}s; "
        f"state in {state_dir}; reader Secrets <region>-reader in {DEFAULT_NAMESPACE}"
    )
    _say_delay(delay)
    print(info.exports())
    return 0


def _say_delay(delay: float) -> None:
    if delay:
        print(f"# the gateway applies each change {delay:g}s after it sees it (--route-delay)")


def _demo(args: argparse.Namespace) -> int:
    if args.waves:
        from tidegate_devenv.wavesdemo import run_waves_demo

        return run_waves_demo()
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
        if name == "up":
            command.add_argument(
                "--clusters",
                type=int,
                default=1,
                metavar="N",
                help="N independent control planes (regions a, b, c, ...), each with its own "
                "kwok nodes and gateway, one Prometheus for all (label cluster), and in each "
                "region's default namespace the Secrets <other region>-reader "
                "with read-only kubeconfigs for the others (docs/waves.md); default 1",
            )
            command.add_argument(
                "--route-delay",
                type=seconds_arg,
                default=None,
                metavar="SECONDS",
                help="the gateway applies each HTTPRoute, Service and Pod change this long "
                "after it sees it, as a real gateway lags (docs/dev-cluster.md); default: "
                f"${ROUTE_DELAY_ENV}, else 0 (at once)",
            )
    demo = commands.add_parser("demo", help="a canary promoted and a bad one rolled back, live")
    demo.add_argument(
        "--waves",
        action="store_true",
        help="three regions instead: a release walks a → b → c, a bad one stops in a",
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
