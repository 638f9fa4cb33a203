"""The one process stopper, on real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidegate_devenv.demoprocs import stop_process
from tidegate_devenv.processes import (
    ProcessTable,
    group_alive,
    process_alive,
    stop_process_group,
)

# A shell that starts a child in its own process group (it is a session leader) and waits.
FAMILY = "sleep 60 & echo started; wait"
# The same, deaf to SIGTERM: only SIGKILL ends it.
STUBBORN = "trap '' TERM; sleep 60 & echo started; wait"


def start_group(script: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"  # the child is there too
    return proc


def test_stops_the_whole_group_on_sigterm() -> None:
    proc = start_group(FAMILY)
    assert group_alive(proc.pid)
    began = time.monotonic()
    stop_process_group(proc.pid, timeout=5)
    assert time.monotonic() - began < 4
    assert not group_alive(proc.pid)
    # Reaped by pid, as the environment's recorded processes are: no zombie left behind.
    assert not os.path.exists(f"/proc/{proc.pid}")


def test_what_ignores_sigterm_is_killed_after_the_timeout() -> None:
    proc = start_group(STUBBORN)
    began = time.monotonic()
    stop_process_group(proc.pid, timeout=0.5)
    assert time.monotonic() - began >= 0.5
    assert not group_alive(proc.pid)


def test_stopping_twice_or_a_process_already_gone_is_harmless() -> None:
    proc = start_group(FAMILY)
    stop_process_group(proc.pid)
    stop_process_group(proc.pid)
    proc.wait()
    stop_process_group(proc.pid)
    assert not group_alive(proc.pid)


def test_a_process_that_leads_no_group_is_stopped_alone() -> None:
    # As the gateway's demo apps are: in the gateway's process group (here, pytest's).
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert process_alive(proc.pid)
    stop_process_group(proc)
    assert not process_alive(proc.pid)
    assert proc.poll() == -15  # the Popen reaped it, so it kept the exit status


def test_an_asyncio_child_is_stopped_and_left_to_its_loop_to_reap() -> None:
    async def scenario() -> int | None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)"
        )
        await stop_process(proc, timeout=5)
        return proc.returncode

    # -15: SIGTERM, as the loop's own reaping saw it (a stolen child would read 255).
    assert asyncio.run(scenario()) == -15


def test_one_recorded_process_is_stopped_and_started_again_the_same_way(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    table.start("first", ["sleep", "60"])
    table.start("second", ["sh", "-c", "sleep 60"], env={"WHO": "second"})
    before = {r.name: r for r in table.records()}

    table.stop("second")
    assert not group_alive(before["second"].pid)
    assert [r.name for r in table.alive()] == ["first"]
    assert [(r.name, r.stopped) for r in table.records()] == [("first", False), ("second", True)]
    table.stop("second")  # twice is harmless

    table.start_again("second")
    after = {r.name: r for r in table.records()}
    assert [r.name for r in table.records()] == ["first", "second"]  # in its place
    assert after["second"].pid != before["second"].pid
    assert (after["second"].argv, after["second"].env) == (
        ["sh", "-c", "sleep 60"],
        {"WHO": "second"},
    )
    assert group_alive(after["second"].pid)
    with pytest.raises(RuntimeError, match="not stopped"):
        table.start_again("first")
    with pytest.raises(KeyError):
        table.stop("third")

    table.stop_all()
    assert table.alive() == [] and table.records() == []
    assert not group_alive(after["second"].pid) and not group_alive(before["first"].pid)


def niceness(pid: int) -> int:
    # /proc/<pid>/stat: the 19th field, counted after the command's closing parenthesis.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def test_a_process_starts_with_the_niceness_asked_and_keeps_it_when_started_again(
    tmp_path: Path,
) -> None:
    table = ProcessTable(tmp_path)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        table.start("plain", ["sleep", "60"])
        table.start("lower", ["sleep", "60"], nice=3)  # anyone may lower their priority
        pids = {r.name: r.pid for r in table.records()}
        assert niceness(pids["plain"]) == mine
        assert niceness(pids["lower"]) == min(19, mine + 3)
        table.stop("lower")
        table.start_again("lower")
        again = next(r for r in table.records() if r.name == "lower")
        assert again.nice == 3 and niceness(again.pid) == min(19, mine + 3)
        # A raise this process may not make (not root) is skipped, not an error.
        table.start("higher", ["sleep", "60"], nice=-5)
        higher = next(r for r in table.records() if r.name == "higher")
        expected = mine - 5 if os.geteuid() == 0 else mine
        assert niceness(higher.pid) == max(-20, expected)
    finally:
        table.stop_all()
