"""From prepared datasets to padded, bucketed, device-divisible numpy batches.

Everything here is plain numpy and deterministic: which examples form which
batch in epoch e is a pure function of (seed, task, epoch, batch size), so an
iterator's state is a few integers (`get_state`/`set_state`) and a resumed
run sees exactly the batches it would have seen. (grain's MapDataset could
carry such state too, but bucketing with leftover promotion is not one of its
transformations, and the plan below is short and exact.)

Batches are padded or packed, in the layouts of bert_jax/batch.py (the model
reads the same module): `labels`, `weights` (1 real, 0 filler) and `index`
(row in the split, -1 for filler) beside the token arrays.

How a training epoch is cut into batches (`plan_epoch`): shuffle the
examples, put each into the smallest bucket that holds it, cut every bucket
into full batches from the shortest bucket up; the examples left over in a
bucket (fewer than a batch) are promoted into the next longer bucket, whose
length holds them too. Only the leftover of the longest bucket makes a final
partial batch, topped up with weight-0 filler rows. So every example is seen
exactly once per epoch, all batches but at most one are full, and an epoch of
N examples is ceil(N / batch_size) steps. Batch order is shuffled at the end.
Evaluation (`eval_plan`) cuts its batches by the same rule (`cut_into_batches`),
from file order instead of a shuffle, and keeps the batches in that order.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from bert_jax.tasks import TASKS, check_task
from data_prep import bucketing
from data_prep.packing import PackingSpec
from data_prep.tfds_split import TfdsSplit
from data_prep.tokenized import EncodedSplit, encode_tfds_split

TASK_IDS = {task: i for i, task in enumerate(TASKS)}  # folded into shuffling seeds
CFIMDB_VARIANTS = ("polar", "not_polar")
QUORA_SPLITS = ("dev_90_10", "official")


def task_splits(task: str, split: str, *, cfimdb: str | None = None, sick: bool = False,
                quora_split: str = "dev_90_10") -> list[TfdsSplit]:
  """The TFDS splits that make up `task`'s `split` ("train", "validation" or "test").

  Extra data joins training only: `cfimdb` ("polar"/"not_polar") adds CFIMDB
  train to SST train, `sick=True` adds SICK train to STS train. Validation and
  test are always the course's own splits, so scores stay comparable.
  """
  check_task(task)
  if cfimdb is not None and cfimdb not in CFIMDB_VARIANTS:
    raise ValueError(f"cfimdb={cfimdb!r}; expected one of {CFIMDB_VARIANTS} or None")
  if quora_split not in QUORA_SPLITS:
    raise ValueError(f"quora_split={quora_split!r}; expected one of {QUORA_SPLITS}")
  main = {"sst": TfdsSplit("cs224n_sst", split), "para": TfdsSplit("cs224n_quora", split, quora_split),
          "sts": TfdsSplit("cs224n_sts", split)}[task]
  tfds_splits = [main]
  if split == "train" and task == "sst" and cfimdb:
    tfds_splits.append(TfdsSplit("cfimdb", "train", cfimdb))
  if split == "train" and task == "sts" and sick:
    tfds_splits.append(TfdsSplit("sick", "train", "relatedness"))
  return tfds_splits


def load_task_split(task: str, tfds_splits: Sequence[TfdsSplit | str], tokenizer, *, max_length: int = 128,
                    pair_encoding: str = "separate", tfds_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None, prepare: bool = True,
                    builder_kwargs: Mapping | None = None) -> EncodedSplit:
  """The concatenated, tokenized TFDS splits of one task split (`encode_tfds_split` has the arguments)."""
  parts = [encode_tfds_split(TfdsSplit.parse(s) if isinstance(s, str) else s, tokenizer,
                             max_length=max_length, pair_encoding=pair_encoding, tfds_dir=tfds_dir,
                             cache_dir=cache_dir, prepare=prepare, builder_kwargs=builder_kwargs)
           for s in tfds_splits]
  expected_pair = task != "sst"
  for part in parts:
    if part.pair != expected_pair:
      raise ValueError(f"task {task!r} needs {'sentence pairs' if expected_pair else 'single sentences'}, "
                       f"but {part.name} has {'pairs' if part.pair else 'single sentences'}")
  return EncodedSplit.concatenate(parts, name=f"{task}:" + "+".join(p.name for p in parts))


# ---------------------------------------------------------------------------
# Devices

def check_batch_size(batch_size: int, num_devices: int, what: str = "global batch size") -> None:
  """Raises unless every device gets the same, non-zero number of examples."""
  if batch_size < num_devices or batch_size % num_devices:
    raise ValueError(f"{what} {batch_size} is not a positive multiple of the local device count "
                     f"{num_devices}; use e.g. {max(1, round(batch_size / num_devices)) * num_devices}")


# ---------------------------------------------------------------------------
# Training batches

@dataclasses.dataclass(frozen=True)
class PlannedBatch:
  length: int  # bucket length L
  indices: np.ndarray  # [batch_size] example rows, -1 for filler


def cut_into_batches(order: np.ndarray, bucket_of: np.ndarray, buckets: Sequence[int],
                     batch_size: int) -> list[PlannedBatch]:
  """The example rows `order` cut into batches, bucket by bucket from the shortest, leftovers promoted.

  The one batching rule of training and evaluation (module doc): within a
  bucket, examples keep their order in `order`; the fewer-than-a-batch left
  over in a bucket lead the next longer bucket, whose length holds them too;
  only the last leftover makes a partial batch, topped up with -1 (filler).
  `bucket_of[r]` is the bucket index of example row r.
  """
  slot = bucket_of[order]
  batches = []
  carry = np.zeros(0, dtype=np.int64)
  for k, length in enumerate(buckets):
    members = np.concatenate([carry, order[slot == k]])
    num_full = len(members) // batch_size
    for b in range(num_full):
      batches.append(PlannedBatch(int(length), members[b * batch_size:(b + 1) * batch_size]))
    carry = members[num_full * batch_size:]
  if len(carry):
    # The smallest bucket that holds every leftover: filler rows cost less padding.
    length = buckets[int(bucket_of[carry].max())]
    filler = np.full(batch_size - len(carry), -1, dtype=np.int64)
    batches.append(PlannedBatch(int(length), np.concatenate([carry, filler])))
  return batches


def plan_epoch(example_rows: np.ndarray, bucket_of: np.ndarray, buckets: Sequence[int], batch_size: int,
               rng: np.random.Generator) -> list[PlannedBatch]:
  """One epoch over `example_rows` cut into bucketed batches (see the module doc).

  `bucket_of[r]` is the bucket index of example row r; the result depends only
  on its arguments and the state of `rng`.
  """
  order = rng.permutation(np.asarray(example_rows, dtype=np.int64))
  batches = cut_into_batches(order, bucket_of, buckets, batch_size)
  return [batches[i] for i in rng.permutation(len(batches))]


def train_buckets(buckets: Sequence[int], packing: PackingSpec | None) -> tuple[int, ...]:
  """The length buckets training batches are drawn from.

  Packed batches are drawn without length buckets: the packer removes the
  padding, and a batch of similar lengths would only fill its rows worse.
  """
  return (max(buckets),) if packing else tuple(buckets)


def eval_buckets(split: EncodedSplit, buckets: Sequence[int], packing: PackingSpec | None) -> tuple[int, ...]:
  """The length buckets evaluation batches are planned over: packed, one, so batches follow file order."""
  return (split.max_length,) if packing else tuple(buckets)


def collate(split: EncodedSplit, planned: PlannedBatch, packing: PackingSpec | None) -> dict[str, np.ndarray]:
  """The arrays of a planned batch: packed with `packing`, else padded to its bucket length."""
  if packing:
    return packing.collate(split, planned.indices)
  return split.collate(planned.indices, planned.length)


class TrainBatches:
  """Endless, reshuffled epochs of bucketed training batches of one task.

  `next_batch(batch_size)` may be asked for a different batch size than the
  previous call (the annealed multi-task sampler changes it between epochs):
  the rest of the current epoch is then re-planned at the new size, so still
  no example is dropped or repeated within an epoch. The state records the
  epoch and one [batch_size, position] segment per size used in it.
  """

  def __init__(self, split: EncodedSplit, buckets: Sequence[int], *, batch_size: int, seed: int,
               task: str, num_devices: int = 1, packing: PackingSpec | None = None):
    check_batch_size(batch_size, num_devices)
    self.split = split
    self.packing = packing
    self.buckets = train_buckets(buckets, packing)
    self.bucket_of = bucketing.bucket_index(split.lengths, self.buckets)
    self.batch_size = batch_size
    self.num_devices = num_devices
    self.seed = seed
    # A fixed number per task (not hash(), which Python salts per process).
    self.task_id = TASK_IDS.get(task, zlib.crc32(task.encode()))
    self._epoch = 0
    self._segments: list[list[int]] = [[batch_size, 0]]
    self._plan: list[PlannedBatch] | None = None

  def steps_per_epoch(self, batch_size: int | None = None) -> int:
    return math.ceil(len(self.split) / (batch_size or self.batch_size))

  @property
  def epoch(self) -> int:
    return self._epoch

  def get_state(self) -> dict:
    return {"epoch": self._epoch, "segments": [list(s) for s in self._segments]}

  def set_state(self, state: Mapping) -> None:
    self._epoch = int(state["epoch"])
    self._segments = [[int(b), int(p)] for b, p in state["segments"]]
    self._plan = None

  def _rng(self, segment: int) -> np.random.Generator:
    return np.random.default_rng([self.seed, self.task_id, self._epoch, segment])

  def _current_plan(self) -> list[PlannedBatch]:
    """The plan of the current segment, rebuilt from the state if needed (e.g. after set_state)."""
    if self._plan is None:
      rows = np.arange(len(self.split))
      for k, (batch_size, position) in enumerate(self._segments):
        plan = plan_epoch(rows, self.bucket_of, self.buckets, batch_size, self._rng(k))
        if k < len(self._segments) - 1:  # the examples this segment did not reach
          rows = _unvisited(plan, position)
      self._plan = plan
    return self._plan

  def next_batch(self, batch_size: int | None = None) -> dict[str, np.ndarray]:
    batch_size = batch_size or self.batch_size
    check_batch_size(batch_size, self.num_devices)
    plan = self._current_plan()
    current_size, position = self._segments[-1]
    if position >= len(plan):  # epoch done: a fresh shuffle at the requested size
      self._epoch += 1
      self._segments = [[batch_size, 0]]
      self._plan = None
    elif batch_size != current_size:  # re-plan the rest of this epoch at the new size
      rows = _unvisited(plan, position)
      self._segments.append([batch_size, 0])
      self._plan = plan_epoch(rows, self.bucket_of, self.buckets, batch_size,
                              self._rng(len(self._segments) - 1))
    plan = self._current_plan()
    planned = plan[self._segments[-1][1]]
    self._segments[-1][1] += 1
    return collate(self.split, planned, self.packing)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    while True:
      yield self.next_batch()


def _unvisited(plan: Sequence[PlannedBatch], position: int) -> np.ndarray:
  if position >= len(plan):
    return np.zeros(0, dtype=np.int64)
  rows = np.concatenate([b.indices for b in plan[position:]])
  return rows[rows >= 0]


# ---------------------------------------------------------------------------
# Evaluation batches

def eval_plan(split: EncodedSplit, batch_size: int, buckets: Sequence[int]) -> list[PlannedBatch]:
  """Evaluation batches in a fixed order: bucket by bucket, file order within a bucket.

  Leftovers are promoted as in training, so only the very last batch is
  partial; it is filled with weight-0 rows (index -1). Examples longer than
  every bucket get an overflow bucket of max_length (`buckets_covering`).
  """
  buckets = bucketing.buckets_covering(split.lengths, buckets, split.max_length)
  bucket_of = bucketing.bucket_index(split.lengths, buckets)
  file_order = np.arange(len(bucket_of), dtype=np.int64)
  return cut_into_batches(file_order, bucket_of, buckets, batch_size)


def eval_batches(split: EncodedSplit, batch_size: int, buckets: Sequence[int],
                 num_devices: int = 1, packing: PackingSpec | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Every example of `split` exactly once (weight 1), in fixed-size bucketed batches.

  With `packing`, batches follow file order and are packed instead. For
  unlabeled splits (`split.labeled` is False) labels are -1: write
  predictions keyed by `split.ids[batch["index"]]` (where weights are 1).
  """
  check_batch_size(batch_size, num_devices, what="eval batch size")
  for planned in eval_plan(split, batch_size, eval_buckets(split, buckets, packing)):
    yield collate(split, planned, packing)
