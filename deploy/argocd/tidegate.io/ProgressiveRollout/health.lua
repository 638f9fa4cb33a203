-- Argo CD health check for tidegate.io/ProgressiveRollout.
-- Argo CD sets the global `obj` to the object as the API server holds it and reads back a
-- table {status = <Healthy|Progressing|Suspended|Degraded|Unknown>, message = <text>}.
-- Phases and conditions are those of docs/api.md; status.message is the operator's own
-- account of what it is doing, so it is the message shown whenever there is one.

local metadata = obj.metadata or {}
local spec = obj.spec or {}
local status = obj.status or {}

local function told(fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

local function condition(kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- A problem the operator reports about the spec it has seen: an invalid spec, a missing
-- target or route. Reported for the current generation, it outranks everything else.
local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  local current = degraded.observedGeneration == nil
    or metadata.generation == nil
    or degraded.observedGeneration >= metadata.generation
  if current then
    local text = degraded.message
    if text == nil or text == "" then
      text = told(degraded.reason or "Degraded")
    end
    return {status = "Degraded", message = text}
  end
end

-- The operator has not yet acted on the latest spec: whatever the status says is old news.
if status.observedGeneration == nil then
  return {status = "Progressing", message = "Waiting for the tidegate operator to pick the rollout up"}
end
if metadata.generation ~= nil and status.observedGeneration < metadata.generation then
  return {
    status = "Progressing",
    message = "Waiting for the tidegate operator to act on generation "
      .. tostring(metadata.generation) .. " (it last acted on "
      .. tostring(status.observedGeneration) .. ")",
  }
end

local phase = status.phase

if phase == "Failed" or phase == "Aborted" then
  return {status = "Degraded", message = told("Rolled back (" .. phase .. ")")}
end

if spec.paused == true then
  local text = told("")
  if string.find(text, "spec.paused", 1, true) == nil then
    text = "Paused by spec.paused" .. (text ~= "" and (": " .. text) or "")
  end
  return {status = "Suspended", message = text}
end

if phase == "Paused" then
  return {status = "Suspended", message = told("Waiting for tidegate.io/promote")}
end

if phase == nil or phase == "Initializing" or phase == "Progressing" or phase == "Promoting" then
  return {status = "Progressing", message = told("Rolling out")}
end

-- spec.waves: the release waits for the regions before this one; nothing is wrong here.
if phase == "WaitingForWave" then
  return {status = "Progressing", message = told("Waiting for the regions before this one")}
end

if phase == "Succeeded" or phase == "Initialized" or phase == "Cancelled" then
  return {status = "Healthy", message = told(phase)}
end

return {status = "Unknown", message = "Unknown phase " .. tostring(phase) .. ": " .. told("")}
