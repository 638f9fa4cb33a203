"""tests/unit: pure and fast, no processes, no sockets."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from purity import no_sockets_or_processes  # noqa: F401  (autouse)
