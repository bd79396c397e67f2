"""The trainer's view of the data: one `TaskData` holding every split the run needs.

It turns the config's data fields into `data_prep` calls (which sources make a
task's training set, which pair encoding each head reads, where the TFDS and
token caches live), loads each split once, and fixes the bucket lengths per
task from the training split, so training and evaluation share shapes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping

import ml_collections
import numpy as np

from bert_jax import heads
from bert_jax.checkpoint_files import CheckpointFiles
from bert_jax.tokenizer import Tokenizer
from data_prep import bucketing, pipeline
from data_prep.packing import PackingSpec
from data_prep.sampler import MultiTaskSampler

SPLITS = ("train", "validation", "test")
# config.data.extra_sst / extra_sts -> the extra training source's config (None: none).
EXTRA_SST = {"": None, "cfimdb_polar": "polar", "cfimdb_not_polar": "not_polar"}
EXTRA_STS = {"": False, "sick": True}


def run_tokenizer(config: ml_collections.ConfigDict, files: CheckpointFiles) -> Tokenizer:
  """The run's tokenizer: the checkpoint's vocabulary and casing, with `data.detokenize_ptb`.

  A config saved before that field existed trained without it, hence the default.
  """
  return Tokenizer.from_vocab_file(files.vocab_path, lowercase=files.lowercase,
                                   detokenize_ptb=bool(config.data.get("detokenize_ptb", False)))


def pair_encodings(model_config: ml_collections.ConfigDict) -> dict[str, str]:
  """Which encoding each task's batches use: joint sequences only for a cross-encoder head."""
  return {"sst": "separate",  # ignored for single sentences
          "para": heads.pair_encoding(model_config.paraphrase_head),
          "sts": heads.pair_encoding(model_config.similarity_head)}


@dataclasses.dataclass
class TaskData:
  splits: Mapping[str, Mapping[str, Any]]  # task -> split -> EncodedSplit
  buckets: Mapping[str, tuple[int, ...]]
  quora_split: str
  packing: PackingSpec | None = None  # config.data's packing, one device group; None: pad to buckets
  epoch_fractions: Mapping[str, float] | None = None  # {task: f}: train on ~f of its data per epoch

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, tokenizer) -> "TaskData":
    data = config.data
    builder_kwargs = {"skip_bad_rows": data.skip_bad_rows}
    if data.data_root:
      builder_kwargs["local_dir"] = data.data_root
    encodings = pair_encodings(config.model)
    if data.extra_sst not in EXTRA_SST:
      raise ValueError(f"config.data.extra_sst={data.extra_sst!r}; expected one of {list(EXTRA_SST)}")
    if data.extra_sts not in EXTRA_STS:
      raise ValueError(f"config.data.extra_sts={data.extra_sts!r}; expected one of {list(EXTRA_STS)}")
    splits = {}
    for task in pipeline.TASKS:
      splits[task] = {}
      for split in SPLITS:
        sources = pipeline.task_splits(task, split, cfimdb=EXTRA_SST[data.extra_sst],
                                       sick=EXTRA_STS[data.extra_sts], quora_split=data.quora_split)
        splits[task][split] = pipeline.load_task_split(
            task, sources, tokenizer, max_length=data.max_length, pair_encoding=encodings[task],
            tfds_dir=data.tfds_dir or None, cache_dir=data.cache_dir or None,
            builder_kwargs=builder_kwargs)
    buckets = {t: bucketing.choose_bucket_lengths(splits[t]["train"].lengths, num_buckets=data.num_buckets,
                                                  max_length=data.max_length)
               for t in pipeline.TASKS}
    packing = None
    if data.get("packing", False):
      packing = PackingSpec(tuple(int(n) for n in data.pack_lengths), int(data.pack_row_multiple))
      if max(packing.pack_lengths) < data.max_length:
        raise ValueError(f"config.data.pack_lengths={packing.pack_lengths} cannot hold a sequence of "
                         f"max_length={data.max_length}; add {data.max_length}")
    fractions = {task: float(data.get(f"{task}_fraction", 1.0)) for task in pipeline.TASKS}
    for task, fraction in fractions.items():
      if not (math.isfinite(fraction) and fraction >= 0.0):
        raise ValueError(f"config.data.{task}_fraction={fraction}; expected a number >= 0 (1 = all of it once)")
    return cls(splits, buckets, data.quora_split, packing, fractions)

  def packing_spec(self, *, num_devices: int) -> PackingSpec | None:
    """The packing layout for a batch split over `num_devices` devices: one group per device.

    The step runs per device under jit and pmap alike (train/parallel.py), so each
    device's rows must hold exactly its own examples, indexed locally.
    """
    if not self.packing:
      return None
    return dataclasses.replace(self.packing, num_groups=num_devices)

  def train_stream(self, *, schedule: str, proportions: str, batch_size: int, num_epochs: int,
                   seed: int, num_devices: int, packing: PackingSpec | None = None) -> MultiTaskSampler:
    return MultiTaskSampler({t: s["train"] for t, s in self.splits.items()}, self.buckets,
                            schedule=schedule, proportions=proportions, total_batch_size=batch_size,
                            num_epochs=num_epochs, seed=seed, num_devices=num_devices, packing=packing,
                            epoch_fractions=self.epoch_fractions)

  def eval_batches(self, task: str, split: str, batch_size: int, num_devices: int,
                   packing: PackingSpec | None = None) -> Iterator[dict]:
    return pipeline.eval_batches(self.splits[task][split], batch_size, self.buckets[task],
                                 num_devices=num_devices, packing=packing)

  def num_examples(self, task: str, split: str) -> int:
    return len(self.splits[task][split])

  def labels(self, task: str, split: str) -> np.ndarray:
    encoded = self.splits[task][split]
    if not encoded.labeled:
      raise ValueError(f"{task} {split} is unlabeled")
    return np.asarray(encoded.labels)

  def ids(self, task: str, split: str) -> list[str]:
    return [str(i) for i in self.splits[task][split].ids]

  def placeholder_rows(self, task: str, split: str) -> list[str]:
    """"file:line: id ...: why" for each malformed row kept only so that its id gets a prediction.

    Such a row's unreadable text is empty (data_prep/csv_rows.py, keep_every_id),
    so its prediction says little; the trainer names each one beside its file.
    """
    return [f"{file}:{line}: id {row_id}: {why}"
            for provenance in self.splits[task][split].provenance
            for file, rows in provenance.get("placeholder_rows", {}).items()
            for line, row_id, why in rows]

  def example_batches(self) -> dict[str, dict]:
    """One tiny batch per task, with the real encodings, to initialise the model."""
    return {t: self.splits[t]["train"].collate(np.arange(2), self.buckets[t][-1]) for t in pipeline.TASKS}

  def description(self) -> dict:
    """What the results were computed on: sources, sizes, the quora split, skipped rows."""
    return {
        "quora_split": self.quora_split,
        "buckets": {t: list(b) for t, b in self.buckets.items()},
        "packing": ({"pack_lengths": list(self.packing.pack_lengths), "row_multiple": self.packing.row_multiple}
                    if self.packing else None),
        "splits": {t: {s: {"name": e.name, "examples": len(e), "provenance": list(e.provenance)}
                       for s, e in splits.items()} for t, splits in self.splits.items()},
    }
