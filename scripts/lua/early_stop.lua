-- early_stop.lua: stop training when the smoothed loss has not improved by MIN_DELTA (relative)
-- for PATIENCE log lines, and log the smoothed loss and the patience left into metrics.jsonl.
-- The state lives in this script's globals; a resumed run starts it afresh.
local PATIENCE = 10     -- log lines (train.log_every steps each)
local MIN_DELTA = 0.005 -- relative improvement that counts
local SMOOTH = 0.7      -- exponential smoothing of the logged loss

local smooth, best, waited = nil, math.huge, 0

function on_step(m)
  if m.loss == nil then return nil end   -- a window of skipped steps logs no loss
  smooth = smooth and SMOOTH * smooth + (1 - SMOOTH) * m.loss or m.loss
  if smooth < best * (1 - MIN_DELTA) then
    best, waited = smooth, 0
  else
    waited = waited + 1
  end
  local out = {log = {loss_smooth = smooth, patience_left = PATIENCE - waited}}
  if waited >= PATIENCE then
    out.stop = string.format("no %.1f%% improvement of the smoothed loss (best %.5f) in %d logs",
                             100 * MIN_DELTA, best, PATIENCE)
  end
  return out
end
