"""HTTPRoute status with no data plane, for environments started without the dev gateway.

`start_environment(gateway=False)` (the scale benchmark, the peers benchmark's fleets) runs
this in the gateway's place: it lists and watches HTTPRoutes and Services only, never Pods,
so that it stays cheap with thousands of routes, and writes each route's status.parents as
the dev gateway does (`tidegate_devenv.routestatus`). At once: with nothing to route, a
route's generation counts as applied as soon as it is seen. A controller that waits for
observedGeneration after writing a route then sees its write accepted, as with the gateway.
There is no HTTP data plane, no demo app and no metrics address.

Once both lists are in, it writes --ready-file (removed again when it stops); SIGTERM or
SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidegate_devenv.delayed import ROUTES, SERVICES
from tidegate_devenv.kubewatch import ClusterMirror
from tidegate_devenv.routestatus import StatusWriter, generation, status_patcher

log = logging.getLogger("tidegate.route-status")

# The informers it runs: no Pods, whose churn is most of a cluster's events.
STATUS_KINDS = (ROUTES, SERVICES)
# Status writes at a time: when a thousand rollouts step together, one at a time (about
# 50 ms each on a busy 2-core machine) would hold their routes' acceptance back by a minute.
# Within asyncio's default pool of worker threads (CPUs + 4) and the client's connections.
PARALLEL_WRITES = 4

Key = tuple[str, str]
Obj = dict[str, Any]
OnObject = Callable[[str, Key, Obj | None], None]
# What identifies the spec a status is written for: the route's uid and generation.
RouteMark = tuple[str, int]


def route_mark(route: Obj) -> RouteMark:
    return str((route.get("metadata") or {}).get("uid") or ""), generation(route)


class Changes:
    """Which informer events can change what a status write says: a route added, deleted,
    recreated or given a new generation, a Service added or deleted (ResolvedRefs only asks
    whether a Service exists). Not a route's own status write coming back from the watch,
    which is about half of all route events: each wake costs a pass over every route."""

    def __init__(self) -> None:
        self._routes: dict[Key, RouteMark] = {}
        self._services: set[Key] = set()

    def matters(self, kind: str, key: Key, obj: Obj | None) -> bool:
        if kind == SERVICES:
            return self._service(key, present=obj is not None)
        if obj is None:
            return self._routes.pop(key, None) is not None
        mark = route_mark(obj)
        if self._routes.get(key) == mark:
            return False
        self._routes[key] = mark
        return True

    def _service(self, key: Key, *, present: bool) -> bool:
        if present == (key in self._services):
            return False
        if present:
            self._services.add(key)
        else:
            self._services.discard(key)
        return True


def status_mirror(api_client: Any, on_object: OnObject) -> ClusterMirror:
    """A ClusterMirror of HTTPRoutes and Services only, telling `on_object` of each change."""
    return ClusterMirror(api_client, lambda: None, on_object, kinds=STATUS_KINDS)


def applied(mirror: ClusterMirror) -> tuple[tuple[Obj, ...], frozenset[Key]]:
    """Every route the mirror holds and the Services that exist: all applied at once."""
    return tuple(mirror.routes.items.values()), frozenset(mirror.services.items)


async def synced(mirror: ClusterMirror) -> None:
    await asyncio.gather(*(informer.synced.wait() for informer in mirror.informers.values()))


def mark_ready(ready_file: Path | None) -> None:
    if ready_file is not None:
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        ready_file.write_text(f"{os.getpid()}\n")


async def write_statuses(api_client: Any, ready_file: Path | None) -> None:
    """Mirror the routes and Services and write the routes' status, until cancelled."""
    changes = Changes()
    wake = asyncio.Event()

    def seen(kind: str, key: Key, obj: Obj | None) -> None:
        if changes.matters(kind, key, obj):
            wake.set()

    mirror = status_mirror(api_client, seen)
    writer = StatusWriter(status_patcher(api_client), parallel=PARALLEL_WRITES)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(mirror.run(), name="informers")
        # Not before both lists are in: a route seen before its Service would be written
        # BackendNotFound, then written again.
        await synced(mirror)
        routes, services = applied(mirror)
        log.info("synced: %d HTTPRoutes, %d Services", len(routes), len(services))
        mark_ready(ready_file)
        tasks.create_task(writer.run(lambda: applied(mirror), wake), name="status")


async def run(args: argparse.Namespace) -> int:
    """Write route status until SIGTERM or SIGINT (0), or until the work fails (1)."""
    from kubernetes import config

    ready_file = Path(args.ready_file) if args.ready_file else None
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # one left by an earlier run says nothing now
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A client of its own; reading the kubeconfig is file I/O, so off the loop.
    api_client = await asyncio.to_thread(config.new_client_from_config, config_file=args.kubeconfig)
    work = asyncio.create_task(write_statuses(api_client, ready_file), name="route-status")
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, work], return_when=asyncio.FIRST_COMPLETED)
        if work in done and not work.cancelled() and work.exception() is not None:
            log.error("route status stopped: %r", work.exception())
            return 1
        log.info("stopping")
        return 0
    finally:
        for task in (stopper, work):
            task.cancel()
        await asyncio.gather(stopper, work, return_exceptions=True)
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        with contextlib.suppress(Exception):  # closing is all that is left to do
            await asyncio.to_thread(api_client.close)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tidegate_devenv.statusonly", description=__doc__
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--ready-file", default=None, help="written once the informers have synced")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    raise SystemExit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
