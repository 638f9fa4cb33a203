"""What the regions adapter makes of what it reads: a remote rollout's status (written by any
tidegate version), and the kubeconfig in a reader Secret."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tidegate import api
from tidegate.adapters.regions import (
    SecretProblem,
    Source,
    kubeconfig_from_secret,
    remote_rollout,
    source_of,
)
from tidegate.revisions import ReleaseUnknown, release_of

SOURCE = Source("shop", "a-reader", "kubeconfig", "shop", "shop")


def test_a_remote_status_is_read_leniently() -> None:
    status = {
        "phase": "Succeeded",
        "stableRelease": "template:abc",
        "stableSince": "2026-11-26T10:00:00Z",
        "rejectedRelease": "template:def",
        "somethingNewer": {"x": 1},
    }
    read = remote_rollout({"status": status})
    assert read.phase == "Succeeded" and read.stable_release == "template:abc"
    assert read.canary_release is None
    assert read.rejected_release == "template:def"
    assert read.stable_since == datetime(2026, 11, 26, 10, tzinfo=UTC)
    odd = remote_rollout({"status": {"phase": 3, "stableSince": "yesterday"}})
    assert (odd.phase, odd.stable_since) == (None, None)
    assert remote_rollout({}).phase is None
    assert remote_rollout({}).rejected_release is None  # written by a tidegate before undo
    assert not read.followed and not remote_rollout({}).followed
    degraded = {"type": "Degraded", "status": "True", "reason": "RevertedWithUpstream"}
    followed = remote_rollout({"status": {"phase": "Failed", "conditions": [degraded]}})
    assert followed.followed
    over = remote_rollout({"status": {"conditions": [{**degraded, "status": "False"}, 3]}})
    assert not over.followed


def test_the_source_defaults_to_this_namespace() -> None:
    region = api.WaveRegion.model_validate(
        {"cluster": "a", "kubeconfigSecretRef": {"name": "a-reader"}, "rollout": "shop"}
    )
    assert source_of("shop", region) == SOURCE
    elsewhere = region.model_copy(update={"namespace": "store"})
    assert source_of("shop", elsewhere).remote_namespace == "store"


def test_a_secret_without_a_kubeconfig_says_what_is_wrong() -> None:
    with pytest.raises(SecretProblem, match="does not exist"):
        kubeconfig_from_secret(None, SOURCE)
    with pytest.raises(SecretProblem, match="has no key 'kubeconfig'"):
        kubeconfig_from_secret({"config": "x"}, SOURCE)
    with pytest.raises(SecretProblem, match="is not a kubeconfig"):
        kubeconfig_from_secret({"kubeconfig": "just text"}, SOURCE)
    with pytest.raises(SecretProblem, match="key 'kubeconfig': the kubeconfig has no contexts"):
        kubeconfig_from_secret({"kubeconfig": "apiVersion: v1\nclusters: []"}, SOURCE)


def deployment(annotations: dict[str, str] | None = None) -> dict[str, object]:
    template = {
        "metadata": {"annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "shop:2"}, {"name": "s", "image": "x:1"}]},
    }
    return {
        "metadata": {"annotations": {"example.com/r": "from-deployment"}},
        "spec": {"template": template},
    }


def test_releases_by_mode() -> None:
    assert release_of("template", deployment()).startswith("template:")
    assert release_of("template", deployment()) != release_of("template", deployment({"a": "b"}))
    assert release_of("images", deployment()) == "images:app=shop:2,s=x:1"
    assert release_of("images", deployment({"a": "b"})) == release_of("images", deployment())
    # The pod template's annotation first, then the Deployment's.
    assert release_of("annotation:example.com/r", deployment({"example.com/r": "r7"})) == (
        "annotation:example.com/r=r7"
    )
    assert release_of("annotation:example.com/r", deployment()) == (
        "annotation:example.com/r=from-deployment"
    )
    with pytest.raises(ReleaseUnknown, match=r"example\.com/other"):
        release_of("annotation:example.com/other", deployment())
