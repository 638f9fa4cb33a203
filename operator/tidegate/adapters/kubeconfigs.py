"""A kubeconfig that a tenant wrote into a Secret, reduced to data before any client sees it.

The kubernetes client trusts a kubeconfig as its own user's: an `exec` user or an
`auth-provider` with a `cmd-path` runs a command, `tokenFile` and the path keys
(`certificate-authority`, `client-certificate`, `client-key`) read a file of whoever loads
it (in the operator's pod, its own ServiceAccount token), `proxy-url` sends the requests
elsewhere and `insecure-skip-tls-verify` stops checking who answers. In a shared cluster the
author of a rollout is not the operator's user, so only what is plain data is kept: where the
API server is (`server`, `tls-server-name`), how to know it (`certificate-authority-data`),
and one credential (`token`, or `client-certificate-data` with `client-key-data`). Anything
else is refused, by key; a refusal never quotes a value, since the Secret holds credentials.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

CLUSTER_KEYS = frozenset({"server", "certificate-authority-data", "tls-server-name"})
USER_KEYS = frozenset({"token", "client-certificate-data", "client-key-data"})
# Metadata that kubectl and cloud tools write and that configures nothing: dropped.
IGNORED_KEYS = frozenset({"extensions"})
# Why the keys a reader is most likely to meet are refused, for the message.
REFUSED_BECAUSE = {
    "exec": "runs a command",
    "auth-provider": "may run a command",
    "tokenFile": "reads a file of the operator's",
    "certificate-authority": "reads a file of the operator's",
    "client-certificate": "reads a file of the operator's",
    "client-key": "reads a file of the operator's",
    "proxy-url": "sends requests elsewhere",
    "insecure-skip-tls-verify": "turns off server verification",
    "username": "basic authentication is not accepted",
    "password": "basic authentication is not accepted",
}
# The names the reduced kubeconfig gives its one cluster, user and context.
NAME = "region"


class KubeconfigRefused(ValueError):
    """The kubeconfig is not one tidegate reads; the message names keys, never values."""


def parse_kubeconfig(text: str) -> Mapping[str, Any]:
    """The document in `text`; a YAML error says where, not what (the text is secret)."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise KubeconfigRefused(f"is not YAML (an error{where})") from None
    except (ValueError, yaml.YAMLError):
        raise KubeconfigRefused("is not YAML") from None
    if not isinstance(loaded, Mapping):
        raise KubeconfigRefused("is not a kubeconfig (not a mapping)")
    return loaded


def reduce_kubeconfig(kubeconfig: Mapping[str, Any]) -> dict[str, Any]:
    """The kubeconfig's current context as a new kubeconfig of data only (see the module);
    KubeconfigRefused if it holds anything else."""
    context = _entry(kubeconfig, "contexts", _context_name(kubeconfig), "context")
    cluster = _entry(kubeconfig, "clusters", _reference(context, "cluster"), "cluster")
    user = _entry(kubeconfig, "users", _reference(context, "user"), "user")
    reduced_cluster = _only(cluster, CLUSTER_KEYS, "cluster")
    reduced_user = _only(user, USER_KEYS, "user")
    _check_server(reduced_cluster.get("server"))
    _check_base64(reduced_cluster, "certificate-authority-data")
    _check_credential(reduced_user)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": NAME,
        "clusters": [{"name": NAME, "cluster": reduced_cluster}],
        "users": [{"name": NAME, "user": reduced_user}],
        "contexts": [{"name": NAME, "context": {"cluster": NAME, "user": NAME}}],
    }


def _context_name(kubeconfig: Mapping[str, Any]) -> str | None:
    current = kubeconfig.get("current-context")
    if current is None or current == "":
        return None  # the only context, if there is one
    if not isinstance(current, str):
        raise KubeconfigRefused("current-context is not a string")
    return current


def _reference(context: Mapping[str, Any], key: str) -> str:
    value = context.get(key)
    if not isinstance(value, str) or not value:
        raise KubeconfigRefused(f"its context names no {key}")
    return value


def _entry(
    kubeconfig: Mapping[str, Any], section: str, name: str | None, field: str
) -> Mapping[str, Any]:
    """The `field` mapping of the entry of `section` called `name` (or of its only entry)."""
    entries = kubeconfig.get(section)
    if not isinstance(entries, list):
        raise KubeconfigRefused(f"has no {section}")
    named = [e for e in entries if isinstance(e, Mapping)]
    if name is None:
        if len(named) != 1:
            raise KubeconfigRefused(f"has no current-context and {len(named)} {section}")
        chosen = named[0]
    else:
        matching = [e for e in named if e.get("name") == name]
        if not matching:
            raise KubeconfigRefused(f"has no entry in {section} by the name its context gives")
        chosen = matching[0]
    body = chosen.get(field)
    if not isinstance(body, Mapping):
        raise KubeconfigRefused(f"its {field} entry is empty")
    return body


def _only(entry: Mapping[str, Any], allowed: frozenset[str], what: str) -> dict[str, str]:
    refused = sorted(str(key) for key in entry if key not in allowed and key not in IGNORED_KEYS)
    if refused:
        reasons = ", ".join(
            f"{key} ({REFUSED_BECAUSE[key]})" if key in REFUSED_BECAUSE else key for key in refused
        )
        raise KubeconfigRefused(
            f"its {what} has keys tidegate does not accept: {reasons}; a region's kubeconfig "
            f"may hold only {', '.join(sorted(allowed))}"
        )
    kept: dict[str, str] = {}
    for key in allowed & entry.keys():
        value = entry[key]
        if not isinstance(value, str):
            raise KubeconfigRefused(f"its {what}'s {key} is not a string")
        kept[key] = value
    return kept


def _check_server(server: str | None) -> None:
    if not server:
        raise KubeconfigRefused("its cluster has no server")
    try:
        parts = urlsplit(server)
        host = parts.hostname
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise KubeconfigRefused("its cluster's server is not a URL") from None
    if parts.scheme != "https" or not host:
        raise KubeconfigRefused("its cluster's server must be an https:// URL")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise KubeconfigRefused(
            "its cluster's server must be a plain https://host[:port][/path] URL"
        )


def _check_base64(entry: Mapping[str, str], key: str) -> None:
    if key not in entry:
        return
    try:
        base64.b64decode(entry[key], validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigRefused(f"its {key} is not base64") from None


def _check_credential(user: Mapping[str, str]) -> None:
    has_token = bool(user.get("token"))
    certificate = {"client-certificate-data", "client-key-data"} & user.keys()
    if has_token == bool(certificate):
        raise KubeconfigRefused(
            "its user must hold one credential: a token, or client-certificate-data with "
            "client-key-data"
        )
    if certificate and len(certificate) != 2:
        raise KubeconfigRefused("its user has only one of client-certificate-data and -key-data")
    if has_token and any(c in user["token"] for c in "\r\n"):
        raise KubeconfigRefused("its token spans lines")
    for key in sorted(certificate):
        _check_base64(user, key)
