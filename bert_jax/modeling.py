"""The BERT encoder as pure-functional Flax Linen modules.

Module names follow the Hugging Face checkpoint tree (`embeddings/word_embeddings`,
`encoder/layer/<i>/attention/self/query`, `.../LayerNorm`, `pooler/dense`), so that
importing a PyTorch checkpoint is a rename plus a transpose (see `checkpoints.py`)
and no name tables need maintaining.

Parameters are always float32; `dtype` sets the compute precision, so bfloat16
on an accelerator halves activation memory while the optimizer still updates
float32 weights.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import ops
from bert_jax.config import BertConfig
from bert_jax.dropout import Dropout, seeds_from_key

Array = jax.Array


class BertOutput(NamedTuple):
  last_hidden_state: Array  # [batch, length, hidden]
  pooled_output: Array | None  # [batch, hidden]: tanh(dense([CLS])), None without a pooler


def gelu_erf(x: Array) -> Array:
  """Exact GELU, x * Phi(x), written with erf as Hugging Face BERT writes it.

  `nn.gelu(approximate=False)` uses erfc, which XLA:CPU lowers to a long
  exp-and-select expansion; erf is one vectorised rational polynomial, for the
  same values (tests/test_modeling.py compares the two). bench/README.md,
  "Figures taken out of the code", says what that saved and where the figure
  came from.
  """
  return x * (0.5 + 0.5 * jax.lax.erf(x * np.float32(1.0 / np.sqrt(2.0))).astype(x.dtype))


def _activation(name: str):
  # HF "gelu" is the exact erf form; "gelu_new" is the tanh approximation.
  return {
      "gelu": gelu_erf,
      "gelu_python": gelu_erf,
      "gelu_new": lambda x: nn.gelu(x, approximate=True),
      "relu": nn.relu,
  }[name]


def _dense(features: int, dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=nn.initializers.normal(0.02))


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, statistics in float32; params `scale` and `bias` as nn.LayerNorm's.

  Not `nn.LayerNorm`: XLA:CPU materialised that one's `rsqrt(var) * scale` as a
  full [batch, length, hidden] broadcast in the forward pass and again in the
  backward. `ops.layer_norm` has a hand-written backward instead.
  """
  epsilon: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale, bias = _layer_norm_params(self, x.shape[-1])
    return ops.layer_norm(x, scale, bias, self.epsilon).astype(self.dtype)


def _layer_norm_params(module: nn.Module, features: int) -> tuple[Array, Array]:
  """`module`'s LayerNorm params, named and initialised as nn.LayerNorm's: `scale` (ones), `bias` (zeros)."""
  return (module.param("scale", nn.initializers.ones, (features,), jnp.float32),
          module.param("bias", nn.initializers.zeros, (features,), jnp.float32))


def _layer_norm(config: BertConfig, dtype, name: str = "LayerNorm") -> LayerNorm:
  return LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, name=name)


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool,
               position_ids: Array | None = None) -> Array:
    cfg = self.config
    init = nn.initializers.normal(0.02)
    embed = lambda n, size: nn.Embed(size, cfg.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                                     embedding_init=init, name=n)
    length = input_ids.shape[-1]
    if position_ids is None:  # packed rows bring their own, restarting per sequence
      if length > cfg.max_position_embeddings:
        raise ValueError(f"sequence length {length} exceeds max_position_embeddings="
                         f"{cfg.max_position_embeddings}; tokenize with a smaller max_length")
      position_ids = jnp.arange(length)[None, :]
    words = embed("word_embeddings", cfg.vocab_size)(input_ids)
    positions = embed("position_embeddings", cfg.max_position_embeddings)(position_ids)
    token_types = embed("token_type_embeddings", cfg.type_vocab_size)(token_type_ids)
    hidden = _layer_norm(cfg, self.dtype)(words + positions + token_types)
    return Dropout(cfg.hidden_dropout_prob)(hidden, deterministic=deterministic)


def dot_product_attention(query: Array, key: Array, value: Array, mask: Array, *,
                          dropout_rate: float, deterministic: bool,
                          dropout_rng: Array | None = None) -> Array:
  """Scaled dot-product attention over [batch, length, heads, head_dim] inputs.

  Without attention dropout this is `jax.nn.dot_product_attention`, which XLA
  (and cuDNN on GPUs) compiles to a fused kernel. BERT fine-tuning uses dropout on
  the attention probabilities, which that API lacks, so the training path spells
  the softmax out (`ops.softmax_dropout`, whose backward regenerates the dropout
  mask instead of storing it). Softmax runs in float32 in both paths.
  """
  if deterministic or dropout_rate == 0.0:
    return jax.nn.dot_product_attention(query, key, value, mask=mask)
  depth = query.shape[-1]
  logits = jnp.einsum("bqhd,bkhd->bhqk", query * np.float32(1.0 / np.sqrt(depth)).astype(query.dtype), key)
  probs = ops.softmax_dropout(logits, mask, seeds_from_key(dropout_rng), dropout_rate)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(value.dtype), value)


class DenseParams(nn.Module):
  """A dense layer's `kernel` [in, out] and `bias` [out] (nn.Dense's names and init), not applied.

  For layers whose bias add belongs inside a fused block of `ops`.
  """
  features: int

  @nn.compact
  def __call__(self, in_features: int) -> tuple[Array, Array]:
    kernel = self.param("kernel", nn.initializers.normal(0.02), (in_features, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return kernel, bias


def _matmul(x: Array, kernel: Array, dtype) -> Array:
  return ops.matmul(x.astype(dtype), kernel.astype(dtype))


def _dropout_seeds(module: nn.Module, rate: float, deterministic: bool) -> tuple[Array, float]:
  """(seeds, rate) for an `ops` block: fresh seeds when training, none (rate 0) otherwise."""
  if deterministic or rate == 0.0:
    return jnp.zeros((2,), jnp.uint32), 0.0
  return seeds_from_key(module.make_rng("dropout")), rate


class BertSelfAttention(nn.Module):
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, deterministic: bool) -> Array:
    cfg = self.config
    names = ("query", "key", "value")
    kernels, biases = zip(*(DenseParams(cfg.hidden_size, name=n)(hidden.shape[-1]) for n in names))
    projected = ops.shared_input_matmuls(hidden.astype(self.dtype), tuple(k.astype(self.dtype) for k in kernels))
    query, key, value = ((p + b.astype(self.dtype)).reshape(p.shape[:2] + (cfg.num_attention_heads, cfg.head_dim))
                         for p, b in zip(projected, biases))
    needs_rng = not deterministic and cfg.attention_probs_dropout_prob > 0.0
    context = dot_product_attention(
        query, key, value, mask, dropout_rate=cfg.attention_probs_dropout_prob,
        deterministic=deterministic, dropout_rng=self.make_rng("dropout") if needs_rng else None)
    return context.reshape(context.shape[:2] + (cfg.hidden_size,))


class BertAddAndNorm(nn.Module):
  """dense -> dropout -> residual add -> LayerNorm: HF's BertSelfOutput and BertOutput."""
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Array, residual: Array, deterministic: bool) -> Array:
    cfg = self.config
    kernel, bias = DenseParams(cfg.hidden_size, name="dense")(hidden.shape[-1])
    scale, ln_bias = LayerNormParams(cfg.hidden_size, name="LayerNorm")()
    seeds, rate = _dropout_seeds(self, cfg.hidden_dropout_prob, deterministic)
    out = ops.dropout_add_layer_norm(_matmul(hidden, kernel, self.dtype), bias, residual, scale, ln_bias,
                                     seeds, rate, cfg.layer_norm_eps)
    return out.astype(self.dtype)


class LayerNormParams(nn.Module):
  """A LayerNorm's `scale` and `bias`, not applied: for `ops.dropout_add_layer_norm`, which fuses it."""
  features: int

  @nn.compact
  def __call__(self) -> tuple[Array, Array]:
    return _layer_norm_params(self, self.features)


class BertAttention(nn.Module):
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, deterministic: bool) -> Array:
    context = BertSelfAttention(self.config, self.dtype, name="self")(hidden, mask, deterministic)
    return BertAddAndNorm(self.config, self.dtype, name="output")(context, hidden, deterministic)


class BertIntermediate(nn.Module):
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Array) -> Array:
    cfg = self.config
    kernel, bias = DenseParams(cfg.intermediate_size, name="dense")(hidden.shape[-1])
    projected = _matmul(hidden, kernel, self.dtype)
    if cfg.hidden_act in ("gelu", "gelu_python"):
      return ops.bias_gelu(projected, bias)
    return _activation(cfg.hidden_act)(projected + bias.astype(self.dtype))


class BertLayer(nn.Module):
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, deterministic: bool) -> Array:
    attended = BertAttention(self.config, self.dtype, name="attention")(hidden, mask, deterministic)
    expanded = BertIntermediate(self.config, self.dtype, name="intermediate")(attended)
    return BertAddAndNorm(self.config, self.dtype, name="output")(expanded, attended, deterministic)


class BertLayerCollection(nn.Module):
  """Holds layers named "0", "1", ... so the tree reads `encoder/layer/<i>` as in HF."""
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, deterministic: bool) -> Array:
    for i in range(self.config.num_hidden_layers):
      hidden = BertLayer(self.config, self.dtype, name=str(i))(hidden, mask, deterministic)
    return hidden


class BertEncoder(nn.Module):
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Array, mask: Array, deterministic: bool) -> Array:
    return BertLayerCollection(self.config, self.dtype, name="layer")(hidden, mask, deterministic)


class BertPooler(nn.Module):
  """tanh(dense(h)) of each sequence's first ([CLS]) hidden state."""
  config: BertConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, first_tokens: Array) -> Array:
    return jnp.tanh(_dense(self.config.hidden_size, self.dtype, "dense")(first_tokens))


def segment_attention_mask(segment_ids: Array) -> Array:
  """[rows, 1, P, P]: a token attends to the real tokens of its own segment (packed rows)."""
  query, key = segment_ids[:, None, :, None], segment_ids[:, None, None, :]
  return (query == key) & (key > 0)


class BertModel(nn.Module):
  """The BERT encoder: `(input_ids, attention_mask, token_type_ids) -> BertOutput`.

  Inputs are int arrays of shape [batch, length]; `attention_mask` is 1 for real
  tokens and 0 for padding. Pass `deterministic=False` and a `"dropout"` rng to
  train with dropout.

  Packed rows (`data_prep/packing.py`): pass `segment_ids` (0 = padding, else
  which sequence of the row a token belongs to) and `position_ids` (restarting
  at 0 per sequence) instead of `attention_mask`; attention then stays within
  each sequence. `sequence_starts` (flat indices row * length + offset of each
  sequence's first token) says whose [CLS] the pooler reads; `pooled_output`
  then has the shape of `sequence_starts` plus hidden.

  `embedding_noise` ([batch, length, hidden], or None) is added to the
  embeddings' output, the encoder's input: the perturbation that adversarial
  regularisers such as SMART (bert_jax/smart.py) differentiate against.
  """
  config: BertConfig
  dtype: jnp.dtype = jnp.float32
  add_pooling_layer: bool = True

  @nn.compact
  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               token_type_ids: Array | None = None, *, position_ids: Array | None = None,
               segment_ids: Array | None = None, sequence_starts: Array | None = None,
               deterministic: bool = True, embedding_noise: Array | None = None) -> BertOutput:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    hidden = BertEmbeddings(self.config, self.dtype, name="embeddings")(
        input_ids, token_type_ids, deterministic, position_ids)
    if embedding_noise is not None:
      hidden = hidden + embedding_noise.astype(hidden.dtype)
    if segment_ids is not None:
      mask = segment_attention_mask(segment_ids)
    else:
      if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
      # [batch, 1 (heads), 1 (queries), keys]: every query may attend to every real key.
      mask = attention_mask.astype(bool)[:, None, None, :]
    hidden = BertEncoder(self.config, self.dtype, name="encoder")(hidden, mask, deterministic)
    pooled = None
    if self.add_pooling_layer:
      if sequence_starts is None:
        first_tokens = hidden[:, 0]
      else:
        flat = hidden.reshape(-1, hidden.shape[-1])
        first_tokens = jnp.take(flat, sequence_starts.reshape(-1), axis=0).reshape(
            sequence_starts.shape + (hidden.shape[-1],))
      pooled = BertPooler(self.config, self.dtype, name="pooler")(first_tokens)
    return BertOutput(hidden, pooled)


def mean_pool(hidden: Array, attention_mask: Array) -> Array:
  """Average of the real tokens' hidden states (the sentence-transformers pooling)."""
  weights = attention_mask.astype(jnp.float32)[..., None]
  summed = jnp.sum(hidden.astype(jnp.float32) * weights, axis=-2)
  return summed / jnp.maximum(jnp.sum(weights, axis=-2), 1e-9)


def segment_mean_pool(hidden: Array, segment_ids: Array, sequence_slots: Array) -> Array:
  """Mean of each packed sequence's hidden states: [rows, P, H] -> sequence_slots.shape + [H].

  A row holds at most P // 2 segments; a one-hot [rows, P // 2, P] product
  sums each segment (a small matmul, where a scatter would run serially on
  CPU), and `sequence_slots` (row * (P // 2) + segment - 1) picks each sequence's mean.
  """
  rows, length, features = hidden.shape
  segments = jnp.arange(1, length // 2 + 1, dtype=segment_ids.dtype)
  one_hot = (segment_ids[:, None, :] == segments[None, :, None]).astype(jnp.float32)
  sums = jnp.einsum("rsp,rph->rsh", one_hot, hidden.astype(jnp.float32))
  means = sums / jnp.maximum(jnp.sum(one_hot, axis=-1), 1.0)[..., None]
  picked = jnp.take(means.reshape(-1, features), sequence_slots.reshape(-1), axis=0)
  return picked.reshape(sequence_slots.shape + (features,))
