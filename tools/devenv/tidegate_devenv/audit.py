"""The local kube-apiserver's audit log: which requests each identity made, and how they ended.

The dev API server writes one JSON audit event per line to `<state_dir>/audit/audit.log`
(policy beside it). The log backend runs in its default blocking mode, so an event is on disk
before its request's response is complete: what a client has seen answered can be read here.

Requests of the control plane's own identities are left out, so what remains is what users,
tools and operators did.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# First matching rule wins. Metadata is who did what to which object, with the response code:
# no request or response bodies, so the log stays small and holds no secrets.
POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# One event when the response is complete (or, for a watch, has started) is enough.
omitStages: ["RequestReceived"]
rules:
  # The control plane talking to itself would be most of the log.
  - level: None
    users:
      - system:apiserver
      - system:kube-controller-manager
      - system:kube-scheduler
  - level: None
    userGroups: ["system:serviceaccounts:kube-system", "system:nodes"]
  # Node heartbeats (kwok's, as admin) and the control plane's own Leases; tidegate's
  # leader-election Lease, elsewhere, is logged like any other request.
  - level: None
    resources: [{group: coordination.k8s.io, resources: [leases]}]
    namespaces: [kube-node-lease, kube-system]
  - level: Metadata
"""


# The verbs that change something.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def audit_dir(state_dir: Path) -> Path:
    return state_dir / "audit"


def audit_log(state_dir: Path) -> Path:
    """Where the environment in `state_dir` logs its API requests (absent for an external
    cluster)."""
    return audit_dir(state_dir) / "audit.log"


def write_policy(state_dir: Path) -> Path:
    path = audit_dir(state_dir) / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(POLICY)
    return path


def apiserver_flags(state_dir: Path) -> list[str]:
    """kube-apiserver flags that log to `audit_log(state_dir)`; writes the policy they name."""
    return [
        f"--audit-policy-file={write_policy(state_dir)}",
        f"--audit-log-path={audit_log(state_dir)}",
        "--audit-log-format=json",
        # Rotated at 100 MB into audit-<time>.log beside it, all kept: `read_events` reads them.
    ]


@dataclass(frozen=True, order=True)
class ApiCall:
    """One kind of request, as RBAC sees it: a verb on a resource of an API group."""

    group: str  # "" for the core group
    resource: str
    subresource: str  # "" when none
    verb: str
    namespaced: bool  # False: a cluster-scoped object, or a namespaced kind across namespaces

    @property
    def rbac_resource(self) -> str:
        """The name an RBAC rule gives it: `deployments`, `progressiverollouts/status`."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        scope = "namespaced" if self.namespaced else "cluster"
        return f"{self.verb} {self.group or 'core'}/{self.rbac_resource} ({scope})"


# Verbs (as the audit log and RBAC name them) that change what is stored.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Verbs that read once; a `watch` (a stream, started once and then fed) is neither.
READ_VERBS = frozenset({"get", "list"})


@dataclass(frozen=True)
class AuditedRequest:
    call: ApiCall | None  # None for a non-resource request (/api, /apis, /version, ...)
    namespace: str | None  # None: cluster-scoped, across namespaces, or a non-resource request
    uri: str
    code: int | None  # the response code; None while a response has not started
    annotations: dict[str, str]
    verb: str = ""  # also for a non-resource request (`get /apis`)
    name: str | None = None  # the object's, when the request names one
    user: str = ""
    user_agent: str = ""
    audit_id: str = ""
    # When the API server received the request, and when it logged its latest stage (for a
    # finished request: when its response was complete). The server's clock, to the µs.
    received: datetime | None = None
    completed: datetime | None = None

    @property
    def is_write(self) -> bool:
        return self.call is not None and self.call.verb in WRITE_VERBS

    def __str__(self) -> str:
        """`patch apps/deployments (namespaced) ns/name`, or `get /apis`."""
        if self.call is None:
            return f"{self.verb} {self.uri.partition('?')[0]}"
        where = "/".join(part for part in (self.namespace, self.name) if part)
        return f"{self.call} {where}".rstrip()


def read_events(log: Path) -> list[dict[str, Any]]:
    """Every event in the log and its rotated backups, one per request: its latest stage."""
    # Backups are named audit-<timestamp>.log: they sort before audit.log, oldest first.
    files = [*sorted(log.parent.glob(f"{log.stem}-*{log.suffix}")), log]
    latest: dict[str, dict[str, Any]] = {}
    for path in files:
        with path.open() as lines:
            for line in lines:
                if line.strip():
                    event = json.loads(line)
                    latest[event["auditID"]] = event  # written in stage order
    return list(latest.values())


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def audited(event: dict[str, Any]) -> AuditedRequest:
    """One event, as the request it records."""
    ref = event.get("objectRef")
    call = None
    if ref is not None:
        call = ApiCall(
            group=ref.get("apiGroup", ""),
            resource=ref["resource"],
            subresource=ref.get("subresource", ""),
            verb=event["verb"],
            namespaced="namespace" in ref,
        )
    return AuditedRequest(
        call=call,
        namespace=(ref or {}).get("namespace"),
        uri=event["requestURI"],
        code=event.get("responseStatus", {}).get("code"),
        annotations=event.get("annotations", {}),
        verb=event["verb"],
        name=(ref or {}).get("name"),
        user=event.get("user", {}).get("username", ""),
        user_agent=event.get("userAgent", ""),
        audit_id=event["auditID"],
        received=_time(event.get("requestReceivedTimestamp")),
        completed=_time(event.get("stageTimestamp")),
    )


def requests_where(
    keep: Callable[[dict[str, Any]], bool], events: Iterable[dict[str, Any]]
) -> list[AuditedRequest]:
    return [audited(event) for event in events if keep(event)]


def requests_by(user: str, events: Iterable[dict[str, Any]]) -> list[AuditedRequest]:
    """What `user` itself asked (not what someone impersonating it asked)."""
    return requests_where(lambda e: e.get("user", {}).get("username") == user, events)


def requests_with_agent(prefix: str, events: Iterable[dict[str, Any]]) -> list[AuditedRequest]:
    """What clients whose User-Agent starts with `prefix` asked, whoever they were logged in
    as: a program among others that share its credentials (the dev environment's admin)."""
    return requests_where(lambda e: e.get("userAgent", "").startswith(prefix), events)


def audit_ids(events: Iterable[dict[str, Any]]) -> frozenset[str]:
    """A mark in the log: the requests logged so far. `since` leaves them out."""
    return frozenset(event["auditID"] for event in events)


def since(mark: Collection[str], events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of requests not yet logged at `mark` (`audit_ids` of an earlier read).

    By request, not by time: a watch opened before the mark and ending after it (its
    ResponseComplete event comes then) is an old request, not a new one.
    """
    return [event for event in events if event["auditID"] not in mark]


def count_by_verb(requests: Iterable[AuditedRequest]) -> Counter[str]:
    return Counter(request.verb for request in requests)


def count_by_call(requests: Iterable[AuditedRequest]) -> Counter[str]:
    """How many of each call (`list apps/deployments (namespaced)`), with the non-resource
    requests by path (`get /apis`)."""
    return Counter(
        str(request.call) if request.call else f"{request.verb} {request.uri.partition('?')[0]}"
        for request in requests
    )
