-- warmup_cosine.lua: the built-in schedule (train.schedule: {kind: cosine}) written as a Lua hook, so
-- it can be changed. With the same constants as the experiment it gives the same learning rates, bit
-- for bit (tests/test_hooks.c checks every step): a linear warm-up to base_lr over WARMUP steps, then a
-- half cosine from base_lr down to MIN_RATIO * base_lr at the last step.
--   hooks: [../scripts/lua/warmup_cosine.lua]    (paths are relative to the experiment file)
local WARMUP = 100      -- train.schedule.warmup
local MIN_RATIO = 0.05  -- train.schedule.min_lr_ratio

-- step: 0-based step being computed; total_steps: train.steps; base_lr: train.optimizer.lr
function lr(step, total_steps, base_lr)
  if step < WARMUP then
    return base_lr * (step + 1) / WARMUP
  end
  local span = total_steps - 1 - WARMUP
  local p = 1.0
  if span > 0 then p = (step - WARMUP) / span end
  if p < 0 then p = 0 elseif p > 1 then p = 1 end
  local lo = base_lr * MIN_RATIO
  return lo + (base_lr - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
end
