"""Nash-MTL, multitask learning as a bargaining game (Navon et al., ICML 2022).

The update d = sum_t alpha_t g_t is the Nash bargaining solution among the
tasks, which the paper shows is the alpha > 0 with

    alpha_t (G alpha)_t = 1   for every t,      i.e.   G alpha = 1 / alpha.

It is invariant to how each task's loss is scaled and gives every task the
same "utility" log(g_t . d). The official code (and TorchJD's
`torchjd.aggregation.NashMTL`) approach that fixed point with a sequence of
convex problems solved by ECOS (up to 20, stopping at a residual of 1e-3), then
cap |d| at max_norm.

Here the fixed point is the unique minimiser of a strictly convex function,
f(beta) = beta^T Gn beta / 2 - sum_t log beta_t (its gradient is Gn beta - 1/beta),
with Gn = G / |G|_F for float32 range and alpha = beta / sqrt(|G|_F). f is
self-concordant, so damped Newton, beta <- beta - H^-1 grad / (1 + lambda)
(lambda the Newton decrement, H = Gn + diag(1/beta^2)), stays positive and
converges from any start: quadratically once lambda < 1/4. A fixed `iterations`
(default 40) under `fori_loop`, warm-started from the previous step's beta as
the official code warm-starts its solver. The residual
max_t |beta_t (Gn beta)_t - 1| of the last solve is kept in the state
(`method_state["residual"]`) and measured in tests/test_conflicts.py. When the
gradients are positively dependent (some alpha >= 0 with J^T alpha = 0) no
solution exists; beta then grows each iteration and max_norm bounds the update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from train.conflicts import engine
from train.conflicts.engine import Array


def nash_solve(gram_normalized: Array, start: Array, iterations: int) -> tuple[Array, Array]:
  """(beta, residual): damped Newton for Gn beta = 1 / beta from `start` (> 0)."""
  num_tasks = gram_normalized.shape[0]

  def step(_, beta):
    gradient = gram_normalized @ beta - 1.0 / beta
    hessian = gram_normalized + jnp.diag(1.0 / beta ** 2)
    direction = engine.solve_positive_definite(hessian, gradient)
    decrement = jnp.sqrt(jnp.maximum(gradient @ direction, 0.0))
    new_beta = beta - direction / (1.0 + decrement)
    # Rounding could push a coordinate to <= 0 only at float32's edge; keep the domain.
    return jnp.where(jnp.all(new_beta > 0) & jnp.all(jnp.isfinite(new_beta)), new_beta, beta)

  beta = jax.lax.fori_loop(0, iterations, step, start)
  residual = jnp.max(jnp.abs(beta * (gram_normalized @ beta) - 1.0))
  del num_tasks
  return beta, residual


def nash_mtl_weights(gram: Array, start: Array, *, max_norm: float = 1.0,
                     iterations: int = 40) -> tuple[Array, Array, Array]:
  """(alpha, beta, residual) for the raw Gram matrix `gram`."""
  frobenius = jnp.sqrt(jnp.sum(gram ** 2))
  safe = jnp.where(frobenius > 0, frobenius, 1.0)
  beta, residual = nash_solve(gram / safe, start, iterations)
  alpha = beta / jnp.sqrt(safe)
  alpha = jnp.where(frobenius > 0, alpha, jnp.zeros_like(alpha))
  if max_norm > 0:
    norm = jnp.sqrt(jnp.maximum(alpha @ gram @ alpha, 0.0))
    alpha = jnp.where(norm > max_norm, alpha * max_norm / jnp.where(norm > 0, norm, 1.0), alpha)
  return alpha, beta, residual


def nash_mtl(num_tasks: int, max_norm: float = 1.0, update_weights_every: int = 1,
             iterations: int = 40) -> optax.GradientTransformationExtraArgs:
  """Nash-MTL; with update_weights_every = k the weights are re-solved every k-th step
  (the paper's cheaper variant) and reused in between."""
  if max_norm < 0 or update_weights_every < 1 or iterations < 1:
    raise ValueError(f"nash_mtl: max_norm={max_norm}, update_weights_every={update_weights_every}, "
                     f"iterations={iterations}; expected max_norm >= 0 and the others >= 1")

  def init_method_state():
    return {"beta": jnp.ones((num_tasks,), jnp.float32), "alpha": jnp.ones((num_tasks,), jnp.float32),
            "residual": jnp.zeros([], jnp.float32)}

  def weights_fn(gram, method_state, context):
    alpha, beta, residual = nash_mtl_weights(gram, method_state["beta"], max_norm=max_norm,
                                             iterations=iterations)
    solve_now = context.count % update_weights_every == 0
    pick = lambda new, old: jnp.where(solve_now, new, old)
    new_state = {"beta": pick(beta, method_state["beta"]), "alpha": pick(alpha, method_state["alpha"]),
                 "residual": pick(residual, method_state["residual"])}
    return new_state["alpha"], new_state

  return engine.gram_weighting("nash_mtl", num_tasks, weights_fn, init_method_state=init_method_state)
