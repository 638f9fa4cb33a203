"""free_port: ports that no outgoing connection or bind to port 0 can take before use."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator

import pytest

from tidegate_devenv import cluster


def test_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() -> None:
    ports = [cluster.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < cluster._ephemeral_start() for p in ports)


class Scripted:
    """Draws the ports it was given, in order."""

    def __init__(self, ports: list[int]) -> None:
        self.ports: Iterator[int] = iter(ports)

    def randrange(self, start: int, end: int) -> int:
        return next(self.ports)


def test_a_port_something_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        taken = listening.getsockname()[1]
        free = cluster.free_port()  # (a port known to be free, now handed out)
        cluster._handed_out.discard(free)
        monkeypatch.setattr(cluster, "_draw", Scripted([taken, free]))
        assert cluster.free_port() == free


def test_slices_of_the_range_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    ranges = []
    for k in range(3):
        monkeypatch.setenv(cluster.PORT_SLICE_ENV, f"{k}/3")
        ranges.append(cluster._port_range())
        start, end = ranges[-1]
        assert start <= cluster.free_port() < end
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end <= start
    assert ranges[-1][1] <= cluster._ephemeral_start()


@pytest.mark.parametrize("raw", ["2", "3/3", "a/b", "-1/2"])
def test_a_slice_that_is_not_k_of_n_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(cluster.PORT_SLICE_ENV, raw)
    with pytest.raises(cluster.StartupError, match=cluster.PORT_SLICE_ENV):
        cluster.free_port()
