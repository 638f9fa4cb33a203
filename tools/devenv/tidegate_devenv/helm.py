"""Running the helm binary against the chart, with directories of its own (no ~/.config/helm)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tidegate_devenv.paths import REPO

CHART = REPO / "deploy" / "helm" / "tidegate"


class HelmError(RuntimeError):
    pass


class HelmRunner:
    """`helm` with its cache, config and data kept under `home`, talking to the cluster of
    `kubeconfig` (none is needed for `lint` and `template`; without one, $KUBECONFIG)."""

    def __init__(self, helm: Path, home: Path, kubeconfig: Path | None = None) -> None:
        self.helm = helm
        self.home = home
        self.kubeconfig = kubeconfig

    def _environment(self) -> dict[str, str]:
        # This process's environment (PATH and HOME for a kubeconfig's credential plugins),
        # without any HELM_* setting of the caller's, and helm's own directories under `home`.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
        env |= {
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.helm), *args],
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def check(self, *args: str, timeout: float = 180) -> str:
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def template(
        self, release: str, namespace: str, *value_args: str, chart: Path = CHART
    ) -> list[dict[str, Any]]:
        """The objects `helm template` renders (without the CRDs of crds/), parsed."""
        out = self.check("template", release, str(chart), "--namespace", namespace, *value_args)
        return [doc for doc in yaml.safe_load_all(out) if doc]
