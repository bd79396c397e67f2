"""The encoder's elementwise blocks, with hand-written gradients.

On a CPU the encoder's matmuls already run near the machine's matmul peak, so
what is left to win is memory traffic: every elementwise pass over a
[tokens, hidden] array costs about as much as a small matmul. XLA's autodiff
of these blocks keeps extra intermediates alive (an erf term, a broadcast
LayerNorm scale, boolean dropout masks) and spends passes writing and reading
them. Each `custom_vjp` here saves only what its backward cannot cheaply
recompute. Dropout masks are regenerated from their two seeds (see
`bert_jax/dropout.py`), never stored. `bench/profile_step.py` shows the
effect, and tests/test_ops.py checks values and gradients against plain
autodiff of the same formulas.

Everything computes in float32 and returns the input's dtype, so the bfloat16
path keeps float32 statistics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.dropout import dropout_from_seeds

Array = jax.Array

_SQRT_HALF = np.float32(1.0 / np.sqrt(2.0))
_INV_SQRT_2PI = np.float32(1.0 / np.sqrt(2.0 * np.pi))


def _sum_rows(x: Array) -> Array:
  """Sum over every axis but the last: the gradient of a broadcast bias or scale."""
  return jnp.sum(x.reshape(-1, x.shape[-1]), axis=0)


def _no_gradient(x: Array):
  """The cotangent of an integer input (the dropout seeds)."""
  return np.zeros(x.shape, dtype=jax.dtypes.float0)


# ----------------------------------------------------------------------------
# Feed-forward: bias + exact GELU.
# ----------------------------------------------------------------------------


def _gelu_parts(h: Array) -> tuple[Array, Array]:
  """(Phi(h), phi(h)): the standard normal CDF and density, in float32."""
  cdf = 0.5 + 0.5 * jax.lax.erf(h * _SQRT_HALF)
  pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * h * h)
  return cdf, pdf


@jax.custom_vjp
def bias_gelu(x: Array, bias: Array) -> Array:
  """Exact (erf) GELU of `x + bias`, as Hugging Face BERT's "gelu".

  Saves only the matmul output `x` (which exists anyway); the backward
  recomputes Phi and phi from it in the same pass that applies them.
  """
  h = x.astype(jnp.float32) + bias
  return (h * _gelu_parts(h)[0]).astype(x.dtype)


def _bias_gelu_fwd(x, bias):
  return bias_gelu(x, bias), (x, bias)


def _bias_gelu_bwd(residuals, dy):
  # The barrier stops XLA from merging this recomputation with the forward's
  # (common-subexpression elimination), which would store Phi after all.
  x, bias = jax.lax.optimization_barrier(residuals)
  h = x.astype(jnp.float32) + bias
  cdf, pdf = _gelu_parts(h)
  dh = dy.astype(jnp.float32) * (cdf + h * pdf)
  return dh.astype(x.dtype), _sum_rows(dh).astype(bias.dtype)


bias_gelu.defvjp(_bias_gelu_fwd, _bias_gelu_bwd)


# ----------------------------------------------------------------------------
# LayerNorm, and BERT's "dense -> dropout -> + residual -> LayerNorm".
# ----------------------------------------------------------------------------


def _normalize(x: Array, epsilon: float) -> tuple[Array, Array]:
  """(x_hat, 1/std) over the last axis, float32."""
  centered = x - jnp.mean(x, axis=-1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(centered * centered, axis=-1, keepdims=True) + epsilon)
  return centered * rstd, rstd


def _layer_norm_input_grad(dy: Array, normalized: Array, rstd: Array, scale: Array) -> Array:
  """dL/dx of LayerNorm: rstd * (g - mean(g) - x_hat * mean(g * x_hat)), g = dy * scale."""
  g = dy * scale
  return rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
                 - normalized * jnp.mean(g * normalized, axis=-1, keepdims=True))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
  """LayerNorm over the last axis; float32 statistics and output."""
  normalized, _ = _normalize(x.astype(jnp.float32), epsilon)
  return normalized * scale + bias


def _layer_norm_fwd(x, scale, bias, epsilon):
  normalized, rstd = _normalize(x.astype(jnp.float32), epsilon)
  return normalized * scale + bias, (normalized, rstd, scale, jnp.zeros((0,), x.dtype))


def _layer_norm_bwd(epsilon, residuals, dy):
  del epsilon
  normalized, rstd, scale, dtype_witness = residuals
  dy = dy.astype(jnp.float32)
  dx = _layer_norm_input_grad(dy, normalized, rstd, scale)
  return dx.astype(dtype_witness.dtype), _sum_rows(dy * normalized), _sum_rows(dy)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def dropout_add_layer_norm(x: Array, bias: Array, residual: Array, scale: Array, ln_bias: Array,
                           seeds: Array, rate: float, epsilon: float) -> Array:
  """LayerNorm(dropout(x + bias) + residual): the end of every BERT sub-layer.

  `x` is the dense layer's matmul output without its bias; `seeds` (uint32[2],
  from `dropout.seeds_from_key`) fix the dropout mask. Pass rate=0 for no
  dropout (evaluation). Returns float32 (the caller casts).
  """
  return _dropout_add_layer_norm_fwd(x, bias, residual, scale, ln_bias, seeds, rate, epsilon)[0]


def _dropout_add_layer_norm_fwd(x, bias, residual, scale, ln_bias, seeds, rate, epsilon):
  summed = dropout_from_seeds(x.astype(jnp.float32) + bias, seeds, rate) + residual.astype(jnp.float32)
  normalized, rstd = _normalize(summed, epsilon)
  residuals = (normalized, rstd, scale, seeds, jnp.zeros((0,), x.dtype), jnp.zeros((0,), residual.dtype))
  return normalized * scale + ln_bias, residuals


def _dropout_add_layer_norm_bwd(rate, epsilon, residuals, dy):
  del epsilon
  normalized, rstd, scale, seeds, x_dtype, residual_dtype = residuals
  seeds = jax.lax.optimization_barrier(seeds)
  dy = dy.astype(jnp.float32)
  dsummed = _layer_norm_input_grad(dy, normalized, rstd, scale)
  dh = dropout_from_seeds(dsummed, seeds, rate)
  return (dh.astype(x_dtype.dtype), _sum_rows(dh), dsummed.astype(residual_dtype.dtype),
          _sum_rows(dy * normalized), _sum_rows(dy), _no_gradient(seeds))


dropout_add_layer_norm.defvjp(_dropout_add_layer_norm_fwd, _dropout_add_layer_norm_bwd)


# ----------------------------------------------------------------------------
# Attention probabilities: masked softmax and dropout.
# ----------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def softmax_dropout(logits: Array, mask: Array, seeds: Array, rate: float) -> Array:
  """dropout(softmax(logits where mask else -inf)) over the last axis, float32.

  `mask` broadcasts against `logits` (True = may attend). Saves the softmax
  output only; the backward regenerates the dropout mask from `seeds`.
  """
  return _softmax_dropout_fwd(logits, mask, seeds, rate)[0]


def _softmax(logits: Array, mask: Array) -> Array:
  logits = jnp.where(mask, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  logits = logits - jnp.max(logits, axis=-1, keepdims=True)
  unnormalized = jnp.exp(logits)
  return unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)


def _softmax_dropout_fwd(logits, mask, seeds, rate):
  probs = _softmax(logits, mask)
  return dropout_from_seeds(probs, seeds, rate), (probs, seeds, jnp.zeros((0,), logits.dtype), mask)


def _softmax_dropout_bwd(rate, residuals, dy):
  probs, seeds, logits_dtype, mask = residuals
  seeds = jax.lax.optimization_barrier(seeds)
  dy = dropout_from_seeds(dy.astype(jnp.float32), seeds, rate)
  dlogits = probs * (dy - jnp.sum(dy * probs, axis=-1, keepdims=True))
  mask_cotangent = np.zeros(mask.shape, jax.dtypes.float0) if mask.dtype == bool else jnp.zeros_like(mask)
  return dlogits.astype(logits_dtype.dtype), mask_cotangent, _no_gradient(seeds)


softmax_dropout.defvjp(_softmax_dropout_fwd, _softmax_dropout_bwd)


# ----------------------------------------------------------------------------
# Matmul with a backward that transposes the smaller operand.
# ----------------------------------------------------------------------------


@jax.custom_vjp
def matmul(x: Array, kernel: Array) -> Array:
  """x @ kernel over the last axis of x (a dense layer without bias).

  The weight gradient x^T dy contracts over tokens, the leading axis of both
  operands. XLA:CPU's matmul libraries want the contracted axis last on the
  left and first on the right, so XLA copies one operand transposed, and it
  picked the feed-forward's [tokens, 1536] gradient rather than the
  [tokens, 384] input, then ran the product on its slower fallback path. Here
  the smaller operand is transposed explicitly (behind an optimization barrier,
  so XLA keeps that choice) and the product is a plain one.
  """
  return _dot(x, kernel)


def _dot(a, b):
  """a @ b accumulated in float32 and returned in a's dtype (bfloat16 products hit AMX on CPU)."""
  return jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def _matmul_fwd(x, kernel):
  return _dot(x, kernel), (x, kernel)


def _matmul_bwd(residuals, dy):
  x, kernel = residuals
  dx = _dot(dy.astype(x.dtype), kernel.T.astype(x.dtype))
  rows_x = x.reshape(-1, x.shape[-1])
  rows_dy = dy.reshape(-1, dy.shape[-1]).astype(x.dtype)
  if rows_x.shape[1] <= rows_dy.shape[1]:  # transpose x: [in, tokens] @ [tokens, out]
    dkernel = jnp.dot(jax.lax.optimization_barrier(rows_x.T), rows_dy, preferred_element_type=jnp.float32)
  else:  # transpose dy: ([out, tokens] @ [tokens, in])^T
    dkernel = jnp.dot(jax.lax.optimization_barrier(rows_dy.T), rows_x, preferred_element_type=jnp.float32).T
  return dx, dkernel.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_vjp
def shared_input_matmuls(x: Array, kernels: tuple[Array, ...]) -> tuple[Array, ...]:
  """(x @ k for k in kernels): query, key and value read the same input.

  One transposed copy of x serves all three weight gradients (what `matmul`
  would transpose three times), and the input gradient is summed in one place.
  """
  return tuple(_dot(x, k) for k in kernels)


def _shared_input_matmuls_fwd(x, kernels):
  return shared_input_matmuls(x, kernels), (x, kernels)


def _shared_input_matmuls_bwd(residuals, dys):
  x, kernels = residuals
  dx = sum(jnp.dot(dy.astype(x.dtype), k.T.astype(x.dtype), preferred_element_type=jnp.float32)
           for dy, k in zip(dys, kernels)).astype(x.dtype)
  x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)
  dkernels = tuple(jnp.dot(x_t, dy.reshape(-1, dy.shape[-1]).astype(x.dtype),
                           preferred_element_type=jnp.float32).astype(k.dtype)
                   for dy, k in zip(dys, kernels))
  return dx, dkernels


shared_input_matmuls.defvjp(_shared_input_matmuls_fwd, _shared_input_matmuls_bwd)
