"""deploy/loadtester: what `kubectl apply -k` installs is the loadtester the CLI knows."""

from __future__ import annotations

from test_deploy import DEPLOY, kustomize_objects, one

from tidegate.cli import build_parser

LOADTESTER = DEPLOY / "loadtester"


def test_the_manifests_are_a_deployment_a_service_and_an_account_with_no_rights() -> None:
    objects = kustomize_objects(LOADTESTER)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"]
    assert {o["metadata"]["namespace"] for o in objects} == {"tidegate-system"}
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False


def test_the_container_runs_the_loadtester_command_within_bounds() -> None:
    objects = kustomize_objects(LOADTESTER)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "loadtester" and args.connect_to is None
    assert 0 < args.max_rate <= 1000 and args.max_duration > 0
    assert container["ports"] == [{"name": "http", "containerPort": args.listen[1]}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_the_service_is_the_address_the_docs_give_the_operator() -> None:
    objects = kustomize_objects(LOADTESTER)
    service = one(objects, "Service")
    deployment = one(objects, "Deployment")
    assert service["metadata"]["name"] == "tidegate-loadtester"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
