-- Argo CD health for dpo.ai resources (DPOCollection, DPOTrainingJob, ModelDeployment, DPOEvaluation, DPOLoop).
-- A DPOLoop: Running (a round in progress, its round and round phase in the message) -> Progressing; stopped
-- (maxRounds, a refused round, too little improvement) is Succeeded -> Healthy, with its stopReason; Suspended.
-- A DPOEvaluation's verdict (Passed, Failed, NoGate, Inconclusive) is part of the message: a finished
-- comparison is Healthy whatever it found; an evaluation that could not measure is Failed -> Degraded.
-- Succeeded / Ready -> Healthy; Failed / Cancelled, or a True Failed condition -> Degraded;
-- Suspended (by the user) -> Suspended; Queued (Kueue holds the Job: waiting for admission, or preempted and
-- queued again) -> Progressing, it runs once admitted; a spec the operator has not observed yet (status or
-- conditions behind metadata.generation), or any other phase -> Progressing. Generations may arrive as numbers or
-- strings.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.status == nil then
  return hs
end
local function num(value)
  if value == nil then
    return nil
  end
  return tonumber(value)
end
local status = obj.status
local generation = num(obj.metadata and obj.metadata.generation)
local observed = num(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local conditions = {}
if type(status.conditions) == "table" then
  for _, condition in ipairs(status.conditions) do
    if type(condition) == "table" and condition.type ~= nil then
      conditions[condition.type] = condition
    end
  end
end
local function holds(name)
  local condition = conditions[name]
  if condition == nil or condition.status ~= "True" then
    return false
  end
  local seen = num(condition.observedGeneration)
  return generation == nil or seen == nil or seen >= generation
end
local phase = status.phase
local message = status.message or ""
if holds("Failed") or phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  if message == "" and conditions["Failed"] ~= nil then
    message = conditions["Failed"].message or ""
  end
elseif phase == "Suspended" or holds("Suspended") then
  hs.status = "Suspended"
elseif phase == "Queued" or holds("Queued") then
  hs.status = "Progressing"   -- Kueue admits it when its quota allows; not the user's suspend
elseif phase == "Succeeded" or phase == "Ready" then
  local done = conditions["Succeeded"] or conditions["Ready"]
  if done ~= nil and not holds(done.type) then
    hs.status = "Progressing"   -- the phase says done, its condition does not (yet) for this generation
  else
    hs.status = "Healthy"
  end
else
  hs.status = "Progressing"
end
local label = phase or "Unknown"
if status.verdict ~= nil then
  label = label .. " (verdict " .. tostring(status.verdict) .. ")"
end
if status.currentRound ~= nil then
  label = label .. " (round " .. tostring(status.currentRound)
  if status.roundPhase ~= nil then
    label = label .. ", " .. tostring(status.roundPhase)
  end
  label = label .. ")"
end
if status.stopReason ~= nil then
  label = label .. " (stopped: " .. tostring(status.stopReason) .. ")"
end
if phase == nil and holds("Failed") then
  label = "Failed"
end
if message ~= "" then
  hs.message = label .. ": " .. message
else
  hs.message = label
end
return hs
