"""The `tidegate` command."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tidegate.leadership import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_LEASE_NAME,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    ElectionSettings,
    default_identity,
    default_namespace,
)


def _crds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tidegate.crd import render_crd, render_crds

    if args.write is None:
        sys.stdout.write(render_crd())
        return 0
    directory = Path(args.write)
    for name, text in render_crds().items():
        (directory / name).write_text(text)
    return 0


def _election(args: argparse.Namespace, identity: str) -> ElectionSettings | None:
    if not args.leader_election:
        return None
    return ElectionSettings(
        lease_name=args.leader_election_id,
        lease_namespace=args.leader_election_namespace or default_namespace(),
        identity=identity,
        lease_duration=args.leader_election_lease_duration,
        renew_deadline=args.leader_election_renew_deadline,
        retry_period=args.leader_election_retry_period,
    )


def notifications_secret(text: str | None) -> tuple[str, str]:
    """`NAMESPACE/NAME` (default: tidegate-notifications in the operator's namespace)."""
    from tidegate.adapters.notifications import DEFAULT_SECRET

    if text is None:
        return default_namespace(), DEFAULT_SECRET
    namespace, slash, name = text.partition("/")
    if not (slash and namespace and name) or "/" in name:
        raise ValueError(f"--notifications-secret {text!r} is not NAMESPACE/NAME")
    return namespace, name


def _run(args: argparse.Namespace) -> int:
    from tidegate.runner import run_operator

    identity = args.leader_election_identity or default_identity()
    try:
        election = _election(args, identity)
        secret = notifications_secret(args.notifications_secret)
    except ValueError as error:
        sys.stderr.write(f"tidegate run: {error}\n")
        return 2
    return run_operator(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        prometheus_url=args.prometheus_url,
        loadtester_url=args.loadtester_url,
        health_listen=args.health_listen,
        metrics_listen=args.metrics_listen,
        identity=identity,
        election=election,
        notifications_secret=secret,
    )


def _loadtester(args: argparse.Namespace) -> int:
    from tidegate.loadtester import run_loadtester

    return run_loadtester(
        listen=args.listen,
        max_rate=args.max_rate,
        max_duration=args.max_duration,
        max_jobs=args.max_jobs,
        connect_to=args.connect_to,
        insecure_no_token=args.insecure_no_token,
    )


def _add_loadtester(commands: Any) -> None:
    from tidegate.loadtester import (
        DEFAULT_MAX_DURATION,
        DEFAULT_MAX_JOBS,
        DEFAULT_MAX_RATE,
        TOKEN_ENV,
        parse_address,
    )

    loadtester = commands.add_parser(
        "loadtester", help="send requests for the rollouts' analysis (spec.analysis.load)"
    )
    loadtester.add_argument(
        "--listen", type=parse_address, default=("0.0.0.0", 8080), help="the jobs API and /metrics"
    )
    loadtester.add_argument(
        "--max-rate",
        type=float,
        default=DEFAULT_MAX_RATE,
        metavar="RPS",
        help=f"refuse jobs asking more requests per second (default: {DEFAULT_MAX_RATE:g})",
    )
    loadtester.add_argument(
        "--max-duration",
        type=float,
        default=DEFAULT_MAX_DURATION,
        metavar="SECONDS",
        help=f"refuse jobs asking to run longer (default: {DEFAULT_MAX_DURATION:g})",
    )
    loadtester.add_argument(
        "--max-jobs",
        type=int,
        default=DEFAULT_MAX_JOBS,
        metavar="N",
        help=f"refuse new jobs while this many run (default: {DEFAULT_MAX_JOBS}); "
        f"${TOKEN_ENV} is the bearer token a job must carry",
    )
    loadtester.add_argument(
        "--connect-to",
        type=parse_address,
        metavar="HOST:PORT",
        help="for development and tests: send every request to this address, keeping the "
        "URL's Host header",
    )
    loadtester.add_argument(
        "--insecure-no-token",
        action="store_true",
        help=f"run without ${TOKEN_ENV}, taking jobs from anyone who reaches it: for a "
        "loopback-only development setup, never in a cluster",
    )
    loadtester.set_defaults(handler=_loadtester)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidegate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    crds = commands.add_parser(
        "crds", help="print the ProgressiveRollout CustomResourceDefinition YAML"
    )
    crds.add_argument(
        "--write",
        metavar="DIR",
        help="write every CRD (ProgressiveRollout, MetricTemplate, ClusterMetricTemplate) "
        "into DIR, one file each",
    )
    crds.set_defaults(handler=_crds)

    run = commands.add_parser("run", help="run the operator")
    run.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    run.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--prometheus-url", help="default Prometheus for rollouts that name none")
    run.add_argument(
        "--loadtester-url",
        help="default loadtester for rollouts with analysis.load that name none "
        "(default: $TIDEGATE_LOADTESTER_URL)",
    )
    run.add_argument("--health-listen", default="0.0.0.0:8080", help="liveness/readiness endpoint")
    run.add_argument(
        "--metrics-listen", default="0.0.0.0:9090", help="Prometheus metrics at /metrics"
    )
    run.add_argument(
        "--notifications-secret",
        metavar="NAMESPACE/NAME",
        help="the Secret of the notification providers spec.notifications names (default: "
        "tidegate-notifications in the operator's namespace: $POD_NAMESPACE, the pod's "
        "ServiceAccount namespace, or 'default' out of a cluster)",
    )
    election = run.add_argument_group(
        "leader election",
        "Replicas campaign for a coordination.k8s.io Lease; only its holder acts on rollouts.",
    )
    election.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="act only while holding the Lease (default: on; --no-leader-election for a "
        "single replica that acts at once)",
    )
    election.add_argument(
        "--leader-election-id",
        default=DEFAULT_LEASE_NAME,
        metavar="NAME",
        help=f"the Lease's name, containing 'tidegate' (default: {DEFAULT_LEASE_NAME})",
    )
    election.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="the Lease's namespace (default: $POD_NAMESPACE, the pod's ServiceAccount "
        "namespace, or 'default' out of a cluster)",
    )
    election.add_argument(
        "--leader-election-identity",
        metavar="ID",
        help="this replica's name as Lease holder and in its user agent (default: $POD_NAME, "
        "or host and pid, plus a random suffix)",
    )
    for flag, default, what in [
        ("lease-duration", DEFAULT_LEASE_DURATION, "how long a standby waits on a silent leader"),
        ("renew-deadline", DEFAULT_RENEW_DEADLINE, "a leader not renewed for this long exits"),
        ("retry-period", DEFAULT_RETRY_PERIOD, "how often the Lease is renewed or tried"),
    ]:
        election.add_argument(
            f"--leader-election-{flag}",
            type=int,
            default=default,
            metavar="SECONDS",
            help=f"{what} (default: {default})",
        )
    run.set_defaults(handler=_run)
    _add_loadtester(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
