"""GradVac, gradient vaccine (Wang et al., ICLR 2021): PCGrad with a learned target similarity.

PCGrad only acts on conflicts (cosine < 0) and then removes the whole
conflicting component. GradVac keeps, for every ordered task pair (i, j), an
exponential moving average phi_hat_ij of the cosine it has seen, and whenever
the current cosine phi_ij of the (partially adjusted) g_i with the original g_j
falls below that target it adds just enough of g_j to reach it:

    g_i += |g_i| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (|g_j| sqrt(1 - phi_hat^2)) g_j,
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij.

Tasks are visited as in PCGrad (each task its own random order of the others,
the step key's `task_orders`), and as in PCGrad every adjusted g_i stays a
linear combination of the originals, so the whole algorithm runs on the Gram
matrix (`train/conflicts/pcgrad.py` explains why). One global granularity (the
whole model), as TorchJD's `torchjd.aggregation.GradVac`, which this follows
step for step (its eps guards the divisions). Exact: a fixed sequence of
T(T-1) float32 updates. The EMAs start at 0, so the first step is PCGrad;
the targets live in `method_state["target_cosine"]` and are checkpointed.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from train.conflicts import engine
from train.conflicts.engine import Array
from train.conflicts.pcgrad import task_orders


def gradvac_weights(gram: Array, target: Array, orders: Array, beta: float,
                    eps: float = 1e-8) -> tuple[Array, Array]:
  """(weights [T], updated targets [T, T]) for the visiting `orders` [T, T-1]."""
  num_tasks = gram.shape[0]
  coefficients = jnp.eye(num_tasks, dtype=jnp.float32)
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
  for i in range(num_tasks):
    row = coefficients[i]
    dots = row @ gram  # g_i^adjusted . g_k for every original g_k
    for step in range(num_tasks - 1):
      j = orders[i, step]
      norm_i = jnp.sqrt(jnp.maximum(jnp.sum(dots * row), 0.0))
      norm_j = norms[j]
      cosine = dots[j] / (norm_i * norm_j + eps)
      goal = target[i, j]
      below = cosine < goal
      weight = norm_i * (goal * jnp.sqrt(jnp.maximum(1 - cosine ** 2, 0.0))
                         - cosine * jnp.sqrt(jnp.maximum(1 - goal ** 2, 0.0))) / (
                             norm_j * jnp.sqrt(jnp.maximum(1 - goal ** 2, 0.0)) + eps)
      weight = jnp.where(below, weight, 0.0)
      one_hot = (jnp.arange(num_tasks) == j).astype(jnp.float32)
      row = row + weight * one_hot
      dots = dots + weight * gram[j]
      target = target.at[i, j].set((1 - beta) * goal + beta * cosine)
    coefficients = coefficients.at[i].set(row)
  return jnp.sum(coefficients, axis=0), target


def gradvac(num_tasks: int, beta: float = 0.01, eps: float = 1e-8,
            seed: int = 0) -> optax.GradientTransformationExtraArgs:
  """GradVac with EMA rate beta (the paper's 1e-2; TorchJD defaults to 0.5)."""
  if not 0 <= beta <= 1 or eps < 0:
    raise ValueError(f"gradvac: beta={beta}, eps={eps}; expected 0 <= beta <= 1 and eps >= 0")

  def weights_fn(gram, method_state, context):
    weights, target = gradvac_weights(gram, method_state["target_cosine"],
                                      task_orders(context.rng, num_tasks), beta, eps)
    return weights, {"target_cosine": target}

  return engine.gram_weighting(
      "gradvac", num_tasks, weights_fn, seed=seed,
      init_method_state=lambda: {"target_cosine": jnp.zeros((num_tasks, num_tasks), jnp.float32)})
