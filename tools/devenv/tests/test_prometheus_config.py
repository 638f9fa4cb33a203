"""Prometheus configuration and command line for the local environment."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from tidegate_devenv.prometheus import (
    PrometheusNotFound,
    ScrapeSource,
    prometheus_binary,
    prometheus_command,
    render_config,
    render_sources,
)


def test_render_config_has_static_and_file_sd_jobs(tmp_path: Path) -> None:
    config = yaml.safe_load(
        render_config("1s", ["127.0.0.1:9100", "127.0.0.1:9200"], tmp_path / "targets")
    )
    assert config["global"]["scrape_interval"] == "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["gateway"]["static_configs"] == [{"targets": ["127.0.0.1:9100", "127.0.0.1:9200"]}]
    file_sd = jobs["demo-apps"]["file_sd_configs"][0]
    assert file_sd["files"] == [str(tmp_path / "targets" / "*.json")]
    assert file_sd["refresh_interval"] == "1s"


def test_render_config_without_static_targets(tmp_path: Path) -> None:
    config = yaml.safe_load(render_config("5s", [], tmp_path))
    assert [job["job_name"] for job in config["scrape_configs"]] == ["demo-apps"]


def test_prometheus_command(tmp_path: Path) -> None:
    cmd = prometheus_command(
        "/usr/bin/prometheus", tmp_path / "p.yml", tmp_path / "data", "127.0.0.1:9090"
    )
    assert cmd[0] == "/usr/bin/prometheus"
    assert f"--config.file={tmp_path / 'p.yml'}" in cmd
    assert f"--storage.tsdb.path={tmp_path / 'data'}" in cmd
    assert "--web.listen-address=127.0.0.1:9090" in cmd


def test_prometheus_binary_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PROMETHEUS", str(fake))
    assert prometheus_binary() == str(fake)


def test_prometheus_binary_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS", str(tmp_path / "nope"))
    with pytest.raises(PrometheusNotFound, match="PROMETHEUS"):
        prometheus_binary()


@pytest.mark.skipif(not os.path.exists("/usr/bin/prometheus"), reason="no Debian prometheus")
def test_config_is_accepted_by_promtool(tmp_path: Path) -> None:
    promtool = Path("/usr/bin/promtool")
    if not promtool.exists():
        pytest.skip("no promtool")
    import subprocess

    config = tmp_path / "prometheus.yml"
    config.write_text(render_config("1s", ["127.0.0.1:9100"], tmp_path / "targets"))
    result = subprocess.run(
        [str(promtool), "check", "config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_sources_labels_each_cluster(tmp_path: Path) -> None:
    sources = [
        ScrapeSource(["127.0.0.1:9101"], tmp_path / "a" / "prometheus-targets", "a"),
        ScrapeSource(["127.0.0.1:9102"], tmp_path / "b-2" / "prometheus-targets", "b-2"),
    ]
    config = yaml.safe_load(render_sources("1s", sources))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert list(jobs) == ["gateway", "demo-apps"]  # the same jobs as for one cluster
    assert jobs["gateway"]["static_configs"] == [
        {"targets": ["127.0.0.1:9101"], "labels": {"cluster": "a"}},
        {"targets": ["127.0.0.1:9102"], "labels": {"cluster": "b-2"}},
    ]
    file_sd = jobs["demo-apps"]
    assert file_sd["file_sd_configs"][0]["files"] == [
        str(tmp_path / "a" / "prometheus-targets" / "*.json"),
        str(tmp_path / "b-2" / "prometheus-targets" / "*.json"),
    ]
    # Each target file's cluster comes from its directory (Prometheus anchors the regex).
    rules = file_sd["relabel_configs"]
    assert [(r["source_labels"], r["target_label"]) for r in rules] == [
        (["__meta_filepath"], "cluster")
    ] * 2
    for rule, own, other in [(rules[0], "a", "b-2"), (rules[1], "b-2", "a")]:
        assert rule["replacement"] == own
        assert re.fullmatch(rule["regex"], str(tmp_path / own / "prometheus-targets" / "x.json"))
        assert not re.fullmatch(rule["regex"], str(tmp_path / other / "prometheus-targets" / "x"))


def test_one_unnamed_cluster_has_no_cluster_label(tmp_path: Path) -> None:
    one = render_sources("1s", [ScrapeSource(["127.0.0.1:9100"], tmp_path)])
    assert one == render_config("1s", ["127.0.0.1:9100"], tmp_path)
    config = yaml.safe_load(one)
    assert "labels" not in config["scrape_configs"][0]["static_configs"][0]
    assert "relabel_configs" not in config["scrape_configs"][1]


@pytest.mark.skipif(not os.path.exists("/usr/bin/promtool"), reason="no promtool")
def test_config_of_several_clusters_is_accepted_by_promtool(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "prometheus.yml"
    config.write_text(
        render_sources(
            "1s",
            [ScrapeSource([f"127.0.0.1:910{i}"], tmp_path / n, n) for i, n in enumerate("abc")],
        )
    )
    result = subprocess.run(
        ["/usr/bin/promtool", "check", "config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
