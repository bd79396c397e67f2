"""CAGrad, conflict-averse gradient descent (Liu et al., NeurIPS 2021).

CAGrad looks for the update d that maximises the worst task's improvement,
min_t g_t . d, within a ball around the mean gradient g0: |d - g0| <= c |g0|.
Its dual is a problem over the simplex,

    w* = argmin_{w in simplex}  g_w . g0 + rho |g_w|,   g_w = sum_t w_t g_t,  rho = c |g0|,

and the update is d = g0 + (rho / |g_w*|) g_w*, i.e. weights 1/T + (rho / |g_w*|) w*
(mean scale). Both are functions of G alone: g_w . g0 = w^T G 1/T and
|g_w|^2 = w^T G w. As in TorchJD (`torchjd.aggregation.CAGrad`), G is divided by
its trace and the weights are 0 when |g_w*| < norm_eps (w* is then the
minimum-norm point, approximately Pareto-stationary: no common descent left).

How the dual is solved: exactly, face by face. Write b = G 1/T. On the relative
interior of a face S of the simplex, stationarity reads
b_S + rho G_SS z / |g_z| = mu 1 with sum(z) = 1. With p = G_SS^-1 1 and
q = G_SS^-1 b_S it has the closed form

    z = (mu p - q) / (mu 1.p - 1.q),   1.p mu^2 - 2 1.q mu + b_S.q - rho^2 = 0,

taking the larger root (the one with |g_z| > 0). Every face's candidate is
computed at once (2^T - 1 of them, the vertices included), those outside the
simplex dropped, and the one with the least objective kept. The minimiser lies
in the relative interior of some face, where it solves that face's equation, so
it is among the candidates. G_SS gets a 1e-7 ridge (relative to trace 1) for
faces whose gradients are linearly dependent; the only other error is float32
rounding, measured against TorchJD's Clarabel solve in tests/test_conflicts.py.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import optax

from train.conflicts import engine
from train.conflicts.engine import Array

MAX_TASKS = 12
_RIDGE = 1e-7


def _faces(num_tasks: int) -> np.ndarray:
  """bool [2^T - 1, T]: the supports of every face of the simplex."""
  if num_tasks > MAX_TASKS:
    raise ValueError(f"cagrad: {num_tasks} tasks; the exact face-by-face solve enumerates 2^T "
                     f"faces and takes at most {MAX_TASKS}")
  return np.array([s for s in itertools.product([False, True], repeat=num_tasks) if any(s)], dtype=bool)


def cagrad_weights(gram: Array, c: float = 0.4, norm_eps: float = 1e-4) -> Array:
  num_tasks = gram.shape[0]
  gram = engine.normalize_gram(gram, norm_eps)
  faces = jnp.asarray(_faces(num_tasks))  # [F, T]
  inside = faces[:, :, None] & faces[:, None, :]
  eye = jnp.eye(num_tasks, dtype=jnp.float32)
  matrices = jnp.where(inside, gram + _RIDGE * eye, 0.0) + jnp.where(~faces[:, :, None], eye, 0.0)
  mean = jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)
  b = gram @ mean
  rho = c * jnp.sqrt(jnp.maximum(mean @ b, 0.0))
  ones = faces.astype(jnp.float32)
  rhs = jnp.stack([ones, jnp.where(faces, b, 0.0)], axis=-1)  # [F, T, 2]
  solved = engine.solve_positive_definite(matrices, rhs)
  p, q = solved[..., 0], solved[..., 1]
  sum_p, sum_q, b_q = jnp.sum(p, -1), jnp.sum(q, -1), jnp.sum(jnp.where(faces, b, 0.0) * q, -1)
  discriminant = sum_q ** 2 - sum_p * (b_q - rho ** 2)
  root = jnp.sqrt(jnp.maximum(discriminant, 0.0))
  mu = (sum_q + root) / jnp.where(sum_p > 0, sum_p, 1.0)
  denominator = mu * sum_p - sum_q  # = root
  z = (mu[:, None] * p - q) / jnp.where(denominator > 0, denominator, 1.0)[:, None]
  valid = (discriminant > 0) & (denominator > 0) & (sum_p > 0) & jnp.all(z >= -1e-6, axis=-1)
  # Vertices are candidates whatever their face equation says.
  is_vertex = jnp.sum(faces, axis=-1) == 1
  z = jnp.where(is_vertex[:, None], ones, jnp.maximum(z, 0.0))
  z = z / jnp.sum(z, axis=-1, keepdims=True)
  valid = valid | is_vertex
  objective = z @ b + rho * jnp.sqrt(jnp.maximum(jnp.einsum("fi,ij,fj->f", z, gram, z), 0.0))
  w = z[jnp.argmin(jnp.where(valid, objective, jnp.inf))]
  norm_w = jnp.sqrt(jnp.maximum(w @ gram @ w, 0.0))
  ok = norm_w >= norm_eps
  return jnp.where(ok, mean + rho / jnp.where(ok, norm_w, 1.0) * w, jnp.zeros_like(w))


def cagrad(num_tasks: int, c: float = 0.4, norm_eps: float = 1e-4) -> optax.GradientTransformationExtraArgs:
  """CAGrad with radius c (the paper uses 0.2 to 0.8; c = 0 is the mean gradient)."""
  if c < 0 or norm_eps < 0:
    raise ValueError(f"cagrad: c={c}, norm_eps={norm_eps}; expected both >= 0")
  _faces(num_tasks)
  return engine.gram_weighting("cagrad", num_tasks, lambda gram, s, context: (cagrad_weights(gram, c, norm_eps), s))
