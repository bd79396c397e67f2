"""Loss-weighting methods: task weights from the task losses, applied on the same engine.

These do not look at the gradients' geometry; they reweight the task
gradients from the losses, which `tx.update` receives as the extra argument
`losses` ([T], in task order; NaN for a task absent from the step, which then
keeps its state). The engine still computes G, for the step's diagnostics.

- Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): one learnable
  log-variance s_t per task and the objective sum_t exp(-s_t) L_t + s_t (the
  homoscedastic-uncertainty likelihood in the common form without the 1/2 of
  regression tasks). The model's gradient is then sum_t exp(-s_t) g_t; the s_t
  take an Adam step on d/ds_t = 1 - exp(-s_t) L_t, held in this
  transformation's state (learning rate `learning_rate`). Starts at s = 0:
  weights 1, the plain sum.
- DWA, dynamic weight average (Liu, Johns & Davison, CVPR 2019):
  w_t = T softmax(r / temperature)_t with r_t = Lbar_t(k-1) / Lbar_t(k-2), the
  ratio of the task's mean loss over the last two windows. The paper's window
  is an epoch; here it is `window` steps, and the weights are 1 for the first
  two windows, as in the paper's first two epochs.
- FAMO, fast adaptive multitask optimisation (Liu et al., NeurIPS 2023): task
  logits xi, z = softmax(xi), weights w_t = (z_t / L_t) / sum_j (z_j / L_j)
  (the gradient of sum_t z_t log L_t, normalised); after each step xi takes an
  Adam step (lr `learning_rate`, L2 decay `gamma`, as the official code's
  `torch.optim.Adam(weight_decay=gamma)`) along the softmax Jacobian applied to
  log L(previous step) - log L(this step). The official code re-evaluates the
  losses on the same batch after the step (one more forward pass); here the
  next step's losses, on the next batch, stand in for them. Losses get + 1e-8
  as there, and must be non-negative (FAMO takes their logarithm).

All three are closed forms with no solve; the weights are exact up to float32
rounding. tests/test_conflicts.py checks them against the formulas in numpy
(TorchJD has none of the three).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from train.conflicts import engine
from train.conflicts.engine import Array


def _require_losses(name: str, losses: Array | None) -> Array:
  if losses is None:
    raise ValueError(f"{name} weights the tasks by their losses: call update(..., losses=<[T] task "
                     "losses>); the trainer passes them when config.conflicts.method is a "
                     "loss-weighting method")
  return losses


def uncertainty_weighting(num_tasks: int, learning_rate: float = 1e-3) -> optax.GradientTransformationExtraArgs:
  """Kendall et al.'s learnable task uncertainties; weights exp(-s_t)."""
  if learning_rate <= 0:
    raise ValueError(f"uncertainty: learning_rate={learning_rate}; expected > 0")
  adam = optax.adam(learning_rate)

  def init_method_state():
    log_variance = jnp.zeros((num_tasks,), jnp.float32)
    return {"log_variance": log_variance, "adam": adam.init(log_variance)}

  def weights_fn(gram, method_state, context):
    losses = _require_losses("uncertainty", context.losses)
    present = jnp.isfinite(losses)
    s = method_state["log_variance"]
    weights = jnp.exp(-s)
    gradient = jnp.where(present, 1.0 - weights * jnp.where(present, losses, 0.0), 0.0)
    step, adam_state = adam.update(gradient, method_state["adam"], s)
    return weights, {"log_variance": optax.apply_updates(s, step), "adam": adam_state}

  return engine.gram_weighting("uncertainty", num_tasks, weights_fn, init_method_state=init_method_state)


def dwa(num_tasks: int, temperature: float = 2.0, window: int = 100) -> optax.GradientTransformationExtraArgs:
  """Dynamic weight average over windows of `window` steps (the paper: epochs, temperature 2)."""
  if temperature <= 0 or window < 1:
    raise ValueError(f"dwa: temperature={temperature}, window={window}; expected temperature > 0, window >= 1")

  def init_method_state():
    zeros = lambda: jnp.zeros((num_tasks,), jnp.float32)
    return {"window_sum": zeros(), "window_count": zeros(), "last_mean": zeros(), "previous_mean": zeros(),
            "windows_done": jnp.zeros([], jnp.int32)}

  def weights_fn(gram, state, context):
    losses = _require_losses("dwa", context.losses)
    ratio = state["last_mean"] / jnp.where(state["previous_mean"] > 0, state["previous_mean"], 1.0)
    weights = num_tasks * jax.nn.softmax(ratio / temperature)
    weights = jnp.where(state["windows_done"] >= 2, weights, jnp.ones_like(weights))
    present = jnp.isfinite(losses)
    window_sum = state["window_sum"] + jnp.where(present, losses, 0.0)
    window_count = state["window_count"] + present
    closes = (context.count + 1) % window == 0
    mean = window_sum / jnp.maximum(window_count, 1.0)
    # A task absent for a whole window keeps its last mean.
    mean = jnp.where(window_count > 0, mean, state["last_mean"])
    new_state = {
        "window_sum": jnp.where(closes, 0.0, window_sum),
        "window_count": jnp.where(closes, 0.0, window_count),
        "last_mean": jnp.where(closes, mean, state["last_mean"]),
        "previous_mean": jnp.where(closes, state["last_mean"], state["previous_mean"]),
        "windows_done": state["windows_done"] + closes.astype(jnp.int32)}
    return weights, new_state

  return engine.gram_weighting("dwa", num_tasks, weights_fn, init_method_state=init_method_state)


def famo(num_tasks: int, learning_rate: float = 0.025, gamma: float = 1e-3) -> optax.GradientTransformationExtraArgs:
  """FAMO with the official defaults (logit lr 0.025, decay 1e-3)."""
  if learning_rate <= 0 or gamma < 0:
    raise ValueError(f"famo: learning_rate={learning_rate}, gamma={gamma}; expected lr > 0, gamma >= 0")
  logit_optimizer = optax.chain(optax.add_decayed_weights(gamma), optax.adam(learning_rate))

  def init_method_state():
    logits = jnp.zeros((num_tasks,), jnp.float32)
    return {"logits": logits, "adam": logit_optimizer.init(logits),
            "previous_losses": jnp.ones((num_tasks,), jnp.float32), "started": jnp.array(False)}

  def weights_fn(gram, state, context):
    losses = _require_losses("famo", context.losses)
    present = jnp.isfinite(losses)
    losses = jnp.where(present, losses + 1e-8, state["previous_losses"])
    delta = jnp.where(present, jnp.log(state["previous_losses"]) - jnp.log(losses), 0.0)
    _, softmax_vjp = jax.vjp(jax.nn.softmax, state["logits"])
    (logit_gradient,) = softmax_vjp(delta)
    step, adam_state = logit_optimizer.update(logit_gradient, state["adam"], state["logits"])
    logits = jnp.where(state["started"], optax.apply_updates(state["logits"], step), state["logits"])
    adam_state = jax.tree.map(lambda new, old: jnp.where(state["started"], new, old), adam_state, state["adam"])
    z = jax.nn.softmax(logits)
    ratio = jnp.where(present, z / losses, 0.0)
    weights = ratio / jnp.sum(ratio)
    return weights, {"logits": logits, "adam": adam_state, "previous_losses": losses,
                     "started": jnp.array(True)}

  return engine.gram_weighting("famo", num_tasks, weights_fn, init_method_state=init_method_state)
