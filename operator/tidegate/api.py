"""Pydantic models of the ProgressiveRollout custom resource (tidegate.io/v1alpha1).

Python attributes are snake_case; the wire form is camelCase:
`model.model_dump(mode="json", by_alias=True, exclude_none=True)`.

Cross-field checks live twice: as pydantic validators (the operator rejects bad specs with a
readable message) and as CEL rules in `json_schema_extra` (the API server rejects them on
admission). `tidegate.crd` copies the rules into the CRD, so keep each pair in step.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from tidegate.durations import (
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    MAX_DURATION_TEXT,
    parse_duration,
)

GROUP = "tidegate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ProgressiveRollout"
LIST_KIND = "ProgressiveRolloutList"
PLURAL = "progressiverollouts"
SINGULAR = "progressiverollout"
SHORT_NAMES = ("pro", "prollout")

MAX_STEPS = 64
MAX_METRICS = 32
MAX_WEBHOOKS = 32

# Kubernetes object names: DNS subdomains (253) for most kinds, DNS labels (63) for Services.
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253)]
ServiceName = Annotated[str, StringConstraints(min_length=1, max_length=63)]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=63)]
Weight = Annotated[int, Field(ge=0, le=100)]
Revision = Annotated[str, StringConstraints(max_length=253)]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
LongText = Annotated[str, StringConstraints(max_length=32768)]


def _duration_check(longest: str, *, positive: bool = False) -> Callable[[str], str]:
    """A validator of a Go-style duration: at most `longest`, and above zero if `positive`."""
    most = parse_duration(longest)

    def check(text: str) -> str:
        value = parse_duration(text)
        if value > most:
            raise ValueError(f"duration {text!r} is longer than the maximum, {longest}")
        if positive and value.total_seconds() <= 0:
            raise ValueError("must be greater than zero")
        return text

    return check


def _duration_rule(longest: str, *, positive: bool = False) -> JsonDict:
    """The same check as a CEL rule, for the API server to refuse at apply. The pattern alone
    lets "99999999999h" through; duration() is Go's, which cannot hold it either (an error
    refuses too)."""
    rule = f"duration(self) <= duration('{longest}')"
    message = f"must be a duration of at most {longest}"
    if positive:
        rule = f"duration(self) > duration('0s') && {rule}"
        message = f"must be a duration above zero and of at most {longest}"
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


_DURATION_TEXT = StringConstraints(pattern=DURATION_PATTERN, max_length=DURATION_MAX_LENGTH)
# A webhook is waited for this long at most: one tenant's hung endpoint holds a call, and a
# connection, for no longer than this.
WEBHOOK_TIMEOUT_MAX = "5m"

Duration = Annotated[
    str,
    _DURATION_TEXT,
    AfterValidator(_duration_check(MAX_DURATION_TEXT)),
    Field(json_schema_extra=_duration_rule(MAX_DURATION_TEXT)),
]
PositiveDuration = Annotated[
    str,
    _DURATION_TEXT,
    AfterValidator(_duration_check(MAX_DURATION_TEXT, positive=True)),
    Field(json_schema_extra=_duration_rule(MAX_DURATION_TEXT, positive=True)),
]
WebhookTimeout = Annotated[
    str,
    _DURATION_TEXT,
    AfterValidator(_duration_check(WEBHOOK_TIMEOUT_MAX, positive=True)),
    Field(json_schema_extra=_duration_rule(WEBHOOK_TIMEOUT_MAX, positive=True)),
]


def _cel(rule: str, message: str) -> JsonDict:
    return {"rule": rule, "message": message}


def _list_map(key: str) -> JsonDict:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


class _WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class _SpecModel(_WireModel):
    # The API server prunes unknown fields, so anything extra here is a typo in a test or
    # a hand-written manifest: better to say so.
    model_config = ConfigDict(extra="forbid")


# --- spec -----------------------------------------------------------------------------------


class TargetRef(_SpecModel):
    """The Deployment whose pod template is rolled out."""

    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    name: ObjectName


class AutoscalerRef(_SpecModel):
    """The user's HorizontalPodAutoscaler of the target Deployment: tidegate runs a copy of it
    for each of its own copies of the Deployment."""

    api_version: Literal["autoscaling/v2"] = "autoscaling/v2"
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    name: ObjectName


class ServiceRef(_SpecModel):
    """The Service in front of the workload; tidegate derives the stable and canary Services."""

    name: ServiceName
    port: int = Field(ge=1, le=65535)


class PauseStep(_SpecModel):
    """Wait for `duration`, or without one until promoted by hand."""

    duration: Duration | None = None


class AnalysisStep(_SpecModel):
    """Require this many passing measurements at the current weight."""

    iterations: int = Field(default=1, ge=1, le=1000)


HeaderName = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
]


class StringMatch(_SpecModel):
    """A header value to match: exactly one of `exact` or `regex` (RE2 syntax)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.exact) != has(self.regex)", "set exactly one of exact or regex")
            ]
        }
    )

    exact: Annotated[str, StringConstraints(max_length=4096)] | None = None
    regex: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None

    @model_validator(mode="after")
    def _one(self) -> StringMatch:
        if (self.exact is None) == (self.regex is None):
            raise ValueError("set exactly one of exact or regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as error:
                raise ValueError(f"regex {self.regex!r} does not compile: {error}") from None
        return self


class HeaderRouteMatch(_SpecModel):
    """Requests whose header `headerName` matches `headerValue`. A cookie is matched as a
    regex on the Cookie header."""

    header_name: HeaderName
    header_value: StringMatch


class SetHeaderRoute(_SpecModel):
    """Send every request that matches all of `match` to the canary; without `match`, remove
    the header route."""

    match: list[HeaderRouteMatch] | None = Field(default=None, min_length=1, max_length=16)


class SetMirrorRoute(_SpecModel):
    """Copy `percentage` of the requests to the canary (responses still come from stable
    only); 0 or no percentage removes the mirror."""

    percentage: Weight | None = None


_STEP_KINDS = ("setWeight", "pause", "analysis", "setHeaderRoute", "setMirrorRoute")
_ONE_STEP_KIND_RULE = " + ".join(f"(has(self.{kind}) ? 1 : 0)" for kind in _STEP_KINDS) + " == 1"
_STEP_KINDS_TEXT = ", ".join(_STEP_KINDS[:-1]) + f" or {_STEP_KINDS[-1]}"


class Step(_SpecModel):
    """One canary step: exactly one of setWeight, pause, analysis, setHeaderRoute or
    setMirrorRoute."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(_ONE_STEP_KIND_RULE, f"a step must set exactly one of {_STEP_KINDS_TEXT}")
            ]
        }
    )

    set_weight: Weight | None = None
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None
    set_header_route: SetHeaderRoute | None = None
    set_mirror_route: SetMirrorRoute | None = None

    @property
    def kind(self) -> str:
        """The one kind this step is (its wire name)."""
        return next(k for k in _STEP_KINDS if getattr(self, _SNAKE[k]) is not None)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        kinds = [k for k in _STEP_KINDS if getattr(self, _SNAKE[k]) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"a step must set exactly one of {_STEP_KINDS_TEXT} (found: {found})")
        return self


_SNAKE = {
    "setWeight": "set_weight",
    "pause": "pause",
    "analysis": "analysis",
    "setHeaderRoute": "set_header_route",
    "setMirrorRoute": "set_mirror_route",
}


class CanaryStrategy(_SpecModel):
    """Either explicit `steps`, or the shorthand `stepWeight` + `maxWeight`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.steps) && (has(self.stepWeight) || has(self.maxWeight)))",
                    "set either steps or stepWeight/maxWeight, not both",
                ),
                _cel(
                    "has(self.steps) || (has(self.stepWeight) && has(self.maxWeight))",
                    "set either steps, or both stepWeight and maxWeight",
                ),
                _cel(
                    "!has(self.stepWeight) || !has(self.maxWeight)"
                    " || self.stepWeight <= self.maxWeight",
                    "stepWeight must not be greater than maxWeight",
                ),
                _cel(
                    "!has(self.steps)"
                    " || self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
                    "setWeight values must not decrease from one step to the next",
                ),
            ]
        }
    )

    steps: list[Step] | None = Field(default=None, min_length=1, max_length=MAX_STEPS)
    step_weight: int | None = Field(default=None, ge=1, le=100)
    max_weight: int | None = Field(default=None, ge=1, le=100)
    scale_down_delay_seconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="after a promotion or a cancel, how long the canary keeps its pods once "
        "the gateway reports all traffic back on stable (requests in flight finish there)",
    )
    abort_scale_down_delay_seconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="the same after a rollback or an abort",
    )

    @model_validator(mode="after")
    def _one_form(self) -> CanaryStrategy:
        shorthand = self.step_weight is not None or self.max_weight is not None
        if self.steps is not None and shorthand:
            raise ValueError("set either steps or stepWeight/maxWeight, not both")
        if self.steps is None:
            if self.step_weight is None or self.max_weight is None:
                raise ValueError("set either steps, or both stepWeight and maxWeight")
            if self.step_weight > self.max_weight:
                raise ValueError(
                    f"stepWeight ({self.step_weight}) must not be greater than "
                    f"maxWeight ({self.max_weight})"
                )
            return self
        previous: int | None = None
        for index, step in enumerate(self.steps):
            if step.set_weight is None:
                continue
            if previous is not None and step.set_weight < previous:
                raise ValueError(
                    "setWeight values must not decrease from one step to the next: "
                    f"step {index} sets {step.set_weight} after {previous}"
                )
            previous = step.set_weight
        return self


class BlueGreenStrategy(_SpecModel):
    """The new version (green) runs beside the current one (blue) with no live traffic, is
    checked, then takes all live traffic in one switch; blue stays up for a while after."""

    auto_promotion_enabled: bool = True
    auto_promotion_seconds: int | None = Field(default=None, ge=1, le=86400)
    preview_replica_count: int | None = Field(default=None, ge=1, le=10000)
    scale_down_delay_seconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="how long blue keeps running after the switch, and how long a copy that "
        "took the traffic keeps its pods once the gateway reports the traffic moved away",
    )
    abort_scale_down_delay_seconds: int = Field(
        default=30,
        ge=0,
        le=86400,
        description="how long green keeps its pods after a rollback or an abort, once the "
        "gateway reports all traffic back on blue",
    )
    pre_promotion_analysis: AnalysisStep | None = None
    post_promotion_analysis: AnalysisStep | None = None


class Strategy(_SpecModel):
    """Exactly one of canary or blueGreen."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.canary) != has(self.blueGreen)",
                    "set exactly one of canary or blueGreen",
                )
            ]
        }
    )

    canary: CanaryStrategy | None = None
    blue_green: BlueGreenStrategy | None = None

    def scale_down_delay(self, rolled_back: bool) -> int:
        """Seconds a copy that served keeps its pods after the traffic is seen gone from it."""
        chosen = self.canary or self.blue_green
        assert chosen is not None
        if rolled_back:
            return chosen.abort_scale_down_delay_seconds
        return chosen.scale_down_delay_seconds

    @model_validator(mode="after")
    def _exactly_one(self) -> Strategy:
        if (self.canary is None) == (self.blue_green is None):
            found = "both" if self.canary is not None else "neither"
            raise ValueError(f"set exactly one of canary or blueGreen (found {found})")
        return self


class GatewayAPIRouting(_SpecModel):
    """The HTTPRoute rule (same namespace) whose backendRefs tidegate owns, and optionally a
    second HTTPRoute whose rule is pointed at the new version while it is previewed."""

    http_route: ObjectName
    rule_index: int = Field(default=0, ge=0, le=1000)
    preview_http_route: ObjectName | None = Field(default=None, alias="previewHTTPRoute")


class ServiceRouting(_SpecModel):
    """All live traffic is switched at once by pointing the selector of the Service
    `spec.service.name` at one version's pods: blue/green without a Gateway API."""

    preview_service: ServiceName | None = None


class PodRatioRouting(_SpecModel):
    """No gateway and no mesh: the Service `spec.service.name` selects the pods of both
    versions from a canary's first step on, and each step's weight is carried by how many
    ready pods each version has (a canary only, without an autoscaler)."""


class TrafficRouting(_SpecModel):
    """Exactly one router: gatewayAPI, service or podRatio."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "(has(self.gatewayAPI) ? 1 : 0) + (has(self.service) ? 1 : 0)"
                    " + (has(self.podRatio) ? 1 : 0) == 1",
                    "set exactly one of gatewayAPI, service or podRatio",
                )
            ]
        }
    )

    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")
    service: ServiceRouting | None = None
    pod_ratio: PodRatioRouting | None = Field(default=None, alias="podRatio")

    @model_validator(mode="after")
    def _exactly_one(self) -> TrafficRouting:
        count = sum(r is not None for r in (self.gateway_api, self.service, self.pod_ratio))
        if count != 1:
            found = "more than one" if count else "none"
            raise ValueError(f"set exactly one of gatewayAPI, service or podRatio (found {found})")
        return self

    @property
    def router(self) -> str:
        """The wire name of the router set."""
        if self.gateway_api is not None:
            return "gatewayAPI"
        return "service" if self.service is not None else "podRatio"

    @property
    def preview_field(self) -> str | None:
        """The field naming a preview route, when one is set."""
        if self.gateway_api is not None and self.gateway_api.preview_http_route is not None:
            return "spec.trafficRouting.gatewayAPI.previewHTTPRoute"
        if self.service is not None and self.service.preview_service is not None:
            return "spec.trafficRouting.service.previewService"
        return None


class ThresholdRange(_SpecModel):
    """Inclusive bounds a measurement must fall within; at least one of min and max."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.min) || has(self.max)", "thresholdRange needs min, max or both"),
                _cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "thresholdRange.min must not be greater than thresholdRange.max",
                ),
            ]
        }
    )

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"thresholdRange.min ({self.min:g}) must not be greater than "
                f"thresholdRange.max ({self.max:g})"
            )
        return self

    def contains(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value > self.max)

    def describe(self) -> str:
        low = "-inf" if self.min is None else f"{self.min:g}"
        high = "+inf" if self.max is None else f"{self.max:g}"
        return f"[{low}, {high}]"


# The variables a metric query may use, written `{{ name }}`: the one list the operator fills
# in, the CRD describes and docs/api.md shows (a unit test holds the three together).
QUERY_VARIABLES: dict[str, str] = {
    "target": "the target Deployment's name",
    "namespace": "the rollout's namespace",
    "stableService": "the Service of the current version (blue, in blue/green)",
    "canaryService": "the Service of the new version (green, in blue/green)",
    "interval": "spec.analysis.interval as written (for example 30s)",
    "window": "the time since the current step started, at least one interval, in seconds "
    "(for example 47s): a range that covers only the current step",
}


def _describe_variables() -> str:
    return "; ".join(f"{{{{ {name} }}}}: {text}" for name, text in QUERY_VARIABLES.items())


# Template arguments are named like identifiers: a query reads them as `{{ args.NAME }}`.
ArgName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
ArgValue = Annotated[str, StringConstraints(max_length=4096)]
Query = Annotated[str, StringConstraints(min_length=1, max_length=8192)]
MAX_ARGS = 32


class MetricTemplateKind(StrEnum):
    NAMESPACED = "MetricTemplate"
    CLUSTER = "ClusterMetricTemplate"


class TemplateRef(_SpecModel):
    """The template a metric takes its query (and default thresholdRange) from: a
    MetricTemplate in the rollout's namespace, or a ClusterMetricTemplate."""

    name: ObjectName
    kind: MetricTemplateKind = MetricTemplateKind.NAMESPACED


class MetricArg(_SpecModel):
    """A value for one of the template's arguments. It may use the rollout's variables
    (`{{ canaryService }}` and the others the query may use)."""

    name: ArgName
    value: ArgValue


def _unique_names(what: str, items: list[Any] | None, key: str = "name") -> list[Any] | None:
    """`items`, unless two of them have the same `key` attribute."""
    seen: set[str] = set()
    for item in items or ():
        value = getattr(item, key)
        if value in seen:
            raise ValueError(f"{what} {value!r} is given more than once")
        seen.add(value)
    return items


class Metric(_SpecModel):
    """A query whose single result must stay within thresholdRange: written here (`query`),
    or taken from a metric template (`templateRef` and `args`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.query) != has(self.templateRef)",
                    "set exactly one of query or templateRef",
                ),
                _cel(
                    "has(self.templateRef) || has(self.thresholdRange)",
                    "a metric with a query needs a thresholdRange",
                ),
                _cel("has(self.templateRef) || !has(self.args)", "args need a templateRef"),
            ]
        }
    )

    name: MetricName
    query: Query | None = Field(
        default=None,
        description="A PromQL query returning one value. It may use " + _describe_variables(),
    )
    template_ref: TemplateRef | None = None
    args: list[MetricArg] | None = Field(
        default=None,
        max_length=MAX_ARGS,
        description="Values for the template's arguments, by name. They override the "
        "template's defaults, and may use the same variables as a query.",
        json_schema_extra=_list_map("name"),
    )
    threshold_range: ThresholdRange | None = Field(
        default=None,
        description="Required with a query; with a templateRef it replaces the template's.",
    )
    # No default in the CRD (None, not False): the API server would write it into every
    # stored rollout, and an operator from before the field, still running while a chart
    # upgrade applies the CRDs first, would refuse them all as unknown input.
    dry_run: bool | None = Field(
        default=None,
        description="Measured, judged, shown in the status and exported, but never decides: "
        "a dry-run metric that fails, has no data or errs neither rolls back, holds a step "
        "nor counts toward a limit. Off when left out.",
    )

    @field_validator("args")
    @classmethod
    def _unique_args(cls, args: list[MetricArg] | None) -> list[MetricArg] | None:
        return _unique_names("argument", args)

    @model_validator(mode="after")
    def _one_source(self) -> Metric:
        if (self.query is None) == (self.template_ref is None):
            found = "both" if self.query is not None else "neither"
            raise ValueError(f"set exactly one of query or templateRef (found {found})")
        if self.query is not None and self.threshold_range is None:
            raise ValueError("a metric with a query needs a thresholdRange")
        if self.template_ref is None and self.args is not None:
            raise ValueError("args need a templateRef")
        return self


class TemplateArg(_SpecModel):
    """An argument of the template: with a value, that is its default; without one, every
    metric that uses the template must give it. A default may use the rollout's variables."""

    name: ArgName
    value: ArgValue | None = None


class MetricTemplateSpec(_SpecModel):
    """A reusable metric query: `{{ args.NAME }}` for its arguments, and the using rollout's
    own variables."""

    query: Query = Field(
        description="A PromQL query returning one value. It may use {{ args.NAME }} for each "
        "argument in args, and " + _describe_variables()
    )
    args: list[TemplateArg] = Field(
        default_factory=list, max_length=MAX_ARGS, json_schema_extra=_list_map("name")
    )
    threshold_range: ThresholdRange | None = Field(
        default=None,
        description="The bounds for metrics that set none themselves. Without it, every "
        "metric using the template must set its own thresholdRange.",
    )

    @field_validator("args")
    @classmethod
    def _unique_args(cls, args: list[TemplateArg]) -> list[TemplateArg]:
        return _unique_names("argument", args) or []


class PrometheusProvider(_SpecModel):
    """Where to send queries; without an address the operator-wide default is used. Its TLS
    certificate is verified unless insecureSkipVerify is set."""

    address: Annotated[str, StringConstraints(max_length=2048)] | None = None
    insecure_skip_verify: bool = False


# Load the operator has the loadtester send to the canary while a step is analysed.
MAX_LOAD_RATE = 1000
MAX_LOAD_HEADERS = 32
LOAD_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HttpUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://")]
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}")
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


# Header names that carry credentials: refused in load.headers (a Secret holds them).
_CREDENTIAL_HEADER = re.compile(
    r"authorization|proxy-authorization|cookie|.*(token|secret|passw|api-?key|auth).*",
    re.IGNORECASE,
)


def is_credential_header(name: str) -> bool:
    return _CREDENTIAL_HEADER.fullmatch(name) is not None


def valid_header_name(name: str) -> bool:
    return _HEADER_NAME.fullmatch(name) is not None


class LocalSecretRef(_SpecModel):
    """A Secret in the rollout's namespace."""

    name: ObjectName


class Load(_SpecModel):
    """Requests sent to the canary for as long as each analysis step runs, so that a canary
    with little organic traffic is still measured. `url` may use the query variables."""

    url: HttpUrl = Field(
        description="Where the requests go, for example "
        "http://{{ canaryService }}.{{ namespace }}.svc:80/; it may use the query variables"
    )
    rate: int = Field(ge=1, le=MAX_LOAD_RATE, description="requests per second")
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    # Names are checked by the validator below, and by CEL rules: a CRD schema has no other
    # way to constrain map keys.
    headers: dict[str, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=MAX_LOAD_HEADERS,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f'self.all(k, k.matches(r"^{_HEADER_NAME.pattern}$"))',
                    "load.headers: every name must be an HTTP header name",
                ),
                _cel(
                    f'self.all(k, !k.matches(r"(?i)^({_CREDENTIAL_HEADER.pattern})$"))',
                    "load.headers must not hold a header that looks like a credential (anyone "
                    "who may read the rollout reads them): put it in the Secret that "
                    "load.headersSecretRef names",
                ),
            ]
        },
    )
    headers_secret_ref: LocalSecretRef | None = Field(
        default=None,
        description="A Secret in the rollout's namespace whose keys are header names and "
        "values their values, sent as well: for credentials, which load.headers must not "
        "hold (anyone who may read the rollout, other regions' wave readers included, reads "
        "load.headers)",
    )
    loadtester: HttpUrl | None = Field(
        default=None,
        description="The loadtester's address (default: the operator's --loadtester-url)",
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, str]) -> dict[str, str]:
        bad = [name for name in headers if not valid_header_name(name)]
        if bad:
            raise ValueError(f"invalid header name {bad[0]!r} in load.headers")
        secret = [name for name in headers if is_credential_header(name)]
        if secret:
            raise ValueError(
                f"load.headers[{secret[0]!r}] looks like a credential, and load.headers are "
                "read by anyone who may read the rollout: put it in the Secret that "
                "load.headersSecretRef names"
            )
        return headers

    @field_validator("url")
    @classmethod
    def _known_variables(cls, url: str) -> str:
        unknown = sorted(set(_TEMPLATE_VARIABLE.findall(url)) - set(QUERY_VARIABLES))
        if unknown:
            names = ", ".join(f"{{{{ {name} }}}}" for name in unknown)
            raise ValueError(
                f"unknown variable {names} in load.url; known: {sorted(QUERY_VARIABLES)}"
            )
        return url


class OnInconclusive(StrEnum):
    ROLL_BACK = "RollBack"
    PAUSE = "Pause"


SloQuery = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
# The SRE workbook's page-worthy pairs: 2% of a 30-day budget spent in an hour (14.4x over
# 1 h, checked over 5 m too), and 5% in six hours (6x over 6 h, and 30 m).
DEFAULT_BURN_WINDOWS: tuple[tuple[str, str, float], ...] = (("1h", "5m", 14.4), ("6h", "30m", 6.0))


class BurnWindow(_SpecModel):
    """A pair of windows: the canary fails when its error budget burns faster than
    `burnRate` over both the long one and the short one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "duration(self.short) < duration(self.long)",
                    "short must be shorter than long",
                )
            ]
        }
    )

    long: PositiveDuration = Field(description="The window that shows the burn is sustained.")
    short: PositiveDuration = Field(
        description="The window that shows it is still going on (and lets a gate reopen fast)."
    )
    burn_rate: float = Field(
        gt=0,
        le=1000,
        description="The budget's burn rate above which, in both windows, the canary fails: "
        "1 spends the budget exactly over the objective's period.",
    )

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnWindow:
        if parse_duration(self.short) >= parse_duration(self.long):
            raise ValueError(f"short ({self.short}) must be shorter than long ({self.long})")
        return self


def _default_windows() -> list[BurnWindow]:
    return [BurnWindow(long=lo, short=sh, burn_rate=r) for lo, sh, r in DEFAULT_BURN_WINDOWS]


class Slo(_SpecModel):
    """An availability objective for the canary, gated on how fast it burns the error
    budget (1 - objective) over pairs of windows. Each pair is measured with the metrics,
    as a metric named `slo-burn-<long>-<short>`."""

    objective: float = Field(
        gt=0, lt=1, description="The share of requests that must succeed, e.g. 0.999."
    )
    error_query: SloQuery = Field(
        description="PromQL for the canary's failed requests per second over `{{ window }}`; "
        "it may use the other query variables too. Give 0 rather than nothing when there "
        "are no errors (`... or vector(0)`)."
    )
    total_query: SloQuery = Field(
        description="PromQL for all the canary's requests per second over `{{ window }}`."
    )
    windows: list[BurnWindow] = Field(
        default_factory=_default_windows,
        min_length=1,
        max_length=4,
        description="The window pairs; default 1h/5m at 14.4 and 6h/30m at 6.",
    )


class Analysis(_SpecModel):
    interval: PositiveDuration = "1m"
    # Checks a metric failed (a value out of its range) that roll the rollout back.
    failure_limit: int = Field(default=2, ge=1, le=1000)
    # Inconclusive checks in a row (no data, NaN, a query error or timeout: nothing to judge)
    # after which the rollout rolls back, or pauses for a person (onInconclusive: Pause).
    # Until then an inconclusive check holds the step: never advances, never promotes.
    inconclusive_limit: int = Field(default=3, ge=1, le=1000)
    on_inconclusive: OnInconclusive = OnInconclusive.ROLL_BACK
    prometheus: PrometheusProvider | None = None
    # Requests driven at the canary by the loadtester while a step is analysed.
    load: Load | None = None
    metrics: list[Metric] = Field(
        default_factory=list, max_length=MAX_METRICS, json_schema_extra=_list_map("name")
    )
    slo: Slo | None = Field(
        default=None,
        description="Gate each analysed step on the canary's error-budget burn rate.",
    )

    @field_validator("metrics")
    @classmethod
    def _unique_metric_names(cls, metrics: list[Metric]) -> list[Metric]:
        seen: set[str] = set()
        for metric in metrics:
            if metric.name in seen:
                raise ValueError(f"metric name {metric.name!r} is used more than once")
            seen.add(metric.name)
        return metrics

    @model_validator(mode="after")
    def _slo_names_free(self) -> Analysis:
        if self.slo is not None:
            taken = {m.name for m in self.metrics}
            for window in self.slo.windows:
                name = burn_metric_name(window)
                if len(name) > 63:
                    raise ValueError(
                        f"the SLO's metric name {name!r} is over 63 characters: "
                        "write the windows' durations shorter"
                    )
                if name in taken:
                    raise ValueError(f"metric name {name!r} is the SLO's; name the metric else")
                taken.add(name)
        return self


def burn_metric_name(window: BurnWindow) -> str:
    """The metric a window pair is measured as: `slo-burn-1h-5m`."""
    return f"slo-burn-{window.long}-{window.short}"


class WebhookType(StrEnum):
    """When a webhook is called, and what its answer does (docs/api.md, Webhooks)."""

    PRE_ROLLOUT = "preRollout"  # before the new version gets any traffic; non-2xx fails
    ROLLOUT = "rollout"  # every analysis interval, a check beside the metrics
    CONFIRM_TRAFFIC_INCREASE = "confirmTrafficIncrease"  # before each weight increase
    CONFIRM_PROMOTION = "confirmPromotion"  # before promotion
    POST_ROLLOUT = "postRollout"  # after the rollout ended; only reported
    ROLLBACK = "rollback"  # polled while the rollout runs; a 2xx rolls back


WebhookURL = Annotated[
    str, StringConstraints(min_length=8, max_length=2048, pattern=r"^https?://[^\s/?#]+")
]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=253)]
MetadataValue = Annotated[str, StringConstraints(max_length=4096)]


class Webhook(_SpecModel):
    """An HTTP(S) endpoint tidegate POSTs a JSON body to at one point of a rollout; a 2xx
    answer is a yes."""

    name: MetricName
    type: WebhookType
    url: WebhookURL = Field(description="http:// or https:// (the certificate is verified)")
    timeout: WebhookTimeout = "10s"
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Sent as it is in the body's metadata field",
    )


# --- notifications ---------------------------------------------------------------------------

MAX_NOTIFICATIONS = 16
# A key of the operator's notifications Secret (Secret data keys: [-._a-zA-Z0-9]+).
ProviderName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]


class NotificationEvent(StrEnum):
    """What a rollout can tell a provider about (docs/notifications.md maps each to the
    engine's Event reasons)."""

    STARTED = "started"
    STEP = "step"
    PAUSED = "paused"
    PROMOTED = "promoted"
    CHECK_FAILED = "checkFailed"
    ROLLED_BACK = "rolledBack"
    ABORTED = "aborted"


class Notification(_SpecModel):
    """Send these events of the rollout to one provider of the operator's notifications
    Secret. The provider's address is in the Secret only, never in the rollout."""

    provider: ProviderName = Field(
        description="A key of the operator's notifications Secret (by default "
        "tidegate-notifications in the operator's namespace): the provider's type and URL."
    )
    events: list[NotificationEvent] = Field(
        min_length=1,
        max_length=len(NotificationEvent),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @field_validator("events")
    @classmethod
    def _unique_events(cls, events: list[NotificationEvent]) -> list[NotificationEvent]:
        if len(set(events)) != len(events):
            raise ValueError("an event is named more than once")
        return events


class ProviderType(StrEnum):
    SLACK = "slack"
    TEAMS = "teams"
    WEBHOOK = "webhook"


class TeamsFormat(StrEnum):
    MESSAGE_CARD = "messageCard"
    ADAPTIVE_CARD = "adaptiveCard"


class NotificationProvider(_SpecModel):
    """One value of the notifications Secret (YAML or JSON): not part of the CRD."""

    type: ProviderType
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=4096)]
    # Teams only: the legacy MessageCard, or an Adaptive Card (Workflows webhooks want one).
    format: TeamsFormat = TeamsFormat.MESSAGE_CARD
    # The namespaces whose rollouts may use it: names or shell-style patterns ("team-a-*").
    # Unset: every namespace, as before; a platform admin sets it so that one tenant cannot
    # post into another's channel.
    namespaces: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] | None = (
        Field(default=None, max_length=256)
    )

    def allows(self, namespace: str) -> bool:
        """Whether a rollout in `namespace` may send to this provider."""
        if self.namespaces is None:
            return True
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)


# --- waves: one region after another --------------------------------------------------------

MAX_REGIONS = 16
RELEASE_PATTERN = r"^(template|images|annotation:[A-Za-z0-9./_-]{1,253})$"


class SecretKeyRef(_SpecModel):
    """A key of a Secret in the rollout's namespace."""

    name: ObjectName
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)] = "kubeconfig"


class WaveRegion(_SpecModel):
    """Another cluster's ProgressiveRollout, read through a read-only kubeconfig."""

    cluster: Annotated[str, StringConstraints(min_length=1, max_length=63)] = Field(
        description="the region's name, for messages and status"
    )
    kubeconfig_secret_ref: SecretKeyRef = Field(
        description="a Secret here holding a kubeconfig that may get, list and watch "
        "progressiverollouts in that cluster's namespace"
    )
    rollout: ObjectName
    namespace: ObjectName | None = Field(
        default=None, description="the rollout's namespace there; default: this rollout's"
    )
    soak: Duration = Field(
        default="0s", description="how long the release must have been stable there"
    )
    prometheus: PrometheusProvider | None = Field(
        default=None,
        description="where the metrics are queried; default: spec.analysis.prometheus, else "
        "the operator's",
    )
    metrics: list[Metric] = Field(
        default_factory=list,
        max_length=MAX_METRICS,
        json_schema_extra=_list_map("name"),
        description="checks that must pass, measured every analysis interval while waiting",
    )

    @field_validator("metrics")
    @classmethod
    def _unique_metric_names(cls, metrics: list[Metric]) -> list[Metric]:
        return _unique_names("metric name", metrics) or []


class Waves(_SpecModel):
    """Regions this cluster's releases wait for (after), and regions that follow it (before)."""

    release: Annotated[str, StringConstraints(pattern=RELEASE_PATTERN, max_length=264)] = Field(
        default="template",
        description="what makes two clusters' versions the same release: template (the pod "
        "template's digest), images (the containers' images) or annotation:<key> (a value "
        "set on the pod template, else on the Deployment)",
    )
    after: list[WaveRegion] = Field(
        default_factory=list, max_length=MAX_REGIONS, json_schema_extra=_list_map("cluster")
    )
    before: list[WaveRegion] = Field(
        default_factory=list, max_length=MAX_REGIONS, json_schema_extra=_list_map("cluster")
    )
    revert_on_later_failure: bool = Field(
        default=False,
        description="roll a release back here when a region under `before` rejects it",
    )
    # No default in the CRD, as for Metric.dry_run: an operator from before the field must
    # still read the rollouts stored after the CRD was upgraded.
    revert_on_upstream_rollback: bool | None = Field(
        default=None,
        description="go back here, without steps, when a region under `after` goes back from "
        "the release that is stable here (an undo there, or its own rollback of it); off "
        "when left out",
    )
    timeout: Duration | None = Field(
        default=None, description="a wait longer than this fails the release (WaveTimeout)"
    )

    @field_validator("after", "before")
    @classmethod
    def _unique_clusters(cls, regions: list[WaveRegion]) -> list[WaveRegion]:
        return _unique_names("cluster", regions, key="cluster") or []


MAX_ROLLBACK_WINDOW = 5


class RollbackWindow(_SpecModel):
    """Stable revisions a rollout goes back to at once, without steps or analysis."""

    revisions: int = Field(
        ge=1,
        le=MAX_ROLLBACK_WINDOW,
        description="how many of the last stable revisions before the current one are taken "
        "back at once (their copies are kept at zero replicas)",
    )


class OnDelete(StrEnum):
    HAND_BACK = "handBack"
    KEEP = "keep"


class RolloutSpec(_SpecModel):
    target_ref: TargetRef
    service: ServiceRef
    strategy: Strategy
    traffic_routing: TrafficRouting
    analysis: Analysis = Field(default_factory=Analysis)
    progress_deadline_seconds: int = Field(default=600, ge=1, le=604800)  # a week at most
    skip_analysis: bool = False
    paused: bool = False
    # handBack: deleting the rollout gives the application back to the target Deployment
    # (scaled up, ready, the route on the user's Service) before the copies go; keep: leaves
    # everything as it is.
    on_delete: OnDelete = OnDelete.HAND_BACK
    # The HPA that scales the target: copied for the stable and canary Deployments, whose
    # replica counts are then the copies' to choose.
    autoscaler_ref: AutoscalerRef | None = None
    # HTTP calls at points of a rollout that gate it, check it, or are told how it ended.
    webhooks: list[Webhook] = Field(
        default_factory=list, max_length=MAX_WEBHOOKS, json_schema_extra=_list_map("name")
    )

    @field_validator("webhooks")
    @classmethod
    def _unique_webhook_names(cls, webhooks: list[Webhook]) -> list[Webhook]:
        seen: set[str] = set()
        for webhook in webhooks:
            if webhook.name in seen:
                raise ValueError(f"webhook name {webhook.name!r} is used more than once")
            seen.add(webhook.name)
        return webhooks

    def webhooks_of(self, type_: WebhookType) -> list[Webhook]:
        return [w for w in self.webhooks if w.type is type_]

    # Providers (keys of the operator's notifications Secret) told about this rollout's events.
    notifications: list[Notification] | None = Field(
        default=None, max_length=MAX_NOTIFICATIONS, json_schema_extra=_list_map("provider")
    )
    # Other clusters' rollouts of the same application that a release waits for.
    waves: Waves | None = None
    # Going back to one of the last N stable revisions skips the steps and analysis.
    rollback_window: RollbackWindow | None = None


# --- status ---------------------------------------------------------------------------------


class RolloutPhase(StrEnum):
    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"  # rolled back because a person (or a script) asked
    CANCELLED = "Cancelled"
    WAITING_FOR_WAVE = "WaitingForWave"  # a new release waits for the regions before this one


# --- requests -------------------------------------------------------------------------------
# A person, a script or GitOps asks the operator for something by annotating the
# ProgressiveRollout; the value names who asked (any text; `kubectl tidegate` writes the
# user). The operator removes the annotation once it has acted on it, or has said in an
# Event why it could not.

# End the current pause (a `pause: {}` step, a blue/green preview).
PROMOTE_ANNOTATION = "tidegate.io/promote"
# Skip the remaining steps and analysis and promote the canary now.
PROMOTE_FULL_ANNOTATION = "tidegate.io/promote-full"
# Roll back now: all traffic to stable, phase Aborted.
ABORT_ANNOTATION = "tidegate.io/abort"
# Run a failed or aborted revision again from the first step.
RETRY_ANNOTATION = "tidegate.io/retry"
# Go back to the previous stable revision at once, without steps or analysis.
UNDO_ANNOTATION = "tidegate.io/undo"
REQUEST_ANNOTATIONS = (
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    ABORT_ANNOTATION,
    RETRY_ANNOTATION,
    UNDO_ANNOTATION,
)


class MetricPhase(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    NO_DATA = "NoData"
    ERROR = "Error"


class WebhookPhase(StrEnum):
    PASSED = "Passed"  # answered 2xx
    FAILED = "Failed"  # answered, not 2xx
    ERROR = "Error"  # no answer: timeout, connection refused, TLS, ...


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    WAVE = "Wave"  # spec.waves: whether the regions before this one let the release start


ConditionStatus = Literal["True", "False", "Unknown"]


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_as_utc)]


class _StatusModel(_WireModel):
    # Ignore fields written by a newer operator instead of failing to read the status.
    model_config = ConfigDict(extra="ignore")


class MetricResult(_StatusModel):
    """The latest measurement of one metric."""

    name: MetricName
    phase: MetricPhase
    value: float | None = None
    message: LongText = ""
    measured_at: Timestamp
    dry_run: bool | None = Field(
        default=None, description="Set when the metric is a dry run: shown, never deciding."
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # NaN and infinities have no JSON form; the message still tells what was seen.
        return value if value is None or math.isfinite(value) else None


class WebhookResult(_StatusModel):
    """The latest call of one webhook in the current (or last) rollout."""

    name: MetricName
    type: WebhookType
    phase: WebhookPhase
    code: int | None = Field(default=None, ge=0, le=999)
    message: LongText = ""
    called_at: Timestamp


class Condition(_StatusModel):
    type: Annotated[str, StringConstraints(min_length=1, max_length=316)]
    status: ConditionStatus
    reason: ShortText = ""
    message: LongText = ""
    last_transition_time: Timestamp
    observed_generation: int | None = Field(default=None, ge=0)


class RegionStatus(_StatusModel):
    """What a region before this one (waves.after) says about the release waited for."""

    cluster: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    ready: bool = False
    # NotFound, NotRolledOut, RollingOut, Soaking, MetricsFailing, MetricsInconclusive,
    # Unreachable, Rejected or Ready.
    reason: ShortText = ""
    message: LongText = ""
    phase: ShortText | None = None  # the region's rollout phase, as last read
    metrics: list[MetricResult] = Field(
        default_factory=list, max_length=MAX_METRICS, json_schema_extra=_list_map("name")
    )
    next_measurement_at: Timestamp | None = None


class WavesStatus(_StatusModel):
    """The wait for the regions before this one, for one release."""

    release: ShortText = ""
    waiting_since: Timestamp | None = None
    regions: list[RegionStatus] = Field(
        default_factory=list, max_length=MAX_REGIONS, json_schema_extra=_list_map("cluster")
    )


class PendingEvent(_StatusModel):
    """A Kubernetes Event a reconcile decided to post."""

    type: Literal["Normal", "Warning"]
    reason: ShortText
    message: LongText


class PendingNotification(_StatusModel):
    """A happening spec.notifications asks to be told of (every provider that wants it)."""

    event: NotificationEvent
    reason: ShortText
    message: LongText


class Outbox(_StatusModel):
    """What one reconcile decided to tell (Events, notifications, postRollout webhooks),
    kept in the status by the write that decided it until it is told: an operator that dies
    in between leaves it to the next, which tells it. Its Events are named from `id`, so an
    Event told twice is posted once."""

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{1,40}$")]
    at: Timestamp
    events: list[PendingEvent] = Field(default_factory=list, max_length=64)
    notifications: list[PendingNotification] = Field(default_factory=list, max_length=64)
    webhooks: list[WebhookType] = Field(default_factory=list, max_length=8)


class RolloutStatus(_StatusModel):
    """Everything the engine remembers between reconciles. `{}` is a valid initial status."""

    phase: RolloutPhase | None = None
    message: LongText = ""
    observed_generation: int | None = Field(default=None, ge=0)
    current_step_index: int | None = Field(default=None, ge=0)
    current_step_name: ShortText | None = None
    canary_weight: Weight = 0
    # With trafficRouting.podRatio: the canary's share of the pods the step plans (its
    # weight rounded to what the replica count can give); None with other routers.
    effective_weight: Weight | None = None
    header_route: list[HeaderRouteMatch] | None = Field(default=None, max_length=16)
    mirror_percent: Weight = 0
    preview_active: bool = False
    stable_revision: Revision | None = None
    canary_revision: Revision | None = None
    # The releases (spec.waves.release) of those revisions, which other regions compare with
    # theirs, and since when the stable one has been stable (their soak counts from there).
    stable_release: ShortText | None = None
    canary_release: ShortText | None = None
    stable_since: Timestamp | None = None
    # The stable revision before the last promotion, kept (with its pod template, in a
    # ControllerRevision) to go back to when a later region rejects the release.
    previous_stable_revision: Revision | None = None
    previous_stable_release: ShortText | None = None
    # The stable revisions before the current one, the latest last (spec.rollbackWindow).
    stable_history: list[Revision] | None = Field(default=None, max_length=MAX_ROLLBACK_WINDOW)
    # A revision taken back without steps or analysis once the target holds it (undo).
    undo_revision: Revision | None = None
    # The release this region went back from at once (an undo or spec.rollbackWindow): the
    # regions after it take it as rolled back here, until it is tried or stable here again.
    rejected_release: ShortText | None = None
    replicas: int | None = Field(default=None, ge=0)
    rollout_started_at: Timestamp | None = None
    step_started_at: Timestamp | None = None
    # Since when the new version has been waited for (to become ready at the size a step
    # needs): the progress deadline counts from here.
    waiting_since: Timestamp | None = None
    # When the canary copy, which no longer takes traffic, may be scaled to zero: set once
    # the gateway reports all traffic on stable, a scale-down delay ahead.
    canary_scale_down_at: Timestamp | None = None
    # When the user's Deployment may be scaled to zero: set once the gateway reports the
    # route on tidegate's Services (after adoption, or a resize), the same delay ahead.
    target_scale_down_at: Timestamp | None = None
    # During a hand-back: when tidegate's copies may go, once the gateway reports the route
    # back on the user's Service.
    hand_back_at: Timestamp | None = None
    # Copies, by revision, whose revision lost its role: the stable copy a promotion
    # replaced, a canary given up. Each goes once nothing selects it, the gateway has caught
    # up and the scale-down delay has passed since (`retireAt`).
    retiring: list[Revision] = Field(default_factory=list, max_length=8)
    retire_at: Timestamp | None = None
    next_measurement_at: Timestamp | None = None
    passed_checks: int = Field(default=0, ge=0)
    failed_checks: int = Field(default=0, ge=0)
    # Inconclusive checks in a row at the current step (a conclusive one resets it).
    inconclusive_checks: int = Field(default=0, ge=0)
    # Paused because of inconclusive checks (onInconclusive: Pause) until a promote.
    inconclusive_pause: bool = False
    metrics: list[MetricResult] = Field(
        default_factory=list, max_length=MAX_METRICS, json_schema_extra=_list_map("name")
    )
    webhooks: list[WebhookResult] = Field(
        default_factory=list, max_length=MAX_WEBHOOKS, json_schema_extra=_list_map("name")
    )
    # preRollout webhooks all answered 2xx in this rollout: the new version may get traffic.
    pre_rollout_passed: bool = False
    # The webhooks (of this type) the rollout waits for before it goes on, and when to ask
    # them (again).
    webhook_gate: WebhookType | None = None
    next_webhook_at: Timestamp | None = None
    # When the rollback webhooks are polled next.
    next_rollback_poll_at: Timestamp | None = None
    waves: WavesStatus | None = None
    # What the last reconcile decided to tell and has not told yet (see Outbox), and how
    # many outboxes this rollout has had (their ids).
    outbox: Outbox | None = None
    outbox_count: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(
        default_factory=list, max_length=8, json_schema_extra=_list_map("type")
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class ProgressiveRollout(_WireModel):
    """A whole object as stored by the API server (metadata kept as a plain mapping)."""

    api_version: Literal["tidegate.io/v1alpha1"] = "tidegate.io/v1alpha1"
    kind: Literal["ProgressiveRollout"] = "ProgressiveRollout"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RolloutSpec
    status: RolloutStatus = Field(default_factory=RolloutStatus)


# --- metric templates -----------------------------------------------------------------------

TEMPLATE_PLURALS: dict[MetricTemplateKind, str] = {
    MetricTemplateKind.NAMESPACED: "metrictemplates",
    MetricTemplateKind.CLUSTER: "clustermetrictemplates",
}


class MetricTemplate(_WireModel):
    """A MetricTemplate or ClusterMetricTemplate as stored (metadata as a plain mapping)."""

    api_version: Literal["tidegate.io/v1alpha1"] = "tidegate.io/v1alpha1"
    kind: MetricTemplateKind = MetricTemplateKind.NAMESPACED
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MetricTemplateSpec
