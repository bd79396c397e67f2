"""Our side: the trainer's own model, optimizer state and compiled step, on one device.

What is timed is `train.steps.make_train_step` itself, built the way
`train.train.Trainer.make_stage` builds it from train/configs/base.py, not a
copy written for the benchmark: a copy would drift from the trainer and time
something nobody runs. The parameters are a random init, since only the
shapes matter for timing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.batches import Batches
from bench.torch_peer import check_peer_matches
from bert_jax.tasks import TASKS


class OurSide:
  """The trainer's model, optimizer state and compiled step on one device.

  Built the way `train.train.Trainer.make_stage` builds them from the default
  preset (random init: only the shapes matter for timing).
  """

  def __init__(self, bert_config, *, pcgrad: bool, freeze: Sequence[str] = (), seed: int = 0,
               total_steps: int = 1000, dtype: str = "float32"):
    import jax
    import ml_collections
    from bert_jax import multitask
    from train import optim, steps
    from train import train as train_lib
    from train.conflicts import registry as conflicts_registry
    from train.configs import base
    from train.parallel import DataParallel
    from train.state import TrainState

    config = base.get_config()
    config.pcgrad.enabled = pcgrad
    config.dtype = dtype  # the compute dtype; params and optimizer state stay float32
    config.optim.freeze = tuple(freeze)
    check_peer_matches(config.model)
    self.config = config
    self.parallel = DataParallel.create("jit", num_devices=1)
    self.model = train_lib.build_model(config, bert_config)
    # One compiled init rather than Flax's op-by-op one: far fewer (tiny) compilations.
    params = jax.jit(lambda key: multitask.init_params(self.model, key))(jax.random.key(seed))
    stage_config = ml_collections.ConfigDict({"optim": config.optim, "pcgrad": config.pcgrad,
                                              "conflicts": config.conflicts})
    tx = optim.create_optimizer(stage_config, total_steps, task_names=TASKS)
    freeze = optim.Freeze.from_regexes(params, config.optim.freeze)
    self.state = self.parallel.replicate(TrainState.create(params, tx, freeze))
    self.step_fn = steps.make_train_step(
        self.model, tx, task_order=TASKS, parallel=self.parallel, freeze=freeze,
        loss_weights=dict(config.loss_weights), similarity_loss=config.similarity_loss,
        per_task_gradients=optim.uses_per_task_gradients(stage_config),
        pass_losses=conflicts_registry.needs_losses(stage_config))
    self._predict = {}
    self._base_rng = jax.random.key(seed + 1)
    self._steps = 0

  def put(self, batches: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {task: self.parallel.put_batch(dict(batch)) for task, batch in batches.items()}

  def train_step(self, device_batches: Mapping[str, Any]) -> None:
    import jax
    rng = jax.random.fold_in(self._base_rng, self._steps)
    self.state, _ = self.step_fn(self.state, device_batches, rng)
    self._steps += 1

  def predict(self, task: str, device_batch: Any) -> Any:
    from train import steps
    if task not in self._predict:
      self._predict[task] = self.parallel.compile_predict_step(steps.make_predict_step(self.model, task))
    return self._predict[task](self.state.params, device_batch)

  def sync(self, value: Any = None) -> None:
    import jax
    jax.block_until_ready(self.state if value is None else value)

  def breakdown(self, device_steps: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean ms of each compiled piece of the step (each task's gradient, the apply), run one by one."""
    import jax
    totals: dict[str, float] = {}
    for device_batches in device_steps:
      rng = jax.random.fold_in(self._base_rng, self._steps)
      grads, losses = {}, {}
      for task, batch in device_batches.items():
        start = time.perf_counter()
        grads[task], losses[task], _ = jax.block_until_ready(
            self.step_fn.task_gradients[task](self.state.params, batch, rng))
        totals[f"gradient {task}"] = totals.get(f"gradient {task}", 0.0) + time.perf_counter() - start
      start = time.perf_counter()
      self.state, _ = jax.block_until_ready(self.step_fn.apply_gradients(self.state, grads, losses, rng))
      totals["apply"] = totals.get("apply", 0.0) + time.perf_counter() - start
      self._steps += 1
    return {k: 1000 * v / len(device_steps) for k, v in totals.items()}


def our_batch(split, batches: Batches) -> dict[str, np.ndarray]:
  """The trainer's batch for these rows (`pipeline.collate`): packed, or padded to the bucket (or fixed) length."""
  from data_prep import pipeline
  return pipeline.collate(split, pipeline.PlannedBatch(batches.length, batches.indices), batches.packing)


def step_shapes_ours(step: Mapping[str, Mapping[str, np.ndarray]]) -> list[tuple[int, int]]:
  """[(rows, length)] per encoder call of our step: pairs go through once as [2B, L]; packed as [R, P]."""
  from bert_jax import batch as batch_layout
  shapes = []
  for batch in step.values():
    ids = np.shape(batch["input_ids"])
    if batch_layout.is_packed(batch):
      shapes.append((ids[0], ids[1]))
      continue
    shapes.append((ids[0] * ids[1], ids[2]) if len(ids) == 3 else (ids[0], ids[1]))
  return shapes
