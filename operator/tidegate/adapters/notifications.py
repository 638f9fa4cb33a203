"""Notifications, the I/O part: the providers' configs from the operator's notifications
Secret, and a bounded queue whose workers deliver messages with aiohttp, retrying.

The reconciler only calls `send`, which queues and returns: a provider that is slow, down or
refusing never holds a reconcile (a rollback included) up. When the queue is full, the oldest
waiting message is dropped for the new one (the latest news of a rollout matters most), and
counted. A message is tried ATTEMPTS times, with exponential backoff in between (waited out
off the workers, then queued again), each try within REQUEST_TIMEOUT; TLS certificates are
verified.

The Secret is read with one GET when a rollout with notifications needs a provider and the
copy read last is older than SECRET_TTL: a rollout that has nothing to tell costs nothing,
and a changed URL is used within SECRET_TTL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import yaml
from pydantic import ValidationError

from tidegate import api, metrics
from tidegate.adapters.kube import Kube
from tidegate.notify import Message, render
from tidegate.ports import NotifierError

log = logging.getLogger("tidegate.notifications")

DEFAULT_SECRET = "tidegate-notifications"
SECRET_TTL = 30.0
QUEUE_SIZE = 1000
WORKERS = 4
ATTEMPTS = 4
FIRST_BACKOFF = 1.0  # seconds before the second try; doubled for each further one
REQUEST_TIMEOUT = 10.0

Post = Callable[[str, dict[str, Any]], Awaitable[None]]
SecretData = dict[str, str] | None  # the Secret's keys and decoded values; None: no Secret


class DeliveryError(Exception):
    """A try failed; `retry` says whether another may do better."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def _describe(error: ValidationError) -> str:
    """Pydantic's errors without the input values: a URL is a secret."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}" for e in error.errors()
    )


def parse_provider(secret: str, name: str, text: str) -> api.NotificationProvider:
    """A value of the Secret (YAML or JSON) as a provider config (raises NotifierError)."""
    where = f"notifications provider {name!r} in Secret {secret}"
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        raise NotifierError(f"{where} is neither YAML nor JSON") from None
    if not isinstance(loaded, dict):
        raise NotifierError(f"{where} is not a mapping with a type and a url")
    try:
        return api.NotificationProvider.model_validate(loaded)
    except ValidationError as error:
        raise NotifierError(f"{where} is invalid: {_describe(error)}") from None


class SecretProviders:
    """The providers of one Secret, read through Kube at most once per `ttl`."""

    def __init__(
        self,
        read: Callable[[], Awaitable[SecretData]],
        secret: str,
        *,
        ttl: float = SECRET_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.secret = secret  # namespace/name, for messages
        self.ttl = ttl
        self.clock = clock
        self._data: SecretData = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def data(self) -> SecretData:
        async with self._lock:  # a thousand rollouts starting at once: one GET
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl:
                self._data = await self.read()
                self._read_at = now
            return self._data

    async def provider(self, name: str) -> api.NotificationProvider:
        data = await self.data()
        if data is None:
            raise NotifierError(
                f"notifications provider {name!r}: Secret {self.secret} does not exist",
                reason="NotificationProviderNotFound",
            )
        if name not in data:
            raise NotifierError(
                f"notifications provider {name!r} is not a key of Secret {self.secret}",
                reason="NotificationProviderNotFound",
            )
        return parse_provider(self.secret, name, data[name])


def secret_reader(kube: Kube, namespace: str, name: str) -> Callable[[], Awaitable[SecretData]]:
    async def read() -> SecretData:
        found = await kube.get_or_none("secrets", namespace, name)
        if found is None:
            return None
        data = found.get("data") or {}
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}

    return read


@dataclass(frozen=True)
class Delivery:
    provider: str
    url: str
    body: dict[str, Any]
    attempt: int = 1  # the try this is


class DeliveryQueue:
    """Messages waiting for delivery, and the workers that deliver them."""

    def __init__(
        self,
        post: Post | None = None,
        *,
        size: int = QUEUE_SIZE,
        workers: int = WORKERS,
        attempts: int = ATTEMPTS,
        first_backoff: float = FIRST_BACKOFF,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.size = size
        self.workers = workers
        self.attempts = attempts
        self.first_backoff = first_backoff
        self.timeout = timeout
        self._post = post
        self._session: aiohttp.ClientSession | None = None
        self._queue: asyncio.Queue[Delivery] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0
        # Failed tries waiting out their backoff before they are queued again.
        self._retries: list[asyncio.TimerHandle] = []
        self._retrying = 0

    def put(self, delivery: Delivery) -> None:
        """Queue one delivery; when full, the oldest waiting one is dropped. Never waits."""
        if self._queue is None:  # in the event loop, at the first message
            self._queue = asyncio.Queue(self.size)
            self._workers = [
                asyncio.create_task(self._work(self._queue), name=f"notifications {i}")
                for i in range(self.workers)
            ]
        if self._queue.full():
            dropped = self._queue.get_nowait()
            metrics.NOTIFICATIONS.labels(dropped.provider, "dropped").inc()
            log.warning("notification to %s dropped: the queue is full", dropped.provider)
        self._queue.put_nowait(delivery)

    @property
    def idle(self) -> bool:
        """Nothing waiting, being delivered or waiting to be tried again."""
        empty = self._queue is None or self._queue.empty()
        return empty and self._busy == 0 and self._retrying == 0

    async def _work(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await queue.get()
            self._busy += 1
            try:
                await self._deliver(delivery)
            except Exception:  # a bug: this message is lost, the worker goes on
                log.exception("notification to %s failed", delivery.provider)
                metrics.NOTIFICATIONS.labels(delivery.provider, "failed").inc()
            finally:
                self._busy -= 1

    async def _deliver(self, delivery: Delivery) -> None:
        """One try. A retry waits out its backoff off the workers and queues again, so that
        a provider that is down holds no worker from the others' messages."""
        try:
            await self.post(delivery.url, delivery.body)
        except DeliveryError as error:
            attempt = delivery.attempt
            log.warning(
                "notification to %s failed (try %d of %d): %s",
                delivery.provider,
                attempt,
                self.attempts,
                error,
            )
            if attempt >= self.attempts or not error.retry:
                metrics.NOTIFICATIONS.labels(delivery.provider, "failed").inc()
                return
            again = replace(delivery, attempt=attempt + 1)
            delay = self.first_backoff * 2 ** (attempt - 1)
            self._retrying += 1
            self._retries.append(asyncio.get_running_loop().call_later(delay, self._retry, again))
        else:
            metrics.NOTIFICATIONS.labels(delivery.provider, "sent").inc()

    def _retry(self, delivery: Delivery) -> None:
        self._retrying -= 1
        self._retries = [h for h in self._retries if h.when() > self._loop_time()]
        self.put(delivery)

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    async def post(self, url: str, body: dict[str, Any]) -> None:
        """One try (raises DeliveryError): the injected `post`, else an HTTP POST."""
        if self._post is not None:
            await self._post(url, body)
            return
        if self._session is None:
            # The default SSL context: certificates and hostnames are verified.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "tidegate-notifications"},
            )
        try:
            async with self._session.post(url, json=body) as response:
                if response.status >= 400:
                    # Refused for good, unless the provider is overloaded or failing.
                    retry = response.status == 429 or response.status >= 500
                    raise DeliveryError(f"HTTP {response.status}", retry=retry)
        except (aiohttp.ClientError, TimeoutError) as error:
            # The URL is a secret: the error's type and the provider's name only.
            raise DeliveryError(type(error).__name__) from None

    async def close(self) -> None:
        for handle in self._retries:
            handle.cancel()
        self._retries, self._retrying = [], 0
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers, self._queue = [], None
        if self._session is not None:
            await self._session.close()
            self._session = None


class WebhookNotifier:
    """The Notifier port: providers from the Secret, deliveries through the queue."""

    def __init__(self, providers: SecretProviders, queue: DeliveryQueue) -> None:
        self.providers = providers
        self.queue = queue

    async def provider(self, name: str) -> api.NotificationProvider:
        return await self.providers.provider(name)

    def send(self, provider: str, config: api.NotificationProvider, message: Message) -> None:
        try:
            self.queue.put(Delivery(provider, config.url, render(config, message)))
        except Exception:  # never the reconcile's problem
            log.exception("notification to %s could not be queued", provider)
