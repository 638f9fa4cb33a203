"""`tidegate loadtester` as a process, over real HTTP: it does not start without its token,
and takes and lists jobs only for a request bearing it. No cluster is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidegate.loadtester import TOKEN_ENV
from tidegate_devenv.cluster import free_port, http_ok
from tidegate_devenv.processes import stop_process_group
from tidegate_devenv.waiting import wait_until

TOKEN = "s3cret-token"


def loadtester(listen: str, log: Path, *extra: str, token: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tidegate", "loadtester", "--listen", listen, *extra],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )  # fmt: skip


def call(url: str, token: str | None, body: object | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_without_a_token_it_refuses_to_start(tmp_path: Path) -> None:
    process = loadtester(f"127.0.0.1:{free_port()}", tmp_path / "log", token=None)
    assert process.wait(30) == 2
    assert "--insecure-no-token" in (tmp_path / "log").read_text()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[str]:
    listen = f"127.0.0.1:{free_port()}"
    process = loadtester(listen, tmp_path / "log", token=TOKEN)
    try:
        url = f"http://{listen}"
        wait_until(lambda: http_ok(f"{url}/healthz"), "the loadtester's /healthz", 30)
        yield url
    finally:
        stop_process_group(process, 10)


def test_jobs_are_taken_and_listed_only_with_the_token(running: str) -> None:
    # To a port nothing listens on: the job is taken, its requests fail, nothing else.
    job = {"id": "ns/shop", "url": f"http://127.0.0.1:{free_port()}/", "rate": 1, "duration": 2}
    for token in (None, "wrong", TOKEN[:-1], f"{TOKEN}x"):
        assert call(f"{running}/jobs", token, job) == 401, token
        assert call(f"{running}/jobs", token) == 401, token
    assert call(f"{running}/jobs", TOKEN, job) == 201
    assert call(f"{running}/jobs", TOKEN) == 200
    # Health and metrics stay open to the kubelet and Prometheus.
    assert call(f"{running}/healthz", None) == 200
    assert call(f"{running}/metrics", None) == 200


def test_insecure_no_token_takes_jobs_from_anyone(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    process = loadtester(listen, tmp_path / "log", "--insecure-no-token", token=None)
    try:
        url = f"http://{listen}"
        wait_until(lambda: http_ok(f"{url}/healthz"), "the loadtester's /healthz", 30)
        assert call(f"{url}/jobs", None) == 200
    finally:
        stop_process_group(process, 10)
