-- Argo CD health for dpo.ai resources (DPOCollection, DPOTrainingJob, ModelDeployment).
-- Succeeded / Ready -> Healthy; Failed / Cancelled -> Degraded; Suspended -> Suspended;
-- a spec the operator has not observed yet, or any other phase -> Progressing.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.status == nil then
  return hs
end
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local phase = status.phase
local message = status.message or ""
if phase == "Succeeded" or phase == "Ready" then
  hs.status = "Healthy"
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
elseif phase == "Suspended" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
if message ~= "" then
  hs.message = (phase or "Unknown") .. ": " .. message
else
  hs.message = phase or "Unknown"
end
return hs
