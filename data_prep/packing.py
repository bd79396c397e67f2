"""Sequence packing: several sentences per row, so almost no compute goes to padding.

With length buckets, a batch of sentences is padded to its bucket: on the
course data 24-33% of every encoder pass is padding, and for separately
encoded pairs both sentences pad to the longer one. Packing instead lays the
batch's sentences end to end into rows of `pack_length` tokens (first-fit
decreasing), so on the same data ~91% of the positions are real tokens.
Attention stays per sentence: every token carries a segment id and attends
only to tokens of its own segment (a block-diagonal mask), position ids
restart at 0 for each sentence, and the model pools each sentence from its own
segment, so a packed forward pass gives the same sentence embeddings as a
padded one (tests/test_packing.py checks this on the real checkpoint's shape).

The packed layout (keys, shapes, what the indices mean) is written down in
bert_jax/batch.py, which the model reads too.

R (rows) is rounded up to a multiple of `row_multiple` and to 3 significant
bits (`round_rows`), and P is the smallest of `pack_lengths` that holds the
batch's longest sequence, so a task compiles a handful of (R, P) shapes. With `num_groups` > 1 the examples are
split into that many consecutive groups, each packed into its own R rows with
slot and start indices local to the group: the layout a per-device step needs
when the batch's leading axes are split over devices (train/parallel.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bert_jax.batch import PACKED_KEYS, PackedBatch
from data_prep.bucketing import round_up

if TYPE_CHECKING:  # tokenized.py imports nothing from here; the split is only read
  from data_prep.tokenized import EncodedSplit


def max_segments(pack_length: int) -> int:
  """Segments a row may hold: every sequence has at least [CLS] and [SEP]."""
  return pack_length // 2


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where each sequence goes: its row, its offset in the row, and its 1-based segment id there."""
  row: np.ndarray
  offset: np.ndarray
  segment: np.ndarray
  num_rows: int


def first_fit_decreasing(lengths: Sequence[int], pack_length: int) -> Placement:
  """Places sequences into rows of `pack_length` tokens, longest first, each into the first row it fits.

  Deterministic: ties keep input order. At most `max_segments(pack_length)`
  sequences share a row.
  """
  lengths = np.asarray(lengths, dtype=np.int64)
  if len(lengths) and lengths.max() > pack_length:
    raise ValueError(f"a sequence of {lengths.max()} tokens does not fit pack_length={pack_length}")
  if len(lengths) and lengths.min() < 1:
    raise ValueError("cannot pack an empty sequence")
  limit = max_segments(pack_length)
  order = np.argsort(-lengths, kind="stable")
  row = np.zeros(len(lengths), np.int64)
  offset = np.zeros(len(lengths), np.int64)
  segment = np.zeros(len(lengths), np.int64)
  used: list[int] = []  # tokens used per row
  count: list[int] = []  # sequences per row
  for i in order:
    n = lengths[i]
    for r in range(len(used)):
      if used[r] + n <= pack_length and count[r] < limit:
        break
    else:
      r = len(used)
      used.append(0)
      count.append(0)
    row[i], offset[i], segment[i] = r, used[r], count[r] + 1
    used[r] += n
    count[r] += 1
  return Placement(row=row, offset=offset, segment=segment, num_rows=len(used))


def round_rows(rows: int, multiple: int) -> int:
  """`rows` rounded up to a multiple of `multiple`, and to 3 significant bits.

  The second rounding keeps the number of distinct shapes (compilations)
  logarithmic in the row count while wasting at most 1/8 (about 1/16 on
  average): 13 -> 14, 50 -> 52, 100 -> 104, 150 -> 160.
  """
  rows = round_up(max(rows, 1), multiple)
  step = 1 << max(0, rows.bit_length() - 4)
  return round_up(round_up(rows, step), multiple)


def choose_pack_length(longest: int, pack_lengths: Sequence[int]) -> int:
  """The smallest allowed row length that holds a sequence of `longest` tokens."""
  for length in sorted(pack_lengths):
    if longest <= length:
      return int(length)
  raise ValueError(f"a sequence of {longest} tokens is longer than every pack length {tuple(pack_lengths)}; "
                   f"add max_length to data.pack_lengths")


def pack(sequences: Sequence[Sequence[np.ndarray]], *, pad_id: int, pack_lengths: Sequence[int],
         row_multiple: int = 1, num_groups: int = 1,
         token_types: Sequence[Sequence[np.ndarray | None]] | None = None) -> dict[str, np.ndarray]:
  """The packed arrays (module doc) for `sequences[b][j]`, the j-th token sequence of example b.

  `token_types`, when given, has the same structure (None for all-zero types).
  """
  num_examples = len(sequences)
  per_example = len(sequences[0]) if num_examples else 1
  if any(len(s) != per_example for s in sequences):
    raise ValueError("every example needs the same number of sequences")
  if num_examples % num_groups:
    raise ValueError(f"{num_examples} examples do not split into {num_groups} groups")
  lengths = np.array([[len(seq) for seq in example] for example in sequences], np.int64)
  pack_length = choose_pack_length(int(lengths.max()), pack_lengths)
  group_size = num_examples // num_groups
  placements = [first_fit_decreasing(lengths[g * group_size:(g + 1) * group_size].reshape(-1), pack_length)
                for g in range(num_groups)]
  rows = round_rows(max(p.num_rows for p in placements), row_multiple)
  slots_per_row = max_segments(pack_length)

  total_rows = rows * num_groups
  out = {key: np.zeros((total_rows, pack_length), np.int32) for key in PACKED_KEYS}
  out["input_ids"][:] = pad_id
  slots = np.zeros((num_examples, per_example), np.int32)
  starts = np.zeros((num_examples, per_example), np.int32)
  for g, placement in enumerate(placements):
    for k in range(group_size * per_example):
      b, j = g * group_size + k // per_example, k % per_example
      seq = np.asarray(sequences[b][j])
      local_row, offset, segment = placement.row[k], placement.offset[k], placement.segment[k]
      row, end = g * rows + local_row, offset + len(seq)
      out["input_ids"][row, offset:end] = seq
      if token_types is not None and token_types[b][j] is not None:
        out["token_type_ids"][row, offset:end] = token_types[b][j]
      out["position_ids"][row, offset:end] = np.arange(len(seq))
      out["segment_ids"][row, offset:end] = segment
      slots[b, j] = local_row * slots_per_row + segment - 1
      starts[b, j] = local_row * pack_length + offset
  out["sequence_slots"], out["sequence_starts"] = slots, starts
  return out


@dataclasses.dataclass(frozen=True)
class PackingSpec:
  """How the input pipeline packs batches: row lengths, row rounding, device groups.

  `num_groups` is the number of devices the batch's leading axes are split
  over: each device's rows then hold its own examples, indexed locally.
  """
  pack_lengths: tuple[int, ...] = (64, 128)
  row_multiple: int = 2
  num_groups: int = 1

  def __post_init__(self):
    if not self.pack_lengths or min(self.pack_lengths) < 2:
      raise ValueError(f"pack_lengths={self.pack_lengths}: need at least one length >= 2")
    if self.row_multiple < 1 or self.num_groups < 1:
      raise ValueError(f"row_multiple={self.row_multiple}, num_groups={self.num_groups}: both must be >= 1")

  def collate(self, split: EncodedSplit, indices: np.ndarray) -> PackedBatch:
    """One packed batch of these example rows of `split`; index -1 makes a weight-0 filler.

    A filler example is "[CLS] [SEP]" (each side of a pair), so its pooled
    embedding is finite, as in the padded `EncodedSplit.collate`.
    """
    indices = np.asarray(indices, dtype=np.int64)
    filler = np.asarray([split.special.cls, split.special.sep], np.int32)
    keys = ("input_ids_a", "input_ids_b") if split.pair_encoding == "separate" else ("input_ids",)
    sequences = [[split.tokens[k].row(i) if i >= 0 else filler for k in keys] for i in indices]
    token_types = None
    if "token_type_ids" in split.tokens and split.pair_encoding != "separate":
      types = split.tokens["token_type_ids"]
      token_types = [[types.row(i) if i >= 0 else None] for i in indices]
    batch = pack(sequences, pad_id=split.special.pad, pack_lengths=self.pack_lengths,
                 row_multiple=self.row_multiple, num_groups=self.num_groups, token_types=token_types)
    return {**batch, **split.example_fields(indices)}

  def to_dict(self) -> dict:
    return {"pack_lengths": list(self.pack_lengths), "row_multiple": self.row_multiple,
            "num_groups": self.num_groups}
