-- mid_t_weighting.lua: emphasise mid-range times. Flow matching's path is z_t = (1 - t) x + t eps
-- (t = 0 data, t = 1 noise); the velocity is hardest to predict in the middle, where neither the data
-- nor the noise dominates. The weight 6 t (1 - t) has mean 1 over t ~ U(0, 1), so the loss keeps its
-- scale with a uniform time distribution (train.time_dist: uniform).
-- The batch form is called once per step with arrays, which is cheaper than once per sample.
local SHARPNESS = 1.0   -- 0: unweighted, 1: 6 t (1 - t); in between: a blend

function loss_weight_batch(ts, rs, step, labels)
  local w = {}
  for i = 1, #ts do
    local t = ts[i]
    w[i] = (1 - SHARPNESS) + SHARPNESS * 6.0 * t * (1.0 - t)
  end
  return w
end
