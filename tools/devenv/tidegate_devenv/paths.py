"""Where the repository's own files are, for the tools that run from a checkout."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "hack" / "build-binaries.sh"
CRD_DIR = REPO / "crds"
CANARY_EXAMPLE = REPO / "examples" / "canary"
BLUE_GREEN_EXAMPLE = REPO / "examples" / "blue-green"
NOTIFICATIONS_EXAMPLE = REPO / "examples" / "notifications"
WAVES_DEPLOY = REPO / "deploy" / "waves"
