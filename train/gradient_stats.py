"""How the task gradients of a step relate: pairwise cosines and per-task norms, for any run.

The conflict methods (`train/conflicts/`) record these for the steps they
combine, but the question they answer (do the tasks pull the shared encoder
apart, and which pair most?) matters as much for a run that just sums the task
gradients. `config.gradient_stats_every_steps = N` turns it on: every N-th step
the apply step reads the per-task gradients it already holds, before they are
summed, and computes the T x T Gram matrix of them. That is T (T + 1) / 2 dot
products over the trainable parameters, done only on those steps (a `lax.cond`),
so the other steps cost nothing; the result is T x T scalars, so the logging
stays one host copy per window.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from train.conflicts import engine


def task_gradient_stats(grads: Mapping[str, Any], task_order: Sequence[str]) -> dict[str, jax.Array]:
  """{"cosine": [T, T], "norm": [T]} of the task gradients, in `task_order`; NaN where a task is absent.

  `grads` maps the step's tasks to gradient pytrees of one structure. A
  sequential step has one task, so every cosine but the diagonal is NaN there:
  there is no pair to compare.
  """
  present = [t for t in task_order if t in grads]
  leaves = {t: jax.tree.leaves(grads[t]) for t in present}
  dot = {}
  for i, a in enumerate(present):
    for b in present[i:]:
      dot[a, b] = dot[b, a] = sum(jnp.sum(x.astype(jnp.float32) * y.astype(jnp.float32))
                                  for x, y in zip(leaves[a], leaves[b]))
  gram = jnp.stack([jnp.stack([dot[a, b] for b in present]) for a in present])
  found = engine.gradient_diagnostics(gram)
  index = jnp.asarray([task_order.index(t) for t in present])
  num_tasks = len(task_order)
  cosine = jnp.full((num_tasks, num_tasks), jnp.nan, jnp.float32).at[index[:, None], index[None, :]].set(
      found.cosine_similarity)
  norm = jnp.full((num_tasks,), jnp.nan, jnp.float32).at[index].set(found.grad_norms)
  return {"cosine": cosine, "norm": norm}


def no_stats(task_order: Sequence[str]) -> dict[str, jax.Array]:
  """The NaN placeholder of a step that computes no statistics (same shapes, for `lax.cond`)."""
  num_tasks = len(task_order)
  return {"cosine": jnp.full((num_tasks, num_tasks), jnp.nan, jnp.float32),
          "norm": jnp.full((num_tasks,), jnp.nan, jnp.float32)}


def every_n_steps(step: jax.Array, every: int, grads: Mapping[str, Any],
                  task_order: Sequence[str]) -> dict[str, jax.Array]:
  """The statistics on steps that are a multiple of `every`, NaN on the others."""
  return jax.lax.cond(step % every == 0, lambda: task_gradient_stats(grads, task_order),
                      lambda: no_stats(task_order))


def summarize(windows: Sequence[Mapping[str, Any]], task_order: Sequence[str]) -> dict | None:
  """The mean over a logging window's measured steps, by pair and task name; None if none was measured.

  `windows` holds host copies of `task_gradient_stats` outputs (NaN for steps
  not measured and for absent tasks). A pair both of whose tasks never met in a
  measured step is left out rather than logged as NaN.
  """
  cosines = np.stack([np.asarray(w["cosine"], np.float64) for w in windows])
  norms = np.stack([np.asarray(w["norm"], np.float64) for w in windows])
  measured = ~np.all(np.isnan(norms), axis=1)
  if not measured.any():
    return None
  cosines, norms = cosines[measured], norms[measured]
  summary = {"cosine": {}, "norm": {}}
  for i, a in enumerate(task_order):
    column = norms[:, i][~np.isnan(norms[:, i])]
    if column.size:
      summary["norm"][a] = float(column.mean())
    for j in range(i + 1, len(task_order)):
      pair = cosines[:, i, j][~np.isnan(cosines[:, i, j])]
      if pair.size:
        summary["cosine"][f"{a}-{task_order[j]}"] = float(pair.mean())
  return summary
