"""PCGrad ("gradient surgery", Yu et al., NeurIPS 2020) as an optax transformation.

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
with w = sum_i C[i]. Nothing is flattened into per-task vectors and nothing is
gathered onto one device: G is one reduction per parameter leaf and task pair, which under
`jit` with sharded parameters is a local partial product plus an all-reduce of
T*T scalars, and the weighted sum keeps each leaf's sharding.

The transformation consumes gradients with a leading task axis (every leaf
[T, ...]) and emits the combined gradient without it, so it goes first in an
`optax.chain`, before clipping and AdamW (see `train/optim.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
PyTree = Any

_REDUCTIONS = ("sum", "mean")


class PCGradDiagnostics(NamedTuple):
  """What the trainer logs about the task gradients of one step."""
  cosine_similarity: Array  # [T, T] float32; 0 wherever either gradient is zero
  num_conflicts: Array  # int32 scalar: pairs i < j with g_i . g_j < 0
  grad_norms: Array  # [T] float32: |g_t| before surgery


class PCGradState(NamedTuple):
  """Optimizer state of `pcgrad`: a step count, a fallback key, latest diagnostics."""
  count: Array  # int32 scalar: number of updates applied
  rng: Array  # uint32[2] key used only when `update` is called without `rng`
  cosine_similarity: Array  # [T, T] from the latest step
  num_conflicts: Array  # int32 scalar from the latest step
  grad_norms: Array  # [T] from the latest step


def _num_tasks(stacked_grads: PyTree) -> int:
  """The shared leading (task) dimension of every leaf; errors name the offending leaf."""
  leaves_with_paths = jax.tree_util.tree_leaves_with_path(stacked_grads)
  if not leaves_with_paths:
    raise ValueError("pcgrad: the gradient pytree has no leaves")
  first_path, first = leaves_with_paths[0]
  if jnp.ndim(first) == 0:
    raise ValueError(f"pcgrad: leaf {jax.tree_util.keystr(first_path)} is a scalar; every leaf "
                     "needs a leading task axis [T, ...]")
  num_tasks = first.shape[0]
  for path, leaf in leaves_with_paths:
    if jnp.ndim(leaf) == 0 or leaf.shape[0] != num_tasks:
      raise ValueError(
          f"pcgrad: leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; expected a "
          f"leading task axis of size {num_tasks} like leaf {jax.tree_util.keystr(first_path)} "
          f"{first.shape}")
  return num_tasks


def _validate(num_tasks: int, pcgrad_tasks: Sequence[int] | None, reduction: str) -> tuple[int, ...]:
  """Checks options once, eagerly; returns the tasks to project as a sorted tuple."""
  if reduction not in _REDUCTIONS:
    raise ValueError(f"pcgrad: reduction={reduction!r}; expected one of {_REDUCTIONS}")
  if pcgrad_tasks is None:
    return tuple(range(num_tasks))
  tasks = tuple(sorted({int(t) for t in pcgrad_tasks}))
  bad = [t for t in tasks if not 0 <= t < num_tasks]
  if bad:
    raise ValueError(f"pcgrad: pcgrad_tasks={tuple(pcgrad_tasks)} holds {bad}, outside "
                     f"range(num_tasks={num_tasks})")
  return tasks


def gram_matrix(stacked_grads: PyTree) -> Array:
  """G[a, b] = g_a . g_b over the whole pytree, in float32.

  Each entry is an elementwise product reduced over every leaf, written on the
  task slices `leaf[a]`, `leaf[b]`. Only slices of the stacked leaves are read
  here and in the weighted sum, so XLA forwards them to the per-task gradients
  the stack was built from and never materialises the stack: building it was a
  full copy of three gradients, 138 ms of a 260 ms apply for all-MiniLM-L6 on
  2 CPU cores (bench/profile_step.py --workload=pcgrad). A `dot_general` over
  [T, size] needs the stacked copy. The result is only T x T; under data
  parallelism the gradients are replicated and no gradient is gathered.
  """
  num_tasks = _num_tasks(stacked_grads)
  leaves = jax.tree.leaves(stacked_grads)
  entries = {}
  for a in range(num_tasks):
    for b in range(a, num_tasks):
      entries[a, b] = sum(jnp.sum(leaf[a].astype(jnp.float32) * leaf[b].astype(jnp.float32)) for leaf in leaves)
  return jnp.stack([jnp.stack([entries[min(a, b), max(a, b)] for b in range(num_tasks)])
                    for a in range(num_tasks)])


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


def gradient_diagnostics(gram: Array) -> PCGradDiagnostics:
  """Pairwise cosines, conflicting-pair count and norms, all read off the Gram matrix."""
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
  denominator = norms[:, None] * norms[None, :]
  cosine = jnp.where(denominator > 0, gram / jnp.where(denominator > 0, denominator, 1.0), 0.0)
  upper = jnp.triu(jnp.ones_like(gram, dtype=bool), k=1)
  num_conflicts = jnp.sum((gram < 0) & upper, dtype=jnp.int32)
  return PCGradDiagnostics(cosine_similarity=jnp.clip(cosine, -1.0, 1.0),
                           num_conflicts=num_conflicts, grad_norms=norms)


def _weighted_task_sum(stacked_grads: PyTree, weights: Array) -> PyTree:
  """sum_t weights[t] * g_t per leaf, accumulated in float32, cast back to the leaf dtype."""
  # An unrolled sum of T scaled slices, not jnp.sum(..., axis=0): XLA:CPU lowers a
  # reduction over the leading axis of a [3, 30522, 384] leaf to a slow strided loop
  # (40 s per step measured on 2 cores, against ~0.1 s for elementwise adds).
  def combine(leaf):
    total = weights[0] * leaf[0].astype(jnp.float32)
    for t in range(1, leaf.shape[0]):
      total = total + weights[t] * leaf[t].astype(jnp.float32)
    return total.astype(leaf.dtype)
  return jax.tree.map(combine, stacked_grads)


def pcgrad_combine(stacked_grads: PyTree, rng: Array, pcgrad_tasks: Sequence[int] | None = None,
                   reduction: str = "sum") -> tuple[PyTree, PCGradDiagnostics]:
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
  num_tasks = _num_tasks(stacked_grads)
  tasks = _validate(num_tasks, pcgrad_tasks, reduction)
  gram = gram_matrix(stacked_grads)
  coefficients = surgery_coefficients(gram, task_orders(rng, num_tasks), tasks)
  weights = jnp.sum(coefficients, axis=0)
  if reduction == "mean":
    weights = weights / num_tasks
  return _weighted_task_sum(stacked_grads, weights), gradient_diagnostics(gram)


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

  The state keeps the latest step's diagnostics (see `PCGradState`); find it in
  a nested optimizer state with `find_pcgrad_state`.
  """
  tasks = _validate(num_tasks, pcgrad_tasks, reduction)

  def init_fn(params):
    del params  # the state depends only on the number of tasks
    return PCGradState(
        count=jnp.zeros([], jnp.int32),
        rng=jax.random.PRNGKey(seed),
        cosine_similarity=jnp.zeros((num_tasks, num_tasks), jnp.float32),
        num_conflicts=jnp.zeros([], jnp.int32),
        grad_norms=jnp.zeros((num_tasks,), jnp.float32))

  def update_fn(updates, state, params=None, *, rng=None, **extra_args):
    del params, extra_args
    found = _num_tasks(updates)
    if found != num_tasks:
      raise ValueError(f"pcgrad: updates have a task axis of size {found}; this transformation "
                       f"was built with num_tasks={num_tasks}")
    key = rng if rng is not None else jax.random.fold_in(state.rng, state.count)
    combined, diagnostics = pcgrad_combine(updates, key, tasks, reduction)
    new_state = PCGradState(
        count=optax.safe_int32_increment(state.count),
        rng=state.rng,
        cosine_similarity=diagnostics.cosine_similarity,
        num_conflicts=diagnostics.num_conflicts,
        grad_norms=diagnostics.grad_norms)
    return combined, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_pcgrad_state(opt_state: PyTree) -> PCGradState | None:
  """The (first) `PCGradState` inside a nested optimizer state, or None without PCGrad."""
  for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, PCGradState)):
    if isinstance(node, PCGradState):
      return node
  return None
