"""Which examples each benchmark step gets, on our side and on the PyTorch peer's.

Both sides must see the very same examples, or the table would compare data,
not implementations; only the padding differs, and it is each side's own.
"natural" padding gives ours the trainer's batches (an epoch planned exactly as
the trainer plans it, packed or bucketed, taken at quantiles of their real
tokens so that a few steps carry the epoch's mix of short and long batches) and
the peer the same examples reshuffled into batches, as a DataLoader would.
"same" pads both sides to one fixed length, to compare the compute alone.

How each side turns these rows into arrays lives with that side:
`bench.our_side.our_batch` and `bench.torch_peer.torch_batch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax.tasks import TASKS

WORKLOADS = ("multitask", "pcgrad", "sst", "inference")
PADDINGS = ("natural", "same")


@dataclasses.dataclass
class BenchData:
  """Tokenized examples per task, the trainer's bucket lengths, and the vocabulary.

  `train` holds each task's training split and `inference` the split that the
  inference workload encodes (SST dev); all `data_prep.tokenized.EncodedSplit`.
  """
  train: Mapping[str, Any]
  inference: Any
  buckets: Mapping[str, tuple[int, ...]]
  vocab_path: str
  packing: Any = None  # data_prep.packing.PackingSpec, as the trainer packs training and evaluation batches

  @classmethod
  def from_task_data(cls, task_data, vocab_path: str) -> "BenchData":
    """The trainer's own data (`train.data.TaskData`): real CS224N examples, buckets, packing on one device."""
    return cls(train={t: task_data.splits[t]["train"] for t in TASKS},
               inference=task_data.splits["sst"]["validation"], buckets=dict(task_data.buckets),
               vocab_path=str(vocab_path),
               packing=task_data.packing_spec(num_devices=1))

  @classmethod
  def from_sentences(cls, tokenizer, sentences: Sequence[str], pairs: Sequence[tuple[str, str]], *,
                     max_length: int = 128, num_buckets: int = 4, packing=None) -> "BenchData":
    """Small splits made from the given texts (random labels), for smoke tests."""
    from data_prep import bucketing
    from data_prep.tokenized import EncodedSplit, Ragged, SpecialIds
    rng = np.random.default_rng(0)
    special = SpecialIds(pad=tokenizer.pad_id, cls=tokenizer.cls_id, sep=tokenizer.sep_id)

    def split(name, tokens, labels):
      return EncodedSplit(name=name, pair="input_ids_a" in tokens,
                          pair_encoding="separate" if "input_ids_a" in tokens else None,
                          max_length=max_length, labeled=True, ids=np.arange(len(labels)).astype(str),
                          labels=labels, tokens=tokens, special=special, provenance=())

    ragged = lambda texts: Ragged.from_sequences(tokenizer.encode_ragged(list(texts), max_length=max_length)[0])
    sst = split("sst", {"input_ids": ragged(sentences)},
                rng.integers(0, 5, len(sentences)).astype(np.int32))
    firsts, seconds = zip(*pairs)
    pair_tokens = {"input_ids_a": ragged(firsts), "input_ids_b": ragged(seconds)}
    para = split("para", pair_tokens, rng.integers(0, 2, len(pairs)).astype(np.float32))
    sts = split("sts", pair_tokens, rng.uniform(0, 5, len(pairs)).astype(np.float32))
    train_splits = {"sst": sst, "para": para, "sts": sts}
    buckets = {t: bucketing.choose_bucket_lengths(s.lengths, num_buckets=num_buckets, max_length=max_length)
               for t, s in train_splits.items()}
    return cls(train=train_splits, inference=sst, buckets=buckets, vocab_path=str(tokenizer.vocab_path),
               packing=packing)


@dataclasses.dataclass
class Batches:
  """The example rows of one task's batch, and how ours lays them out.

  `length` is what ours pads them to (0: the peer pads to the batch's longest);
  `packing` (a PackingSpec) makes ours pack them instead, as the trainer does.
  """
  indices: np.ndarray
  length: int
  packing: Any = None


@dataclasses.dataclass
class StepPlan:
  """A workload's timed steps: per step, {task: Batches} for ours and for the peer."""
  workload: str
  padding: str
  ours: list[dict[str, Batches]]
  peer: list[dict[str, Batches]]

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(self.ours[0])


def plan_workload(data: BenchData, workload: str, padding: str, *, batch_size: int, count: int,
                  same_length: int, seed: int) -> StepPlan:
  """Which rows each of `count` steps gets, on each side.

  "pcgrad" gets the very batches of "multitask", so that the two steps' rows
  (and their memory) compare the combining of the gradients alone.
  """
  same_batches_as = "multitask" if workload == "pcgrad" else workload
  rng = np.random.default_rng([seed, WORKLOADS.index(same_batches_as), PADDINGS.index(padding)])
  if workload == "inference":
    split = data.inference
    if padding == "same":
      ours = same_shape_batches(split, batch_size, count, same_length, rng)
      return StepPlan(workload, padding, [{"sst": b} for b in ours], [{"sst": b} for b in ours])
    ours = representative_eval_batches(split, data.buckets["sst"], batch_size, count, data.packing)
    return StepPlan(workload, padding, [{"sst": b} for b in ours],
                    [{"sst": b} for b in reshuffled(ours, rng, keep_order=True)])
  tasks = ("sst",) if workload == "sst" else TASKS
  ours, peer = {}, {}
  for task in tasks:
    split = data.train[task]
    if padding == "same":
      ours[task] = peer[task] = same_shape_batches(split, batch_size, count, same_length, rng)
    else:
      ours[task] = representative_train_batches(split, data.buckets[task], batch_size, count, rng,
                                                data.packing)
      peer[task] = reshuffled(ours[task], rng)
  return StepPlan(workload, padding, [{t: ours[t][k] for t in tasks} for k in range(count)],
                  [{t: peer[t][k] for t in tasks} for k in range(count)])


def split_of(data: BenchData, workload: str, task: str):
  return data.inference if workload == "inference" else data.train[task]


def quantile_picks(items: Sequence[Any], count: int) -> list[Any]:
  """`count` items at evenly spaced quantiles of `items` (repeating when there are fewer)."""
  return [items[min(int((k + 0.5) * len(items) / count), len(items) - 1)] for k in range(count)]


def representative_train_batches(split, buckets: Sequence[int], batch_size: int, count: int,
                                 rng: np.random.Generator, packing=None) -> list[Batches]:
  """`count` of the trainer's batches, with an epoch's mix of lengths.

  Plans an epoch exactly as the trainer does (`plan_epoch`: length buckets, or
  with `packing` one bucket, i.e. random batches that are then packed), sorts
  its full batches by their real tokens and takes them at evenly spaced
  quantiles: a few steps then carry the same mix of short and long batches as
  the whole epoch, where a random few could all be short (or long).
  """
  from data_prep import bucketing, pipeline
  buckets = pipeline.train_buckets(buckets, packing)
  plan = pipeline.plan_epoch(np.arange(len(split)), bucketing.bucket_index(split.lengths, buckets),
                             buckets, batch_size, rng)
  full = sorted((b for b in plan if np.all(b.indices >= 0)),
                key=lambda b: (b.length, int(split.real_tokens[b.indices].sum())))
  if not full:
    raise ValueError(f"{split.name}: {len(split)} examples make no full batch of {batch_size}")
  picks = quantile_picks(full, count)
  return [Batches(picks[i].indices, picks[i].length, packing) for i in rng.permutation(count)]


def representative_eval_batches(split, buckets: Sequence[int], batch_size: int, count: int,
                                packing=None) -> list[Batches]:
  """`count` of the trainer's evaluation batches (`eval_plan`), at quantiles of their lengths."""
  from data_prep import pipeline
  full = [b for b in pipeline.eval_plan(split, batch_size, pipeline.eval_buckets(split, buckets, packing))
          if np.all(b.indices >= 0)]
  if not full:
    raise ValueError(f"{split.name}: {len(split)} examples make no full batch of {batch_size}")
  full = sorted(full, key=lambda b: int(split.real_tokens[b.indices].sum())) if packing else full
  return [Batches(b.indices, b.length, packing) for b in quantile_picks(full, count)]


def reshuffled(batches: Sequence[Batches], rng: np.random.Generator, *, keep_order: bool = False) -> list[Batches]:
  """The same examples in new batches of the same size, padded by the peer (length 0).

  A DataLoader with shuffle=True (training) draws batches at random; evaluation
  (`keep_order`) walks the file in order. Either way the peer sees exactly the
  examples ours does, so real tokens match and the padding is each side's own.
  """
  rows = np.concatenate([b.indices for b in batches])
  rows = np.sort(rows) if keep_order else rng.permutation(rows)
  size = len(batches[0].indices)
  return [Batches(rows[k * size:(k + 1) * size], 0) for k in range(len(batches))]


def same_shape_batches(split, batch_size: int, count: int, length: int,
                       rng: np.random.Generator) -> list[Batches]:
  """`count` random batches of examples that fit `length`, padded to `length` on both sides."""
  fits = np.flatnonzero(split.lengths <= length)
  if len(fits) == 0:
    raise ValueError(f"{split.name}: no example fits --same_length={length}")
  rows = rng.choice(fits, size=batch_size * count, replace=len(fits) < batch_size * count)
  return [Batches(rows[k * batch_size:(k + 1) * batch_size], length) for k in range(count)]


def sequence_keys(split) -> tuple[str, ...]:
  """The token fields of a split that each become one encoder call's sequences."""
  if split.pair and split.pair_encoding != "separate":
    raise ValueError(f"{split.name}: the benchmark's peer encodes pairs as two sentences; "
                     f"got pair_encoding={split.pair_encoding!r} (use a bi-encoder head)")
  return ("input_ids_a", "input_ids_b") if split.pair else ("input_ids",)


def real_tokens(split, indices: np.ndarray) -> int:
  return int(sum(split.tokens[k].lengths[indices].sum() for k in sequence_keys(split)))


def examples_per_step(workload: str, batch_size: int) -> int:
  return batch_size * (3 if workload in ("multitask", "pcgrad") else 1)


def load_course_data(vocab_path: str, packing: bool = True) -> BenchData:
  """The trainer's real data (CS224N train splits, SST dev) under the default preset's data config."""
  from bert_jax.tokenizer import Tokenizer
  from train import data as task_data_lib
  from train.configs import base
  config = base.get_config()
  config.data.packing = packing
  task_data = task_data_lib.TaskData.create(config, Tokenizer.from_vocab_file(vocab_path))
  return BenchData.from_task_data(task_data, vocab_path)
