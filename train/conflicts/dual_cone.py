"""UPGrad and DualProj: projections onto the dual cone of the task gradients.

The dual cone of g_1..g_T is {x : g_t . x >= 0 for every t}: the directions
that conflict with no task. Projecting J^T u (J = the stacked gradients, u a
task weighting) onto it is, by Proposition 1 of Quinton & Rey, "Jacobian
Descent for Multi-Objective Optimization" (arXiv:2406.16232), the quadratic
program on the Gram matrix G = J J^T

    v* = argmin_v  v^T G v   subject to  v >= u,      projection = J^T v*.

- DualProj (the projection of Lopez-Paz & Ranzato's GEM, eq. 11): u = 1/T, the
  mean gradient projected: w = v*(1/T).
- UPGrad: every task's gradient projected on its own, then averaged:
  w = sum_i v*(e_i / T).

Both as TorchJD defines them (`torchjd.aggregation.UPGrad`, `DualProj`, whose
default preference vector is the mean), including its conditioning: G is divided
by its trace and `reg_eps * I` is added, so the QP is strictly convex even when
gradients are collinear. The result is a mean-scale update (the weights sum to
about 1 when nothing conflicts), not the sum's scale.

How the QP is solved: exactly, by active sets. The optimum has some set A of
tight constraints (v_A = u_A) and stationarity on the rest ((G v)_F = 0), a
T x T linear system per set. All 2^T sets are solved at once (a batched
Cholesky solve, static shapes, no iteration), the infeasible ones (v < u) dropped, and
the feasible one of least v^T G v kept: it is the optimum, since every
feasible candidate is a feasible point and the optimum is among them. The only
error is float32 rounding in the T x T solves, whose condition number is at
most about (1 + reg_eps) / reg_eps after normalisation; tests/test_conflicts.py
measures it against TorchJD's quadprog solve in float64. 2^T systems limit this
to small T (here 3; refused above 12).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from train.conflicts import engine
from train.conflicts.engine import Array

MAX_TASKS = 12


def _active_sets(num_tasks: int) -> np.ndarray:
  """bool [2^T, T]: every subset of tight constraints."""
  if num_tasks > MAX_TASKS:
    raise ValueError(f"dual cone projection: {num_tasks} tasks; the exact active-set solve "
                     f"enumerates 2^T sets and takes at most {MAX_TASKS}")
  return np.array(list(itertools.product([False, True], repeat=num_tasks)), dtype=bool)


def project_weights(gram: Array, u: Array) -> Array:
  """v* = argmin v^T G v subject to v >= u, for a positive definite G [T, T] and u [T]."""
  num_tasks = gram.shape[0]
  active = jnp.asarray(_active_sets(num_tasks))  # [S, T]
  free = ~active
  eye = jnp.eye(num_tasks, dtype=gram.dtype)
  # Free rows: sum_{j free} G_ij v_j = -sum_{j tight} G_ij u_j. Tight rows: v_i = u_i.
  matrices = jnp.where(free[:, :, None] & free[:, None, :], gram, 0.0) + jnp.where(active[:, :, None], eye, 0.0)
  tight_u = jnp.where(active, u, 0.0)
  rhs = jnp.where(active, u, -(tight_u @ gram))
  # Each system is G on the free block and I on the tight one: positive definite.
  candidates = engine.solve_positive_definite(matrices, rhs)  # [S, T]
  tolerance = 1e-4 * jnp.maximum(jnp.max(jnp.abs(u)), 1e-30)
  feasible = jnp.all(candidates >= u - tolerance, axis=-1)
  objective = jnp.einsum("si,ij,sj->s", candidates, gram, candidates)
  best = jnp.argmin(jnp.where(feasible, objective, jnp.inf))  # v = u (all tight) is always feasible
  return jnp.maximum(candidates[best], u)


def conditioned_gram(gram: Array, norm_eps: float, reg_eps: float) -> Array:
  """TorchJD's `regularize(normalize(G, norm_eps), reg_eps)`."""
  return engine.normalize_gram(gram, norm_eps) + reg_eps * jnp.eye(gram.shape[0], dtype=gram.dtype)


def upgrad_weights(gram: Array, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Array:
  num_tasks = gram.shape[0]
  conditioned = conditioned_gram(gram, norm_eps, reg_eps)
  rows = jax.vmap(lambda u: project_weights(conditioned, u))(jnp.eye(num_tasks, dtype=jnp.float32) / num_tasks)
  return jnp.sum(rows, axis=0)


def dualproj_weights(gram: Array, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Array:
  num_tasks = gram.shape[0]
  u = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
  return project_weights(conditioned_gram(gram, norm_eps, reg_eps), u)


def _check(name: str, num_tasks: int, norm_eps: float, reg_eps: float) -> None:
  _active_sets(num_tasks)
  if norm_eps < 0 or reg_eps <= 0:
    raise ValueError(f"{name}: norm_eps={norm_eps}, reg_eps={reg_eps}; expected norm_eps >= 0 and "
                     "reg_eps > 0 (the exact solve needs a positive definite G)")


def upgrad(num_tasks: int, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> optax.GradientTransformationExtraArgs:
  """UPGrad (Quinton & Rey 2024): each task gradient projected onto the dual cone, averaged."""
  _check("upgrad", num_tasks, norm_eps, reg_eps)
  return engine.gram_weighting(
      "upgrad", num_tasks, lambda gram, s, context: (upgrad_weights(gram, norm_eps, reg_eps), s))


def dualproj(num_tasks: int, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> optax.GradientTransformationExtraArgs:
  """DualProj (GEM's projection): the mean gradient projected onto the dual cone."""
  _check("dualproj", num_tasks, norm_eps, reg_eps)
  return engine.gram_weighting(
      "dualproj", num_tasks, lambda gram, s, context: (dualproj_weights(gram, norm_eps, reg_eps), s))
