-- Which tidegate actions Argo CD offers for this ProgressiveRollout right now. Each action
-- is listed, and disabled unless it would mean something in the rollout's current state.

local spec = obj.spec or {}
local status = obj.status or {}
local phase = status.phase
local paused = spec.paused == true
local running = phase == "Progressing" or phase == "Paused"

local function offer(enabled, icon, label)
  return {disabled = not enabled, iconClass = icon, displayName = label}
end

local actions = {}
-- A `pause: {}` step (or a blue/green preview) waits for the promote annotation. Paused by
-- spec.paused, the rollout may be at no such step, and the annotation would linger until
-- the next one: resume first.
actions["promote"] = offer(phase == "Paused" and not paused, "fa fa-fw fa-forward", "Promote")
actions["promote-full"] = offer(running, "fa fa-fw fa-fast-forward", "Promote fully")
actions["abort"] = offer(running, "fa fa-fw fa-times-circle", "Abort")
actions["retry"] = offer(phase == "Failed" or phase == "Aborted", "fa fa-fw fa-repeat", "Retry")
actions["pause"] = offer(not paused, "fa fa-fw fa-pause", "Pause")
actions["resume"] = offer(paused, "fa fa-fw fa-play", "Resume")
return actions
