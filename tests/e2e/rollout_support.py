"""What the rollout e2e tests share: the examples running with an operator and load, the
objects they make, and reading them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import OperatorProcess, read_status, start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE, REPO
from tidegate_devenv.routing import backend_weight
from tidegate_devenv.traffic import LiveLoad, Sample
from tidegate_devenv.waiting import wait_until

HOST = "shop.example.com"  # the example's hostname


def unique_host(namespace: str) -> str:
    """Hostnames are matched across namespaces, as in Gateway API: a test of its own gets one."""
    return f"{namespace}.{HOST}"


class BackgroundLoad(LiveLoad):
    """Steady requests through the gateway to a test's host, from a thread."""

    def __init__(
        self, gateway_url: str, host: str, rps: float = 60, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(gateway_url, host, rps=rps, headers=headers)
        self.start_in_thread()

    def samples_between(self, start: float, end: float) -> list[Sample]:
        """Samples whose responses arrived between two time.monotonic() readings."""
        return [s for s in self.samples if start <= s[0] <= end]


def get(kubectl: KubectlRunner, namespace: str, *what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl.check("get", "-n", namespace, *what, "-o", "json"))
    return found


def wait_replicas(
    kubectl: KubectlRunner, namespace: str, deployment: str, replicas: int, timeout: float = 60
) -> None:
    """Wait until the Deployment asks for `replicas`: what is scaled down once the gateway
    reports the traffic gone from it waits a scale-down delay after that."""
    wait_until(
        lambda: get(kubectl, namespace, "deployment", deployment)["spec"]["replicas"],
        f"Deployment {deployment} at {replicas} replicas", timeout,
        until=lambda found: found == replicas,
    )  # fmt: skip


def copy_of(revision: str, target: str = "shop") -> str:
    """The name of tidegate's copy of the target that runs `revision`."""
    return f"{target}-{revision}"


def wait_idle(kubectl: KubectlRunner, namespace: str, deployment: str, timeout: float = 60) -> None:
    """Wait until the Deployment asks for no pod, or is gone: a copy that no longer takes
    traffic is scaled to zero (a canary given up) or removed (a stable copy replaced), a
    scale-down delay after the gateway reports the traffic gone from it."""

    def replicas() -> int:
        found = kubectl.run("get", "-n", namespace, f"deployment/{deployment}", "-o", "json")
        return 0 if found.returncode != 0 else int(json.loads(found.stdout)["spec"]["replicas"])

    wait_until(replicas, f"Deployment {deployment} at no pod", timeout, until=lambda n: n == 0)


def copies(kubectl: KubectlRunner, namespace: str, rollout: str = "shop") -> dict[str, Any]:
    """tidegate's copies for the rollout, by name."""
    found = get(kubectl, namespace, "deployments", f"-l=tidegate.io/rollout={rollout}")
    return {d["metadata"]["name"]: d for d in found["items"]}


def gateway_caught_up(
    kubectl: KubectlRunner, namespace: str, gateway_url: str, timeout: float = 60
) -> None:
    """Wait until the dev gateway has applied every change written before this call. It
    applies what it sees in order, each a route delay later: once a route created now is
    served (any answer but 404), every earlier route, Service and Pod change is applied too.
    What a status says was decided is then what the data plane does."""
    name = f"barrier-{uuid.uuid4().hex[:8]}"
    host = f"{name}.{namespace}.test"
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hostnames": [host],
            "rules": [{"backendRefs": [{"name": name, "port": 80}]}],  # no such Service
        },
    }
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=json.dumps(route))

    def status() -> int:
        request = urllib.request.Request(gateway_url, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    try:
        wait_until(status, f"the gateway to serve {host}", timeout, until=lambda c: c != 404)
    finally:
        kubectl.check("delete", "-n", namespace, f"httproute/{name}", "--wait=false")


def canary_weight_in_route(kubectl: KubectlRunner, namespace: str, route: str = "shop") -> int:
    """What the route gives shop-canary, as the dev gateway reads it (0 before tidegate took
    the rule over)."""
    return backend_weight(get(kubectl, namespace, "httproute", route), "shop-canary") or 0


def resource_versions(kubectl: KubectlRunner, namespace: str, kinds: str) -> dict[str, str]:
    """metadata.resourceVersion of every object of `kinds` (kubectl's comma-separated list)
    in the namespace, by kind/name: any write to one of them changes its entry."""
    items = get(kubectl, namespace, kinds)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def set_version(
    kubectl: KubectlRunner, namespace: str, version: str, error_rate: float = 0.0
) -> None:
    kubectl.check(
        "set", "env", "-n", namespace, "deployment/shop",
        f"VERSION={version}", f"ERROR_RATE={error_rate}",
    )  # fmt: skip


def events(kubectl: KubectlRunner, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(kubectl, namespace, "events")["items"]
    return [e for e in items if e["involvedObject"].get("kind") == "ProgressiveRollout"]


@contextlib.contextmanager
def scratch_namespace(
    kubectl: KubectlRunner, prefix: str = "t", *, name: str | None = None
) -> Iterator[str]:
    """A namespace of its own for a test (named `name`, else at random), deleted after it."""
    name = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl.check("create", "namespace", name)
    try:
        yield name
    finally:
        # Routes first and for good: the dev gateway must not match a dying namespace's
        # route for the next test's hostname.
        kubectl.run("delete", "httproutes", "--all", "-n", name, "--wait=true")
        # No operator runs any more to hand the rollouts back: their finalizers go, as
        # docs/workload-model.md tells a user to do, or the namespace would never go.
        remove_finalizers(kubectl, name)
        kubectl.run("delete", "namespace", name, "--wait=false")


def remove_finalizers(kubectl: KubectlRunner, namespace: str) -> None:
    found = kubectl.run("get", "progressiverollouts", "-n", namespace, "-o", "name")
    for rollout in found.stdout.split() if found.returncode == 0 else []:
        kubectl.run(
            "patch", "-n", namespace, rollout, "--type=merge", "-p",
            '{"metadata":{"finalizers":null}}',
        )  # fmt: skip


# --- an example application with its rollout, operator and load ----------------------------

# Responses let by after a change before the traffic is judged: those already in flight, and
# the gateway's watch catching up with the route. 1.5 s of the load's 60 requests/s.
SETTLING = 90


def route_host(namespace: str, route: str) -> str:
    """The hostname a test gives each of an example's routes: its own, so that no other
    test's requests reach it (`shop` → `<ns>.shop.example.com`, `shop-preview` →
    `preview.<ns>.shop.example.com`)."""
    base = unique_host(namespace)
    return base if route == "shop" else f"{route.removeprefix('shop-')}.{base}"


@dataclass
class Shop:
    """An example application, its ProgressiveRollout, an operator and steady load."""

    namespace: str
    kubectl: KubectlRunner
    environment: EnvironmentInfo
    operator: OperatorProcess
    load: BackgroundLoad
    notifications_secret: str | None = None

    def status(self) -> dict[str, Any]:
        return read_status(self.kubectl, self.namespace, "shop")

    def phase(self) -> object:
        return self.status().get("phase")

    def weight(self) -> int:
        return canary_weight_in_route(self.kubectl, self.namespace)

    def host(self, route: str = "shop") -> str:
        return route_host(self.namespace, route)

    def wait_status(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90
    ) -> dict[str, Any]:
        """The first status that passes `check`; a timeout shows the last one seen."""
        return wait_until(self.status, what, timeout, until=check)

    def wait_phase(self, phase: str, timeout: float = 90) -> dict[str, Any]:
        return self.wait_status(lambda s: s.get("phase") == phase, f"phase {phase}", timeout)

    def copy(self, role: str) -> dict[str, Any]:
        """The copy that has the role, as the status names it."""
        revision = self.status()[f"{role}Revision"]
        return get(self.kubectl, self.namespace, "deployment", copy_of(revision))

    def restart_operator(self, env: Mapping[str, str] | None = None) -> None:
        """A new operator in place of the one a test killed (or that died), logging to the
        same file, with `env` added to its environment."""
        self.operator.stop()
        self.operator = start_operator(
            self.environment,
            self.operator.log,
            namespaces=[self.namespace],
            notifications_secret=self.notifications_secret,
            env=env,
        )

    def caught_up(self) -> None:
        """The dev gateway has applied all that was written so far (`gateway_caught_up`)."""
        gateway_caught_up(self.kubectl, self.namespace, self.environment.gateway_url)

    def traffic_after(self, start: float, count: int) -> list[Sample]:
        """`count` responses that arrived after time.monotonic() reading `start`, once
        SETTLING others have gone by first."""
        return self.load.responses_after(start, SETTLING + count)[SETTLING:]

    def promote(self) -> None:
        self.kubectl.check(
            "annotate", "-n", self.namespace, "pro/shop", "tidegate.io/promote=true"
        )  # fmt: skip


@contextlib.contextmanager
def running_shop(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    tmp_path: Path,
    rollout: str | None = None,
    *,
    example: Path = CANARY_EXAMPLE,
    as_is: bool = False,
    notifications_secret: str | None = None,
    operator_kubeconfig: Path | None = None,
    lease_namespace: str | None = None,
    load_host: str | None = None,
) -> Iterator[Shop]:
    """`example` in `namespace`, every route on a hostname of its own: applied as it is (then
    only the hostnames patched), or its app with `rollout`; initialised, with its operator
    (reading notification providers from `notifications_secret`, NAMESPACE/NAME, if given)
    and load on the main route running until the block ends. `operator_kubeconfig` runs the
    operator as another identity (its Lease then in `lease_namespace`, if given). The load
    goes to `load_host` if given (`<service>.<namespace>.svc`: a Service, with no route)."""
    if as_is:
        kubectl.check("apply", "-n", namespace, "-f", str(example))
        # Before anything routes by them: no other test's traffic can reach these routes.
        for route in get(kubectl, namespace, "httproutes")["items"]:
            name = route["metadata"]["name"]
            hostnames = json.dumps({"spec": {"hostnames": [route_host(namespace, name)]}})
            kubectl.check(
                "patch", "-n", namespace, f"httproute/{name}", "--type=merge", "-p", hostnames
            )  # fmt: skip
    else:
        app = list(yaml.safe_load_all((example / "app.yaml").read_text()))
        for obj in app:
            if obj["kind"] == "HTTPRoute":
                obj["spec"]["hostnames"] = [route_host(namespace, obj["metadata"]["name"])]
        kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(app))
        rollout = rollout or (example / "rollout.yaml").read_text()
        kubectl.check("apply", "-n", namespace, "-f", "-", stdin=rollout)
    operator = start_operator(
        environment,
        tmp_path / "operator.log",
        namespaces=[namespace],
        notifications_secret=notifications_secret,
        kubeconfig=operator_kubeconfig,
        lease_namespace=lease_namespace,
    )
    host = load_host or route_host(namespace, "shop")
    try:
        load = BackgroundLoad(environment.gateway_url, host)
        shop = Shop(namespace, kubectl, environment, operator, load, notifications_secret)
    except BaseException:
        operator.stop()
        raise
    try:
        shop.wait_phase("Initialized", 60)
        wait_until(lambda: shop.load.seen("1.0.0"), "traffic on 1.0.0", 30)
        yield shop
    finally:
        shop.load.stop()
        shop.operator.stop()


class RouteWatch:
    """Every version of an HTTPRoute the API server reports, from `kubectl get --watch`:
    what a watcher of the route really sees, not a sample of it."""

    def __init__(self, kubectl: KubectlRunner, namespace: str, route: str) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []  # (time.monotonic(), the route)
        self._process = kubectl.popen(
            "get", "-n", namespace, f"httproute/{route}", "--watch", "--output-watch-events",
            "-o", "json",
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        decoder, text = json.JSONDecoder(), ""
        for chunk in iter(lambda: self._process.stdout.readline(), ""):  # type: ignore[union-attr]
            text += chunk
            while text.strip():
                try:
                    event, end = decoder.raw_decode(text.lstrip())
                except json.JSONDecodeError:
                    break  # an object still arriving
                text = text.lstrip()[end:]
                self.seen.append((time.monotonic(), event["object"]))

    def weights(self, backend: str = "shop-canary") -> list[int]:
        """The weight each reported version gave `backend`, repeats collapsed."""
        found: list[int] = []
        for _, route in list(self.seen):
            weight = backend_weight(route, backend) or 0
            if not found or found[-1] != weight:
                found.append(weight)
        return found

    def first_seen(self, weight: int, backend: str = "shop-canary") -> float | None:
        """When a version giving `backend` that weight was first reported."""
        return next(
            (
                at
                for at, route in list(self.seen)
                if (backend_weight(route, backend) or 0) == weight
            ),
            None,
        )

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._reader.join(10)


# The operator's ServiceAccount as deploy/kustomize makes it.
KUSTOMIZE = REPO / "deploy" / "kustomize"
ACCOUNT_NAMESPACE, ACCOUNT_NAME = "tidegate-system", "tidegate"


def install_operator_rbac(kubectl: KubectlRunner) -> list[dict[str, Any]]:
    """Everything in deploy/kustomize but the operator's own Deployment, installed, with
    the CRDs of deploy/kustomize/crds."""
    rendered = kubectl.check("kustomize", str(KUSTOMIZE / "crds")) + "\n---\n"
    rendered += kubectl.check("kustomize", str(KUSTOMIZE))
    objects = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] != "Deployment"]
    # Forced, as install_crd: its CRDs win over a Helm install's copy left in the cluster.
    kubectl.check(
        "apply", "--server-side", "--force-conflicts", "-f", "-",
        stdin=yaml.safe_dump_all(objects),
    )  # fmt: skip
    kubectl.wait_established("progressiverollouts.tidegate.io")
    return objects


def service_account_kubeconfig(kubectl: KubectlRunner, path: Path) -> Path:
    """The admin kubeconfig's cluster, with the operator ServiceAccount's token as the user."""
    token = kubectl.check("create", "token", ACCOUNT_NAME, "-n", ACCOUNT_NAMESPACE).strip()
    admin = json.loads(kubectl.check("config", "view", "--raw", "--minify", "-o", "json"))
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "tidegate", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": "tidegate"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def weights_until(shop: Shop, phases: set[str], timeout: float = 120) -> list[int]:
    """Each canary weight seen in the route until the rollout reaches one of `phases`."""
    seen: list[int] = []

    def phase() -> object:
        weight = shop.weight()
        if not seen or seen[-1] != weight:
            seen.append(weight)
        return shop.phase()

    wait_until(phase, "/".join(sorted(phases)), timeout, until=phases.__contains__)
    return seen


PLUGIN_DIR = Path(sys.executable).parent  # where the venv installed kubectl-tidegate


def undo(shop: Shop) -> float:
    """`kubectl tidegate undo shop` in the shop's cluster, as kubectl runs the plugin; when it
    was started (time.monotonic())."""
    env = {
        **os.environ,
        "PATH": f"{PLUGIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": shop.environment.kubeconfig,
    }
    argv = [shop.environment.kubectl, "tidegate", "undo", "shop", "-n", shop.namespace]
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return started
