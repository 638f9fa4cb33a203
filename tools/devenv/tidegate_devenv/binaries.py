"""Finding the control plane's binaries, building them once when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tidegate_devenv.paths import BUILD_SCRIPT

NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
KWOK_STAGES = "kwok-stages.yaml"


class BinariesMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path

    @classmethod
    def in_directory(cls, directory: Path) -> Binaries | None:
        paths = [directory / name for name in NAMES]
        stages = directory / KWOK_STAGES
        if not all(p.is_file() and os.access(p, os.X_OK) for p in paths) or not stages.is_file():
            return None
        etcd, apiserver, controller_manager, scheduler, kubectl, kwok = paths
        return cls(etcd, apiserver, controller_manager, scheduler, kubectl, kwok, stages)


def _explicit_directories() -> list[Path]:
    # TIDEGATE_BIN_DIR, then envtest's convention; either one skips the build.
    return [
        Path(v)
        for v in (os.environ.get(k) for k in ("TIDEGATE_BIN_DIR", "KUBEBUILDER_ASSETS"))
        if v
    ]


def find_binaries() -> Binaries:
    """Return the binaries from an explicit directory or the cache, building what is missing.

    The build script builds nothing when its versioned cache directory is complete.
    """
    for directory in _explicit_directories():
        found = Binaries.in_directory(directory)
        if found:
            return found
    if shutil.which("go") is None:
        raise BinariesMissing("building the control plane needs the go command on PATH")
    directory = Path(_run_build_script("all"))
    found = Binaries.in_directory(directory)
    if found is None:
        raise BinariesMissing(f"the build finished but {directory} lacks some of {NAMES}")
    return found


def _run_build_script(*args: str) -> str:
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return out.strip().splitlines()[-1]


def find_helm() -> Path:
    """The helm binary: $TIDEGATE_HELM if set, else the build script's (built once)."""
    explicit = os.environ.get("TIDEGATE_HELM")
    helm = Path(explicit) if explicit else Path(_run_build_script("helm"))
    if not (helm.is_file() and os.access(helm, os.X_OK)):
        raise BinariesMissing(f"no executable helm at {helm}")
    return helm


def gateway_api_crd_directory() -> Path:
    """The standard-channel Gateway API CRDs, taken from the Go module at run time."""
    return Path(_run_build_script("gateway-api-crds"))
