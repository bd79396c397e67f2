"""MGDA (Désidéri 2012) with the Frank-Wolfe solver of Sener & Koltun (NeurIPS 2018, Algorithm 2).

MGDA steps along the minimum-norm point of the convex hull of the task
gradients, w* = argmin_{w in simplex} w^T G w: the one direction that decreases
every task's loss (it is 0 exactly when the point is Pareto-stationary). The
weights sum to 1, so the update has the scale of one gradient, not of the sum.

Solver: Algorithm 2 as the paper and TorchJD (`torchjd.aggregation.MGDA`) run
it: from w = 1/T, move towards the vertex e_t with the smallest (G w)_t by the
exact line-search step gamma, and stop once gamma < epsilon or after max_iters.
Under `jit` it is a `fori_loop` of max_iters steps that freezes once the stop
rule fires, so it returns what the early-stopping loop returns, without a host
sync. G is divided by its trace first (the iterates are scale-invariant; this
only keeps float32 in range). Frank-Wolfe stops short of the exact minimum-norm
point, by a lot when two gradients nearly cancel (gamma falls below epsilon
while w is still far from w*): tests/test_conflicts.py measures both its
agreement with TorchJD's loop and its distance from the exact solution.

`solver="exact"` solves the same problem exactly instead: on each face S of the
simplex the minimiser of w^T G w with sum(w) = 1 is G_SS^-1 1 / (1^T G_SS^-1 1);
every face's candidate is computed at once (2^T - 1 small Cholesky solves, a
1e-7 ridge for collinear gradients), those outside the simplex dropped and the
one of least norm kept. Its only error is float32 rounding.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train.conflicts import engine
from train.conflicts.engine import Array


def mgda_weights(gram: Array, epsilon: float = 1e-3, max_iters: int = 100) -> Array:
  num_tasks = gram.shape[0]
  gram = engine.normalize_gram(gram)
  eye = jnp.eye(num_tasks, dtype=jnp.float32)

  def step(_, carry):
    alpha, done = carry
    t = jnp.argmin(gram @ alpha)
    a = alpha @ gram[:, t]  # alpha^T G e_t
    b = alpha @ gram @ alpha
    c = gram[t, t]
    safe = jnp.where(b + c - 2 * a != 0, b + c - 2 * a, 1.0)
    gamma = jnp.where(c <= a, 1.0, jnp.where(b <= a, 0.0, (b - a) / safe))
    new_alpha = (1 - gamma) * alpha + gamma * eye[t]
    alpha = jnp.where(done, alpha, new_alpha)
    return alpha, done | (gamma < epsilon)

  alpha, _ = jax.lax.fori_loop(0, max_iters, step, (jnp.full((num_tasks,), 1.0 / num_tasks), jnp.array(False)))
  return alpha


SOLVERS = ("frank_wolfe", "exact")
MAX_TASKS_EXACT = 12


def mgda_exact_weights(gram: Array, ridge: float = 1e-7) -> Array:
  """The exact minimum-norm point of the convex hull, face by face."""
  num_tasks = gram.shape[0]
  gram = engine.normalize_gram(gram)
  faces = jnp.asarray(np.array([f for f in itertools.product([False, True], repeat=num_tasks) if any(f)]))
  eye = jnp.eye(num_tasks, dtype=jnp.float32)
  matrices = (jnp.where(faces[:, :, None] & faces[:, None, :], gram + ridge * eye, 0.0)
              + jnp.where(~faces[:, :, None], eye, 0.0))
  z = engine.solve_positive_definite(matrices, faces.astype(jnp.float32))
  total = jnp.sum(z, axis=-1)
  z = z / jnp.where(total > 0, total, 1.0)[:, None]
  valid = (total > 0) & jnp.all(z >= -1e-6, axis=-1)
  z = jnp.maximum(z, 0.0)
  z = z / jnp.sum(z, axis=-1, keepdims=True)
  norms = jnp.einsum("fi,ij,fj->f", z, gram, z)
  best = jnp.argmin(jnp.where(valid, norms, jnp.inf))
  return jnp.where(jnp.any(valid), z[best], jnp.full((num_tasks,), 1.0 / num_tasks))


def mgda(num_tasks: int, epsilon: float = 1e-3, max_iters: int = 100,
         solver: str = "frank_wolfe") -> optax.GradientTransformationExtraArgs:
  """MGDA; solver "frank_wolfe" (the paper's Algorithm 2, as TorchJD) or "exact"."""
  if epsilon <= 0 or max_iters <= 0:
    raise ValueError(f"mgda: epsilon={epsilon}, max_iters={max_iters}; expected both > 0")
  if solver not in SOLVERS:
    raise ValueError(f"mgda: solver={solver!r}; expected one of {SOLVERS}")
  if solver == "exact":
    if num_tasks > MAX_TASKS_EXACT:
      raise ValueError(f"mgda: solver='exact' enumerates 2^T faces and takes at most {MAX_TASKS_EXACT} tasks")
    return engine.gram_weighting("mgda", num_tasks, lambda gram, s, context: (mgda_exact_weights(gram), s))
  return engine.gram_weighting(
      "mgda", num_tasks, lambda gram, s, context: (mgda_weights(gram, epsilon, max_iters), s))
