"""Pure routing logic of the local gateway: Gateway API HTTPRoute matching and the
kube-proxy-like Service -> ready pods -> pod template resolution.

Everything here works on plain Kubernetes JSON (dicts) turned into small frozen
dataclasses, so it can be tested without a cluster.

What of HTTPRoute is implemented: hostnames; rule matches on path (Exact, PathPrefix),
headers and query parameters (Exact, RegularExpression) and method; Gateway API's
precedence among the matching rules of all routes; weighted backendRefs to Services; and
the RequestMirror filter. Other filters, and RegularExpression paths, are not.

Regular expressions (headers, query parameters) are searched for anywhere in the value, as
with RE2's PartialMatch (the Gateway API leaves this to implementations): anchor them with
^ and $ to match a whole value. They are Python's `re`, which accepts the RE2 patterns one
writes in practice; a pattern that does not compile matches nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

TEMPLATE_HASH_LABEL = "pod-template-hash"
# Argo Rollouts' ReplicaSets label their pods with this instead of pod-template-hash (the
# Deployment controller's label): the same role, one per ReplicaSet.
ROLLOUTS_HASH_LABEL = "rollouts-pod-template-hash"
DEFAULT_LATENCY_MS = 5.0


@dataclass(frozen=True)
class PathMatch:
    type: str  # "PathPrefix" or "Exact"
    value: str


@dataclass(frozen=True)
class ValueMatch:
    """A header or query parameter match. Header names are kept lower-case, as they are
    compared case-insensitively; query parameter names are compared as written."""

    name: str
    value: str
    type: str = "Exact"  # or "RegularExpression"

    def accepts(self, actual: str | None) -> bool:
        if actual is None:
            return False  # even a regex that matches "" wants the header present
        if self.type == "Exact":
            return actual == self.value
        if self.type == "RegularExpression":
            pattern = compile_regex(self.value)
            return pattern is not None and pattern.search(actual) is not None
        return False  # implementation-specific types


ANY_PATH = PathMatch("PathPrefix", "/")


@dataclass(frozen=True)
class Match:
    """One HTTPRouteMatch: every condition must hold."""

    path: PathMatch = ANY_PATH
    headers: tuple[ValueMatch, ...] = ()
    query: tuple[ValueMatch, ...] = ()
    method: str | None = None


# A rule without matches matches every request, as a PathPrefix "/" match would.
DEFAULT_MATCHES = (Match(),)


@dataclass(frozen=True)
class BackendRef:
    name: str
    namespace: str
    port: int | None
    weight: int


@dataclass(frozen=True)
class Mirror:
    """A RequestMirror filter: copy numerator/denominator of the requests to `backend`."""

    backend: BackendRef
    numerator: int = 1
    denominator: int = 1


@dataclass(frozen=True)
class Rule:
    matches: tuple[Match, ...]
    backends: tuple[BackendRef, ...]
    mirrors: tuple[Mirror, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class Route:
    namespace: str
    name: str
    hostnames: tuple[str, ...]
    rules: tuple[Rule, ...]
    # metadata.creationTimestamp (RFC 3339, which sorts as text); "" when unknown.
    created: str = ""


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    rule: Rule
    rule_index: int = 0
    match: Match = DEFAULT_MATCHES[0]


@dataclass(frozen=True)
class RequestInfo:
    """What routing looks at in a request. Header names are lower-case; a repeated header
    is one comma-joined value (cookies: "; "-joined), a repeated query parameter its first
    value."""

    host: str
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)


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


def _path_match(raw: Mapping[str, Any]) -> PathMatch:
    path = raw.get("path")
    if path is None:
        # A match without a path (only headers etc.) defaults to PathPrefix "/".
        return ANY_PATH
    return PathMatch(str(path.get("type") or "PathPrefix"), str(path.get("value") or "/"))


def _value_matches(raw: Iterable[Mapping[str, Any]], *, fold_case: bool) -> tuple[ValueMatch, ...]:
    """Header (fold_case) or query parameter matches. Only the first entry for a name
    counts, as the Gateway API requires."""
    seen: set[str] = set()
    matches: list[ValueMatch] = []
    for item in raw:
        name = str(item.get("name") or "")
        key = name.lower() if fold_case else name
        if not name or key in seen:
            continue
        seen.add(key)
        matches.append(
            ValueMatch(key, str(item.get("value") or ""), str(item.get("type") or "Exact"))
        )
    return tuple(matches)


def _match_from_dict(raw: Mapping[str, Any]) -> Match:
    method = raw.get("method")
    return Match(
        path=_path_match(raw),
        headers=_value_matches(raw.get("headers") or [], fold_case=True),
        query=_value_matches(raw.get("queryParams") or [], fold_case=False),
        method=str(method).upper() if method else None,
    )


def _is_service(ref: Mapping[str, Any]) -> bool:
    return (ref.get("kind") or "Service") == "Service" and not ref.get("group")


def _backend_ref(ref: Mapping[str, Any], namespace: str) -> BackendRef:
    return BackendRef(
        name=str(ref.get("name") or ""),
        namespace=str(ref.get("namespace") or namespace),
        port=int(ref["port"]) if ref.get("port") is not None else None,
        weight=int(ref["weight"]) if ref.get("weight") is not None else 1,
    )


def _mirror_from_filter(raw: Mapping[str, Any], namespace: str) -> Mirror | None:
    """A RequestMirror filter to a Service; its share from `percent`, else `fraction`, else
    every request."""
    if raw.get("type") != "RequestMirror":
        return None
    spec = raw.get("requestMirror") or {}
    ref = spec.get("backendRef") or {}
    if not ref.get("name") or not _is_service(ref):
        return None
    backend = _backend_ref(ref, namespace)
    if spec.get("percent") is not None:
        return Mirror(backend, int(spec["percent"]), 100)
    fraction = spec.get("fraction")
    if fraction is not None:
        denominator = max(1, int(fraction.get("denominator") or 100))
        return Mirror(backend, int(fraction.get("numerator") or 0), denominator)
    return Mirror(backend)


def _rule_from_dict(raw: Mapping[str, Any], namespace: str) -> Rule:
    mirrors = (_mirror_from_filter(f, namespace) for f in raw.get("filters") or [])
    return Rule(
        matches=tuple(_match_from_dict(m) for m in raw.get("matches") or []),
        backends=tuple(
            _backend_ref(ref, namespace) for ref in raw.get("backendRefs") or [] if _is_service(ref)
        ),
        mirrors=tuple(m for m in mirrors if m is not None),
        name=str(raw.get("name") or ""),
    )


def route_from_dict(obj: Mapping[str, Any]) -> Route:
    namespace, name = _meta(obj)
    spec = obj.get("spec") or {}
    rules = [_rule_from_dict(raw, namespace) for raw in spec.get("rules") or []]
    if not rules:
        rules.append(Rule(matches=(), backends=()))
    hostnames = tuple(str(h).lower() for h in spec.get("hostnames") or [])
    created = str((obj.get("metadata") or {}).get("creationTimestamp") or "")
    return Route(namespace, name, hostnames, tuple(rules), created)


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
    template_hash = labels.get(TEMPLATE_HASH_LABEL) or labels.get(ROLLOUTS_HASH_LABEL)
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


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or None when it does not compile (it then matches nothing)."""
    try:
        return re.compile(pattern)
    except re.error:
        return None


def request_info(
    host: str,
    path: str,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    query: Iterable[tuple[str, str]] | None = None,
) -> RequestInfo:
    """A request as routing sees it; without `query`, the query string is read from `path`."""
    path, _, query_string = path.partition("?")
    if query is None:
        query = parse_qsl(query_string, keep_blank_values=True)
    first: dict[str, str] = {}
    for name, value in query:
        first.setdefault(name, value)
    return RequestInfo(host, path or "/", method.upper(), join_headers(headers), first)


def join_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers by lower-case name, a repeated one joined into one value as RFC 9110 allows;
    Cookie with "; ", the way its parts are joined (RFC 9113, 8.2.3)."""
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        separator = "; " if key == "cookie" else ", "
        joined[key] = f"{joined[key]}{separator}{value}" if key in joined else value
    return joined


def hostname_rank(hostnames: Sequence[str], host: str) -> tuple[int, int] | None:
    """None when no hostname of the route matches `host`; else, for the Gateway API's
    precedence across routes, the characters of the longest matching non-wildcard hostname
    and of the longest matching hostname. A route without hostnames matches any host."""
    if not hostnames:
        return (0, 0)
    host = _strip_port(host).lower().rstrip(".")
    exact = 0
    any_kind: int | None = None
    for pattern in hostnames:
        if pattern.startswith("*."):
            # A wildcard matches one or more labels before the suffix, not the suffix itself.
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                any_kind = max(any_kind or 0, len(pattern))
        elif host == pattern:
            exact = len(pattern)
            any_kind = max(any_kind or 0, len(pattern))
    return None if any_kind is None else (exact, any_kind)


def host_matches(hostnames: Sequence[str], host: str) -> bool:
    """Gateway API hostname matching; a route without hostnames matches any host."""
    return hostname_rank(hostnames, host) is not None


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


def match_accepts(match: Match, request: RequestInfo) -> bool:
    return (
        path_matches(match.path, request.path)
        and (match.method is None or match.method == request.method)
        and all(h.accepts(request.headers.get(h.name)) for h in match.headers)
        and all(q.accepts(request.query.get(q.name)) for q in match.query)
    )


class Precedence(NamedTuple):
    """The sort key of a match that accepts a request, in the Gateway API's order: the
    smallest key wins. Counts are negated so that more sorts first."""

    hostname: tuple[int, int]  # longest non-wildcard hostname, then longest hostname
    path_type: int  # 0 Exact, 1 otherwise
    path_length: int  # the longest prefix
    method: int  # 0 with a method match
    headers: int
    query: int
    age: tuple[int, str]  # the oldest route; routes without a timestamp after the others
    route: tuple[str, str]  # then by namespace/name
    rule: int  # then the first rule of the route


def precedence(
    host_rank: tuple[int, int], route: Route, rule_index: int, match: Match
) -> Precedence:
    return Precedence(
        hostname=(-host_rank[0], -host_rank[1]),
        path_type=0 if match.path.type == "Exact" else 1,
        path_length=-len(match.path.value),
        method=0 if match.method else 1,
        headers=-len(match.headers),
        query=-len(match.query),
        age=(0, route.created) if route.created else (1, ""),
        route=(route.namespace, route.name),
        rule=rule_index,
    )


def select(routes: Iterable[Route], request: RequestInfo) -> RouteMatch | None:
    """The rule, among all routes' rules, whose match accepts `request` and comes first in
    the Gateway API's precedence; None (a 404) when none does."""
    best: tuple[Precedence, RouteMatch] | None = None
    for route in routes:
        host_rank = hostname_rank(route.hostnames, request.host)
        if host_rank is None:
            continue
        for index, rule in enumerate(route.rules):
            for match in rule.matches or DEFAULT_MATCHES:
                if not match_accepts(match, request):
                    continue
                key = precedence(host_rank, route, index, match)
                if best is None or key < best[0]:
                    best = (key, RouteMatch(route, rule, index, match))
    return None if best is None else best[1]


def select_route(
    routes: Iterable[Route],
    host: str,
    path: str,
    *,
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
) -> RouteMatch | None:
    """`select` for a request given by its parts (`path` may carry a query string)."""
    return select(routes, request_info(host, path, method, headers))


class SmoothSplit:
    """A rule's backendRefs chosen by smooth weighted round robin, as NGINX's upstreams and
    Envoy's weighted round robin do: in every run of picks as long as the weights' sum, each
    backend is picked exactly its weight's number of times, spread evenly (90/10 sends every
    tenth request to the second). A share measured over any window is then the weight, give
    or take one request, so a test's traffic-share check cannot fail by chance.

    One state per rule, by a key the caller gives (route and rule); it starts again when the
    rule's backends or weights change."""

    def __init__(self) -> None:
        self._state: dict[Hashable, tuple[tuple[BackendRef, ...], list[int]]] = {}

    def pick(self, key: Hashable, rule: Rule) -> BackendRef | None:
        """The next backendRef of `rule`; weight 0 is never chosen (None: none has weight)."""
        candidates = tuple(b for b in rule.backends if b.weight > 0)
        if not candidates:
            return None
        state = self._state.get(key)
        if state is None or state[0] != candidates:
            state = self._state[key] = (candidates, [0] * len(candidates))
        current = state[1]
        for index, backend in enumerate(candidates):
            current[index] += backend.weight
        best = max(range(len(candidates)), key=current.__getitem__)
        current[best] -= sum(b.weight for b in candidates)
        return candidates[best]


def pick_backend(rule: Rule, split: SmoothSplit, key: Hashable = "") -> BackendRef | None:
    """The backendRef a request matching `rule` goes to (see SmoothSplit)."""
    return split.pick(key, rule)


def mirror_wanted(mirror: Mirror, rng: random.Random) -> bool:
    """Whether to mirror one request. Draws from `rng` only when the answer is not certain,
    so 0 % and 100 % mirrors leave the generator's sequence alone."""
    if mirror.numerator <= 0:
        return False
    if mirror.numerator >= mirror.denominator:
        return True
    return rng.randrange(mirror.denominator) < mirror.numerator


def mirror_targets(rule: Rule, rng: random.Random) -> list[BackendRef]:
    """The backends one request through `rule` is copied to."""
    return [m.backend for m in rule.mirrors if mirror_wanted(m, rng)]


# --- Service endpoints -------------------------------------------------------------------

_SERVICE_HOST = re.compile(
    r"^(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"\.svc(\.cluster\.local)?$"
)


def service_address(host: str) -> tuple[str, str] | None:
    """(namespace, name) when `host` names a Service as cluster DNS does,
    `<service>.<namespace>.svc` or `<service>.<namespace>.svc.cluster.local`, with or without
    a port; None for any other host."""
    found = _SERVICE_HOST.match(_strip_port(host).lower().rstrip("."))
    return None if found is None else (found["namespace"], found["service"])


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


# --- what a route's configuration sends where ----------------------------------------------


def version_shares(
    rule: Rule, endpoints: Mapping[tuple[str, str], Mapping[str, TemplateGroup]]
) -> dict[str, float]:
    """The share of a rule's requests each app version is configured to get: the backends'
    weights, and within each Service its ready pods' templates by count, as `pick_backend`
    and `pick_template` draw them. A weight split (HTTPRoute) and a replica split (one
    Service over two ReplicaSets) read alike here, so the benchmark can tell when a change
    of either took effect at the gateway, whichever controller made it."""
    backends = [b for b in rule.backends if b.weight > 0]
    total_weight = sum(b.weight for b in backends)
    shares: dict[str, float] = {}
    for backend in backends:
        groups = [
            g for g in endpoints.get((backend.namespace, backend.name), {}).values() if g.count > 0
        ]
        pods = sum(g.count for g in groups)
        for group in groups:
            share = backend.weight / total_weight * group.count / pods
            shares[group.spec.version] = shares.get(group.spec.version, 0.0) + share
    return {version: round(share, 6) for version, share in sorted(shares.items())}
