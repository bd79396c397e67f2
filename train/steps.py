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

Both pieces are written once, for one device: the task gradient sees that
device's slice of the batch and sums across the `data` axis itself.
`parallel.py` maps them over the devices, as `jax.jit` of `jax.shard_map` or as
`jax.pmap`; on one device the sums across devices are left out, and the step
is the plain single-device one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from bert_jax import losses as losses_lib, multitask, smart as smart_lib
from bert_jax.batch import Batch
from bert_jax.tasks import TASK_METHODS
from train import gradient_stats, optim
from train.conflicts import engine as conflicts_engine
from train.conflicts import pcgrad
from train.parallel import BATCH, DATA_AXIS, REPLICATED, DataParallel, sum_over_devices
from train.state import TrainState


def make_task_gradient(model: multitask.MultitaskBert, task: str, *, task_index: int,
                       freeze: optim.Freeze = optim.Freeze(), loss_weight: float = 1.0,
                       similarity_loss: str = "mse", rdrop_alpha: float = 0.0, smart_weight: float = 0.0,
                       smart: smart_lib.SmartOptions = smart_lib.SmartOptions()) -> Callable:
  """`(params, batch, rng) -> (gradient of the trainable params, loss, metrics)` for one task.

  A per-device function (`parallel.py` maps it over the `data` axis, under jit or
  pmap): `batch` is this device's slice, and the loss, its gradient and the
  metrics are those of the whole batch, the same on every device. Each device
  differentiates its own weighted loss sum over the weight of the whole batch, so
  the psum of their gradients is the gradient of the batch's weighted mean loss
  however unevenly the filler rows (weight 0) fall; on one device that is the
  plain weighted mean, computed as `task_loss` computes it. The gradient is of
  `loss_weight * loss`; the returned loss is unweighted. Only the trainable
  parameters are differentiated (`optim.Freeze`).

  `rdrop_alpha` > 0 runs the batch through the model twice, with dropout keys
  `rng` and fold_in(rng, 1), and differentiates `losses.rdrop_loss`; the reported
  loss is then that whole objective. 0 is one pass, as without it.

  `smart_weight` > 0 adds that weight times SMART's smoothness term
  (`bert_jax/smart.py`, settings `smart`, initial noise from fold_in(rng, 2)) to
  the loss, which is again the one reported. R-Drop and SMART do not combine.

  A model with `head_dropout_samples` K > 1 returns K head outputs per batch in
  training, and the loss is their mean (`losses.multi_sample_loss`); it does
  not combine with R-Drop or SMART, which compare single outputs.
  """
  if rdrop_alpha > 0 and smart_weight > 0:
    raise ValueError(f"{task}: rdrop_alpha={rdrop_alpha} and smart_weight={smart_weight}; use one of the two")
  samples = model.head_dropout_samples
  if samples > 1 and (rdrop_alpha > 0 or smart_weight > 0):
    raise ValueError(f"{task}: head_dropout_samples={samples} with rdrop_alpha={rdrop_alpha}, "
                     f"smart_weight={smart_weight}; multi-sample dropout needs both 0")

  def objective(trainable, params, batch, rng, total_weight):
    variables = {"params": freeze.merge(trainable, params)}
    forward = lambda key, noise=None: model.apply(variables, batch, deterministic=False, rngs={"dropout": key},
                                                  embedding_noise=noise, method=TASK_METHODS[task])
    if rdrop_alpha > 0:
      _, metrics = losses_lib.rdrop_loss(task, forward(rng), forward(jax.random.fold_in(rng, 1)), batch,
                                         rdrop_alpha, similarity_loss=similarity_loss)
    elif samples > 1:
      _, metrics = losses_lib.multi_sample_loss(task, forward(rng), batch, similarity_loss=similarity_loss)
    else:
      outputs = forward(rng)
      _, metrics = losses_lib.task_loss(task, outputs, batch, similarity_loss=similarity_loss)
      if smart_weight > 0:
        noise_shape = multitask.embedding_shape(batch, model.config.hidden_size)
        smoothness = smart_lib.smoothness_sum(
            task, lambda noise: forward(rng, noise), outputs, jnp.asarray(batch["weights"], jnp.float32),
            noise_shape, jax.random.fold_in(rng, 2), smart)
        metrics = {**metrics, "loss_sum": metrics["loss_sum"] + smart_weight * smoothness}
    return loss_weight * (metrics["loss_sum"] / total_weight), metrics

  def task_gradient(params, batch, rng):
    rng = jax.random.fold_in(rng, task_index)
    if jax.lax.axis_size(DATA_AXIS) > 1:  # each device its own dropout masks; one device keeps the step's
      rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXIS))
    weight = jnp.sum(jnp.asarray(batch["weights"], jnp.float32))
    total_weight = jnp.maximum(sum_over_devices(weight), 1.0)
    grads, metrics = jax.grad(objective, has_aux=True)(freeze.trainable(params), params, batch, rng,
                                                       total_weight)
    metrics = sum_over_devices(metrics)  # all weighted sums (losses.task_loss)
    loss = metrics["loss_sum"] / jnp.maximum(metrics["count"], 1.0)
    return sum_over_devices(grads), loss, metrics

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
                         freeze: optim.Freeze = optim.Freeze(), per_task_gradients: bool,
                         pass_losses: bool = False, gradient_stats_every: int = 0) -> Callable:
  """`(state, {task: gradient}, {task: loss}, rng) -> (state, metrics)`: one optimizer step.

  The gradients are of the trainable parameters (`freeze.trainable`), which is
  also the tree `tx` updates. With `per_task_gradients` they are stacked on a
  leading task axis in `task_order` (a task absent from this step contributes
  zeros), which is what the conflict methods (`train/conflicts/`) consume;
  otherwise they are summed. With `pass_losses` the task losses also go to
  `tx.update` as the extra argument `losses` ([T] in `task_order`, NaN for an
  absent task), for the loss-weighting methods. With `gradient_stats_every` > 0,
  every such step also reports the task gradients' cosines and norms
  (`train/gradient_stats.py`), read before they are combined.

  Non-finite guard, without a host sync: when a loss or the summed gradient is
  not finite, the step records (step, first bad task) in `first_nonfinite` and
  from then on leaves params and optimizer state as they were. It is a
  `lax.cond`, not an elementwise `where(healthy, new, old)`: the `where` kept
  both versions of every buffer alive, so XLA copied the whole optimizer state
  and read it once more every step, where the apply is otherwise a few
  elementwise passes over that state (bench/README.md, "Figures taken out of
  the code", has what it cost and the command that measures it). The sum's
  norm is the one clipping needs anyway; a NaN or inf in any task's gradient
  reaches it. With per-task gradients the norm of their sum is read off their
  Gram matrix (sqrt of the sum of its entries), which is then handed to the
  conflict method as the extra argument `gram`. Which task failed is worked out only on the failure branch.
  """
  def apply_gradients(state: TrainState, grads: Mapping[str, Any], losses: Mapping[str, jax.Array],
                      rng: jax.Array):
    tasks = [t for t in task_order if t in grads]
    extra_args = {"rng": rng}
    if per_task_gradients:
      def stack(param, *task_leaves):
        given = dict(zip(tasks, task_leaves))
        return jnp.stack([given[t] if t in given else jnp.zeros_like(param) for t in task_order])
      combined = jax.tree.map(stack, freeze.trainable(state.params), *(grads[t] for t in tasks))
      # |sum_t g_t|^2 = sum_ab G_ab: the Gram matrix the conflict method needs anyway gives the
      # guard its norm, so the task gradients are read once here rather than once more for a sum.
      gram = conflicts_engine.gram_matrix(combined)
      grad_norm = jnp.sqrt(jnp.maximum(jnp.sum(gram), 0.0))
      extra_args["gram"] = gram
    else:
      combined = jax.tree.map(lambda *task_leaves: sum(task_leaves), *(grads[t] for t in tasks))
      grad_norm = optax.tree.norm(combined)  # of the plain sum
    finite = jnp.isfinite(grad_norm) & jnp.all(jnp.stack([jnp.isfinite(losses[t]) for t in tasks]))
    healthy = finite & (state.first_nonfinite[0] < 0)

    if pass_losses:
      extra_args["losses"] = jnp.stack([jnp.asarray(losses[t], jnp.float32) if t in losses
                                        else jnp.float32(jnp.nan) for t in task_order])

    def update(state: TrainState) -> TrainState:
      trainable = freeze.trainable(state.params)
      updates, opt_state = tx.update(combined, state.opt_state, trainable, **extra_args)
      params = freeze.merge(optax.apply_updates(trainable, updates), state.params)
      return state.replace(step=state.step + 1, params=params, opt_state=opt_state)

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
    if gradient_stats_every > 0:
      metrics["gradients"] = gradient_stats.every_n_steps(state.step, gradient_stats_every, grads, task_order)
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
                    task_order: Sequence[str], parallel: DataParallel,
                    freeze: optim.Freeze = optim.Freeze(),
                    loss_weights: Mapping[str, float] | None = None, similarity_loss: str = "mse",
                    rdrop_alpha: Mapping[str, float] | None = None,
                    smart_weight: Mapping[str, float] | None = None,
                    smart: smart_lib.SmartOptions = smart_lib.SmartOptions(),
                    per_task_gradients: bool = False, pass_losses: bool = False,
                    gradient_stats_every: int = 0) -> TrainStep:
  """Builds the train step: each piece written once, for one device, and mapped by `parallel`.

  Args:
    task_order: all task names, in the order PCGrad stacks them and failures are reported.
    parallel: maps the pieces over the devices (jit of shard_map, or pmap).
    freeze: the parameters that get no gradient and no update.
    rdrop_alpha: per task, the weight of R-Drop's two-pass consistency term (absent or 0: off).
    smart_weight: per task, the weight of SMART's smoothness term (absent or 0: off), with `smart`'s
      settings.
    per_task_gradients: stack one gradient per task (for a conflict method) instead of summing.
    pass_losses: hand the task losses to `tx.update` (for the loss-weighting methods).
    gradient_stats_every: every N-th step, report the task gradients' cosines and norms (0: never).
  """
  loss_weights, rdrop_alpha, smart_weight = (dict(loss_weights or {}), dict(rdrop_alpha or {}),
                                             dict(smart_weight or {}))
  task_gradients = {
      task: parallel.compile(
          make_task_gradient(model, task, task_index=task_order.index(task), freeze=freeze,
                             loss_weight=loss_weights.get(task, 1.0), similarity_loss=similarity_loss,
                             rdrop_alpha=rdrop_alpha.get(task, 0.0), smart_weight=smart_weight.get(task, 0.0),
                             smart=smart),
          in_specs=(REPLICATED, BATCH, REPLICATED))  # params, batch, rng
      for task in task_order}
  apply_gradients = parallel.compile(
      make_apply_gradients(tx, task_order=task_order, freeze=freeze,
                           per_task_gradients=per_task_gradients, pass_losses=pass_losses,
                           gradient_stats_every=gradient_stats_every),
      in_specs=(REPLICATED,) * 4,  # state, gradients, losses, rng
      donate_argnums=(0,))  # the state; gradients have no output of their shape to alias
  return TrainStep(task_gradients, apply_gradients)


def make_predict_step(model: multitask.MultitaskBert, task: str) -> Callable[[Any, Batch], jax.Array]:
  """`(params, batch) -> model outputs` for one task, dropout off."""
  def predict_step(params, batch):
    return model.apply({"params": params}, batch, deterministic=True, method=TASK_METHODS[task])
  return predict_step
