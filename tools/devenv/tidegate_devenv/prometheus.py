"""Prometheus for the local environment: its configuration and command line.

Starting and stopping the process, and waiting for its /-/ready, is left to whoever runs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

DEFAULT_BINARY = "/usr/bin/prometheus"
STATIC_JOB = "gateway"
FILE_SD_JOB = "demo-apps"


class PrometheusNotFound(RuntimeError):
    pass


def render_config(scrape_interval: str, scrape_targets: list[str], file_sd_dir: Path) -> str:
    """prometheus.yml scraping ``scrape_targets`` statically (the gateway's metrics address
    first, then any extras) and whatever file_sd target files appear in ``file_sd_dir``."""
    scrape_configs: list[dict[str, object]] = []
    if scrape_targets:
        scrape_configs.append(
            {"job_name": STATIC_JOB, "static_configs": [{"targets": list(scrape_targets)}]}
        )
    scrape_configs.append(
        {
            "job_name": FILE_SD_JOB,
            "file_sd_configs": [
                {"files": [str(Path(file_sd_dir) / "*.json")], "refresh_interval": "1s"}
            ],
        }
    )
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": scrape_configs,
    }
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_binary() -> str:
    """$PROMETHEUS, else /usr/bin/prometheus (Debian's package `prometheus`)."""
    configured = os.environ.get("PROMETHEUS")
    candidate = configured or DEFAULT_BINARY
    resolved = candidate if os.path.isfile(candidate) else shutil.which(candidate)
    if resolved is None or not os.access(resolved, os.X_OK):
        source = "$PROMETHEUS" if configured else "the default path"
        raise PrometheusNotFound(
            f"no Prometheus executable at {candidate} ({source}); install the Debian package "
            "`prometheus` or point $PROMETHEUS at a prometheus binary"
        )
    return resolved


def prometheus_command(
    binary: str, config_path: Path, data_dir: Path, listen: str, retention: str = "6h"
) -> list[str]:
    return [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={listen}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
