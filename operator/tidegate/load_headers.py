"""The headers a load job carries: load.headers, and those of the Secret that
load.headersSecretRef names (credentials, kept out of the rollout that every reader of it
sees). `job_headers` is pure; `with_secret_headers` reads the Secret through the port.

What goes wrong is said by key and limit, never by value: a value is a secret.
"""

from __future__ import annotations

from collections.abc import Mapping

from tidegate import api
from tidegate.ports import AdapterError, LoadError, Secrets

MAX_VALUE_LENGTH = 4096  # as load.headers' values


def job_headers(load: api.Load, secret: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """load.headers with the Secret's keys added (`where` names the Secret for messages;
    `secret` is None when it does not exist). Raises LoadError."""
    headers = dict(load.headers)
    if load.headers_secret_ref is None:
        return headers
    if secret is None:
        raise LoadError(
            f"spec.analysis.load.headersSecretRef: {where} does not exist",
            reason="LoadHeadersSecretNotFound",
        )
    for name, value in sorted(secret.items()):
        problem = None
        if not api.valid_header_name(name):
            problem = "is not a header name"
        elif name.lower() in {h.lower() for h in headers}:
            problem = "is also in load.headers"
        elif len(value) > MAX_VALUE_LENGTH:
            problem = f"has a value longer than {MAX_VALUE_LENGTH} characters"
        elif any(c in value for c in "\r\n\0"):
            problem = "has a value with a line break or NUL"
        if problem:
            raise LoadError(
                f"spec.analysis.load.headersSecretRef: key {name!r} of {where} {problem}",
                reason="InvalidSpec",
            )
        headers[name] = value
    if len(headers) > api.MAX_LOAD_HEADERS:
        raise LoadError(
            f"spec.analysis.load: {len(headers)} headers with those of {where}, more than "
            f"{api.MAX_LOAD_HEADERS}",
            reason="InvalidSpec",
        )
    return headers


async def with_secret_headers(load: api.Load, secrets: Secrets, namespace: str) -> api.Load:
    """`load` as the job is sent: with the Secret's headers, when it names one. Raises
    LoadError (a refused read is said by its reason: nothing the API server said is
    repeated)."""
    ref = load.headers_secret_ref
    if ref is None:
        return load
    where = f"Secret {namespace}/{ref.name}"
    try:
        secret = await secrets.read(namespace, ref.name)
    except AdapterError as error:
        raise LoadError(
            f"spec.analysis.load.headersSecretRef: {where} cannot be read ({error.reason})",
            reason="LoadHeadersSecretUnreadable",
        ) from None
    return load.model_copy(update={"headers": job_headers(load, secret, where)})
