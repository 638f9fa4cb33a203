"""A bounded HTTP load generator for the local data plane (loopback targets only)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

REQUEST_TIMEOUT = 10.0
# Status code recorded for requests that got no HTTP response at all.
NO_RESPONSE = 0


@dataclass
class LoadResult:
    by_version: Counter[str | None] = field(default_factory=Counter)
    by_code: Counter[int] = field(default_factory=Counter)
    by_version_code: Counter[tuple[str | None, int]] = field(default_factory=Counter)
    # (seconds since the run started, version or None, status code or NO_RESPONSE)
    samples: list[tuple[float, str | None, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.samples)

    def record(self, at: float, version: str | None, code: int) -> None:
        self.by_version[version] += 1
        self.by_code[code] += 1
        self.by_version_code[(version, code)] += 1
        self.samples.append((at, version, code))

    def summary(self) -> str:
        lines = [f"requests: {self.total}"]
        for code, n in sorted(self.by_code.items()):
            lines.append(f"  code {code or 'none'}: {n}")
        for version, n in sorted(self.by_version.items(), key=lambda kv: str(kv[0])):
            lines.append(f"  version {version or '-'}: {n}")
        return "\n".join(lines)


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host is None:
        raise ValueError(f"not an absolute URL: {url}")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"refusing to send load to non-loopback host {host!r}")


def _version_of(body: bytes, headers: Mapping[str, str]) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("version"), str):
        return str(data["version"])
    header = headers.get("X-Version")
    return str(header) if header else None


async def generate(
    url: str,
    *,
    host: str | None,
    count: int | None = None,
    duration: float | None = None,
    rps: float | None = None,
    concurrency: int = 16,
    result: LoadResult | None = None,
    stop: threading.Event | None = None,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Send GET requests to ``url`` (with ``Host: host``) until ``count`` requests were sent
    or ``duration`` seconds passed, at ``rps`` requests per second (or as fast as
    ``concurrency`` allows). Pass ``result`` to watch samples arrive while it runs, and
    ``stop`` to end it early from another thread; ``headers`` are sent with every request."""
    check_loopback(url)
    if count is None and duration is None:
        raise ValueError("give count or duration so the load stops by itself")
    if rps is not None and rps <= 0:
        raise ValueError("rps must be positive")
    result = result if result is not None else LoadResult()
    headers = {**(headers or {}), **({"Host": host} if host else {})}
    next_index = 0
    start = time.monotonic()
    deadline = start + duration if duration is not None else None

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while True:
            index = next_index
            if (count is not None and index >= count) or (stop is not None and stop.is_set()):
                return
            next_index += 1
            due = start + index / rps if rps else time.monotonic()
            if deadline is not None and due >= deadline:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with session.get(url, headers=headers) as resp:
                    body = await resp.read()
                    version, code = _version_of(body, resp.headers), resp.status
            except (aiohttp.ClientError, TimeoutError):
                version, code = None, NO_RESPONSE
            result.record(time.monotonic() - start, version, code)

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(max(1, concurrency))))
    result.samples.sort(key=lambda s: s[0])
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tidegate_devenv.loadgen", description=__doc__)
    parser.add_argument("--url", required=True, help="loopback URL, e.g. http://127.0.0.1:8080/")
    parser.add_argument("--host", default=None, help="Host header to send")
    parser.add_argument("--rps", type=float, default=None)
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--duration", type=float, default=None, help="seconds (default 10)")
    bound.add_argument("--count", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print the counters as JSON")
    args = parser.parse_args(argv)
    if args.duration is None and args.count is None:
        args.duration = 10.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = asyncio.run(
            generate(
                args.url,
                host=args.host,
                count=args.count,
                duration=args.duration,
                rps=args.rps,
                concurrency=args.concurrency,
            )
        )
    except ValueError as exc:
        sys.exit(f"loadgen: {exc}")
    if args.json:
        print(
            json.dumps(
                {
                    "total": result.total,
                    "by_code": {str(k): v for k, v in result.by_code.items()},
                    "by_version": {str(k): v for k, v in result.by_version.items()},
                }
            )
        )
    else:
        print(result.summary())


if __name__ == "__main__":
    main()
