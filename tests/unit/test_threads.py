import asyncio
import contextvars
import threading

from tidegate.adapters import threads

caller = contextvars.ContextVar("caller", default="none")


def test_each_kind_of_call_runs_in_its_own_pool_with_the_callers_context() -> None:
    def where() -> tuple[str, str]:
        return threading.current_thread().name, caller.get()

    async def main() -> tuple[tuple[str, str], tuple[str, str]]:
        caller.set("reconcile")
        return await threads.run_in("kube", where), await threads.run_in("prometheus", where)

    (kube_thread, kube_ctx), (prom_thread, prom_ctx) = asyncio.run(main())
    assert kube_thread.startswith("tidegate-kube") and kube_ctx == "reconcile"
    assert prom_thread.startswith("tidegate-prometheus") and prom_ctx == "reconcile"
    assert threads.pool("prometheus")._max_workers == threads.PROMETHEUS_THREADS
