"""Dropout whose random mask costs a few integer ops per element and fuses into its consumer.

Why not `flax.linen.Dropout`: it draws `jax.random.bernoulli` bits, and with the
default threefry key each call lowers (on CPU) to a while loop over the cipher's
rounds that writes its uint32 state arrays to memory on every iteration. BERT
drops out every hidden state twice per layer and every attention probability
once, so those loops and their memory traffic were a large share of a
fine-tuning step (bench/README.md, "Figures taken out of the code", has the
measured gain and the command that measures it).

Here each call draws two 32-bit seeds from its key (the only threefry work,
on two numbers) and the mask is a counter-based hash of each element's flat
index: `lowbias32(lowbias32(index ^ seed0) + seed1)` (Chris Wellons' integer
hash, a full-avalanche 32-bit mixer). That is elementwise integer arithmetic on
an iota, so XLA fuses it straight into the dropout's multiply and never writes
random bits to memory. Keys still come from `make_rng("dropout")`, folded by
Flax per module and per call, so masks differ across layers, steps and
devices, and the same key gives the same mask. The hash is not a cryptographic
generator; its masks' keep rate and independence are tested in
tests/test_dropout.py, which is all dropout needs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_MULTIPLIER_1 = np.uint32(0x7FEB352D)
_MULTIPLIER_2 = np.uint32(0x846CA68B)


def _lowbias32(x: Array) -> Array:
  x = x ^ (x >> 16)
  x = x * _MULTIPLIER_1
  x = x ^ (x >> 15)
  x = x * _MULTIPLIER_2
  return x ^ (x >> 16)


def seeds_from_key(key: Array) -> Array:
  """The two uint32 seeds a mask is hashed from: the only threefry work of a dropout call."""
  return jax.random.bits(key, (2,), jnp.uint32)


def random_bits_from_seeds(seeds: Array, shape: tuple[int, ...]) -> Array:
  """uint32 bits of `shape`, a hash of (seeds, flat element index)."""
  size = int(np.prod(shape, dtype=np.int64))
  if size >= 2 ** 32:
    raise ValueError(f"dropout over {size} elements: the flat index must fit in 32 bits")
  index = jax.lax.iota(jnp.uint32, size).reshape(shape)
  return _lowbias32(_lowbias32(index ^ seeds[0]) + seeds[1])


def random_bits(key: Array, shape: tuple[int, ...]) -> Array:
  """uint32 bits of `shape`, a hash of (key, flat element index)."""
  return random_bits_from_seeds(seeds_from_key(key), shape)


def _threshold(rate: float) -> np.uint32:
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate {rate} must be in [0, 1)")
  return np.uint32(min(round(rate * 2.0 ** 32), 2 ** 32 - 1))


def keep_mask_from_seeds(seeds: Array, rate: float, shape: tuple[int, ...]) -> Array:
  """Boolean mask, True with probability 1 - rate (to within 2^-32).

  Cheap enough to recompute: hand-written backward passes (bert_jax/ops.py)
  regenerate the mask from the two seeds instead of saving it.
  """
  return random_bits_from_seeds(seeds, shape) >= _threshold(rate)


def keep_mask(key: Array, rate: float, shape: tuple[int, ...]) -> Array:
  """Boolean mask, True with probability 1 - rate (to within 2^-32)."""
  return keep_mask_from_seeds(seeds_from_key(key), rate, shape)


def dropout_from_seeds(x: Array, seeds: Array, rate: float) -> Array:
  """Inverted dropout with the mask of `seeds`: zero with probability `rate`, scale the rest by 1 / (1 - rate).

  Applied to a cotangent with the same seeds, it is dropout's backward pass.
  """
  if rate == 0.0:
    return x
  keep = keep_mask_from_seeds(seeds, rate, x.shape)
  return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - rate), x.dtype), jnp.zeros((), x.dtype))


def dropout(x: Array, rate: float, key: Array) -> Array:
  """Inverted dropout: zero with probability `rate`, scale the kept values by 1 / (1 - rate)."""
  if rate == 0.0:
    return x
  return dropout_from_seeds(x, seeds_from_key(key), rate)


class Dropout(nn.Module):
  """Drop-in for `flax.linen.Dropout` (same call signature, same "dropout" rng collection)."""
  rate: float
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    return dropout(x, self.rate, self.make_rng(self.rng_collection))
