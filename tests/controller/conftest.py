"""The controller layer: the reconcile loop and kopf handlers against recording fakes."""

from __future__ import annotations

import sys
from pathlib import Path

# The fakes are a plain module next to the tests.
sys.path.insert(0, str(Path(__file__).parent))
