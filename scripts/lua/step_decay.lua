-- step_decay.lua: a linear warm-up, then the learning rate multiplied by GAMMA at each milestone
-- (fractions of the run), as torch.optim.lr_scheduler.MultiStepLR does.
local WARMUP = 100
local GAMMA = 0.3
local MILESTONES = {0.5, 0.75, 0.9}   -- fractions of train.steps

function lr(step, total_steps, base_lr)
  if step < WARMUP then
    return base_lr * (step + 1) / WARMUP
  end
  local rate = base_lr
  for _, m in ipairs(MILESTONES) do
    if step >= math.floor(m * total_steps) then rate = rate * GAMMA end
  end
  return rate
end
