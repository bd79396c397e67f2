"""PCGrad ("gradient surgery", Yu et al., NeurIPS 2020) on the Gram-matrix engine.

Multitask training sums one gradient per task. When two task gradients point in
conflicting directions (negative dot product), the sum lets one task undo the
other's progress. Algorithm 1 of the paper removes the conflict: for each task i,
visit the other tasks j in a random order and, whenever the (already partially
projected) g_i^PC conflicts with the ORIGINAL g_j, project g_i^PC onto the normal
plane of g_j:

    if g_i^PC . g_j < 0:   g_i^PC -= (g_i^PC . g_j) / |g_j|^2 * g_j

The update is then sum_i g_i^PC. As in the official implementation, every task
draws its own shuffled order of the others, freshly every step.

Why the Gram matrix. Every projection subtracts a multiple of some original g_j,
so each g_i^PC stays a linear combination of the T original task gradients:
g_i^PC = sum_k C[i, k] g_k. The dot products the algorithm needs are then

    g_i^PC . g_j = sum_k C[i, k] G[k, j],    G = [g_a . g_b]  (T x T),

so the whole algorithm runs on a T x T Gram matrix and a T x T coefficient
matrix, and the output is one weighted sum over the task axis, sum_t w_t g_t
with w = sum_i C[i] (`train/conflicts/engine.py`). The solve is exact: a fixed
sequence of T(T-1) float32 projections, no iteration to converge.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from train.conflicts import engine
from train.conflicts.engine import Array, PyTree

REDUCTIONS = ("sum", "mean")


class PCGradState(engine.ConflictState):
  """The engine's state, under its own class so that `find_pcgrad_state` finds PCGrad's alone."""
  __slots__ = ()


PCGradDiagnostics = engine.GradientDiagnostics


def validate_options(num_tasks: int, pcgrad_tasks: Sequence[int] | None, reduction: str) -> tuple[int, ...]:
  """Checks options once, eagerly; returns the tasks to project as a sorted tuple."""
  if reduction not in REDUCTIONS:
    raise ValueError(f"pcgrad: reduction={reduction!r}; expected one of {REDUCTIONS}")
  if pcgrad_tasks is None:
    return tuple(range(num_tasks))
  tasks = tuple(sorted({int(t) for t in pcgrad_tasks}))
  bad = [t for t in tasks if not 0 <= t < num_tasks]
  if bad:
    raise ValueError(f"pcgrad: pcgrad_tasks={tuple(pcgrad_tasks)} holds {bad}, outside "
                     f"range(num_tasks={num_tasks})")
  return tasks


def task_orders(rng: Array, num_tasks: int) -> Array:
  """int32 [T, T-1]: row i is task i's random visiting order of the other tasks.

  Each task shuffles independently (one key per task), as in the official code.
  """
  others = jnp.array([[j for j in range(num_tasks) if j != i] for i in range(num_tasks)],
                     dtype=jnp.int32).reshape(num_tasks, num_tasks - 1)
  if num_tasks < 2:
    return others
  keys = jax.random.split(rng, num_tasks)
  shuffles = jax.vmap(lambda key: jax.random.permutation(key, num_tasks - 1))(keys)
  return jnp.take_along_axis(others, shuffles.astype(jnp.int32), axis=1)


def surgery_coefficients(gram: Array, orders: Array, pcgrad_tasks: Sequence[int]) -> Array:
  """Algorithm 1 on the Gram matrix: float32 [T, T], row i = coefficients of g_i^PC.

  Static Python loops rather than `lax.fori_loop`: T is a static shape and
  small (3 here), so the T*(T-1) steps of T-sized arithmetic unroll into a
  handful of fused scalar ops, with no while-loop machinery on the device and
  negligible compile time. Only the visiting order is traced (gathered with
  `orders[i, step]`), so one compilation serves every step.
  """
  num_tasks = gram.shape[0]
  squared_norms = jnp.diagonal(gram)
  coefficients = jnp.eye(num_tasks, dtype=jnp.float32)
  for i in pcgrad_tasks:
    row = coefficients[i]
    for step in range(num_tasks - 1):
      j = orders[i, step]
      dot = jnp.sum(row * gram[:, j])  # g_i^PC . g_j (original g_j)
      norm_j = squared_norms[j]
      # A zero g_j defines no plane to project onto: leave g_i^PC alone.
      conflict = (dot < 0) & (norm_j > 0)
      scale = jnp.where(conflict, dot / jnp.where(norm_j > 0, norm_j, 1.0), 0.0)
      row = row - scale * jax.nn.one_hot(j, num_tasks, dtype=jnp.float32)
    coefficients = coefficients.at[i].set(row)
  return coefficients


def pcgrad_weights(gram: Array, rng: Array, pcgrad_tasks: Sequence[int], reduction: str = "sum") -> Array:
  """[T] task weights of PCGrad for the visiting orders `task_orders(rng, T)`."""
  num_tasks = gram.shape[0]
  weights = jnp.sum(surgery_coefficients(gram, task_orders(rng, num_tasks), pcgrad_tasks), axis=0)
  return weights / num_tasks if reduction == "mean" else weights


def pcgrad_combine(stacked_grads: PyTree, rng: Array, pcgrad_tasks: Sequence[int] | None = None,
                   reduction: str = "sum") -> tuple[PyTree, engine.GradientDiagnostics]:
  """Projects conflicting task gradients (Algorithm 1) and combines them.

  Args:
    stacked_grads: pytree whose every leaf is [T, ...], one gradient per task.
    rng: key for the per-task visiting orders (`task_orders(rng, T)`).
    pcgrad_tasks: indices of the tasks whose gradients are projected; the others
      pass through unchanged but still serve as projection targets. None: all.
    reduction: "sum" (the paper) or "mean" (sum / T) over the T task gradients.

  Returns:
    (combined gradient pytree without the task axis, diagnostics of the
    ORIGINAL task gradients).
  """
  num_tasks = engine.num_tasks_of(stacked_grads)
  tasks = validate_options(num_tasks, pcgrad_tasks, reduction)
  gram = engine.gram_matrix(stacked_grads)
  weights = pcgrad_weights(gram, rng, tasks, reduction)
  return engine.weighted_task_sum(stacked_grads, weights), engine.gradient_diagnostics(gram)


def pcgrad(num_tasks: int, pcgrad_tasks: Sequence[int] | None = None, reduction: str = "sum",
           seed: int = 0) -> optax.GradientTransformationExtraArgs:
  """Gradient surgery over a leading task axis, as a chainable optax transformation.

  `update(updates, state, params=None, *, rng=None)` takes updates whose leaves
  are [num_tasks, ...] and returns the combined updates without the task axis.
  `params` (if given) are the ordinary, task-axis-free parameters; they are not
  used. Pass the step's key as the extra argument `rng` (the trainer passes
  `jax.random.fold_in(base_key, step)`); `optax.chain` and `optax.partition`
  forward extra arguments. Without `rng` the key is
  `fold_in(PRNGKey(seed), state.count)`, still a fresh order every step, but
  then two runs differ only through `seed`.

  The state keeps the latest step's diagnostics (see `engine.ConflictState`);
  find it in a nested optimizer state with `find_pcgrad_state`.
  """
  tasks = validate_options(num_tasks, pcgrad_tasks, reduction)

  def weights_fn(gram, method_state, context):
    return pcgrad_weights(gram, context.rng, tasks, reduction), method_state

  return engine.gram_weighting("pcgrad", num_tasks, weights_fn, seed=seed, state_class=PCGradState)


def find_pcgrad_state(opt_state: PyTree) -> PCGradState | None:
  """The (first) `PCGradState` inside a nested optimizer state, or None without PCGrad."""
  return engine.find_conflict_state(opt_state, PCGradState)
