"""The one train-step body and the eval step, shared by every schedule and parallel mode.

`make_train_step` returns `(state, batches, rng) -> (state, metrics)`, where
`batches` maps task names to batches: one task for the sequential schedule, all
of them for round-robin. jit retraces once per set of tasks and bucket shape.
`parallel.py` wraps the same body with `jax.jit` over a device mesh or `jax.pmap`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

from bert_jax import heads
from train import pcgrad
from train.state import TrainState

Batch = Mapping[str, jax.Array]
TASK_METHODS = {"sst": "sentiment", "para": "paraphrase", "sts": "similarity"}


def split_params(params: Any, frozen_paths: frozenset[str]) -> tuple[dict, dict]:
  """Flat {path: leaf} dicts of the trainable and the frozen params."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  trainable = {k: v for k, v in flat.items() if k not in frozen_paths}
  frozen = {k: v for k, v in flat.items() if k in frozen_paths}
  return trainable, frozen


def merge_params(trainable: dict, frozen: dict) -> Any:
  return flax.traverse_util.unflatten_dict({**trainable, **frozen}, sep="/")


def make_train_step(model: heads.MultitaskBert, tx: optax.GradientTransformationExtraArgs, *,
                    task_order: Sequence[str], frozen_paths: frozenset[str] = frozenset(),
                    loss_weights: Mapping[str, float] | None = None, similarity_loss: str = "mse",
                    per_task_gradients: bool = False, axis_name: str | None = None,
                    ) -> Callable[[TrainState, Mapping[str, Batch], jax.Array], tuple[TrainState, dict]]:
  """Builds the train step.

  Args:
    task_order: all task names, in the order PCGrad stacks them and failures are reported.
    frozen_paths: '/'-joined param paths that get no gradient at all. Differentiating
      only the trainable subset means XLA never computes, say, the dense gradient of
      the 30522-row word-embedding table when it is frozen.
    per_task_gradients: stack one gradient per task on a leading axis (what the PCGrad
      transformation consumes) instead of differentiating the summed loss once.
    axis_name: the pmap axis; `None` under jit, where XLA inserts the reductions.
  """
  loss_weights = dict(loss_weights or {})

  def task_objective(trainable, frozen, task, batch, rng):
    params = merge_params(trainable, jax.lax.stop_gradient(frozen))
    outputs = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": rng},
                          method=TASK_METHODS[task])
    loss, metrics = heads.task_loss(task, outputs, batch, similarity_loss=similarity_loss)
    weight_sum = jnp.sum(batch["weights"].astype(jnp.float32))
    if axis_name is not None:
      # task_loss is the weighted mean over this device's examples. Rescaling by the
      # device's share of the global weight makes the pmean of gradients equal the
      # gradient of the global weighted mean, even when padding is uneven.
      global_weight = jax.lax.psum(weight_sum, axis_name)
      scale = weight_sum * jax.lax.psum(1, axis_name) / jnp.maximum(global_weight, 1.0)
      objective = loss * scale
      loss = jax.lax.psum(loss * weight_sum, axis_name) / jnp.maximum(global_weight, 1.0)
      metrics = jax.lax.psum(metrics, axis_name)  # heads.task_loss returns sums
    else:
      objective = loss
    return loss_weights.get(task, 1.0) * objective, (loss, metrics)

  grad_fn = jax.value_and_grad(task_objective, has_aux=True)

  def train_step(state: TrainState, batches: Mapping[str, Batch], rng: jax.Array):
    tasks = [t for t in task_order if t in batches]
    trainable, frozen = split_params(state.params, frozen_paths)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))  # own dropout mask per shard
    task_rngs = {t: jax.random.fold_in(rng, task_order.index(t)) for t in tasks}

    losses, metrics, grads = {}, {}, {}
    if per_task_gradients:
      for task in tasks:
        (_, (losses[task], metrics[task])), grads[task] = grad_fn(
            trainable, frozen, task, batches[task], task_rngs[task])
    else:
      def total_objective(trainable):
        results = {t: task_objective(trainable, frozen, t, batches[t], task_rngs[t]) for t in tasks}
        return sum(r[0] for r in results.values()), {t: r[1] for t, r in results.items()}
      (_, aux), summed = jax.value_and_grad(total_objective, has_aux=True)(trainable)
      losses = {t: aux[t][0] for t in tasks}
      metrics = {t: aux[t][1] for t in tasks}

    zeros = {k: jnp.zeros_like(v) for k, v in frozen.items()}
    if per_task_gradients:
      # PCGrad's task axis follows task_order; a task absent from this step adds a zero gradient.
      stacked = {k: jnp.stack([grads[t][k] if t in grads else jnp.zeros_like(v) for t in task_order])
                 for k, v in trainable.items()}
      if axis_name is not None:
        stacked = jax.lax.pmean(stacked, axis_name)
      full = merge_params(stacked, {k: jnp.zeros((len(task_order),) + v.shape, v.dtype)
                                    for k, v in frozen.items()})
    else:
      if axis_name is not None:
        summed = jax.lax.pmean(summed, axis_name)
      full = merge_params(summed, zeros)

    updates, opt_state = tx.update(full, state.opt_state, state.params, rng=rng)
    params = optax.apply_updates(state.params, updates)

    # Non-finite guard: find the first task whose loss is not finite, without a host sync.
    finite = jnp.stack([jnp.isfinite(losses[t]) for t in tasks])
    first_bad = jnp.asarray([task_order.index(t) for t in tasks], jnp.int32)[jnp.argmin(finite)]
    newly_failed = (~jnp.all(finite)) & (state.first_nonfinite[0] < 0)
    first_nonfinite = jnp.where(newly_failed, jnp.stack([state.step, first_bad]), state.first_nonfinite)
    healthy = first_nonfinite[0] < 0
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(healthy, n, o), new, old)
    new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                              opt_state=keep(opt_state, state.opt_state),
                              first_nonfinite=first_nonfinite)

    step_metrics = {
        "loss": {t: losses[t] for t in tasks},
        "task": metrics,
        "grad_norm": optax.tree.norm(full if not per_task_gradients else
                                     jax.tree.map(lambda g: jnp.sum(g, 0), full)),
        "first_nonfinite": first_nonfinite,
    }
    pcgrad_state = pcgrad.find_pcgrad_state(opt_state)
    if pcgrad_state is not None:
      step_metrics["pcgrad"] = {"cosine": pcgrad_state.cosine_similarity,
                                "conflicts": pcgrad_state.num_conflicts}
    return new_state, step_metrics

  return train_step


def make_predict_step(model: heads.MultitaskBert, task: str) -> Callable[[Any, Batch], jax.Array]:
  """`(params, batch) -> model outputs` for one task, dropout off."""
  def predict_step(params, batch):
    return model.apply({"params": params}, batch, deterministic=True, method=TASK_METHODS[task])
  return predict_step
