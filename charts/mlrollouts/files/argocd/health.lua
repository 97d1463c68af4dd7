-- Argo CD health of mlrollouts resources (ModelDeployment, Experiment, CompositeModel).
-- Status written for an older generation is stale: the operator has not seen the latest spec yet.
-- Otherwise the phase decides; an unknown phase falls back to the conditions.
local hs = { status = "Progressing", message = "Waiting for the operator" }

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(status, fallback)
  local parts = {}
  if status.message ~= nil and status.message ~= "" then
    table.insert(parts, status.message)
  elseif fallback ~= nil and fallback ~= "" then
    table.insert(parts, fallback)
  end
  if status.currentStep ~= nil then
    table.insert(parts, "step " .. tostring(status.currentStep))
  end
  if status.weightsSummary ~= nil and status.weightsSummary ~= "" then
    table.insert(parts, "weights " .. status.weightsSummary)
  end
  return table.concat(parts, "; ")
end

local phases = {
  Pending = "Progressing",
  Progressing = "Progressing",
  Running = "Progressing",
  Paused = "Suspended",
  -- An experiment that ended without a winner waits for a person to decide.
  Stopped = "Suspended",
  Healthy = "Healthy",
  Ready = "Healthy",
  Concluded = "Healthy",
  Degraded = "Degraded",
}

if obj.status == nil then
  return hs
end
local status = obj.status

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(status, degraded.message or degraded.reason)
  return hs
end

local mapped = phases[status.phase]
if mapped ~= nil then
  hs.status = mapped
  hs.message = describe(status, status.phase)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(status, ready.message or ready.reason)
elseif ready ~= nil and ready.status == "False" and ready.reason ~= nil and ready.reason ~= "" then
  hs.status = "Progressing"
  hs.message = describe(status, ready.message or ready.reason)
else
  hs.message = describe(status, "Unknown phase " .. tostring(status.phase))
end
return hs
