"""The hand-written VJPs of bert_jax/ops.py against plain autodiff of the same formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import dropout, ops
from bert_jax.modeling import gelu_erf

RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
  return jnp.asarray(RNG.normal(size=shape) * scale, jnp.float32)


def _check_value_and_grads(fast, reference, args, argnums, atol=2e-5, rtol=2e-5):
  """`fast` and `reference` agree in value and in the gradient of a random projection of the output."""
  out_fast, out_ref = fast(*args), reference(*args)
  np.testing.assert_allclose(out_fast, out_ref, atol=atol, rtol=rtol)
  probe = _normal(*np.shape(out_ref))
  loss = lambda f: lambda *a: jnp.sum(f(*a) * probe)
  for g_fast, g_ref in zip(jax.grad(loss(fast), argnums)(*args), jax.grad(loss(reference), argnums)(*args)):
    np.testing.assert_allclose(g_fast, g_ref, atol=atol, rtol=rtol)


def _layer_norm_reference(x, scale, bias, epsilon=1e-12):
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + epsilon) * scale + bias


def test_bias_gelu():
  x, b = _normal(4, 6, 32, scale=2.0), _normal(32)
  _check_value_and_grads(ops.bias_gelu, lambda x, b: gelu_erf(x + b), (x, b), (0, 1))


def test_layer_norm():
  x, scale, bias = _normal(3, 5, 16, scale=3.0), _normal(16), _normal(16)
  _check_value_and_grads(lambda x, s, b: ops.layer_norm(x, s, b, 1e-12), _layer_norm_reference,
                         (x, scale, bias), (0, 1, 2), atol=1e-4)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_dropout_add_layer_norm_uses_the_seeded_mask(rate):
  x, bias, residual = _normal(2, 7, 16), _normal(16), _normal(2, 7, 16)
  scale, ln_bias = _normal(16), _normal(16)
  seeds = dropout.seeds_from_key(jax.random.key(3))

  def reference(x, bias, residual, scale, ln_bias):
    h = x + bias
    if rate:
      keep = dropout.keep_mask_from_seeds(seeds, rate, h.shape)
      h = jnp.where(keep, h / (1 - rate), 0.0)
    return _layer_norm_reference(h + residual, scale, ln_bias)

  fast = lambda *a: ops.dropout_add_layer_norm(*a, seeds, rate, 1e-12)
  _check_value_and_grads(fast, reference, (x, bias, residual, scale, ln_bias), (0, 1, 2, 3, 4), atol=1e-4)


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_softmax_dropout_masks_keys_and_uses_the_seeded_mask(rate):
  logits = _normal(2, 3, 5, 5, scale=3.0)
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
  seeds = dropout.seeds_from_key(jax.random.key(4))

  def reference(logits):
    probs = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1)
    if rate:
      keep = dropout.keep_mask_from_seeds(seeds, rate, probs.shape)
      probs = jnp.where(keep, probs / (1 - rate), 0.0)
    return probs

  fast = lambda logits: ops.softmax_dropout(logits, mask, seeds, rate)
  _check_value_and_grads(fast, reference, (logits,), (0,))
  assert np.all(np.asarray(fast(logits))[0, :, :, 3:] == 0)  # masked keys get no weight


@pytest.mark.parametrize("features_in, features_out", [(16, 48), (48, 16)])  # both transposition branches
def test_matmul(features_in, features_out):
  x, kernel = _normal(3, 10, features_in), _normal(features_in, features_out)
  _check_value_and_grads(ops.matmul, jnp.dot, (x, kernel), (0, 1), atol=1e-4)


def test_shared_input_matmuls():
  x, kernels = _normal(2, 9, 16), tuple(_normal(16, 16) for _ in range(3))
  fast = lambda x, *k: jnp.concatenate(ops.shared_input_matmuls(x, tuple(k)), -1)
  reference = lambda x, *k: jnp.concatenate([x @ kk for kk in k], -1)
  _check_value_and_grads(fast, reference, (x, *kernels), (0, 1, 2, 3), atol=1e-4)


def test_bfloat16_inputs_keep_their_dtype_in_gradients():
  x = _normal(4, 32).astype(jnp.bfloat16)
  bias = _normal(32)
  grad_x, grad_b = jax.grad(lambda x, b: jnp.sum(ops.bias_gelu(x, b).astype(jnp.float32)), (0, 1))(x, bias)
  assert ops.bias_gelu(x, bias).dtype == jnp.bfloat16
  assert grad_x.dtype == jnp.bfloat16 and grad_b.dtype == jnp.float32
  grad_x = jax.grad(lambda x: jnp.sum(ops.layer_norm(x, jnp.ones(32), jnp.zeros(32), 1e-12)))(x)
  assert grad_x.dtype == jnp.bfloat16
