"""The engine every gradient-conflict method runs on: stacked gradients -> G -> w -> sum_t w_t g_t.

Most multitask-gradient methods (PCGrad, GradVac, MGDA, CAGrad, IMTL-G,
Nash-MTL, Aligned-MTL, UPGrad, DualProj) return a combination sum_t w_t g_t of
the T task gradients whose weights depend on the gradients only through their
Gram matrix G[a, b] = g_a . g_b (and, for some, on a little state carried
between steps). Loss-weighting methods (uncertainty weighting, DWA, FAMO) also
end in sum_t w_t g_t, with weights from the task losses. So one engine does the
expensive part once, the same way for all of them:

  1. `gram_matrix`: one reduction per parameter leaf and task pair, read from
     task slices (no stacked copy, no gather; under data parallelism a local
     partial product plus an all-reduce of T*T scalars);
  2. a method's `weights_fn(gram, method_state, context) -> (weights, method_state)`,
     T x T arithmetic with static shapes and fixed iteration counts, so it
     compiles once and never syncs with the host;
  3. `weighted_task_sum`: sum_t w_t g_t per leaf, keeping each leaf's sharding.

`gram_weighting` wraps a `weights_fn` as an optax `GradientTransformationExtraArgs`:
updates with a leading task axis (every leaf [T, ...]) in, the combined update
out, the step's diagnostics (weights, pairwise cosines, conflicting pairs,
norms) in its state. It goes first in an `optax.chain`, before clipping and AdamW.

Non-finite input is never turned into a plausible update: if G or the weights
are not finite, the weights become NaN and so does the update. The trainer's
guard (`train/steps.py`) already refuses a step whose task gradients are not
finite, before the transformation runs.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
PyTree = Any


class StepContext(NamedTuple):
  """What a weights function may read besides G and its own state."""
  rng: Array  # the step key (fresh every step)
  count: Array  # int32: updates applied before this one
  losses: Array | None  # [T] float32 task losses (NaN for a task absent this step), or None


class ConflictState(NamedTuple):
  """Optimizer state of every engine method: a step count, a fallback key, the latest diagnostics."""
  count: Array  # int32 scalar: number of updates applied
  rng: Array  # uint32[2] key used only when `update` is called without `rng`
  weights: Array  # [T] float32: the task weights of the latest step
  cosine_similarity: Array  # [T, T] float32; 0 wherever either gradient is zero
  num_conflicts: Array  # int32 scalar: pairs i < j with g_i . g_j < 0
  grad_norms: Array  # [T] float32: |g_t| before the method
  method_state: PyTree  # whatever the method carries between steps (a dict; {} for most)


class GradientDiagnostics(NamedTuple):
  """Pairwise cosines, conflicting pairs and norms of the task gradients of one step."""
  cosine_similarity: Array
  num_conflicts: Array
  grad_norms: Array


WeightsFn = Callable[[Array, PyTree, StepContext], tuple[Array, PyTree]]


def num_tasks_of(stacked_grads: PyTree, method: str = "pcgrad") -> int:
  """The shared leading (task) dimension of every leaf; errors name the offending leaf."""
  leaves_with_paths = jax.tree_util.tree_leaves_with_path(stacked_grads)
  if not leaves_with_paths:
    raise ValueError(f"{method}: the gradient pytree has no leaves")
  first_path, first = leaves_with_paths[0]
  if jnp.ndim(first) == 0:
    raise ValueError(f"{method}: leaf {jax.tree_util.keystr(first_path)} is a scalar; every leaf "
                     "needs a leading task axis [T, ...]")
  num_tasks = first.shape[0]
  for path, leaf in leaves_with_paths:
    if jnp.ndim(leaf) == 0 or leaf.shape[0] != num_tasks:
      raise ValueError(
          f"{method}: leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; expected a "
          f"leading task axis of size {num_tasks} like leaf {jax.tree_util.keystr(first_path)} "
          f"{first.shape}")
  return num_tasks


def gram_matrix(stacked_grads: PyTree) -> Array:
  """G[a, b] = g_a . g_b over the whole pytree, in float32.

  Each entry is an elementwise product reduced over every leaf, written on the
  task slices `leaf[a]`, `leaf[b]`. Only slices of the stacked leaves are read
  here and in the weighted sum, so XLA forwards them to the per-task gradients
  the stack was built from and never materialises the stack: building it was a
  full copy of three gradients, about half of PCGrad's apply for all-MiniLM-L6
  on 2 CPU cores (bench/profile_step.py --workload=pcgrad). A `dot_general` over
  [T, size] needs the stacked copy. The result is only T x T; under data
  parallelism the gradients are replicated and no gradient is gathered.
  """
  num_tasks = num_tasks_of(stacked_grads)
  leaves = jax.tree.leaves(stacked_grads)
  entries = {}
  for a in range(num_tasks):
    for b in range(a, num_tasks):
      entries[a, b] = sum(jnp.sum(leaf[a].astype(jnp.float32) * leaf[b].astype(jnp.float32)) for leaf in leaves)
  return jnp.stack([jnp.stack([entries[min(a, b), max(a, b)] for b in range(num_tasks)])
                    for a in range(num_tasks)])


def weighted_task_sum(stacked_grads: PyTree, weights: Array) -> PyTree:
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


def gradient_diagnostics(gram: Array) -> GradientDiagnostics:
  """Pairwise cosines, conflicting-pair count and norms, all read off the Gram matrix."""
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
  denominator = norms[:, None] * norms[None, :]
  cosine = jnp.where(denominator > 0, gram / jnp.where(denominator > 0, denominator, 1.0), 0.0)
  upper = jnp.triu(jnp.ones_like(gram, dtype=bool), k=1)
  num_conflicts = jnp.sum((gram < 0) & upper, dtype=jnp.int32)
  return GradientDiagnostics(cosine_similarity=jnp.clip(cosine, -1.0, 1.0),
                             num_conflicts=num_conflicts, grad_norms=norms)


def normalize_gram(gram: Array, eps: float = 0.0) -> Array:
  """G / trace(G): the Gram of the gradients scaled to unit total squared norm.

  Scale-free methods solve on this so that their tolerances mean the same at
  every gradient scale and float32 keeps its digits. A trace <= eps gives zeros
  (TorchJD's `normalize`): nothing to balance.
  """
  trace = jnp.trace(gram)
  return jnp.where(trace > eps, gram / jnp.where(trace > eps, trace, 1.0), jnp.zeros_like(gram))


def solve_positive_definite(matrices: Array, rhs: Array) -> Array:
  """x with matrices @ x = rhs for symmetric positive definite [..., T, T], by an unrolled Cholesky.

  The methods' T x T systems are tiny and come in batches (one per active set
  or face). Written out for the static T, the factorisation is ~T^3/3 fused
  elementwise ops over the batch: it compiles in a fraction of the time of
  `jnp.linalg.solve` (LU with pivoting through LAPACK, whose batched form took
  seconds to compile for the 2^T systems here) and needs no pivoting, since
  every matrix it gets is positive definite. rhs is [..., T] or [..., T, K].
  """
  num = matrices.shape[-1]
  vector = rhs.ndim == matrices.ndim - 1
  if vector:
    rhs = rhs[..., None]
  factor = [[None] * num for _ in range(num)]
  for j in range(num):
    diagonal = matrices[..., j, j] - sum((factor[j][k] ** 2 for k in range(j)), jnp.zeros_like(matrices[..., j, j]))
    factor[j][j] = jnp.sqrt(jnp.maximum(diagonal, jnp.finfo(matrices.dtype).tiny))
    for i in range(j + 1, num):
      off = matrices[..., i, j] - sum((factor[i][k] * factor[j][k] for k in range(j)), jnp.zeros_like(diagonal))
      factor[i][j] = off / factor[j][j]
  # Forward (L y = b), then backward (L^T x = y) substitution.
  y = [None] * num
  for i in range(num):
    y[i] = (rhs[..., i, :] - sum((factor[i][k][..., None] * y[k] for k in range(i)), jnp.zeros_like(rhs[..., i, :]))
            ) / factor[i][i][..., None]
  x = [None] * num
  for i in reversed(range(num)):
    x[i] = (y[i] - sum((factor[k][i][..., None] * x[k] for k in range(i + 1, num)), jnp.zeros_like(y[i]))
            ) / factor[i][i][..., None]
  solution = jnp.stack(x, axis=-2)
  return solution[..., 0] if vector else solution


def guard_nonfinite(gram: Array, weights: Array) -> Array:
  """The weights, or all-NaN when G or the weights are not finite (never a silent fallback)."""
  finite = jnp.all(jnp.isfinite(gram)) & jnp.all(jnp.isfinite(weights))
  return jnp.where(finite, weights, jnp.full_like(weights, jnp.nan))


def gram_weighting(name: str, num_tasks: int, weights_fn: WeightsFn, *,
                   init_method_state: Callable[[], PyTree] = dict, seed: int = 0,
                   state_class: type = ConflictState) -> optax.GradientTransformationExtraArgs:
  """A Gram-matrix method as a chainable optax transformation.

  `update(updates, state, params=None, *, rng=None, losses=None)` takes updates
  whose leaves are [num_tasks, ...] and returns sum_t w_t g_t without the task
  axis. `rng` is the step key (the trainer passes `fold_in(base_key, step)`);
  without it the key is `fold_in(PRNGKey(seed), state.count)`. `losses` ([T],
  in task order) is read only by the loss-weighting methods. `gram` ([T, T]), when
  the caller has already computed `gram_matrix(updates)` (the trainer's step does,
  for its non-finite guard), saves the second pass over the task gradients that
  computing it again would cost. `optax.chain` and `optax.partition` forward
  the extra arguments.
  """
  if num_tasks < 1:
    raise ValueError(f"{name}: num_tasks={num_tasks}; expected >= 1")

  def init_fn(params):
    del params  # the state depends only on the number of tasks
    return state_class(
        count=jnp.zeros([], jnp.int32),
        rng=jax.random.PRNGKey(seed),
        weights=jnp.ones((num_tasks,), jnp.float32),
        cosine_similarity=jnp.zeros((num_tasks, num_tasks), jnp.float32),
        num_conflicts=jnp.zeros([], jnp.int32),
        grad_norms=jnp.zeros((num_tasks,), jnp.float32),
        # Own buffers for every leaf: the trainer donates the state, and two leaves
        # sharing one buffer (one zeros array used twice) cannot both be donated.
        method_state=jax.tree.map(lambda leaf: jnp.array(leaf, copy=True), init_method_state()))

  def update_fn(updates, state, params=None, *, rng=None, losses=None, gram=None, **extra_args):
    del params, extra_args
    found = num_tasks_of(updates, name)
    if found != num_tasks:
      raise ValueError(f"{name}: updates have a task axis of size {found}; this transformation "
                       f"was built with num_tasks={num_tasks}")
    if losses is not None:
      losses = jnp.asarray(losses, jnp.float32)
      if losses.shape != (num_tasks,):
        raise ValueError(f"{name}: losses have shape {losses.shape}; expected ({num_tasks},), "
                         "one loss per task in the order of the task axis")
    key = rng if rng is not None else jax.random.fold_in(state.rng, state.count)
    if gram is None:
      gram = gram_matrix(updates)
    elif gram.shape != (num_tasks, num_tasks):
      raise ValueError(f"{name}: gram has shape {gram.shape}; expected ({num_tasks}, {num_tasks})")
    weights, method_state = weights_fn(gram, state.method_state, StepContext(key, state.count, losses))
    weights = guard_nonfinite(gram, weights.astype(jnp.float32))
    diagnostics = gradient_diagnostics(gram)
    new_state = state_class(
        count=optax.safe_int32_increment(state.count), rng=state.rng, weights=weights,
        cosine_similarity=diagnostics.cosine_similarity, num_conflicts=diagnostics.num_conflicts,
        grad_norms=diagnostics.grad_norms, method_state=method_state)
    return weighted_task_sum(updates, weights), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_conflict_state(opt_state: PyTree, state_class: type = ConflictState) -> ConflictState | None:
  """The (first) engine state of `state_class` inside a nested optimizer state, or None."""
  for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, state_class)):
    if isinstance(node, state_class):
      return node
  return None
