"""What identifies a version: the digest of a Deployment's pod template."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def template_revision(template: dict[str, Any]) -> str:
    """A short, stable digest of a pod template: the revision tidegate rolls out."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]
