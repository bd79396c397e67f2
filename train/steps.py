"""The train step and the eval step, shared by every schedule and parallel mode.

`make_train_step` returns `(state, batches, rng) -> (state, metrics)`, where
`batches` maps task names to batches: one task for the sequential schedule, all
of them for round-robin. It is built from two compiled pieces:

  task gradient  (params, batch, rng) -> (gradient, loss, metrics)   one per task
  apply          (state, gradients, losses, rng) -> (state, metrics)  state donated

Why two pieces rather than one jitted function over all tasks: each task's batch
comes in one of a few bucket lengths, and one function over all three tasks
would compile once per *combination* of buckets (4^3 = 64 shapes for round-robin),
where per-task pieces compile once per task and bucket (at most 12) and the
apply once per set of tasks. The gradients stay on device between the pieces,
so the step still never waits on the host.

`parallel.py` compiles both pieces with `jax.jit` over a device mesh or `jax.pmap`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

from bert_jax import losses as losses_lib, multitask
from bert_jax.batch import Batch
from bert_jax.tasks import TASK_METHODS
from train.conflicts import engine as conflicts_engine
from train.conflicts import pcgrad
from train.state import TrainState



def split_params(params: Any, frozen_paths: frozenset[str]) -> tuple[dict, dict]:
  """Flat {path: leaf} dicts of the trainable and the frozen params."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  trainable = {k: v for k, v in flat.items() if k not in frozen_paths}
  frozen = {k: v for k, v in flat.items() if k in frozen_paths}
  return trainable, frozen


def merge_params(trainable: dict, frozen: dict) -> Any:
  return flax.traverse_util.unflatten_dict({**trainable, **frozen}, sep="/")


def make_task_gradient(model: multitask.MultitaskBert, task: str, *, task_index: int,
                       frozen_paths: frozenset[str], loss_weight: float = 1.0,
                       similarity_loss: str = "mse", axis_name: str | None = None) -> Callable:
  """`(params, batch, rng) -> (gradient of the trainable params, loss, metrics)` for one task.

  Differentiating only the trainable subset means XLA never computes, say, the
  dense gradient of the 30522-row word-embedding table when it is frozen. The
  gradient is of `loss_weight * loss`; the returned loss is unweighted.
  """
  def objective(trainable, frozen, batch, rng):
    params = merge_params(trainable, jax.lax.stop_gradient(frozen))
    outputs = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": rng},
                          method=TASK_METHODS[task])
    loss, metrics = losses_lib.task_loss(task, outputs, batch, similarity_loss=similarity_loss)
    if axis_name is None:
      return loss_weight * loss, (loss, metrics)
    # task_loss is the weighted mean over this device's examples. Rescaling by the
    # device's share of the global weight makes the pmean of gradients equal the
    # gradient of the global weighted mean, even when filler rows are uneven.
    weight_sum = jnp.sum(batch["weights"].astype(jnp.float32))
    global_weight = jnp.maximum(jax.lax.psum(weight_sum, axis_name), 1.0)
    scale = weight_sum * jax.lax.psum(1, axis_name) / global_weight
    global_loss = jax.lax.psum(loss * weight_sum, axis_name) / global_weight
    return loss_weight * loss * scale, (global_loss, jax.lax.psum(metrics, axis_name))

  def task_gradient(params, batch, rng):
    rng = jax.random.fold_in(rng, task_index)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))  # own dropout mask per shard
    trainable, frozen = split_params(params, frozen_paths)
    (_, (loss, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
        trainable, frozen, batch, rng)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
    return grads, loss, metrics

  return task_gradient


def conflict_metrics(opt_state: Any) -> dict:
  """The conflict method's diagnostics of the step, for the metrics: {} without one.

  PCGrad's go under "pcgrad" (the key its plots and logs always used), every
  other method's under "conflicts": pairwise cosines, the number of
  conflicting pairs and the task weights the method chose.
  """
  state = conflicts_engine.find_conflict_state(opt_state)
  if state is None:
    return {}
  key = "pcgrad" if isinstance(state, pcgrad.PCGradState) else "conflicts"
  return {key: {"cosine": state.cosine_similarity, "conflicts": state.num_conflicts,
                "weights": state.weights}}


def make_apply_gradients(tx: optax.GradientTransformationExtraArgs, *, task_order: Sequence[str],
                         frozen_paths: frozenset[str], per_task_gradients: bool,
                         pass_losses: bool = False) -> Callable:
  """`(state, {task: gradient}, {task: loss}, rng) -> (state, metrics)`: one optimizer step.

  With `per_task_gradients` the gradients are stacked on a leading task axis in
  `task_order` (a task absent from this step contributes zeros), which is what
  the conflict methods (`train/conflicts/`) consume; otherwise they are summed.
  With `pass_losses` the task losses also go to `tx.update` as the extra
  argument `losses` ([T] in `task_order`, NaN for an absent task), for the
  loss-weighting methods.

  Non-finite guard, without a host sync: when a loss or the summed gradient is
  not finite, the step records (step, first bad task) in `first_nonfinite` and
  from then on leaves params and optimizer state as they were. It is a
  `lax.cond`, not an elementwise `where(healthy, new, old)`: the `where` kept
  both versions of every buffer alive, so XLA copied the whole optimizer state
  and read it once more every step, where the apply is otherwise a few
  elementwise passes over that state (bench/README.md, "Figures taken out of
  the code", has what it cost and the command that measures it). The sum's
  norm is the one clipping needs anyway; a NaN or inf in any task's gradient
  reaches it. Which task failed is worked out only on the failure branch.
  """
  def apply_gradients(state: TrainState, grads: Mapping[str, dict], losses: Mapping[str, jax.Array],
                      rng: jax.Array):
    tasks = [t for t in task_order if t in grads]
    flat_params = flax.traverse_util.flatten_dict(state.params, sep="/")
    trainable_paths = [k for k in flat_params if k not in frozen_paths]
    summed = {k: sum(grads[t][k] for t in tasks) for k in trainable_paths}
    if per_task_gradients:
      combined = {k: jnp.stack([grads[t][k] if t in grads else jnp.zeros_like(flat_params[k])
                                for t in task_order]) for k in trainable_paths}
      frozen = {k: jnp.zeros((len(task_order),) + flat_params[k].shape, flat_params[k].dtype)
                for k in frozen_paths}
    else:
      combined = summed
      frozen = {k: jnp.zeros_like(flat_params[k]) for k in frozen_paths}
    grad_norm = optax.tree.norm(summed)  # of the plain sum, before any surgery
    finite = jnp.isfinite(grad_norm) & jnp.all(jnp.stack([jnp.isfinite(losses[t]) for t in tasks]))
    healthy = finite & (state.first_nonfinite[0] < 0)

    extra_args = {"rng": rng}
    if pass_losses:
      extra_args["losses"] = jnp.stack([jnp.asarray(losses[t], jnp.float32) if t in losses
                                        else jnp.float32(jnp.nan) for t in task_order])

    def update(state: TrainState) -> TrainState:
      updates, opt_state = tx.update(merge_params(combined, frozen), state.opt_state, state.params,
                                     **extra_args)
      return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           opt_state=opt_state)

    def hold(state: TrainState) -> TrainState:
      task_finite = jnp.stack([jnp.isfinite(losses[t]) & jnp.isfinite(optax.tree.norm(grads[t]))
                               for t in tasks])
      first_bad = jnp.asarray([task_order.index(t) for t in tasks], jnp.int32)[jnp.argmin(task_finite)]
      failure = jnp.where(state.first_nonfinite[0] < 0, jnp.stack([state.step, first_bad]),
                          state.first_nonfinite)
      return state.replace(step=state.step + 1, first_nonfinite=failure)

    new_state = jax.lax.cond(healthy, update, hold, state)
    metrics = {"grad_norm": grad_norm, "first_nonfinite": new_state.first_nonfinite,
               **conflict_metrics(new_state.opt_state)}
    return new_state, metrics

  return apply_gradients


@dataclasses.dataclass
class TrainStep:
  """`(state, batches, rng) -> (state, metrics)` from compiled per-task gradients and one apply."""
  task_gradients: Mapping[str, Callable]
  apply_gradients: Callable

  def __call__(self, state: TrainState, batches: Mapping[str, Batch], rng: jax.Array):
    grads, losses, task_metrics = {}, {}, {}
    for task, batch in batches.items():
      grads[task], losses[task], task_metrics[task] = self.task_gradients[task](state.params, batch, rng)
    state, metrics = self.apply_gradients(state, grads, losses, rng)
    return state, {"loss": losses, "task": task_metrics, **metrics}


def make_train_step(model: multitask.MultitaskBert, tx: optax.GradientTransformationExtraArgs, *,
                    task_order: Sequence[str], compile_fn: Callable[..., Callable],
                    frozen_paths: frozenset[str] = frozenset(),
                    loss_weights: Mapping[str, float] | None = None, similarity_loss: str = "mse",
                    per_task_gradients: bool = False, pass_losses: bool = False) -> TrainStep:
  """Builds the train step.

  Args:
    task_order: all task names, in the order PCGrad stacks them and failures are reported.
    compile_fn: `compile_fn(make_body, donate_argnums)` where `make_body(axis_name)`
      builds a body; `DataParallel.compile` jits or pmaps it.
    frozen_paths: '/'-joined param paths that get no gradient at all.
    per_task_gradients: stack one gradient per task (for a conflict method) instead of summing.
    pass_losses: hand the task losses to `tx.update` (for the loss-weighting methods).
  """
  loss_weights = dict(loss_weights or {})
  task_gradients = {
      task: compile_fn(lambda axis_name, task=task: make_task_gradient(
          model, task, task_index=task_order.index(task), frozen_paths=frozen_paths,
          loss_weight=loss_weights.get(task, 1.0), similarity_loss=similarity_loss,
          axis_name=axis_name), donate_argnums=())
      for task in task_order}
  apply_gradients = compile_fn(lambda axis_name: make_apply_gradients(
      tx, task_order=task_order, frozen_paths=frozen_paths, per_task_gradients=per_task_gradients,
      pass_losses=pass_losses),
      donate_argnums=(0,))  # the state; gradients have no output of their shape to alias
  return TrainStep(task_gradients, apply_gradients)


def make_predict_step(model: multitask.MultitaskBert, task: str) -> Callable[[Any, Batch], jax.Array]:
  """`(params, batch) -> model outputs` for one task, dropout off."""
  def predict_step(params, batch):
    return model.apply({"params": params}, batch, deterministic=True, method=TASK_METHODS[task])
  return predict_step
