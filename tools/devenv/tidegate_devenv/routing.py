"""Pure routing logic of the local gateway: Gateway API HTTPRoute matching and the
kube-proxy-like Service -> ready pods -> pod template resolution.

Everything here works on plain Kubernetes JSON (dicts) turned into small frozen
dataclasses, so it can be tested without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TEMPLATE_HASH_LABEL = "pod-template-hash"
DEFAULT_LATENCY_MS = 5.0


@dataclass(frozen=True)
class PathMatch:
    type: str  # "PathPrefix" or "Exact"
    value: str


@dataclass(frozen=True)
class BackendRef:
    name: str
    namespace: str
    port: int | None
    weight: int


@dataclass(frozen=True)
class Rule:
    matches: tuple[PathMatch, ...]
    backends: tuple[BackendRef, ...]


@dataclass(frozen=True)
class Route:
    namespace: str
    name: str
    hostnames: tuple[str, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    rule: Rule


@dataclass(frozen=True)
class DemoSpec:
    """How the stand-in process for a pod template behaves."""

    version: str
    error_rate: float
    latency_ms: float


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ready: bool
    ip: str | None
    template: str
    spec: DemoSpec


@dataclass(frozen=True)
class ServiceInfo:
    namespace: str
    name: str
    selector: Mapping[str, str]


@dataclass(frozen=True)
class TemplateGroup:
    key: str
    spec: DemoSpec
    pods: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.pods)


# --- parsing Kubernetes JSON -------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _path_match(raw: Mapping[str, Any]) -> PathMatch | None:
    path = raw.get("path")
    if path is None:
        # A match without a path (only headers etc.) defaults to PathPrefix "/".
        return PathMatch("PathPrefix", "/")
    return PathMatch(str(path.get("type") or "PathPrefix"), str(path.get("value") or "/"))


def route_from_dict(obj: Mapping[str, Any]) -> Route:
    namespace, name = _meta(obj)
    spec = obj.get("spec") or {}
    rules: list[Rule] = []
    for raw_rule in spec.get("rules") or []:
        matches = tuple(
            m for m in (_path_match(raw) for raw in raw_rule.get("matches") or []) if m is not None
        )
        backends = tuple(
            BackendRef(
                name=str(ref.get("name") or ""),
                namespace=str(ref.get("namespace") or namespace),
                port=int(ref["port"]) if ref.get("port") is not None else None,
                weight=int(ref["weight"]) if ref.get("weight") is not None else 1,
            )
            for ref in raw_rule.get("backendRefs") or []
            if (ref.get("kind") or "Service") == "Service" and not ref.get("group")
        )
        rules.append(Rule(matches=matches, backends=backends))
    if not rules:
        rules.append(Rule(matches=(), backends=()))
    hostnames = tuple(str(h).lower() for h in spec.get("hostnames") or [])
    return Route(namespace=namespace, name=name, hostnames=hostnames, rules=tuple(rules))


def backend_weight(route: Mapping[str, Any], service: str, rule_index: int = 0) -> int | None:
    """The weight rule `rule_index` of an HTTPRoute (Kubernetes JSON) gives `service`, as this
    gateway reads it (an unset weight is 1); None when that rule does not route to it.

    For the tests, the demo and the benchmark: what a route gives the canary.
    """
    rules = route_from_dict(route).rules
    if rule_index >= len(rules):
        return None
    return next((b.weight for b in rules[rule_index].backends if b.name == service), None)


def service_from_dict(obj: Mapping[str, Any]) -> ServiceInfo:
    namespace, name = _meta(obj)
    selector = (obj.get("spec") or {}).get("selector") or {}
    return ServiceInfo(namespace, name, {str(k): str(v) for k, v in selector.items()})


def image_tag(image: str) -> str:
    """The tag of an image reference ("latest" when untagged, short digest when pinned)."""
    if "@" in image:
        return image.split("@", 1)[1].split(":", 1)[-1][:12]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def _float(raw: str | None, default: float) -> float:
    try:
        return float(raw) if raw is not None else default
    except ValueError:
        return default


def _is_ready(obj: Mapping[str, Any]) -> bool:
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return False  # terminating endpoints receive no new traffic
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def pod_from_dict(obj: Mapping[str, Any]) -> PodInfo:
    namespace, name = _meta(obj)
    meta = obj.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    containers = (obj.get("spec") or {}).get("containers") or [{}]
    first = containers[0]
    image = str(first.get("image") or "")
    env = {
        str(e["name"]): str(e["value"])
        for e in first.get("env") or []
        if e.get("name") and e.get("value") is not None
    }
    spec = DemoSpec(
        version=env.get("VERSION") or image_tag(image),
        error_rate=min(1.0, max(0.0, _float(env.get("ERROR_RATE"), 0.0))),
        latency_ms=max(0.0, _float(env.get("LATENCY_MS"), DEFAULT_LATENCY_MS)),
    )
    template_hash = labels.get(TEMPLATE_HASH_LABEL)
    if not template_hash:
        digest = json.dumps([image, sorted(env.items())]).encode()
        template_hash = "img-" + hashlib.sha256(digest).hexdigest()[:10]
    return PodInfo(
        namespace=namespace,
        name=name,
        labels=labels,
        ready=_is_ready(obj),
        ip=(obj.get("status") or {}).get("podIP") or None,
        template=f"{namespace}/{template_hash}",
        spec=spec,
    )


# --- route selection ---------------------------------------------------------------------


def host_matches(hostnames: Sequence[str], host: str) -> bool:
    """Gateway API hostname matching; a route without hostnames matches any host."""
    if not hostnames:
        return True
    host = _strip_port(host).lower().rstrip(".")
    for pattern in hostnames:
        if pattern.startswith("*."):
            # A wildcard matches one or more labels before the suffix, not the suffix itself.
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8080
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def path_matches(match: PathMatch, path: str) -> bool:
    if match.type == "Exact":
        return path == match.value
    if match.type == "PathPrefix":
        # Prefixes match whole path elements: "/foo" matches "/foo/bar" but not "/foobar".
        prefix = match.value.rstrip("/")
        return not prefix or path == prefix or path.startswith(prefix + "/")
    return False  # RegularExpression and other implementation-specific types


def rule_matches(rule: Rule, path: str) -> bool:
    return not rule.matches or any(path_matches(m, path) for m in rule.matches)


def select_route(routes: Iterable[Route], host: str, path: str) -> RouteMatch | None:
    """The first route (by namespace/name) matching ``host`` and, in it, the first rule
    matching ``path``."""
    path = path.split("?", 1)[0] or "/"
    for route in sorted(routes, key=lambda r: (r.namespace, r.name)):
        if not host_matches(route.hostnames, host):
            continue
        for rule in route.rules:
            if rule_matches(rule, path):
                return RouteMatch(route, rule)
    return None


def pick_backend(rule: Rule, rng: random.Random) -> BackendRef | None:
    """Weighted random choice of a backendRef; weight 0 is never chosen."""
    candidates = [b for b in rule.backends if b.weight > 0]
    if not candidates:
        return None
    return rng.choices(candidates, weights=[b.weight for b in candidates])[0]


# --- Service endpoints -------------------------------------------------------------------


def selects(service: ServiceInfo, pod: PodInfo) -> bool:
    return (
        bool(service.selector)
        and pod.namespace == service.namespace
        and all(pod.labels.get(k) == v for k, v in service.selector.items())
    )


def ready_endpoints(service: ServiceInfo, pods: Iterable[PodInfo]) -> list[PodInfo]:
    """What kube-proxy would route to: ready pods with an IP selected by the Service."""
    return [p for p in pods if p.ready and p.ip and selects(service, p)]


def split_by_template(pods: Iterable[PodInfo]) -> dict[str, TemplateGroup]:
    """Group pods by pod template; each group's spec comes from its first pod by name."""
    by_key: dict[str, list[PodInfo]] = {}
    for pod in pods:
        by_key.setdefault(pod.template, []).append(pod)
    groups: dict[str, TemplateGroup] = {}
    for key in sorted(by_key):
        members = sorted(by_key[key], key=lambda p: p.name)
        groups[key] = TemplateGroup(key, members[0].spec, tuple(p.name for p in members))
    return groups


def pick_template(groups: Mapping[str, TemplateGroup], rng: random.Random) -> TemplateGroup | None:
    """Spread requests over templates in proportion to their ready pod counts."""
    candidates = [g for g in groups.values() if g.count > 0]
    if not candidates:
        return None
    return rng.choices(candidates, weights=[g.count for g in candidates])[0]
