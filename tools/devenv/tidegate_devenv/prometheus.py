"""Prometheus for the local environment: its configuration and command line.

Starting and stopping the process, and waiting for its /-/ready, is left to whoever runs it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_BINARY = "/usr/bin/prometheus"
STATIC_JOB = "gateway"
FILE_SD_JOB = "demo-apps"
CLUSTER_LABEL = "cluster"


class PrometheusNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class ScrapeSource:
    """What Prometheus scrapes of one cluster: its gateway's metrics addresses (static
    targets) and the file_sd target files in `file_sd_dir` (its demo apps, its operators).
    With a `cluster` name, every series scraped from it has the label cluster="<name>", as
    a Prometheus shared by several clusters (or a federation) labels them."""

    static_targets: Sequence[str]
    file_sd_dir: Path
    cluster: str = ""


def render_config(scrape_interval: str, scrape_targets: list[str], file_sd_dir: Path) -> str:
    """prometheus.yml scraping ``scrape_targets`` statically (the gateway's metrics address
    first, then any extras) and whatever file_sd target files appear in ``file_sd_dir``."""
    return render_sources(scrape_interval, [ScrapeSource(scrape_targets, file_sd_dir)])


def render_sources(scrape_interval: str, sources: Sequence[ScrapeSource]) -> str:
    """prometheus.yml for one or more clusters (`ScrapeSource`), in the same two jobs
    whatever their number: `gateway` (static) and `demo-apps` (file_sd), so queries written
    for one cluster find the same job names, told apart by `cluster` when there are more."""
    static_configs = [
        {"targets": list(source.static_targets), **_cluster_labels(source)}
        for source in sources
        if source.static_targets
    ]
    scrape_configs: list[dict[str, object]] = []
    if static_configs:
        scrape_configs.append({"job_name": STATIC_JOB, "static_configs": static_configs})
    file_sd: dict[str, object] = {
        "job_name": FILE_SD_JOB,
        "file_sd_configs": [
            {
                "files": [str(Path(source.file_sd_dir) / "*.json") for source in sources],
                "refresh_interval": "1s",
            }
        ],
    }
    # A target file cannot be given labels from here, but its path can: each file is in
    # the directory of one cluster.
    relabel = [
        {
            "source_labels": ["__meta_filepath"],
            "regex": re.escape(str(Path(source.file_sd_dir))) + "/.*",
            "target_label": CLUSTER_LABEL,
            "replacement": source.cluster,
        }
        for source in sources
        if source.cluster
    ]
    if relabel:
        file_sd["relabel_configs"] = relabel
    scrape_configs.append(file_sd)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": scrape_configs,
    }
    return yaml.safe_dump(config, sort_keys=False)


def _cluster_labels(source: ScrapeSource) -> dict[str, dict[str, str]]:
    return {"labels": {CLUSTER_LABEL: source.cluster}} if source.cluster else {}


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
