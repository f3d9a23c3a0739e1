-- min_snr.lua: the min-SNR-gamma weighting (Hang et al., 2023) written for this project's time
-- convention. The path z_t = (1 - t) x + t eps has alpha = 1 - t, sigma = t, so
-- SNR(t) = (1 - t)^2 / t^2. Min-SNR weights the x-prediction loss by min(SNR, gamma). The network
-- predicts the velocity v = eps - x, and x_hat - x = -t (v_hat - v), so on the velocity loss the same
-- weighting is t^2 min(SNR, gamma) = min((1 - t)^2, gamma t^2). It is divided by its mean over
-- t ~ U(0, 1), so the loss keeps its scale: the integral of min((1-t)^2, gamma t^2) is
-- (gamma s^3 + (1 - s)^3) / 3 with s = 1 / (1 + sqrt(gamma)) where the two meet.
local GAMMA = 5.0
local s = 1.0 / (1.0 + math.sqrt(GAMMA))
local MEAN = (GAMMA * s ^ 3 + (1.0 - s) ^ 3) / 3.0

function loss_weight_batch(ts, rs, step, labels)
  local w = {}
  for i = 1, #ts do
    local t = ts[i]
    local a, b = (1.0 - t) ^ 2, GAMMA * t * t
    w[i] = (a < b and a or b) / MEAN
  end
  return w
end
