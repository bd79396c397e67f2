"""The batch layouts the model reads, written down once.

A batch is a dict of arrays (a pytree, so `jax.jit`, `jax.pmap` and
`jax.device_put` take it as it is). The input pipeline (data_prep/) builds
them and the model (bert_jax/multitask.py) reads them; both import the key
names and the checks from here. Two layouts, told apart by `is_packed`:

Padded (`PaddedBatch`, length buckets; also what `Tokenizer.__call__` returns):

  input_ids, attention_mask, token_type_ids
      [B, L] int32      one sentence, or a joint pair "[CLS] a [SEP] b [SEP]"
      [B, 2, L] int32   a separately encoded pair (sentence a, sentence b)
  attention_mask: 1 for real tokens, 0 for padding (always at the end).

Packed (`PackedBatch`, data_prep/packing.py): several sequences per row, B
examples with k sequences each (k = 1: a sentence or a joint pair; k = 2: a
separately encoded pair):

  input_ids, token_type_ids, position_ids, segment_ids   [R, P] int32
      segment_ids: 0 = padding, 1..P//2 = the n-th sequence of that row
      position_ids restart at 0 for every sequence
  sequence_slots   [B, k] int32   row * (P // 2) + segment - 1: where the
                                   sequence's pooled embedding lands
  sequence_starts  [B, k] int32   row * P + offset: its first ([CLS]) token

Both layouts, for training and evaluation, also carry

  labels   [B]   int32 class (sst), float32 0/1 (para) or 0..5 (sts)
  weights  [B]   float32; 0 marks a filler example that changes nothing
  index    [B]   int32 row of the example in its split, -1 for fillers

The model reads only the packed layout: `multitask.as_packed` views a padded
batch as packed rows with one sequence each, inside the jitted function, so
the encoder and the pooling have one code path. Padded batches stay the
pipeline's format for length buckets because they need no index arithmetic.

Under `jax.pmap` the leading axes are split over devices, so a packed batch
built for it holds one group of rows per device with slot and start indices
local to the group (`PackingSpec.num_groups`).
"""

from __future__ import annotations

from typing import Any, Mapping, TypedDict

import numpy as np

Batch = Mapping[str, Any]

PACKED_KEYS = ("input_ids", "token_type_ids", "position_ids", "segment_ids")
EXAMPLE_KEYS = ("labels", "weights", "index")

SEPARATE, JOINT = "separate", "joint"  # the two pair encodings


class PaddedBatch(TypedDict, total=False):
  input_ids: np.ndarray
  attention_mask: np.ndarray
  token_type_ids: np.ndarray
  labels: np.ndarray
  weights: np.ndarray
  index: np.ndarray


class PackedBatch(TypedDict, total=False):
  input_ids: np.ndarray
  token_type_ids: np.ndarray
  position_ids: np.ndarray
  segment_ids: np.ndarray
  sequence_slots: np.ndarray
  sequence_starts: np.ndarray
  labels: np.ndarray
  weights: np.ndarray
  index: np.ndarray


def is_packed(batch: Batch) -> bool:
  """Whether `batch` is packed: rows of several sequences with segment ids."""
  return "segment_ids" in batch


def sequences_per_example(batch: Batch, task: str) -> int:
  """k: 1 for a sentence or a joint pair, 2 for a separately encoded pair; ValueError naming the shape otherwise."""
  if is_packed(batch):
    shape = np.shape(batch["sequence_slots"])
    if len(shape) == 2 and shape[1] in (1, 2):
      return shape[1]
    raise ValueError(f"{task} packed batch: sequence_slots has shape {shape}; expected [B, 1] or [B, 2]")
  shape = np.shape(batch["input_ids"])
  if len(shape) == 3 and shape[1] == 2:
    return 2
  if len(shape) == 2:
    return 1
  raise ValueError(f"{task} batch: input_ids has shape {shape}; expected [B, 2, L] (separate) or [B, L] (joint)")


def pair_encoding_of(batch: Batch, task: str) -> str:
  """SEPARATE for two sequences per example, JOINT for one."""
  return SEPARATE if sequences_per_example(batch, task) == 2 else JOINT
