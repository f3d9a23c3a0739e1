-- meanflow_interval.lua: a MeanFlow variant of the adaptive weight. MeanFlow's own adaptive weight
-- (train.meanflow.weight_p, weight_c) divides each row's loss by its error; this hook multiplies on
-- top a curriculum over the interval length t - r: long intervals (what one- and two-step sampling
-- needs) gain weight as training goes on, up to 1 + BOOST at t - r = 1 after RAMP_STEPS steps. The
-- weights are divided by their batch mean, so the loss keeps its scale.
-- For u(z, r, t) models only (train.objective: meanflow, imeanflow, alphaflow, fm_avgvel).
local BOOST = 1.0
local RAMP_STEPS = 5000

function loss_weight_batch(ts, rs, step, labels)
  if rs == nil then
    error("meanflow_interval.lua needs a u(z, r, t) model (train.objective: meanflow, ...)")
  end
  local ramp = step / RAMP_STEPS
  if ramp > 1 then ramp = 1 end
  local w, sum = {}, 0.0
  for i = 1, #ts do
    w[i] = 1.0 + BOOST * ramp * (ts[i] - rs[i])
    sum = sum + w[i]
  end
  local mean = sum / #ts
  for i = 1, #ts do w[i] = w[i] / mean end
  return w
end
