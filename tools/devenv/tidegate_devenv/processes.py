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
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    log: str


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
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self._save([*self.records(), ProcessRecord(name, proc.pid, str(log))])
        return proc

    def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every recorded process group, newest first, then forget them.

        One at a time: the API server shuts down in a second while etcd is still there,
        but waits many seconds for an etcd that is going away beside it.
        """
        for record in reversed(self.records()):
            _signal_group(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and group_alive(record.pid):
                _reap(record.pid)
                time.sleep(0.05)
            _signal_group(record.pid, signal.SIGKILL)
            _reap(record.pid)
        self._save([])

    def alive(self) -> list[ProcessRecord]:
        return [r for r in self.records() if group_alive(r.pid)]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists and is not a zombie."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the command name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
