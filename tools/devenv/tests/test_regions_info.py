"""The pure parts of the multi-region environment: what it records and prints, its region
names, the kubeconfigs of several control planes, and an operator's scrape entry."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from tidegate_devenv.cli import build_parser
from tidegate_devenv.cluster import write_kubeconfig
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import _register_scrape_target
from tidegate_devenv.pki import KeyPair
from tidegate_devenv.regions import RegionsInfo, check_names, region_names


def region(name: str, state: Path) -> EnvironmentInfo:
    return EnvironmentInfo(
        state_dir=str(state / name),
        kubeconfig=str(state / name / "admin.kubeconfig"),
        server=f"https://127.0.0.1:{6440 + ord(name) - ord('a')}",
        kubectl="/bin/dir/kubectl",
        prometheus_url="http://127.0.0.1:9090",
        gateway_url=f"http://127.0.0.1:{8080 + ord(name) - ord('a')}",
        gateway_metrics_url=f"http://127.0.0.1:{9180 + ord(name) - ord('a')}",
        started_in_seconds=9.5,
        cluster=name,
    )


def regions(state: Path, names: str = "abc") -> RegionsInfo:
    return RegionsInfo(
        str(state),
        "http://127.0.0.1:9090",
        "/bin/dir/kubectl",
        [region(n, state) for n in names],
        9.5,
    )


def test_regions_info_round_trips_through_json(tmp_path: Path) -> None:
    info = regions(tmp_path)
    assert RegionsInfo.from_json(info.to_json()) == info
    raw = json.loads(info.to_json())
    assert [r["cluster"] for r in raw["regions"]] == ["a", "b", "c"]
    assert {"state_dir", "kubeconfig", "server", "gateway_url", "gateway_metrics_url"} <= set(
        raw["regions"][0]
    )


def test_a_region_is_an_environment_of_its_own(tmp_path: Path) -> None:
    info = regions(tmp_path)
    assert info.names == ["a", "b", "c"]
    b = info.region("b")
    assert (b.cluster, b.state_dir, b.prometheus_url) == (
        "b",
        str(tmp_path / "b"),
        info.prometheus_url,
    )
    with pytest.raises(KeyError, match="a, b, c"):
        info.region("d")


def test_an_environment_info_of_before_regions_still_loads() -> None:
    old = asdict(region("a", Path("/s")))
    del old["cluster"]
    assert EnvironmentInfo(**old).cluster == ""


def test_exports_merge_the_kubeconfigs_and_name_each_gateway(tmp_path: Path) -> None:
    lines = regions(tmp_path, "ab").exports().splitlines()
    kubeconfigs = f"{tmp_path}/a/admin.kubeconfig:{tmp_path}/b/admin.kubeconfig"
    assert f"export KUBECONFIG={kubeconfigs}" in lines
    assert "export TIDEGATE_PROMETHEUS_URL=http://127.0.0.1:9090" in lines
    assert "export TIDEGATE_GATEWAY_URL_A=http://127.0.0.1:8080" in lines
    assert "export TIDEGATE_GATEWAY_URL_B=http://127.0.0.1:8081" in lines
    assert "export PATH=/bin/dir:$PATH" in lines


def test_region_names() -> None:
    assert region_names(3) == ("a", "b", "c")
    assert region_names(1) == ("a",)
    for wrong in (0, 27):
        with pytest.raises(ValueError):
            region_names(wrong)
    check_names(["us-east", "eu-west-1"])
    for bad in ([], ["a", "a"], ["US"], ["a_b"], ["-a"], ["a" * 40]):
        with pytest.raises(ValueError):
            check_names(bad)


def test_kubeconfigs_of_several_control_planes_merge(tmp_path: Path) -> None:
    client = KeyPair(tmp_path / "admin.crt", tmp_path / "admin.key")
    path = write_kubeconfig(
        tmp_path / "a.kubeconfig", "https://127.0.0.1:1", tmp_path / "ca.crt", client, "admin",
        context="a",
    )  # fmt: skip
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "a"
    assert config["clusters"][0] == {
        "name": "a",
        "cluster": {
            "server": "https://127.0.0.1:1",
            "certificate-authority": str(tmp_path / "ca.crt"),
        },
    }
    # The user is named after the context too: merged with b's, a's user is not hidden.
    assert config["users"][0]["name"] == "admin@a"
    assert config["contexts"][0] == {"name": "a", "context": {"cluster": "a", "user": "admin@a"}}


def test_one_control_plane_keeps_its_kubeconfig_names(tmp_path: Path) -> None:
    client = KeyPair(tmp_path / "admin.crt", tmp_path / "admin.key")
    path = write_kubeconfig(tmp_path / "k", "https://x", tmp_path / "ca.crt", client, "admin")
    config = yaml.safe_load(path.read_text())
    assert config["current-context"] == "tidegate-dev"
    assert config["users"][0]["name"] == "admin"


def test_an_operator_of_a_region_is_scraped_with_its_cluster(tmp_path: Path) -> None:
    b = region("b", tmp_path)
    (tmp_path / "b" / "prometheus-targets").mkdir(parents=True)
    path = _register_scrape_target(b, "dev-1234", "127.0.0.1:7000")
    assert path is not None and path.parent == tmp_path / "b" / "prometheus-targets"
    assert json.loads(path.read_text()) == [
        {
            "targets": ["127.0.0.1:7000"],
            "labels": {"job": "tidegate", "identity": "dev-1234", "cluster": "b"},
        }
    ]
    single = replace(b, cluster="")
    path = _register_scrape_target(single, "dev-5678", "127.0.0.1:7001")
    assert path is not None and "cluster" not in json.loads(path.read_text())[0]["labels"]


def test_up_takes_a_number_of_clusters() -> None:
    parser = build_parser()
    assert parser.parse_args(["up", "--clusters", "3"]).clusters == 3
    assert parser.parse_args(["up"]).clusters == 1


def test_nodes_are_schedulable_only_when_ready_and_untainted() -> None:
    from tidegate_devenv.regions import nodes_schedulable

    def node(ready: str, *taints: str) -> dict[str, object]:
        return {
            "spec": {"taints": [{"key": t, "effect": "NoSchedule"} for t in taints]},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }

    assert nodes_schedulable({"items": [node("True"), node("True")]})
    assert not nodes_schedulable({"items": [node("True"), node("Unknown")]})
    assert not nodes_schedulable({"items": [node("True", "node.kubernetes.io/unreachable")]})
    assert nodes_schedulable({"items": [node("True", "example.com/gpu")]})
    assert not nodes_schedulable({"items": []})
