"""IMTL-G, the gradient half of "Towards Impartial Multi-task Learning" (Liu et al., ICLR 2021).

IMTL-G looks for the combination g = sum_t w_t g_t (weights summing to 1) whose
projection onto every task's unit gradient u_t = g_t / |g_t| is the same, so no
task is favoured: g . u_t = const. With G the Gram matrix and d_t = |g_t|,
g . u_t = (G w)_t / d_t, hence G w ∝ d and w = G^+ d / sum(G^+ d), the form
TorchJD uses (`torchjd.aggregation.IMTLG`; the paper's closed form on gradient
differences gives the same w when the gradients are linearly independent).

Solved in closed form: a float32 pseudo-inverse of the trace-normalised G (w
does not change with the scale of G). Singular values below 1e-5 of the
largest count as zero, as float32 resolves no more (TorchJD's float64
`pinv` cuts at ~1e-15); for exactly collinear gradients both give the same w.
If sum(G^+ d) vanishes the weights are 0, as in TorchJD.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from train.conflicts import engine
from train.conflicts.engine import Array


def imtl_g_weights(gram: Array, rcond: float = 1e-5) -> Array:
  gram = engine.normalize_gram(gram)
  d = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
  v = jnp.linalg.pinv(gram, rtol=rcond, hermitian=True) @ d
  total = jnp.sum(v)
  small = jnp.abs(total) < 1e-12
  return jnp.where(small, jnp.zeros_like(v), v / jnp.where(small, 1.0, total))


def imtl_g(num_tasks: int) -> optax.GradientTransformationExtraArgs:
  return engine.gram_weighting("imtl_g", num_tasks, lambda gram, s, context: (imtl_g_weights(gram), s))
