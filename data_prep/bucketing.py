"""Bucket lengths: a few padded shapes per task, chosen to waste little compute.

Padding every batch to max_length wastes most of the compute on SST (median
~25 tokens of 128); padding each batch to its own longest sequence gives a new
shape, hence a new XLA compilation, almost every step. A handful of bucket
lengths sits between: each example is padded to the smallest bucket that holds
it, and the trainer compiles one shape per (task, bucket).

`choose_bucket_lengths` picks the buckets that minimise the total padded length
over the training split, exactly, by dynamic programming over the candidate
lengths (multiples of 8, which keeps shapes friendly to accelerator tiles).
This is the optimum that length quantiles only approximate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def round_up(value: int, multiple: int) -> int:
  """The smallest multiple of `multiple` >= `value`; packing rounds its row counts with it too."""
  return -(-value // multiple) * multiple


def choose_bucket_lengths(lengths: np.ndarray, *, num_buckets: int = 4, max_length: int = 128,
                          multiple: int = 8) -> tuple[int, ...]:
  """At most `num_buckets` lengths (multiples of `multiple`, or max_length) covering every example.

  Minimises sum over examples of (assigned bucket length); since real tokens
  are fixed, that is the least padding. The largest bucket is the longest
  example rounded up, capped at max_length.
  """
  lengths = np.asarray(lengths, dtype=np.int64)
  if len(lengths) == 0:
    raise ValueError("cannot choose bucket lengths for an empty split")
  if lengths.max() > max_length:
    raise ValueError(f"an example has {lengths.max()} tokens, more than max_length={max_length}")
  if num_buckets < 1:
    raise ValueError(f"num_buckets={num_buckets}; need at least 1")
  top = min(round_up(int(lengths.max()), multiple), max_length)
  candidates = sorted({min(c, max_length) for c in range(multiple, top + multiple, multiple)})
  candidates = [c for c in candidates if c <= top]
  # counts[j]: examples whose smallest fitting candidate is candidates[j].
  slot = np.searchsorted(candidates, lengths, side="left")
  counts = np.bincount(slot, minlength=len(candidates))
  prefix = np.concatenate([[0], np.cumsum(counts)])
  m = len(candidates)
  # cost(i, j): examples in slots i..j all padded to candidates[j].
  cost = lambda i, j: (prefix[j + 1] - prefix[i]) * candidates[j]
  inf = np.iinfo(np.int64).max
  # best[k][j]: least cost covering slots 0..j with k buckets, the last at candidates[j].
  best = np.full((num_buckets + 1, m), inf, dtype=np.int64)
  parent = np.full((num_buckets + 1, m), -1, dtype=np.int64)
  for j in range(m):
    best[1][j] = cost(0, j)
  for k in range(2, num_buckets + 1):
    for j in range(m):
      for i in range(j):  # previous bucket at candidates[i]
        if best[k - 1][i] == inf:
          continue
        total = best[k - 1][i] + cost(i + 1, j)
        if total < best[k][j]:
          best[k][j], parent[k][j] = total, i
  k = int(np.argmin(best[:, m - 1]))  # fewer buckets when more would not help
  chosen, j = [], m - 1
  while k >= 1 and j >= 0:
    chosen.append(candidates[j])
    j, k = parent[k][j], k - 1
  return tuple(sorted(chosen))


def bucket_index(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  """For each length, the index of the smallest bucket that holds it.

  Raises:
    ValueError: a length exceeds the largest bucket.
  """
  lengths = np.asarray(lengths)
  index = np.searchsorted(np.asarray(buckets), lengths, side="left")
  if len(lengths) and index.max() >= len(buckets):
    raise ValueError(f"an example of length {lengths.max()} does not fit the largest bucket "
                     f"{buckets[-1]}; add a bucket (e.g. max_length) for it")
  return index


def buckets_covering(lengths: np.ndarray, buckets: Sequence[int], max_length: int) -> tuple[int, ...]:
  """`buckets`, plus max_length when some example (e.g. of an eval split) is longer than all.

  Bucket lengths come from the training split; a validation example can be
  longer than every training example. It then gets one overflow bucket,
  rather than a change to the training shapes.
  """
  buckets = tuple(buckets)
  if len(lengths) and int(np.max(lengths)) > buckets[-1]:
    return buckets + (max_length,)
  return buckets


@dataclasses.dataclass(frozen=True)
class BucketStats:
  length: int
  num_examples: int
  real_tokens: int
  padded_tokens: int  # positions in the padded arrays: real + padding

  @property
  def padding_fraction(self) -> float:
    return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def bucket_stats(lengths: np.ndarray, real_tokens: np.ndarray, buckets: Sequence[int],
                 rows_per_example: int = 1) -> list[BucketStats]:
  """Padding per bucket when each example is padded to its own bucket (no filler rows).

  `lengths` is the padded length each example needs, `real_tokens` its real
  token count (both sides of a separately encoded pair, with rows_per_example=2).
  """
  index = bucket_index(lengths, buckets)
  stats = []
  for k, length in enumerate(buckets):
    members = index == k
    n = int(members.sum())
    stats.append(BucketStats(length=int(length), num_examples=n, real_tokens=int(real_tokens[members].sum()),
                             padded_tokens=n * int(length) * rows_per_example))
  return stats


def total_padding_fraction(stats: Sequence[BucketStats]) -> float:
  real = sum(s.real_tokens for s in stats)
  padded = sum(s.padded_tokens for s in stats)
  return 1.0 - real / padded if padded else 0.0
