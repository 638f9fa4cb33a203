"""The plugin's calls to the API server, with the user's kubeconfig (its current context)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from tidegate import __version__
from tidegate.api import GROUP, KIND, PLURAL, VERSION

Obj = dict[str, Any]


class PluginError(Exception):
    """Said to the user in one line; the command exits non-zero."""


def _explain(error: ApiException, what: str) -> PluginError:
    if error.status == 404:
        return PluginError(f"{what} not found")
    if error.status == 403:
        return PluginError(f"forbidden: {what}: {_reason(error)}")
    if error.status == 401:
        return PluginError("not logged in to the cluster (401 Unauthorized)")
    return PluginError(f"{what}: {error.status} {_reason(error)}")


def _reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


class Cluster:
    def __init__(self, namespace: str | None) -> None:
        try:
            kubeconfig = os.environ.get("KUBECONFIG")
            self.api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            _, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError) as error:
            raise PluginError(f"no usable kubeconfig: {error}") from None
        self.api.user_agent = f"kubectl-tidegate/{__version__}"
        self.context_user = str((current or {}).get("context", {}).get("user", ""))
        self.namespace = (
            namespace or (current or {}).get("context", {}).get("namespace") or "default"
        )
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, what: str, run: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except ApiException as error:
            raise _explain(error, what) from None
        except (HTTPError, OSError) as error:
            raise PluginError(f"cannot reach the API server: {error}") from None

    def rollout(self, name: str) -> Obj:
        what = f'progressiverollout "{name}" in namespace "{self.namespace}"'
        found: Obj = self._call(
            what,
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
        )
        return found

    def rollouts(self, all_namespaces: bool) -> list[Obj]:
        if all_namespaces:
            listed = self._call(
                "progressiverollouts",
                self.custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
            )
        else:
            listed = self._call(
                f'progressiverollouts in namespace "{self.namespace}"',
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
            )
        items: list[Obj] = listed.get("items", [])
        return sorted(items, key=lambda r: (r["metadata"]["namespace"], r["metadata"]["name"]))

    def watch_rollouts(
        self, name: str | None, all_namespaces: bool, *, deadline: float | None = None
    ) -> Iterator[Obj]:
        """Each rollout as it is now, then as it changes, until interrupted or until
        `deadline` (time.monotonic())."""
        while deadline is None or time.monotonic() < deadline:
            if all_namespaces:
                listed = self._call(
                    "watch", self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
                )
            else:
                listed = self._call(
                    "watch",
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    **({"field_selector": f"metadata.name={name}"} if name else {}),
                )
            yield from listed.get("items", [])
            if name and not listed.get("items"):
                raise PluginError(
                    f'progressiverollout "{name}" in namespace "{self.namespace}" not found'
                )
            version = listed["metadata"]["resourceVersion"]
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            kwargs: dict[str, Any] = {"resource_version": version, "allow_watch_bookmarks": False}
            if name:
                kwargs["field_selector"] = f"metadata.name={name}"
            if deadline is not None:
                kwargs["timeout_seconds"] = max(1, int(deadline - time.monotonic()) + 1)
            try:
                if all_namespaces:
                    events = stream.stream(  # type: ignore[no-untyped-call]
                        self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs
                    )
                else:
                    events = stream.stream(  # type: ignore[no-untyped-call]
                        self.custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        **kwargs,
                    )
                for event in events:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        yield event["object"]
                    elif event["type"] == "DELETED" and name:
                        raise PluginError(f'progressiverollout "{name}" was deleted')
            except ApiException as error:
                if error.status != 410:  # 410: too old a version; list again
                    raise _explain(error, "watch") from None
            except (HTTPError, OSError) as error:
                raise PluginError(f"cannot reach the API server: {error}") from None

    def events(self, rollout: Obj) -> list[Obj]:
        meta = rollout["metadata"]
        events = client.EventsV1Api(self.api)
        listed = self._call(
            "events",
            events.list_namespaced_event,
            meta["namespace"],
            field_selector=f"regarding.name={meta['name']},regarding.kind={KIND}",
        )
        items = [self.api.sanitize_for_serialization(e) for e in listed.items]
        return sorted(
            items, key=lambda e: e.get("eventTime") or e.get("deprecatedLastTimestamp") or ""
        )

    def images(self, namespace: str, deployment: str) -> list[str]:
        apps = client.AppsV1Api(self.api)
        try:
            found = apps.read_namespaced_deployment(deployment, namespace)
        except ApiException as error:
            if error.status in (403, 404):
                return []
            raise _explain(error, f"deployment {deployment}") from None
        template: Obj = self.api.sanitize_for_serialization(found.spec.template)
        return [str(c.get("image", "")) for c in template.get("spec", {}).get("containers", [])]

    def deployment_template(self, namespace: str, name: str) -> Obj:
        apps = client.AppsV1Api(self.api)
        found = self._call(f'deployment "{name}"', apps.read_namespaced_deployment, name, namespace)
        template: Obj = self.api.sanitize_for_serialization(found.spec.template)
        return template

    def who_am_i(self) -> str:
        """The user the API server sees (a SelfSubjectReview), else the kubeconfig's."""
        try:
            review = client.AuthenticationV1Api(self.api).create_self_subject_review(
                client.V1SelfSubjectReview()
            )
            found: Obj = self.api.sanitize_for_serialization(review)
            return str(found["status"]["userInfo"]["username"])
        except (ApiException, HTTPError, OSError, KeyError, TypeError):
            return self.context_user or "someone"

    def annotate(self, name: str, key: str, value: str) -> None:
        body = {"metadata": {"annotations": {key: value}}}
        self._patch(name, body)

    def set_paused(self, name: str, paused: bool) -> None:
        self._patch(name, {"spec": {"paused": paused}})

    def _patch(self, name: str, body: Obj) -> None:
        self._call(
            f'progressiverollout "{name}" in namespace "{self.namespace}"',
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            body,
        )
