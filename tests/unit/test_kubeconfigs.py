"""A region's kubeconfig is reduced to data: what could run a command, read the operator's
files or weaken TLS is refused by key, and no refusal quotes the Secret."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import config

from tidegate.adapters.kubeconfigs import (
    KubeconfigRefused,
    parse_kubeconfig,
    reduce_kubeconfig,
)
from tidegate.adapters.regions import KubeRegions, SecretProblem, Source

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot checked here\n").decode()
TOKEN = "s3cret-token-value"


def kubeconfig(
    cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "east",
                "cluster": cluster
                if cluster is not None
                else {"server": "https://east.example:6443", "certificate-authority-data": CA},
            }
        ],
        "users": [{"name": "reader", "user": user if user is not None else {"token": TOKEN}}],
        "contexts": [{"name": "east", "context": {"cluster": "east", "user": "reader"}}],
        "current-context": "east",
        **top,
    }


def test_server_ca_and_token_are_kept_under_names_of_tidegates_own() -> None:
    source = kubeconfig(preferences={}, cluster={
        "server": "https://east.example:6443",
        "certificate-authority-data": CA,
        "tls-server-name": "api.east",
        "extensions": [{"name": "cloud", "extension": {"x": 1}}],
    })  # fmt: skip
    reduced = reduce_kubeconfig(source)
    assert reduced["clusters"] == [
        {
            "name": "region",
            "cluster": {
                "server": "https://east.example:6443",
                "certificate-authority-data": CA,
                "tls-server-name": "api.east",
            },
        }
    ]
    assert reduced["users"] == [{"name": "region", "user": {"token": TOKEN}}]
    assert reduced["current-context"] == "region"
    assert "preferences" not in reduced


def test_the_reduced_kubeconfig_makes_a_client_with_the_token() -> None:
    api_client = config.new_client_from_config_dict(reduce_kubeconfig(kubeconfig()))  # type: ignore[no-untyped-call]
    try:
        assert api_client.configuration.host == "https://east.example:6443"
        assert api_client.configuration.api_key == {"BearerToken": f"Bearer {TOKEN}"}
        assert api_client.configuration.verify_ssl
    finally:
        api_client.close()


def test_a_client_certificate_is_a_credential_too() -> None:
    cert = base64.b64encode(b"cert").decode()
    key = base64.b64encode(b"key").decode()
    user = {"client-certificate-data": cert, "client-key-data": key}
    assert reduce_kubeconfig(kubeconfig(user=user))["users"][0]["user"] == user
    with pytest.raises(KubeconfigRefused, match="only one of"):
        reduce_kubeconfig(kubeconfig(user={"client-certificate-data": cert}))
    with pytest.raises(KubeconfigRefused, match="one credential"):
        reduce_kubeconfig(kubeconfig(user={**user, "token": TOKEN}))
    with pytest.raises(KubeconfigRefused, match="one credential"):
        reduce_kubeconfig(kubeconfig(user={}))


EXEC = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "touch"}}
AUTH_PROVIDER = {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}}
TOKEN_FILE = {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}


@pytest.mark.parametrize(
    ("part", "entry", "refusal"),
    [
        ("user", EXEC, "exec (runs a command)"),
        ("user", AUTH_PROVIDER, "auth-provider (may run a command)"),
        ("user", TOKEN_FILE, "tokenFile (reads a file of the operator's)"),
        ("user", {"client-certificate": "/etc/x", "client-key": "/etc/y"}, "client-certificate"),
        ("user", {"username": "admin", "password": "pw"}, "basic authentication"),
        ("user", {"as": "system:admin"}, "keys tidegate does not accept: as"),
        ("cluster", {"certificate-authority": "/etc/ca"}, "reads a file of the operator's"),
        ("cluster", {"proxy-url": "http://evil:3128"}, "sends requests elsewhere"),
        ("cluster", {"insecure-skip-tls-verify": True}, "turns off server verification"),
    ],
)
def test_what_could_run_read_or_divert_is_refused_by_key(
    part: str, entry: dict[str, Any], refusal: str
) -> None:
    cluster = {"server": "https://east.example:6443", "certificate-authority-data": CA}
    user: dict[str, Any] = {"token": TOKEN}
    (cluster if part == "cluster" else user).update(entry)
    with pytest.raises(KubeconfigRefused, match="does not accept") as refused:
        reduce_kubeconfig(kubeconfig(cluster=cluster, user=user))
    assert refusal in str(refused.value)
    _quotes_nothing(str(refused.value), entry)


@pytest.mark.parametrize(
    "server",
    [None, "", "http://east.example", "east.example:6443", "https://", "https://u:p@east",
     "https://east?x=1", "https://east:port", "file:///etc/passwd"],
)  # fmt: skip
def test_the_server_must_be_a_plain_https_url(server: str | None) -> None:
    cluster = {"certificate-authority-data": CA} | ({"server": server} if server else {})
    with pytest.raises(KubeconfigRefused, match="server"):
        reduce_kubeconfig(kubeconfig(cluster=cluster))


def test_the_context_is_the_current_one_or_the_only_one() -> None:
    two = kubeconfig()
    two["clusters"].append({"name": "west", "cluster": {"server": "https://west.example"}})
    two["contexts"].append({"name": "west", "context": {"cluster": "west", "user": "reader"}})
    two["current-context"] = "west"
    assert reduce_kubeconfig(two)["clusters"][0]["cluster"] == {"server": "https://west.example"}
    del two["current-context"]
    with pytest.raises(KubeconfigRefused, match="no current-context and 2 contexts"):
        reduce_kubeconfig(two)
    single = kubeconfig()
    del single["current-context"]
    assert reduce_kubeconfig(single)["clusters"][0]["cluster"]["server"].startswith("https://east")
    missing = kubeconfig()
    missing["contexts"][0]["context"]["user"] = "nobody"
    with pytest.raises(KubeconfigRefused, match="no entry in users"):
        reduce_kubeconfig(missing)


def test_a_yaml_error_says_where_and_never_what() -> None:
    with pytest.raises(KubeconfigRefused) as refused:
        parse_kubeconfig(f"users:\n- user: {{token: {TOKEN}\n  ]: [")
    assert "line" in str(refused.value) and TOKEN not in str(refused.value)
    with pytest.raises(KubeconfigRefused, match="not a mapping"):
        parse_kubeconfig(TOKEN)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=30,
))  # fmt: skip
def test_anything_at_all_is_reduced_or_refused(document: Any) -> None:
    """Whatever a Secret holds, the answer is a kubeconfig of data or a refusal."""
    for candidate in (document, kubeconfig(user=document), kubeconfig(cluster=document)):
        try:
            reduced = reduce_kubeconfig(candidate) if isinstance(candidate, dict) else None
        except KubeconfigRefused:
            continue
        if reduced is not None:
            assert set(reduced["users"][0]["user"]) <= {"token", "client-certificate-data",
                                                         "client-key-data"}  # fmt: skip


def test_an_exec_kubeconfig_runs_nothing_in_the_regions_adapter(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "touch",
            "args": [str(marker)],
            "interactiveMode": "Never",
        }
    }
    secret = {"kubeconfig": yaml.safe_dump(kubeconfig(user=user))}

    async def read_secret(namespace: str, name: str) -> dict[str, str]:
        return secret

    source = Source("shop", "a-reader", "kubeconfig", "shop", "shop")
    with pytest.raises(SecretProblem, match="exec"):
        KubeRegions(read_secret)._client_for(source, secret)
    assert not marker.exists()


def _quotes_nothing(message: str, entry: dict[str, Any]) -> None:
    for value in _leaves(entry):
        if isinstance(value, str) and len(value) > 3:
            assert value not in message, (value, message)
    assert TOKEN not in message and CA not in message


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]
