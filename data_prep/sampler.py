"""Which task's batches the trainer sees at each step of multi-task training.

Two task schedules (`TASK_SCHEDULES`, config.task_schedule):

  sequential:   per epoch, one full epoch of SST, then of Para, then of STS;
                every step is a single-task dict {task: batch of total_batch_size}.
  round_robin:  every step has a batch of every task, {sst: ..., para: ..., sts: ...};
                the per-task batch sizes add up to total_batch_size and follow
                `proportions`:
                  size      proportional to dataset size N_t,
                  balanced  equal,
                  annealed  proportional to N_t ** alpha, alpha going linearly from
                            1.0 (epoch 0) to 0.5 (last epoch): start in proportion
                            to size, end closer to balanced (Stickland & Murray 2019,
                            "BERT and PALs", section 4).
                An epoch is ceil(sum_t N_t / total_batch_size) steps; each task
                cycles through its own reshuffled epochs independently, so small
                tasks repeat within an epoch and large ones carry over.

`epoch_fractions` trains a task on only part of its data per epoch (the
"cut down on PARA training" of the reports), or on more than all of it: the
sampler treats the task as if it had round(f * N_t) examples, so its share of
each round-robin step (under "size" and "annealed"), the epoch length and its
sequential steps scale by ~f. Its iterator still walks its whole shuffled data,
so the next epoch continues with examples this one did not reach, and f = 2
walks it twice per epoch. A fraction of 0 leaves the task out of every step.

Every per-task batch size is a positive multiple of the device count, so each
task's batch shards evenly. The sampler's state (`get_state`) is a small
JSON-able dict; `set_state` on a fresh sampler resumes the exact batch sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from data_prep.packing import PackingSpec
from data_prep.pipeline import TASKS, TrainBatches, check_batch_size
from data_prep.tokenized import EncodedSplit

# The task order of the steps (config.task_schedule); the learning rate's schedules are optim.SCHEDULES.
TASK_SCHEDULES = ("sequential", "round_robin")
PROPORTIONS = ("size", "balanced", "annealed")
ANNEAL_ALPHA = (1.0, 0.5)  # alpha at the first and at the last epoch


def anneal_alpha(epoch: int, num_epochs: int) -> float:
  """Stickland & Murray's alpha: linear from 1.0 at epoch 0 to 0.5 at epoch num_epochs - 1."""
  start, end = ANNEAL_ALPHA
  if num_epochs <= 1:
    return start
  return start + (end - start) * min(epoch, num_epochs - 1) / (num_epochs - 1)


def task_weights(sizes: Mapping[str, int], proportions: str, epoch: int = 0,
                 num_epochs: int = 1) -> dict[str, float]:
  """Unnormalised share of each task in a round-robin step."""
  if proportions == "size":
    return {t: float(n) for t, n in sizes.items()}
  if proportions == "balanced":
    return {t: 1.0 for t in sizes}
  if proportions == "annealed":
    alpha = anneal_alpha(epoch, num_epochs)
    return {t: float(n) ** alpha for t, n in sizes.items()}
  raise ValueError(f"proportions={proportions!r}; expected one of {PROPORTIONS}")


def epoch_sizes(sizes: Mapping[str, int], fractions: Mapping[str, float]) -> dict[str, int]:
  """Examples per epoch of each task: round(f * N_t), at least 1 when f > 0."""
  unknown = sorted(set(fractions) - set(sizes))
  if unknown:
    raise ValueError(f"epoch_fractions names tasks {unknown} that have no training data; "
                     f"expected some of {sorted(sizes)}")
  result = {}
  for t, n in sizes.items():
    f = float(fractions.get(t, 1.0))
    if not (math.isfinite(f) and f >= 0.0):
      raise ValueError(f"epoch fraction of {t} is {f}; expected a finite number >= 0")
    result[t] = n if f == 1.0 else (max(1, round(f * n)) if f > 0 else 0)
  if not any(result.values()):
    raise ValueError(f"epoch_fractions {dict(fractions)} leave no task to train")
  return result


def allocate_batch_sizes(weights: Mapping[str, float], total_batch_size: int,
                         num_devices: int) -> dict[str, int]:
  """Split `total_batch_size` among tasks by `weights`, in whole multiples of `num_devices`.

  Each task gets at least one example per device; the rest follows the weights
  by the largest-remainder method, so the sizes always add up to the total.
  """
  check_batch_size(total_batch_size, num_devices, what="total batch size")
  units = total_batch_size // num_devices
  tasks = list(weights)
  if units < len(tasks):
    raise ValueError(f"total batch size {total_batch_size} cannot give each of {len(tasks)} tasks "
                     f"one example per device ({num_devices} devices); use at least "
                     f"{len(tasks) * num_devices}")
  total_weight = sum(weights.values())
  ideal = {t: units * weights[t] / total_weight for t in tasks}
  alloc = {t: max(1, math.floor(ideal[t])) for t in tasks}
  while sum(alloc.values()) < units:
    t = max(tasks, key=lambda t: ideal[t] - alloc[t])
    alloc[t] += 1
  while sum(alloc.values()) > units:
    t = min((t for t in tasks if alloc[t] > 1), key=lambda t: ideal[t] - alloc[t])
    alloc[t] -= 1
  return {t: alloc[t] * num_devices for t in tasks}


class MultiTaskSampler:
  """Steps of multi-task training: each `next()` is a dict {task: batch}.

  Args:
    splits: training split per task (from `pipeline.load_task_split`).
    buckets: bucket lengths per task (from `bucketing.choose_bucket_lengths`).
    schedule: the task schedule, "sequential" or "round_robin" (config.task_schedule).
    proportions: for round_robin, "size", "balanced" or "annealed".
    total_batch_size: examples per step (the sum over tasks in round_robin).
    num_epochs: iteration stops after this many epochs (as defined per schedule).
    seed: shuffling seed; with the same arguments the sequence is identical.
    num_devices: local device count; every batch size must be a multiple of it.
    packing: pack each task's batches (data_prep/packing.py) instead of padding them.
    epoch_fractions: {task: f >= 0}; a task trains on ~f times its examples per epoch
      (0: not at all; above 1 it repeats within an epoch). Tasks not named keep 1.

  The counters `epoch`, `step_in_epoch` and `global_step` describe the *next*
  step; after the last step of an epoch, `step_in_epoch` is back at 0.
  """

  def __init__(self, splits: Mapping[str, EncodedSplit], buckets: Mapping[str, Sequence[int]], *,
               schedule: str = "round_robin", proportions: str = "size", total_batch_size: int,
               num_epochs: int, seed: int = 0, num_devices: int = 1, packing: PackingSpec | None = None,
               epoch_fractions: Mapping[str, float] | None = None):
    if schedule not in TASK_SCHEDULES:
      raise ValueError(f"schedule={schedule!r}; expected one of {TASK_SCHEDULES}")
    if proportions not in PROPORTIONS:
      raise ValueError(f"proportions={proportions!r}; expected one of {PROPORTIONS}")
    missing = [t for t in splits if t not in buckets]
    if missing:
      raise ValueError(f"no bucket lengths for tasks {missing}")
    check_batch_size(total_batch_size, num_devices, what="total batch size")
    # The canonical task order (SST, Para, STS) first, so a sequential epoch follows it.
    self.tasks = [t for t in TASKS if t in splits] + [t for t in splits if t not in TASKS]
    self.sizes = {t: len(splits[t]) for t in self.tasks}
    self.epoch_sizes = epoch_sizes(self.sizes, epoch_fractions or {})
    # The tasks that take part in steps; a fraction of 0 removes a task.
    self.active_tasks = [t for t in self.tasks if self.epoch_sizes[t] > 0]
    self.schedule, self.proportions = schedule, proportions
    self.total_batch_size, self.num_epochs = total_batch_size, num_epochs
    self.seed, self.num_devices, self.packing = seed, num_devices, packing
    first_sizes = self.batch_sizes(0)
    self._iterators = {t: TrainBatches(splits[t], buckets[t], batch_size=first_sizes.get(t, total_batch_size),
                                       seed=seed, task=t, num_devices=num_devices, packing=packing)
                       for t in self.tasks}
    self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0

  def batch_sizes(self, epoch: int) -> dict[str, int]:
    """Examples per task in each step of `epoch` (sequential: the total, one task at a time)."""
    if self.schedule == "sequential":
      return {t: self.total_batch_size for t in self.active_tasks}
    weights = task_weights({t: self.epoch_sizes[t] for t in self.active_tasks}, self.proportions, epoch,
                           self.num_epochs)
    return allocate_batch_sizes(weights, self.total_batch_size, self.num_devices)

  def steps_per_epoch(self, epoch: int = 0) -> int:
    if self.schedule == "sequential":
      return sum(math.ceil(n / self.total_batch_size) for n in self.epoch_sizes.values())
    del epoch  # the total per step is fixed, so every epoch has the same length
    return math.ceil(sum(self.epoch_sizes.values()) / self.total_batch_size)

  def total_steps(self) -> int:
    return sum(self.steps_per_epoch(e) for e in range(self.num_epochs))

  def _sequential_task(self, step_in_epoch: int) -> str:
    for t in self.active_tasks:
      steps = math.ceil(self.epoch_sizes[t] / self.total_batch_size)
      if step_in_epoch < steps:
        return t
      step_in_epoch -= steps
    raise AssertionError("step beyond the epoch")

  def __iter__(self) -> Iterator[dict[str, dict[str, np.ndarray]]]:
    return self

  def __next__(self) -> dict[str, dict[str, np.ndarray]]:
    if self.epoch >= self.num_epochs:
      raise StopIteration
    sizes = self.batch_sizes(self.epoch)
    if self.schedule == "sequential":
      task = self._sequential_task(self.step_in_epoch)
      batches = {task: self._iterators[task].next_batch(sizes[task])}
    else:
      batches = {t: self._iterators[t].next_batch(sizes[t]) for t in self.active_tasks}
    self.global_step += 1
    self.step_in_epoch += 1
    if self.step_in_epoch >= self.steps_per_epoch(self.epoch):
      self.epoch, self.step_in_epoch = self.epoch + 1, 0
    return batches

  def _config(self) -> dict:
    config = {"tasks": self.tasks, "sizes": self.sizes, "schedule": self.schedule,
              "proportions": self.proportions, "total_batch_size": self.total_batch_size,
              "num_epochs": self.num_epochs, "seed": self.seed, "num_devices": self.num_devices,
              "packing": self.packing.to_dict() if self.packing else None}
    if self.epoch_sizes != self.sizes:  # only then, so states saved before fractions existed still resume
      config["epoch_sizes"] = self.epoch_sizes
    return config

  def get_state(self) -> dict:
    """JSON-able: the counters, each task iterator's position, and the config it is valid for."""
    return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "tasks": {t: it.get_state() for t, it in self._iterators.items()}, "config": self._config()}

  def set_state(self, state: Mapping, *, allow_more_epochs: bool = False) -> None:
    """Resumes from `get_state()`; refuses a state saved under different data or settings.

    With `allow_more_epochs`, a state saved with fewer `num_epochs` than this sampler has is
    accepted: the stream continues into the added epochs (a finished run trained further).
    """
    saved, current = dict(state["config"]), self._config()
    if allow_more_epochs and int(saved.get("num_epochs", 0)) <= self.num_epochs:
      saved["num_epochs"] = self.num_epochs
    if saved != current:
      changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
      raise ValueError(f"sampler state was saved with different settings {changed}: "
                       f"saved {[saved.get(k) for k in changed]}, now {[current.get(k) for k in changed]}")
    self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
    self.global_step = int(state["global_step"])
    for t, it in self._iterators.items():
      it.set_state(state["tasks"][t])
