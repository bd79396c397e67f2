"""Aligned-MTL (Senushkin et al., CVPR 2023): the task gradients made orthogonal and equally long.

Aligned-MTL replaces the Jacobian J (rows g_t) by the closest matrix with
orthogonal rows of equal norm, which has condition number 1: no task dominates
and none is cancelled. On the Gram matrix G = V diag(lambda) V^T this is the
"balance transformation" B = sqrt(lambda_scale) V diag(lambda)^(-1/2) V^T on the
non-null eigenvectors, and the update is J^T B w with w = 1/T (mean scale).
lambda_scale is the smallest kept eigenvalue ("min", the paper's default), the
median or the mean ("rmse"), as in TorchJD (`torchjd.aggregation.AlignedMTL`).

Solved in closed form: a float32 `eigh` of the trace-normalised G (B is
invariant to the scale of G). Eigenvalues below `rank_tolerance` times the
largest count as zero. TorchJD uses T * float64-eps there; float32 cannot
resolve eigenvalues that small, so 1e-5 is the default: exactly
rank-deficient inputs give TorchJD's answer, while gradients with a genuine
eigenvalue between ~1e-15 and 1e-5 of the largest would differ (the method is
ill-conditioned there anyway: lambda_min scales the whole update).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from train.conflicts import engine
from train.conflicts.engine import Array

SCALE_MODES = ("min", "median", "rmse")


def aligned_mtl_weights(gram: Array, scale_mode: str = "min", rank_tolerance: float = 1e-5) -> Array:
  num_tasks = gram.shape[0]
  gram = engine.normalize_gram(gram)
  eigenvalues, vectors = jnp.linalg.eigh(gram)
  keep = eigenvalues > rank_tolerance * jnp.max(eigenvalues)
  rank = jnp.sum(keep)
  safe = jnp.where(keep, eigenvalues, 1.0)
  if scale_mode == "min":
    scale = jnp.min(jnp.where(keep, eigenvalues, jnp.inf))
  elif scale_mode == "median":
    # torch.median of the kept eigenvalues: the lower middle one. eigh sorts ascending,
    # so the kept ones are the last `rank`; the lower median is at T - rank + (rank - 1) // 2.
    scale = eigenvalues[num_tasks - rank + (rank - 1) // 2]
  else:
    scale = jnp.sum(jnp.where(keep, eigenvalues, 0.0)) / jnp.maximum(rank, 1)
  inverse_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(safe), 0.0)
  balance = jnp.sqrt(jnp.maximum(scale, 0.0)) * (vectors * inverse_sqrt) @ vectors.T
  balance = jnp.where(rank > 0, balance, jnp.eye(num_tasks, dtype=gram.dtype))
  return balance @ jnp.full((num_tasks,), 1.0 / num_tasks, jnp.float32)


def aligned_mtl(num_tasks: int, scale_mode: str = "min",
                rank_tolerance: float = 1e-5) -> optax.GradientTransformationExtraArgs:
  if scale_mode not in SCALE_MODES:
    raise ValueError(f"aligned_mtl: scale_mode={scale_mode!r}; expected one of {SCALE_MODES}")
  if not 0 < rank_tolerance < 1:
    raise ValueError(f"aligned_mtl: rank_tolerance={rank_tolerance}; expected 0 < rank_tolerance < 1")
  return engine.gram_weighting(
      "aligned_mtl", num_tasks,
      lambda gram, s, context: (aligned_mtl_weights(gram, scale_mode, rank_tolerance), s))
