-- Argo CD health check for nsguard.io/HardeningProfile: the value of
-- resource.customizations.health.nsguard.io_HardeningProfile in argocd-cm (argocd-cm-patch.yaml).
-- Reads the status nsguard writes: observedGeneration and the conditions Ready, Drifted,
-- Conflicting, Reconciling and Stalled. Lua 5.1, as Argo CD runs it (tests/argocd.rs runs it too).
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for nsguard to report on this profile"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "nsguard has not yet acted on generation " .. tostring(generation)
  return hs
end

local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end
local function is(type, status, reason)
  local c = conditions[type]
  return c ~= nil and c.status == status and (reason == nil or c.reason == reason)
end
local function message(type)
  local c = conditions[type]
  return (c and c.message) or ""
end

-- Degraded: nothing gets better without a change by a person.
if is("Stalled", "True") or is("Ready", "False", "InvalidSpec") then
  hs.status = "Degraded"
  hs.message = "Invalid spec: " .. message(is("Stalled", "True") and "Stalled" or "Ready")
  return hs
end
if is("Conflicting", "True") then
  hs.status = "Degraded"
  hs.message = "Overridden by a higher-priority profile: " .. message("Conflicting")
  return hs
end
if is("Drifted", "True", "DriftFight") then
  hs.status = "Degraded"
  hs.message = "Another writer keeps reverting nsguard: " .. message("Drifted")
  return hs
end

-- Progressing: nsguard is bringing namespaces to the baseline (or retrying failed writes).
if is("Reconciling", "True") or is("Ready", "False") then
  hs.status = "Progressing"
  hs.message = message(is("Reconciling", "True") and "Reconciling" or "Ready")
  return hs
end

if is("Ready", "True") then
  hs.status = "Healthy"
  hs.message = message("Ready")
  if is("Drifted", "True", "DriftDetected") then
    -- Audit mode: the drift is reported, never corrected; the profile does what it says.
    hs.message = hs.message .. "; " .. message("Drifted")
  end
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for nsguard to report on this profile"
return hs
