"""kubectl tidegate: see and steer ProgressiveRollouts.

Installed as the `kubectl-tidegate` console script, so `kubectl tidegate ...` finds it on
PATH. It uses the current kubeconfig context (or $KUBECONFIG) and its namespace unless
-n/--namespace or -A says otherwise. Every failure prints one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tidegate import api
from tidegate.durations import parse_duration
from tidegate.plugin import convert, lint, render
from tidegate.plugin.cluster import Cluster, Obj, PluginError
from tidegate.revisions import template_revision

RUNNING = ("Progressing", "Paused")
ROLLED_BACK = ("Failed", "Aborted")
BETWEEN_ROLLOUTS = ("Initialized", "Succeeded", "Failed", "Aborted", "Cancelled")
# `status` exit codes, for CI pipelines.
EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
CLEAR_SCREEN = "\x1b[H\x1b[2J"
FRAME_END = "-" * 60


def _now() -> datetime:
    return datetime.now(UTC)


def _phase(rollout: Obj) -> str:
    return str((rollout.get("status") or {}).get("phase") or "")


def _paused_by_spec(rollout: Obj) -> bool:
    return bool((rollout.get("spec") or {}).get("paused"))


def _say(text: str) -> None:
    print(text, flush=True)


# --- get ----------------------------------------------------------------------------------


def _screen(cluster: Cluster, rollout: Obj) -> str:
    meta = rollout["metadata"]
    target = ((rollout.get("spec") or {}).get("targetRef") or {}).get("name", "")
    status = rollout.get("status") or {}
    images: dict[str, list[str]] = {}
    for role in ("stable", "canary"):
        revision = status.get(f"{role}Revision")
        if revision:
            # The copy of the role's revision; else one made before copies were keyed by
            # revision, named by its role.
            found = cluster.images(meta["namespace"], f"{target}-{revision}")
            images[role] = found or cluster.images(meta["namespace"], f"{target}-{role}")
        else:
            images[role] = []
    return render.detail(rollout, images, cluster.events(rollout), _now())


def _show(frame: str) -> None:
    if sys.stdout.isatty():
        sys.stdout.write(CLEAR_SCREEN + frame + "\n")
        sys.stdout.flush()
    else:  # a log or a pipe: one frame after another
        _say(frame + "\n" + FRAME_END)


def cmd_get(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.name and args.all_namespaces:
        raise PluginError("a NAME and -A do not go together")
    if not args.watch:
        if args.name:
            _say(_screen(cluster, cluster.rollout(args.name)))
        else:
            _say(
                render.table(
                    cluster.rollouts(args.all_namespaces),
                    _now(),
                    all_namespaces=args.all_namespaces,
                )
            )
        return 0
    latest: dict[tuple[str, str], Obj] = {}
    for rollout in cluster.watch_rollouts(args.name, args.all_namespaces):
        if args.name:
            _show(_screen(cluster, rollout))
            continue
        meta = rollout["metadata"]
        latest[(meta["namespace"], meta["name"])] = rollout
        _show(
            render.table(
                [latest[k] for k in sorted(latest)], _now(), all_namespaces=args.all_namespaces
            )
        )
    return 0


# --- requests -----------------------------------------------------------------------------


def _request(
    cluster: Cluster, name: str, annotation: str, what: str, allowed: Callable[[Obj], str | None]
) -> int:
    rollout = cluster.rollout(name)
    refusal = allowed(rollout)
    if refusal:
        raise PluginError(f'progressiverollout "{name}": {refusal}')
    who = cluster.who_am_i()
    cluster.annotate(name, annotation, who)
    _say(f'progressiverollout "{name}" {what} requested (by {who})')
    return 0


def _only_when_paused(rollout: Obj) -> str | None:
    if _paused_by_spec(rollout):
        return "paused by spec.paused, not at a step; use `kubectl tidegate resume`"
    if _phase(rollout) != "Paused":
        return f"not paused (phase {_phase(rollout) or 'unknown'})"
    return None


def _only_when_running(rollout: Obj) -> str | None:
    if _phase(rollout) not in RUNNING:
        return f"no rollout in progress (phase {_phase(rollout) or 'unknown'})"
    return None


def _only_when_rolled_back(rollout: Obj) -> str | None:
    if _phase(rollout) not in ROLLED_BACK:
        phase = _phase(rollout) or "unknown"
        return f"only a Failed or Aborted rollout can be retried (phase {phase})"
    return None


def _only_between_rollouts(rollout: Obj) -> str | None:
    phase = _phase(rollout)
    if phase not in BETWEEN_ROLLOUTS:
        return f"undo acts between rollouts (phase {phase or 'unknown'}); abort stops one"
    if not (rollout.get("status") or {}).get("previousStableRevision"):
        return "there is no previous stable revision to go back to"
    return None


def cmd_promote(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.full:
        rollout = cluster.rollout(args.name)
        if _paused_by_spec(rollout):
            raise PluginError(
                f'progressiverollout "{args.name}": paused by spec.paused; resume it first'
            )
        return _request(
            cluster, args.name, api.PROMOTE_FULL_ANNOTATION, "full promotion", _only_when_running
        )
    return _request(cluster, args.name, api.PROMOTE_ANNOTATION, "promotion", _only_when_paused)


def cmd_abort(cluster: Cluster, args: argparse.Namespace) -> int:
    return _request(cluster, args.name, api.ABORT_ANNOTATION, "abort", _only_when_running)


def cmd_retry(cluster: Cluster, args: argparse.Namespace) -> int:
    return _request(cluster, args.name, api.RETRY_ANNOTATION, "retry", _only_when_rolled_back)


def cmd_undo(cluster: Cluster, args: argparse.Namespace) -> int:
    return _request(cluster, args.name, api.UNDO_ANNOTATION, "undo", _only_between_rollouts)


def _set_paused(cluster: Cluster, name: str, paused: bool) -> int:
    rollout = cluster.rollout(name)
    if _paused_by_spec(rollout) == paused:
        raise PluginError(f'progressiverollout "{name}" is {"already" if paused else "not"} paused')
    cluster.set_paused(name, paused)
    _say(f'progressiverollout "{name}" {"paused" if paused else "resumed"}')
    return 0


def cmd_pause(cluster: Cluster, args: argparse.Namespace) -> int:
    return _set_paused(cluster, args.name, True)


def cmd_resume(cluster: Cluster, args: argparse.Namespace) -> int:
    return _set_paused(cluster, args.name, False)


# --- status -------------------------------------------------------------------------------


def outcome(rollout: Obj, revision: str) -> int | None:
    """EXIT_DONE once `revision` (the target's template) is stable, EXIT_FAILED once it was
    rolled back; None while it is on its way (or the operator has not seen it yet)."""
    status = rollout.get("status") or {}
    phase = status.get("phase")
    seen = (status.get("observedGeneration") or 0) >= rollout["metadata"].get("generation", 0)
    if not seen:
        return None
    if (
        phase in ("Initialized", "Succeeded", "Cancelled")
        and status.get("stableRevision") == revision
    ):
        return EXIT_DONE
    if phase in ROLLED_BACK and status.get("canaryRevision") == revision:
        return EXIT_FAILED
    return None


def cmd_status(cluster: Cluster, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + parse_duration(args.timeout).total_seconds()
    rollout = cluster.rollout(args.name)
    target = (rollout.get("spec") or {}).get("targetRef", {}).get("name", "")
    revision = template_revision(cluster.deployment_template(cluster.namespace, target))
    last = ""
    for rollout in cluster.watch_rollouts(args.name, False, deadline=deadline):
        current = rollout
        status = current.get("status") or {}
        line = (
            f"{status.get('phase') or '-'}: step {render.step_text(current)}, "
            f"weight {status.get('canaryWeight') or 0}%: {status.get('message') or ''}"
        )
        if line != last:
            _say(line)
            last = line
        result = outcome(current, revision)
        if result is not None:
            verdict = "is stable" if result == EXIT_DONE else "was rolled back"
            _say(f'progressiverollout "{args.name}": revision {revision} {verdict}')
            return result
    _say(
        f'progressiverollout "{args.name}": still {_phase(rollout) or "unknown"} '
        f"after {args.timeout}"
    )
    return EXIT_TIMEOUT


# --- lint ---------------------------------------------------------------------------------


def cmd_lint(_: Cluster | None, args: argparse.Namespace) -> int:
    problems, summary = lint.lint(Path(p) for p in args.files)
    for line in problems:
        print(line, file=sys.stderr)
    for line in summary:
        _say(line)
    return 1 if problems else 0


# --- convert ------------------------------------------------------------------------------


def cmd_convert(_: Cluster | None, args: argparse.Namespace) -> int:
    texts = []
    for name in args.files or ["-"]:
        if name == "-":
            texts.append(sys.stdin.read())
            continue
        try:
            texts.append(Path(name).read_text())
        except OSError as error:
            raise PluginError(f"{name}: cannot read: {error.strerror}") from None
    try:
        sys.stdout.write(convert.convert_text(texts))
    except convert.ConvertError as error:
        raise PluginError(str(error)) from None
    return 0


# --- the command line ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl tidegate", description=__doc__.split("\n")[0])
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[..., int], text: str, **kw: Any
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[where], **kw)
        sub.set_defaults(handler=handler)
        return sub

    get = command("get", cmd_get, "one rollout in detail, or a table of them")
    get.add_argument("name", nargs="?", metavar="NAME")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-w", "--watch", action="store_true", help="redraw as the rollout changes")
    promote = command("promote", cmd_promote, "end the current pause")
    promote.add_argument("name", metavar="NAME")
    promote.add_argument(
        "--full", action="store_true", help="skip the remaining steps and analysis"
    )
    for name, handler, text in (
        ("abort", cmd_abort, "roll back now: all traffic to stable (phase Aborted)"),
        ("retry", cmd_retry, "run a failed or aborted revision again from step 1"),
        ("undo", cmd_undo, "go back to the previous stable revision now, without steps"),
        ("pause", cmd_pause, "set spec.paused"),
        ("resume", cmd_resume, "unset spec.paused"),
    ):
        command(name, handler, text).add_argument("name", metavar="NAME")
    status = command(
        "status", cmd_status, "wait: exit 0 when stable, 1 when rolled back, 2 on timeout"
    )
    status.add_argument("name", metavar="NAME")
    status.add_argument("--timeout", default="10m", help="e.g. 90s, 10m (default 10m)")
    check = commands.add_parser(
        "lint", help="check manifests offline", description="check manifests offline"
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=cmd_lint)
    text = "Flagger or Argo Rollouts manifests as tidegate's, offline (docs/migrating.md)"
    migrate = commands.add_parser("convert", help=text, description=text)
    migrate.add_argument(
        "-f", "--filename", dest="files", action="append", metavar="FILE",
        help="a manifest to convert (repeatable; - or none: standard input)",
    )  # fmt: skip
    migrate.set_defaults(handler=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            try:
                parse_duration(args.timeout)
            except ValueError as error:
                raise PluginError(f"--timeout: {error}") from None
        cluster = None if args.command in ("lint", "convert") else Cluster(args.namespace)
        result: int = args.handler(cluster, args)
        return result
    except PluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
