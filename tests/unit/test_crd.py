from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidegate.api import MetricTemplateKind
from tidegate.crd import CRD_FILES, CRD_NAME, render_crd, render_crds, template_crd_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED_CRD = REPO_ROOT / "crds" / "progressiverollout.yaml"


def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(render_crd())
    assert isinstance(loaded, dict)
    return loaded


def version() -> dict[str, Any]:
    versions = manifest()["spec"]["versions"]
    assert len(versions) == 1
    return dict(versions[0])


def root_schema() -> dict[str, Any]:
    return dict(version()["schema"]["openAPIV3Schema"])


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def at(path: str) -> dict[str, Any]:
    node = root_schema()
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def rules(path: str) -> list[str]:
    return [v["rule"] for v in at(path).get("x-kubernetes-validations", [])]


def test_metadata_and_names() -> None:
    crd = manifest()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == CRD_NAME == "progressiverollouts.tidegate.io"
    spec = crd["spec"]
    assert spec["group"] == "tidegate.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ProgressiveRollout"
    assert spec["names"]["plural"] == "progressiverollouts"
    assert spec["names"]["shortNames"] == ["pro", "prollout"]
    v = version()
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}


def test_schema_is_structural() -> None:
    for path, node in walk(root_schema()):
        assert (
            "type" in node
            or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ), f"{path or '<root>'} has no type"
        for forbidden in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "title"):
            assert forbidden not in node, f"{path} uses {forbidden}"
        assert node.get("type") != "null", path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for required in node.get("required", []):
            assert required in node["properties"], f"{path} requires unknown {required}"
        if "default" in node:
            assert not isinstance(node["default"], dict | list), f"{path} has an object default"


def test_every_string_and_list_is_bounded() -> None:
    for path, node in walk(root_schema()["properties"]["spec"], ".spec"):
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path} needs maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} needs maxItems"
    for path, node in walk(root_schema()["properties"]["status"], ".status"):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} needs maxItems"


def test_enums_patterns_and_defaults() -> None:
    assert at("status.phase")["enum"] == [
        "Initializing",
        "Initialized",
        "Progressing",
        "Paused",
        "Promoting",
        "Succeeded",
        "Failed",
        "Aborted",
        "Cancelled",
        "WaitingForWave",
    ]
    assert at("status.metrics.[].phase")["enum"] == ["Passed", "Failed", "NoData", "Error"]
    assert at("spec.targetRef.kind")["enum"] == ["Deployment"]
    assert "pattern" in at("spec.analysis.interval")
    assert "pattern" in at("spec.strategy.canary.steps.[].pause.duration")
    assert at("spec.analysis.interval")["default"] == "1m"
    assert at("spec.analysis.failureLimit")["default"] == 2
    assert at("spec.progressDeadlineSeconds")["default"] == 600
    assert at("spec.strategy.canary.steps")["maxItems"] == 64
    assert at("spec.analysis.metrics")["maxItems"] == 32
    assert at("status.canaryWeight")["maximum"] == 100
    assert at("status.rolloutStartedAt")["format"] == "date-time"
    assert set(root_schema()["required"]) == {"spec"}
    assert "status" not in root_schema()["required"]


def test_printer_columns() -> None:
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version()["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ("string", ".status.phase"),
        "Weight": ("integer", ".status.canaryWeight"),
        "Step": ("integer", ".status.currentStepIndex"),
        "Stable": ("string", ".status.stableRevision"),
        "Canary": ("string", ".status.canaryRevision"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_cel_rules_are_present_with_messages() -> None:
    step_rules = rules("spec.strategy.canary.steps.[]")
    assert any("has(self.setWeight)" in r and "has(self.analysis)" in r for r in step_rules)
    canary_rules = rules("spec.strategy.canary")
    assert any("isSorted()" in r for r in canary_rules)
    assert any("self.stepWeight <= self.maxWeight" in r for r in canary_rules)
    assert any("has(self.steps) && (has(self.stepWeight)" in r for r in canary_rules)
    metric_rules = rules("spec.analysis.metrics.[]")
    assert "has(self.query) != has(self.templateRef)" in metric_rules
    assert "has(self.templateRef) || has(self.thresholdRange)" in metric_rules
    assert "has(self.templateRef) || !has(self.args)" in metric_rules
    metric = at("spec.analysis.metrics.[]")
    assert metric["required"] == ["name"]
    assert {"query", "templateRef", "args", "thresholdRange"} <= set(metric["properties"])
    assert at("spec.analysis.metrics.[].templateRef.kind")["enum"] == [
        "MetricTemplate",
        "ClusterMetricTemplate",
    ]
    assert at("spec.analysis.metrics.[].templateRef.kind")["default"] == "MetricTemplate"
    assert at("spec.analysis.metrics.[].args.[]")["required"] == ["name", "value"]
    range_rules = rules("spec.analysis.metrics.[].thresholdRange")
    assert "has(self.min) || has(self.max)" in range_rules
    assert any("self.min <= self.max" in r for r in range_rules)
    for _, node in walk(root_schema()):
        for validation in node.get("x-kubernetes-validations", []):
            assert validation["message"].strip()
            assert validation["rule"].count("(") == validation["rule"].count(")")


def test_cel_rules_only_name_fields_that_exist() -> None:
    canary = at("spec.strategy.canary")
    for rule in rules("spec.strategy.canary"):
        for name in ("steps", "stepWeight", "maxWeight"):
            if f"self.{name}" in rule:
                assert name in canary["properties"]
    step = at("spec.strategy.canary.steps.[]")
    assert {"setWeight", "pause", "analysis"} <= set(step["properties"])


def test_list_maps_have_required_keys() -> None:
    for path, node in walk(root_schema()):
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"].get("required", []), f"{path} key {key}"


def test_committed_crd_matches_the_models() -> None:
    committed = COMMITTED_CRD.read_text(encoding="utf-8") if COMMITTED_CRD.exists() else ""
    assert committed == render_crd(), (
        "crds/progressiverollout.yaml is out of date with operator/tidegate/api.py; "
        "regenerate it with: tidegate crds > crds/progressiverollout.yaml"
    )


# --- the metric template CRDs ----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MetricTemplateKind))
def test_template_crds_names_scope_and_schema(kind: MetricTemplateKind) -> None:
    crd = template_crd_manifest(kind)
    plural = kind.value.lower() + "s"
    assert crd["metadata"]["name"] == f"{plural}.tidegate.io"
    spec = crd["spec"]
    assert spec["names"]["kind"] == kind.value
    assert spec["names"]["plural"] == plural
    assert spec["scope"] == ("Cluster" if kind is MetricTemplateKind.CLUSTER else "Namespaced")
    (version_,) = spec["versions"]
    assert (version_["name"], version_["served"], version_["storage"]) == ("v1alpha1", True, True)
    assert "subresources" not in version_  # nothing writes a template's status
    schema = version_["schema"]["openAPIV3Schema"]
    template = schema["properties"]["spec"]
    assert template["required"] == ["query"]
    assert set(template["properties"]) == {"query", "args", "thresholdRange"}
    assert template["properties"]["args"]["items"]["required"] == ["name"]
    assert "{{ args.NAME }}" in template["properties"]["query"]["description"]
    for path, node in walk(schema):
        assert "type" in node, path
        for forbidden in ("$ref", "$defs", "anyOf", "const", "title"):
            assert forbidden not in node, f"{path} uses {forbidden}"
        if node.get("type") == "string" and "enum" not in node and path.startswith(".spec"):
            assert "maxLength" in node, f"{path} needs maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} needs maxItems"
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"].get("required", []), f"{path} key {key}"


def test_every_crd_has_its_file_and_the_committed_files_match_the_models() -> None:
    rendered = render_crds()
    assert (
        set(rendered)
        == set(CRD_FILES.values())
        == {
            "progressiverollout.yaml",
            "metrictemplate.yaml",
            "clustermetrictemplate.yaml",
        }
    )
    assert rendered["progressiverollout.yaml"] == render_crd()
    on_disk = {p.name for p in (REPO_ROOT / "crds").glob("*.yaml")}
    assert on_disk == set(rendered), "crds/ holds a file no model renders, or misses one"
    for name, text in rendered.items():
        committed = (REPO_ROOT / "crds" / name).read_text(encoding="utf-8")
        assert committed == text, f"crds/{name} is out of date; regenerate it with `make crds`"
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_exclusive_bounds_are_written_as_openapi_v3_0_wants_them() -> None:
    """A bound and a boolean beside it: the API server refuses JSON Schema's numeric form."""
    bounded = {path: node for path, node in walk(root_schema()) if "exclusiveMinimum" in node}
    assert ".spec.analysis.slo.objective" in bounded
    for node in bounded.values():
        assert node["exclusiveMinimum"] is True and "minimum" in node
    objective = at("spec.analysis.slo.objective")
    assert (objective["minimum"], objective["maximum"], objective["exclusiveMaximum"]) == (
        0,
        1,
        True,
    )


@pytest.mark.parametrize(
    "path", ["spec.analysis.metrics.[].dryRun", "spec.waves.revertOnUpstreamRollback"]
)
def test_fields_newer_than_a_running_operator_get_no_default(path: str) -> None:
    """A default is written into every stored rollout; an operator from before the field,
    still running while an upgrade applies the CRDs first, would refuse them all."""
    assert "default" not in at(path)
