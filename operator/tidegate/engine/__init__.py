"""The rollout engine: a pure function from (spec, status, observation) to a decision.

No I/O, no sleeping, no clock reads: the caller observes the cluster, asks
`needs_measurement()` whether to query Prometheus, calls `reconcile()`, applies the actions in
order, stores the returned status and calls again after `requeue_after` seconds (or on change).

The engine runs plans (`tidegate.plan`), which the strategies make from the spec; it does not
know canary from blue/green. A plan step runs once the new version is ready at the step's
size and the routes really hold the step's traffic (as observed), so a step's analysis never
measures a split that was asked for but not yet applied.

Choices worth knowing:
- After a promotion `canaryRevision` is cleared (no canary runs); after a rollback it is kept,
  so the failed revision is not retried until the Deployment template changes again.
- The progress deadline counts from when the wait for the new version began (`waitingSince`):
  at the start, at a step that changes its size, or when it stops being ready mid-rollout.
- An analysis step is complete at once when analysis is skipped or there are no metrics.
- Every end of a rollout (promotion, rollback, cancel) routes all traffic to the stable
  version with no header or mirror route. The canary is scaled to zero only once the data
  plane reports that route applied (`traffic_applied`) and a scale-down delay has passed
  (`canaryScaleDownAt`), so no request is ever sent where no pod is left to answer it; the
  user's Deployment likewise after adoption (`targetScaleDownAt`).
- Traffic counts as moved only when the routes hold it *and* the data plane reports it
  applied: a step's analysis never measures a split the gateway has not taken yet, and
  waiting for it counts against the progress deadline.
- Initialisation (adopting the first stable revision) also runs while spec.paused is set; a
  promotion already under way stays in Promoting (without acting) while paused.
- Requests (annotations: promote, promote-full, abort, retry, undo) are each answered once: acted
  on, or refused with a Warning Event saying why, and then cleared, so a request never lingers
  to act later by surprise. The one exception is a promote made while the rollout is paused
  for promotion but this call did not reach the pause (its route was being restored): it stays
  for the next call. Abort acts even under spec.paused: taking traffic back is never held.
- Webhooks (spec.webhooks) are checks like the metrics: `due_webhooks()` says which to call
  now, and their outcomes come in the observation. preRollout, confirmTrafficIncrease and
  confirmPromotion gate a point of the plan (`status.webhookGate`): the rollout stops there,
  the next call asks them, and they are asked again every interval while one refuses
  (preRollout fails the rollout at once instead). rollout webhooks are judged with the
  metrics; rollback webhooks are polled every interval while the rollout runs, before
  anything else (a 2xx rolls back, even before a request of the same call); postRollout
  webhooks are called (`CallWebhooks`) once a rollout ends, their outcome decides nothing.
  A full promotion asked by a person skips the confirm gates, never preRollout.
- With an autoscaler (spec.autoscalerRef), a copy's replica count is its HPA's: any non-zero
  count is accepted, kept across a template change and never reset, and readiness means
  "rolled out at its own count". A copy at zero that should run is still brought up.

- Undo (and spec.rollbackWindow) take a revision that was stable before back at once: no
  steps, no analysis; `<service>-stable` flips to its copy once that copy is ready, and the
  copy that served goes the usual way (module `undo`).

Layout: `model` (observations, actions, decision), `needs` (what to observe first), `core`
(one call: which stage runs, then the upkeep every call does), and a module per stage:
`upkeep`, `wave_gate`, `steps`, `gates`, `answers`, `endings`; `call` holds the state of
one call they share.
"""

from tidegate.engine.core import reconcile
from tidegate.engine.gates import judge_webhook
from tidegate.engine.model import (
    SOON_SECONDS,
    STEADY_PHASES,
    WAVE_READY_EVENT,
    Action,
    CallWebhooks,
    ClearRequest,
    Decision,
    DriveLoad,
    EmitEvent,
    EnsureWorkload,
    IsolateService,
    Observation,
    ParkCopy,
    PointService,
    ReleaseTarget,
    RemoveCopy,
    RestoreTarget,
    Role,
    ScaleWorkload,
    Selection,
    SetTraffic,
    WebhookOutcome,
    WorkloadState,
    autoscaled_replicas,
    canary_runs,
    load_lease,
    status_traffic,
)
from tidegate.engine.needs import (
    Needs,
    WebhookCall,
    due_webhooks,
    needs,
    needs_measurement,
    wave_measurements_due,
    webhook_body,
)

__all__ = [
    "SOON_SECONDS",
    "STEADY_PHASES",
    "WAVE_READY_EVENT",
    "Action",
    "CallWebhooks",
    "ClearRequest",
    "Decision",
    "DriveLoad",
    "EmitEvent",
    "EnsureWorkload",
    "IsolateService",
    "Needs",
    "Observation",
    "ParkCopy",
    "PointService",
    "ReleaseTarget",
    "RemoveCopy",
    "RestoreTarget",
    "Role",
    "ScaleWorkload",
    "Selection",
    "SetTraffic",
    "WebhookCall",
    "WebhookOutcome",
    "WorkloadState",
    "autoscaled_replicas",
    "canary_runs",
    "due_webhooks",
    "judge_webhook",
    "load_lease",
    "needs",
    "needs_measurement",
    "reconcile",
    "status_traffic",
    "wave_measurements_due",
    "webhook_body",
]
