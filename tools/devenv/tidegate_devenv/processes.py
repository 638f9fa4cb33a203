"""Background processes of the local environment, recorded in its state directory.

Each process starts in a session of its own, so stopping it by process group also stops
whatever it spawned (the gateway's demo apps), and a terminal closing does not stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tidegate_devenv.waiting import WaitTimeout, wait_until


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    log: str
    # How it was started, so that it can be started again the same way (`start_again`).
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Stopped on purpose by `stop`, kept for `start_again`: its pid is no longer ours.
    stopped: bool = False
    nice: int = 0  # the niceness it was started with (`ProcessTable.start`)


class ProcessTable:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "processes.json"
        self.log_dir = state_dir / "logs"

    def records(self) -> list[ProcessRecord]:
        if not self.path.exists():
            return []
        return [ProcessRecord(**r) for r in json.loads(self.path.read_text())]

    def _save(self, records: list[ProcessRecord]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
        tmp.replace(self.path)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        nice: int = 0,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` as `name`. A `nice` below 0 raises its scheduling priority where this
        process may (as root), and is ignored where it may not."""
        proc, record = self._spawn(name, list(argv), dict(env or {}), nice)
        self._save([*self.records(), record])
        return proc

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], nice: int = 0
    ) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **env},
                preexec_fn=_niceness(nice) if nice else None,
            )
        return proc, ProcessRecord(name, proc.pid, str(log), argv, env, nice=nice)

    def _record(self, name: str) -> tuple[int, ProcessRecord]:
        for index, record in enumerate(self.records()):
            if record.name == name:
                return index, record
        raise KeyError(f"no process {name!r} in {self.path}")

    def stop(self, name: str, timeout: float = 5.0) -> None:
        """Stop one recorded process (and its group), keeping its record for `start_again`:
        a component made to fail on purpose, like an API server a test takes away."""
        index, record = self._record(name)
        if not record.stopped:
            stop_process_group(record.pid, timeout)
        records = self.records()
        records[index] = replace(record, stopped=True)
        self._save(records)

    def start_again(self, name: str) -> subprocess.Popen[bytes]:
        """Start a process `stop` stopped with the same command line and environment, in its
        place in the table (so that `stop_all` still stops it in the order of the start)."""
        index, record = self._record(name)
        if not record.stopped:
            raise RuntimeError(f"{name} was not stopped; stop it first")
        proc, fresh = self._spawn(name, record.argv, record.env, record.nice)
        records = self.records()
        records[index] = fresh
        self._save(records)
        return proc

    def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every recorded process group, newest first, then forget them.

        One at a time: the API server shuts down in a second while etcd is still there,
        but waits many seconds for an etcd that is going away beside it.
        """
        for record in reversed(self.records()):
            if not record.stopped:
                stop_process_group(record.pid, timeout)
        self._save([])

    def alive(self) -> list[ProcessRecord]:
        return [r for r in self.records() if not r.stopped and group_alive(r.pid)]


def _niceness(increment: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec
        with contextlib.suppress(PermissionError):
            os.nice(increment)

    return apply


def stop_process_group(
    process: int | subprocess.Popen[bytes], timeout: float = 5.0, *, reap: bool = True
) -> None:
    """Stop a process and, when it leads a process group (everything started here in a
    session of its own does), every process of that group: SIGTERM, then SIGKILL for what is
    still running after `timeout` seconds. Returns once none of them runs; safe to call on a
    process that is gone or was stopped before.

    With `reap`, the process is reaped if it is our child: through its Popen when given one,
    which then keeps its exit status. An asyncio subprocess must pass its pid and
    reap=False: its event loop reaps it, and would report a stolen child as exit 255.
    """
    pid = process if isinstance(process, int) else process.pid
    group = _leads_group(pid)
    signal_them = _signal_group if group else _signal_process
    running = group_alive if group else process_alive

    def gone() -> bool:
        # Looked at before reaping: once nothing runs, the process is a zombie (or reaped)
        # and this reaps it; the other way round, it could die between the two and stay.
        stopped = not running(pid)
        if reap and isinstance(process, subprocess.Popen):
            process.poll()
        elif reap:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        return stopped

    # A lone process already gone is not signalled: its pid may be another process's by now.
    if group or running(pid):
        signal_them(pid, signal.SIGTERM)
    try:
        wait_until(gone, f"process {pid} to exit on SIGTERM", timeout, interval=0.05)
    except WaitTimeout:
        signal_them(pid, signal.SIGKILL)
        # SIGKILL cannot be caught: only a process stuck in the kernel outlives this wait.
        with contextlib.suppress(WaitTimeout):
            wait_until(gone, f"process {pid} to exit on SIGKILL", timeout, interval=0.05)


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        # Already reaped: a group it led may still have members.
        return group_alive(pid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_process(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _stat(pid_dir: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...);
    None once the process is gone."""
    try:
        return (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def live_processes() -> Iterator[tuple[int, int]]:
    """(pid, process group) of every process on this machine that is not a zombie."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry)) and fields[0] != "Z":
            yield int(entry.name), int(fields[2])


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists and is not a zombie."""
    return any(group == pgid for _, group in live_processes())


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    fields = _stat(Path("/proc", str(pid)))
    return fields is not None and fields[0] != "Z"
