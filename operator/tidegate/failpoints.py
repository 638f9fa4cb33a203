"""Fault injection: the operator dies at a named point, as a SIGKILL would leave it.

What must survive a crash at an exact instant (the outbox: a status written, nothing it
decided told yet) cannot be shown by killing the process from outside at a random time.
The e2e tests name the instant instead, in the operator's environment:

    TIDEGATE_FAILPOINT=after-status:<Reason>

exits the process right after the status write whose outbox holds an Event of that reason,
before any of the decision's writes or tellings. No deployment sets it (the chart and the
kustomize install have no way to); when it is unset, each point is one string comparison.
"""

from __future__ import annotations

import logging
import os

from tidegate.api import Outbox

ENV = "TIDEGATE_FAILPOINT"
# The exit code of a process that died at a failpoint (sysexits' EX_SOFTWARE).
EXIT_CODE = 70

log = logging.getLogger("tidegate.failpoints")
_POINT, _, _DETAIL = os.environ.get(ENV, "").partition(":")


def after_status(outbox: Outbox | None) -> None:
    """Die here if the failpoint `after-status:<Reason>` names an Event of `outbox`."""
    if _POINT != "after-status" or outbox is None:
        return
    if any(event.reason == _DETAIL for event in outbox.events):
        log.critical("failpoint %s=%s:%s: exiting now", ENV, _POINT, _DETAIL)
        logging.shutdown()
        os._exit(EXIT_CODE)  # no cleanup at all: the Lease is not given up, nothing is told
