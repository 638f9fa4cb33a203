"""Plans: what a strategy makes of a spec, and what the engine runs.

A plan is a list of steps. Each step names the traffic the routes must hold while it runs,
how many pods the new version needs, and what completes it (analysis, a hold, a promotion
request, or nothing). The engine runs any plan the same way; only `tidegate.strategies`
knows canary from blue/green.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True, order=True)
class HeaderMatch:
    """A request header that must match: exactly, or as a regular expression."""

    name: str
    value: str
    regex: bool = False


@dataclass(frozen=True)
class Traffic:
    """What the routes hold.

    `canary_weight` is the live split; `header_route` sends every request matching all of
    its headers to the new version; `mirror_percent` copies that share of requests to the new
    version (responses still come from the current one); `preview` points the preview route
    at the new version.
    """

    canary_weight: int = 0
    header_route: tuple[HeaderMatch, ...] = ()
    mirror_percent: int = 0
    preview: bool = False

    def describe(self) -> str:
        parts = [f"weight {self.canary_weight}"]
        if self.header_route:
            matches = ", ".join(
                f"{m.name}{'~' if m.regex else '='}{m.value}" for m in self.header_route
            )
            parts.append(f"header route {matches}")
        if self.mirror_percent:
            parts.append(f"mirror {self.mirror_percent}%")
        if self.preview:
            parts.append("preview")
        return ", ".join(parts)


# All live traffic on the current version, no extra routes: where every rollout ends.
STABLE_ONLY = Traffic()


@dataclass(frozen=True)
class Analyse:
    """Complete after `passes` passing measurements (a failure counts toward the limit)."""

    passes: int


@dataclass(frozen=True)
class Hold:
    """Complete once `duration` has passed since the step started."""

    duration: timedelta
    reason: str  # what the status says while holding, e.g. "Pausing"


@dataclass(frozen=True)
class AwaitPromotion:
    """Complete when promoted by hand, or after `timeout` when one is given."""

    timeout: timedelta | None = None


Wait = Analyse | Hold | AwaitPromotion


@dataclass(frozen=True)
class PlanStep:
    name: str  # shown in the status: "setWeight 30", "Preview", "Switched"
    traffic: Traffic
    # Pods the new version runs during this step; None: as many as the target asks.
    canary_replicas: int | None = None
    wait: Wait | None = None  # None: complete as soon as it holds its traffic


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlanStep, ...]
    # What the routes must be able to do for this plan, each with the spec field that asks
    # for it (for the error message): "weights" (a split), "switch" (0% or 100% only),
    # "header", "mirror", "preview".
    needs: dict[str, str] = field(default_factory=dict)
