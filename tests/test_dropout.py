"""The hash-based dropout: keep rate, determinism, independence, scaling, module behaviour."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import dropout


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_rate_matches_one_minus_rate(rate):
  shape = (64, 12, 32, 32)  # an attention-probability shape, 786k elements
  keep = np.asarray(dropout.keep_mask(jax.random.key(0), rate, shape))
  n = keep.size
  sd = np.sqrt(rate * (1 - rate) / n)
  assert abs(keep.mean() - (1 - rate)) < 5 * sd


def test_same_key_same_mask_and_other_keys_independent():
  shape = (256, 384)
  key = jax.random.key(3)
  a = np.asarray(dropout.keep_mask(key, 0.1, shape))
  np.testing.assert_array_equal(a, np.asarray(dropout.keep_mask(key, 0.1, shape)))
  for other in (jax.random.fold_in(key, 1), jax.random.split(key)[0], jax.random.key(4)):
    b = np.asarray(dropout.keep_mask(other, 0.1, shape))
    # Independent masks agree where both keep or both drop: 0.9^2 + 0.1^2 = 0.82.
    agreement = np.mean(a == b)
    assert abs(agreement - 0.82) < 5 * np.sqrt(0.82 * 0.18 / a.size)


def test_bits_are_uniform_and_neighbours_uncorrelated():
  bits = np.asarray(dropout.random_bits(jax.random.key(7), (1 << 18,))).astype(np.float64) / 2.0 ** 32
  n = bits.size
  counts, _ = np.histogram(bits, bins=64, range=(0, 1))
  chi2 = np.sum((counts - n / 64) ** 2 / (n / 64))
  assert chi2 < 63 + 5 * np.sqrt(2 * 63)  # chi-square with 63 dof, mean 63
  for lag in (1, 2, 384, 4096):  # next element, next hidden unit row, ...
    corr = np.corrcoef(bits[:-lag], bits[lag:])[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)
  # Every bit position is fair: a hash that leaves low bits structured would fail this.
  ints = np.asarray(dropout.random_bits(jax.random.key(7), (1 << 16,)))
  for position in range(32):
    ones = np.mean((ints >> position) & 1)
    assert abs(ones - 0.5) < 5 * 0.5 / np.sqrt(ints.size)


def test_dropout_scales_kept_values_and_zeroes_the_rest():
  x = jnp.arange(1.0, 10001.0).reshape(100, 100)
  y = np.asarray(dropout.dropout(x, 0.25, jax.random.key(1)))
  kept = y != 0
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
  assert 0.70 < kept.mean() < 0.80
  np.testing.assert_array_equal(np.asarray(dropout.dropout(x, 0.0, jax.random.key(1))), np.asarray(x))


def test_bfloat16_input_keeps_its_dtype():
  x = jnp.ones((8, 16), jnp.bfloat16)
  assert dropout.dropout(x, 0.1, jax.random.key(0)).dtype == jnp.bfloat16


def test_module_is_identity_when_deterministic_and_differs_per_call():
  class Twice(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic):
      return dropout.Dropout(0.5)(x, deterministic), dropout.Dropout(0.5)(x, deterministic)

  x = jnp.ones((32, 32))
  first, second = Twice().apply({}, x, True)
  np.testing.assert_array_equal(np.asarray(first), np.asarray(x))
  first, second = Twice().apply({}, x, False, rngs={"dropout": jax.random.key(0)})
  assert not np.array_equal(np.asarray(first), np.asarray(second))  # each call folds its own key
  again, _ = Twice().apply({}, x, False, rngs={"dropout": jax.random.key(0)})
  np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_invalid_rate_is_rejected():
  with pytest.raises(ValueError, match="rate"):
    dropout.keep_mask(jax.random.key(0), 1.0, (4,))
