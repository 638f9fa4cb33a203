"""`tidegate run`: the operator process, with liveness, readiness and metrics endpoints.

/healthz and /readyz are served from a thread of their own (tidegate.health): /healthz fails
when the event loop is stuck; /readyz answers 200 once kopf has listed everything the cache
holds and the watches run (`tidegate.handlers.watching`), on a standby as on the leader (a
standby is a warm spare), and 503 again while the process cannot act.
/metrics has `tidegate_leader`, 1 on the replica that acts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from importlib.metadata import version
from typing import Any

import aiohttp
import kopf
from aiohttp import web

from tidegate import __version__, metrics
from tidegate.adapters import threads
from tidegate.adapters.kube import make_api_client, user_agent
from tidegate.health import HealthChecks, HealthServer, Heartbeat
from tidegate.leadership import ElectionSettings, Leadership

# What kopf's own requests (its lists and watches) carry, so that an API server's audit log
# tells them from other kopf operators' (whose default is plain `kopf/<version>`). The
# official client's (tidegate's reads and writes) is `tidegate/<version>`: make_api_client.
USER_AGENT = f"tidegate/{__version__} kopf/{version('kopf')}"


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's default login (through the official client's config loading: in-cluster, else
    $KUBECONFIG), in a session of our own: kopf has no setting for the User-Agent, only this
    documented way to hand it a session (kopf owns it from then on and closes it)."""
    # Config loading may run an exec credential plugin: off the event loop.
    info = await asyncio.to_thread(kopf.login_via_client, **kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        # As kopf builds its own session from a ConnectionInfo.
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": USER_AGENT},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


async def _metrics_server(listen: str) -> web.AppRunner:
    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    return await _serve(app, listen)


async def _serve(app: web.Application, listen: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    return runner


async def _main(
    namespaces: list[str],
    clusterwide: bool,
    health_listen: str,
    metrics_listen: str,
    memo: kopf.Memo,
) -> None:
    import tidegate.handlers  # noqa: F401  (registers the handlers)

    memo.ready = asyncio.Event()  # set by tidegate.handlers.watching
    heartbeat = Heartbeat()
    beating = asyncio.create_task(heartbeat.run(), name="heartbeat")
    leadership: Leadership | None = memo.leadership
    health = HealthServer(
        health_listen,
        HealthChecks(
            heartbeat,
            started=memo.ready.is_set,
            lease_unread_for=leadership.lock.unread_for if leadership else lambda: 0.0,
            lease_duration=leadership.settings.lease_duration if leadership else float("inf"),
        ),
    ).start()
    served_metrics = await _metrics_server(metrics_listen)
    try:
        await kopf.operator(
            clusterwide=clusterwide, namespaces=namespaces, standalone=True, memo=memo
        )
    finally:
        beating.cancel()
        health.stop()
        await served_metrics.cleanup()


def run_operator(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    prometheus_url: str | None,
    health_listen: str,
    loadtester_url: str | None = None,
    metrics_listen: str,
    identity: str,
    election: ElectionSettings | None,
    notifications_secret: tuple[str, str],
) -> int:
    """Run until stopped. With `election`, this process acts only while it holds the Lease;
    without, it acts from the start (a single replica)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Every request, and every watch event handled, is too much for INFO; so is the leader
    # election library's line per try (tidegate.leadership says when the holder changes).
    for noisy in ("httpx", "httpx2", "kopf.objects", "leaderelection"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    prometheus_url = prometheus_url or os.environ.get("TIDEGATE_PROMETHEUS_URL")
    loadtester_url = loadtester_url or os.environ.get("TIDEGATE_LOADTESTER_URL")
    clusterwide = all_namespaces or not namespaces
    kubeconfig = os.environ.get("KUBECONFIG")
    metrics.LEADER.set(0)
    leadership = None
    if election is not None:
        # A client of its own (the same kubeconfig as the operator's), so that the Lease's
        # requests never wait behind the reconciles' in its connection pool.
        leases = make_api_client(kubeconfig, user_agent=user_agent(identity))
        leadership = Leadership(election, leases)
    memo = kopf.Memo(
        prometheus_url=prometheus_url,
        loadtester_url=loadtester_url,
        kubeconfig=kubeconfig,
        identity=identity,
        leadership=leadership,
        notifications_secret=notifications_secret,
        namespaces=[] if clusterwide else list(namespaces),  # the rollouts' (empty: all)
    )
    try:
        asyncio.run(_main(namespaces, clusterwide, health_listen, metrics_listen, memo))
    finally:
        # asyncio.run has returned: the loops are stopped. Once every request they left in
        # a worker thread has finished, and only then, may a standby start writing.
        threads.shutdown()
        if leadership is not None:
            leadership.release()
    return 0
