"""The controller layer: the reconcile loop and kopf handlers against recording fakes."""

from __future__ import annotations

import sys
from pathlib import Path

# The fakes are a plain module next to the tests; the purity guard is shared with tests/unit.
sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from purity import no_sockets_or_processes  # noqa: E402, F401  (autouse)
