"""The operator in its image, run as the Helm chart runs it, in place of a local process.

With $TIDEGATE_OPERATOR_IMAGE set (`make image-test` sets it to `tidegate:dev`),
`operator_process.start_operator` starts `podman run` of that image instead of
`python -m tidegate`: uid 10001, a read-only root, every capability dropped, no new
privileges, a tmpfs on /tmp standing in for the chart's emptyDir, on the host network (so
the local control plane, Prometheus and gateway are where the kubeconfig and flags say).
The kubeconfig goes in as one read-only file with its certificates inlined, readable by that
uid. SIGTERM to `podman run` reaches the operator (podman proxies signals), and its exit code
is the operator's.

podman runs with the runc runtime and explicit ulimits: the default crun fails here on
setrlimit.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

IMAGE_ENV = "TIDEGATE_OPERATOR_IMAGE"
UID = 10001  # the chart's runAsUser and the Dockerfile's USER
_INLINE = {
    "certificate-authority": "certificate-authority-data",
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
}


def operator_image() -> str | None:
    return os.environ.get(IMAGE_ENV) or None


def inline_kubeconfig(source: Path, target: Path) -> Path:
    """`source` with every file it names read into it, written to `target` (0644)."""
    config = yaml.safe_load(source.read_text())
    for section, key in (("clusters", "cluster"), ("users", "user")):
        for entry in config.get(section) or []:
            fields = entry.get(key) or {}
            for path_key, data_key in _INLINE.items():
                if path_key in fields:
                    raw = Path(fields.pop(path_key)).read_bytes()
                    fields[data_key] = base64.b64encode(raw).decode()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o644)
    return target


def container_argv(
    image: str, kubeconfig: Path, args: Sequence[str], env: Mapping[str, str], name: str
) -> list[str]:
    """`podman run` of `image` with the operator's `args` (after the entrypoint)."""
    inside = "/etc/tidegate/kubeconfig"
    environment = {"KUBECONFIG": inside, **env}
    return [
        "podman", "--runtime", "runc", "run", "--rm", "--pull", "never", "--name", name,
        "--network", "host", "--user", f"{UID}:{UID}", "--read-only",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--tmpfs", "/tmp:rw,size=64m,mode=1777",
        "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096",
        "--volume", f"{kubeconfig}:{inside}:ro",
        *(f"--env={key}={value}" for key, value in environment.items()),
        image, *args,
    ]  # fmt: skip
