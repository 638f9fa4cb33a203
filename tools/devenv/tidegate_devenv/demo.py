"""`tidegate-dev demo`: a healthy canary promoted, a bad one rolled back, and a blue/green
switch, under real load.

Everything runs on this machine in ./.state/demo (or $TIDEGATE_DEMO_STATE_DIR) and is torn
down at the end, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, cast

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tidegate_devenv.cluster import KubectlRunner, StartupError
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment
from tidegate_devenv.operator_process import (
    OperatorProcess,
    install_crd,
    kubectl_for,
    operator_log,
    start_operator,
)
from tidegate_devenv.paths import BLUE_GREEN_EXAMPLE, CANARY_EXAMPLE
from tidegate_devenv.traffic import LiveLoad, Split, split
from tidegate_devenv.waiting import WaitTimeout, wait_until_async

NAMESPACE = "demo"
NAME = "shop"
HOST = "shop.example.com"
# The blue/green act runs beside the canary one, on hostnames of its own.
BLUE_GREEN_NAMESPACE = "demo-bluegreen"
BLUE_GREEN_HOSTS = {
    "shop": "bluegreen.example.com",
    "shop-preview": "preview.bluegreen.example.com",
}
PREVIEW_RPS = 20.0
RPS = 50.0
REFRESH_SECONDS = 0.5
SPLIT_SECONDS = 2.0
ROLLOUT_TIMEOUT = 180.0
# Load kept on after the bad rollout ends, to show where requests go afterwards.
AFTERMATH_SECONDS = 3.0
ENDED = frozenset({"Succeeded", "Failed", "Cancelled"})
UNDER_WAY = frozenset({"Progressing", "Paused", "Promoting"})
ROLLOUT_GROUP, ROLLOUT_VERSION, ROLLOUT_PLURAL = "tidegate.io", "v1alpha1", "progressiverollouts"
# Seconds one API request may take: a stuck request must not freeze the live view for good.
API_TIMEOUT = 10.0


@dataclass
class Outcome:
    version: str
    phase: str  # the terminal phase reached ("" when it never ended)
    seconds: float  # from the template change to that phase
    first_failure: datetime | None = None  # measuredAt of the first failing measurement
    ended_at: datetime | None = None


def step_text(status: Mapping[str, Any], steps: int) -> str:
    index, name = status.get("currentStepIndex"), status.get("currentStepName")
    if index is None:
        return "-"
    where = f"{min(int(index) + 1, steps)}/{steps}" if steps else str(int(index) + 1)
    return f"{where} ({name})" if name else where


def routes_text(status: Mapping[str, Any]) -> str:
    """The routes besides the live weight: header, mirror and preview."""
    parts = []
    if status.get("headerRoute"):
        parts.append("header route")
    if status.get("mirrorPercent"):
        parts.append(f"mirror {status['mirrorPercent']}%")
    if status.get("previewActive"):
        parts.append("preview on new version")
    return (", " + ", ".join(parts)) if parts else ""


def metrics_text(status: Mapping[str, Any]) -> str:
    parts = []
    for m in status.get("metrics") or []:
        value = m.get("value")
        shown = "-" if value is None else f"{value:.3g}"
        verdict = {"Passed": "pass", "Failed": "FAIL", "NoData": "no data"}.get(
            m.get("phase", ""), str(m.get("phase", "")).lower()
        )
        parts.append(f"{m.get('name')}={shown} {verdict}")
    return ", ".join(parts) or "-"


def revision_text(revision: str | None, versions: Mapping[str, str]) -> str:
    if not revision:
        return "-"
    version = versions.get(revision)
    return f"{version} ({revision})" if version else revision


def render(
    title: str,
    elapsed: float,
    status: Mapping[str, Any],
    steps: int,
    versions: Mapping[str, str],
    traffic: Split,
    event: str,
) -> list[str]:
    """The live view of one rollout, a few lines for a terminal."""
    return [
        f"{title}  ({elapsed:.0f}s)",
        f"  phase   {status.get('phase', '-')}   step {step_text(status, steps)}"
        f"   canary weight {status.get('canaryWeight', 0)}%{routes_text(status)}",
        f"  stable  {revision_text(status.get('stableRevision'), versions)}"
        f"   canary {revision_text(status.get('canaryRevision'), versions)}",
        f"  metrics {metrics_text(status)}",
        f"  traffic {traffic.describe()}  (last {SPLIT_SECONDS:.0f}s)",
        f"  event   {event or '-'}",
    ]


def render_line(
    elapsed: float, status: Mapping[str, Any], steps: int, traffic: Split, event: str
) -> str:
    """The same view on one line, for logs."""
    return (
        f"{elapsed:5.1f}s {status.get('phase', '-')} step {step_text(status, steps)}"
        f" weight {status.get('canaryWeight', 0)}%{routes_text(status)} | {metrics_text(status)}"
        f" | {traffic.describe()} | {event or '-'}"
    )


def summary(
    good: Outcome,
    bad: Outcome,
    stable_share: float | None,
    switched: Outcome | None = None,
    switch_failures: int = 0,
) -> str:
    parts = []
    if good.phase == "Succeeded":
        parts.append(f"{good.version} promoted in {good.seconds:.0f} s")
    else:
        parts.append(f"{good.version} was not promoted ({good.phase or 'no outcome'})")
    if bad.phase == "Failed" and bad.first_failure and bad.ended_at:
        after = (bad.ended_at - bad.first_failure).total_seconds()
        parts.append(f"{bad.version} rolled back {after:.0f} s after its first failing check")
    elif bad.phase == "Failed":
        parts.append(f"{bad.version} rolled back after {bad.seconds:.0f} s")
    else:
        parts.append(f"{bad.version} was not rolled back ({bad.phase or 'no outcome'})")
    if stable_share is not None:
        parts.append(f"{100 * stable_share:.1f}% of requests on stable afterwards")
    if switched is not None:
        if switched.phase == "Succeeded":
            parts.append(
                f"blue/green {switched.version} switched and promoted in {switched.seconds:.0f} s "
                f"with {switch_failures} failed requests"
            )
        else:
            parts.append(f"blue/green {switched.version}: {switched.phase or 'no outcome'}")
    return "; ".join(parts)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _status(rollout: Mapping[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = rollout.get("status") or {}
    return status


def _resource_version(event: Mapping[str, Any]) -> int:
    try:
        return int(str((event.get("metadata") or {}).get("resourceVersion")))
    except (TypeError, ValueError):
        return 0


def event_text(event: Mapping[str, Any]) -> str:
    """`reason: message` of a core/v1 Event, or `reason: note` of an events.k8s.io/v1 one."""
    return f"{event.get('reason')}: {event.get('message') or event.get('note') or ''}"


def latest_event_text(*listings: list[dict[str, Any]]) -> str:
    """The newest of the events in `listings`, by resourceVersion (core/v1 and
    events.k8s.io/v1 Events are one kind of object in one store, so their versions compare);
    "" when there are none."""
    events = [event for listing in listings for event in listing]
    if not events:
        return ""
    return event_text(max(events, key=_resource_version))


def _items(lister: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """A list call's items as the API returns them (camelCase dicts, no models). Blocking."""
    response = lister(*args, _preload_content=False, _request_timeout=API_TIMEOUT, **kwargs)
    try:
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
    finally:
        response.release_conn()
    return items


class Demo:
    def __init__(self, info: EnvironmentInfo, kubectl: KubectlRunner, out: TextIO) -> None:
        self.info = info
        self.kubectl = kubectl
        self.out = out
        self.tty = out.isatty()
        # A client of its own: the library's global default configuration is left alone.
        self.api_client = config.new_client_from_config(config_file=info.kubeconfig)  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.events = client.EventsV1Api(self.api_client)
        self.load = LiveLoad(info.gateway_url, HOST, rps=RPS)
        self.versions: dict[str, str] = {}
        self.done: list[str] = []

    async def kubectl_check(self, *args: str) -> str:
        return await asyncio.to_thread(self.kubectl.check, *args)

    async def rollout(self, namespace: str = NAMESPACE) -> dict[str, Any]:
        """The ProgressiveRollout as the API returns it; {} while there is none."""
        try:
            found = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object,
                ROLLOUT_GROUP,
                ROLLOUT_VERSION,
                namespace,
                ROLLOUT_PLURAL,
                NAME,
                _request_timeout=API_TIMEOUT,
            )
        except ApiException as error:
            if error.status == 404:
                return {}
            raise
        return cast(dict[str, Any], found)  # a custom object comes back as the API's dict

    async def latest_event(self, namespace: str = NAMESPACE) -> str:
        """The rollout's newest Event: core/v1 ones, and the events.k8s.io/v1 ones the
        operator is moving to, whichever is newer."""
        core, new = await asyncio.gather(
            asyncio.to_thread(
                _items,
                self.core.list_namespaced_event,
                namespace,
                field_selector=f"involvedObject.kind=ProgressiveRollout,involvedObject.name={NAME}",
            ),
            asyncio.to_thread(
                _items,
                self.events.list_namespaced_event,
                namespace,
                field_selector=f"regarding.kind=ProgressiveRollout,regarding.name={NAME}",
            ),
        )
        return latest_event_text(core, new)

    async def wait_phase(
        self, phase: str, timeout: float, namespace: str = NAMESPACE
    ) -> dict[str, Any]:
        rollout = await wait_until_async(
            lambda: self.rollout(namespace),
            f"the rollout to reach {phase}",
            timeout,
            until=lambda obj: _status(obj).get("phase") == phase,
            interval=0.25,
        )
        return _status(rollout)

    def show(self, lines: list[str]) -> None:
        self.out.write("\x1b[H\x1b[2J" + "\n".join([*self.done, *lines]) + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        self.done.append(text)
        self.out.write(text + "\n")
        self.out.flush()

    async def run_rollout(
        self,
        version: str,
        env: Mapping[str, str],
        namespace: str = NAMESPACE,
        load: LiveLoad | None = None,
    ) -> Outcome:
        """Change the Deployment's template and watch the rollout until it ends."""
        load = load or self.load
        self.say(f"--- rolling out {version} ({' '.join(f'{k}={v}' for k, v in env.items())})")
        changed_at = datetime.now().astimezone()
        began = time.monotonic()
        await self.kubectl_check(
            "set",
            "env",
            f"deployment/{NAME}",
            "-n",
            namespace,
            *(f"{k}={v}" for k, v in env.items()),
        )
        outcome = Outcome(version, "", 0.0)
        started = False
        last_key: tuple[object, ...] = ()

        async def ended() -> bool:
            """Show where the rollout is; True once it has started and come to an end."""
            nonlocal started, last_key
            obj = await self.rollout(namespace)
            status = _status(obj)
            steps = len(obj.get("spec", {}).get("strategy", {}).get("canary", {}).get("steps", []))
            phase = status.get("phase", "")
            canary = status.get("canaryRevision")
            if phase in UNDER_WAY and canary:
                started = True
                self.versions.setdefault(canary, version)
            for m in status.get("metrics") or []:
                at = _parse_time(m["measuredAt"])
                if (
                    m.get("phase") != "Passed"
                    and at >= changed_at
                    and outcome.first_failure is None
                ):
                    outcome.first_failure = at
            elapsed = time.monotonic() - began
            traffic = load.recent(SPLIT_SECONDS)
            event = await self.latest_event(namespace)
            if self.tty:
                self.show(
                    render(
                        f"rollout of {version}",
                        elapsed,
                        status,
                        steps,
                        self.versions,
                        traffic,
                        event,
                    )
                )
            else:
                # One line per change of the rollout, not per refresh of the traffic figures.
                key = (
                    phase,
                    step_text(status, steps),
                    status.get("canaryWeight"),
                    routes_text(status),
                    canary,
                    metrics_text(status),
                    event,
                )
                if key != last_key:
                    print(
                        render_line(elapsed, status, steps, traffic, event),
                        file=self.out,
                        flush=True,
                    )
                    last_key = key
            if started and phase in ENDED:
                outcome.phase = phase
                outcome.seconds = elapsed
                outcome.ended_at = datetime.now().astimezone()
                return True
            return False

        # A rollout that does not end in time is reported as such, not raised.
        with contextlib.suppress(WaitTimeout):
            await wait_until_async(
                ended, f"the rollout of {version} to end", ROLLOUT_TIMEOUT, interval=REFRESH_SECONDS
            )
        result = f"{version}: {outcome.phase or 'timed out'} after {outcome.seconds:.1f}s"
        self.say(result)
        return outcome

    async def run(self) -> int:
        await self.kubectl_check("create", "namespace", NAMESPACE)
        for manifest in ("app.yaml", "rollout.yaml"):
            await self.kubectl_check(
                "apply", "--server-side", "-n", NAMESPACE, "-f", str(CANARY_EXAMPLE / manifest)
            )
        self.say("applied examples/canary; waiting for the rollout to initialise")
        status = await self.wait_phase("Initialized", 120)
        if status.get("stableRevision"):
            self.versions[status["stableRevision"]] = "1.0.0"
        load_task = asyncio.create_task(self.load.run())
        try:
            await self.load.wait_for("1.0.0", 30)
            self.say(f"load: {RPS:.0f} requests/s to {self.info.gateway_url} (Host {HOST})")
            good = await self.run_rollout("1.1.0", {"VERSION": "1.1.0"})
            bad = await self.run_rollout("1.2.0", {"VERSION": "1.2.0", "ERROR_RATE": "0.5"})
            after = time.monotonic()
            await asyncio.sleep(AFTERMATH_SECONDS)
            aftermath = split(self.load.samples, after, time.monotonic())
            switched, failed_requests = await self.run_blue_green()
        finally:
            load_task.cancel()
            await asyncio.gather(load_task, return_exceptions=True)
            await asyncio.to_thread(self.api_client.close)
        stable_share = aftermath.share("1.1.0") if aftermath.total else None
        self.say(summary(good, bad, stable_share, switched, failed_requests))
        passed = good.phase == "Succeeded" and bad.phase == "Failed"
        return 0 if passed and switched.phase == "Succeeded" else 1

    async def run_blue_green(self) -> tuple[Outcome, int]:
        """examples/blue-green beside the canary: green previewed on its own host, then all
        live traffic switched to it at once; the outcome and the live requests that failed."""
        namespace = BLUE_GREEN_NAMESPACE
        await self.kubectl_check("create", "namespace", namespace)
        app = list(yaml.safe_load_all((BLUE_GREEN_EXAMPLE / "app.yaml").read_text()))
        for obj in app:
            if obj["kind"] == "HTTPRoute":
                obj["spec"]["hostnames"] = [BLUE_GREEN_HOSTS[obj["metadata"]["name"]]]
        await asyncio.to_thread(
            self.kubectl.check, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(app)
        )
        await self.kubectl_check(
            "apply", "-n", namespace, "-f", str(BLUE_GREEN_EXAMPLE / "rollout.yaml")
        )
        self.say("applied examples/blue-green in namespace demo-bluegreen")
        status = await self.wait_phase("Initialized", 120, namespace)
        if status.get("stableRevision"):
            self.versions[status["stableRevision"]] = "1.0.0"
        live = LiveLoad(self.info.gateway_url, BLUE_GREEN_HOSTS["shop"], rps=RPS)
        preview = LiveLoad(self.info.gateway_url, BLUE_GREEN_HOSTS["shop-preview"], rps=PREVIEW_RPS)
        tasks = [asyncio.create_task(live.run()), asyncio.create_task(preview.run())]
        try:
            await live.wait_for("1.0.0", 30)
            self.say(
                f"load: {RPS:.0f} requests/s live (Host {BLUE_GREEN_HOSTS['shop']}) and "
                f"{PREVIEW_RPS:.0f}/s on the preview (Host {BLUE_GREEN_HOSTS['shop-preview']})"
            )
            began = time.monotonic()
            outcome = await self.run_rollout("2.0.0", {"VERSION": "2.0.0"}, namespace, live)
            during = split(live.samples, began, time.monotonic())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return outcome, during.errors


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_and_tear_down(run: Callable[[], int], tear_down: Callable[[], None], logs: Path) -> int:
    """A demo's exit code from `run()`; `tear_down()` whatever happens (an error, Ctrl-C,
    SIGTERM), and never cut short by a second Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (StartupError, TimeoutError, OSError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("tearing down ...", flush=True)
        tear_down()
        print(f"stopped; logs in {logs}", flush=True)


def run_demo() -> int:
    state_dir = Path(os.environ.get("TIDEGATE_DEMO_STATE_DIR", Path.cwd() / ".state" / "demo"))
    operators: list[OperatorProcess] = []

    def run() -> int:
        print(f"starting the local environment in {state_dir} ...", flush=True)
        info = start_environment(state_dir)
        kubectl = kubectl_for(info)
        install_crd(kubectl)
        operators.append(start_operator(info, operator_log(state_dir)))
        print(f"environment up in {info.started_in_seconds}s; operator running", flush=True)
        return asyncio.run(Demo(info, kubectl, sys.stdout).run())

    def tear_down() -> None:
        for operator in operators:
            operator.stop()
        stop_environment(state_dir)

    return run_and_tear_down(run, tear_down, state_dir / "logs")
