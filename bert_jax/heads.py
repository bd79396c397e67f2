"""The task heads: sentiment, and the pair heads that paraphrase and similarity share.

Sentiment has one head; the two pair tasks pick their heads by name from one
registry, `PAIR_HEADS`, so the same architectures serve both: a head's `task`
field says whether it emits a paraphrase logit or a similarity score.

Pair heads read one of two encodings (bert_jax/batch.py): "separate" (each
sentence encoded on its own, a bi-encoder; the head gets u and v) and "joint"
("[CLS] a [SEP] b [SEP]", a cross-encoder; the head gets the pooled [CLS]).
Each head class declares which one it reads; `pair_encoding(name)` tells the
input pipeline. Every head computes in float32 whatever the encoder's dtype.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.dropout import Dropout
from bert_jax.tasks import NUM_SENTIMENT_CLASSES, PAIR_TASKS, SIMILARITY_MAX

Array = jax.Array

# BERT's initializer_range, as Hugging Face uses for its classifier heads.
_KERNEL_INIT = nn.initializers.normal(0.02)


def _dense(features: int, name: str, bias_init=nn.initializers.zeros) -> nn.Dense:
  return nn.Dense(features, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init=_KERNEL_INIT,
                  bias_init=bias_init, name=name)


def cosine_similarity(u: Array, v: Array, eps: float = 1e-8) -> Array:
  """cos(u, v) over the last axis; 0 (not NaN, in value and gradient) for a zero vector.

  Padding examples can be all-padding, so their mean-pooled embedding is zero.
  """
  dot = jnp.sum(u * v, axis=-1)
  norms_squared = jnp.sum(u * u, axis=-1) * jnp.sum(v * v, axis=-1)
  return dot * jax.lax.rsqrt(jnp.maximum(norms_squared, eps * eps))


def sbert_features(u: Array, v: Array) -> Array:
  """[u; v; |u - v|; u * v], the Sentence-BERT classification features.

  The last two blocks are symmetric in (u, v); the first two carry order, as in SBERT.
  """
  return jnp.concatenate([u, v, jnp.abs(u - v), u * v], axis=-1)


class SentimentHead(nn.Module):
  """Dropout then a linear classifier over a pooled sentence embedding."""
  num_classes: int = NUM_SENTIMENT_CLASSES
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, pooled: Array, deterministic: bool) -> Array:
    pooled = Dropout(self.dropout_rate)(pooled.astype(jnp.float32), deterministic=deterministic)
    return _dense(self.num_classes, "output")(pooled)


# ----------------------------------------------------------------------------
# Pair heads. Fields are uniform (task, hidden_dim, dropout_rate, trunk) so the
# registry is a plain dict of classes. Bi-encoder heads take (u, v) pooled
# embeddings [B, H]; the cross-encoder head takes the joint pooled [CLS] [B, H].
# All return [B] float32: a paraphrase logit, or a similarity on the label scale.
# ----------------------------------------------------------------------------


def _output_bias_init(task: str):
  # Raw similarity outputs start at the middle of the label range. The bias is a
  # single scalar that Adam moves by about one learning rate (~2e-5) per step, so
  # starting it at 0 would leave the head ~2.5 below the labels for a long time.
  return nn.initializers.constant(SIMILARITY_MAX / 2 if task == "sts" else 0.0)


class PairHead(nn.Module):
  """Base of the pair heads: the fields, and what the model needs to know about each.

  `encoding` is the batch encoding the head reads. `trunk_class`, when not None,
  is the module holding the head's first layer(s): with `share_para_sts` one
  trunk (named "shared_pair") serves both pair tasks, each keeping its own output layer.
  """
  task: str  # "para" (emit a logit) or "sts" (emit a 0..5 similarity)
  hidden_dim: int = 0
  dropout_rate: float = 0.1
  trunk: nn.Module | None = None

  encoding: ClassVar[str] = "separate"
  trunk_class: ClassVar[type[nn.Module] | None] = None

  def _check_task(self):
    if self.task not in PAIR_TASKS:
      raise ValueError(f"{type(self).__name__}.task={self.task!r}; expected one of {PAIR_TASKS}")

  def _trunk(self) -> nn.Module:
    if self.trunk is not None:
      return self.trunk
    return self.trunk_class(self.hidden_dim, name="trunk")

  def _output(self, features: Array) -> Array:
    return _dense(1, "output", bias_init=_output_bias_init(self.task))(features)[..., 0]


class ConcatHead(PairHead):
  """Linear on [u; v]: the reports' baseline (order-sensitive, not symmetric)."""

  @nn.compact
  def __call__(self, u: Array, v: Array, deterministic: bool) -> Array:
    self._check_task()
    features = Dropout(self.dropout_rate)(jnp.concatenate([u, v], -1), deterministic=deterministic)
    return self._output(features)


class CosineHead(PairHead):
  """cos(u, v), scaled to the task: `5 * cos` for similarity, `scale * cos + bias` for paraphrase.

  Similarity follows sentence-transformers' CosineSimilarityLoss (its labels are
  label / 5, which is the same regression); predictions are clipped to [0, 5]
  only at predict time, so the loss still pulls negative cosines up.

  The paraphrase affine is initialised at scale 10, bias -8 (decision threshold
  cos = 0.8). Measured on 1,500 quora-dev pairs with the pretrained
  all-MiniLM-L6-v2 mean-pooled embeddings: duplicates have cos 0.87 +- 0.10,
  non-duplicates 0.56 +- 0.27; threshold 0.8 gives 78.6% accuracy and the best
  logistic fit is scale 11, threshold 0.82 (BCE 0.415; ours 0.418, while scale 10,
  threshold 0.5 gives 1.06). The init matters more than usual: under Adam each of
  these two scalars moves about one learning rate per step, so at fine-tuning
  rates they stay near where they start, and the encoder adapts to them instead.
  """
  logit_scale_init: float = 10.0
  logit_threshold_init: float = 0.8

  @nn.compact
  def __call__(self, u: Array, v: Array, deterministic: bool) -> Array:
    del deterministic  # no dropout: a dropped coordinate would only add noise to the cosine
    self._check_task()
    cosine = cosine_similarity(u.astype(jnp.float32), v.astype(jnp.float32))
    if self.task == "sts":
      return SIMILARITY_MAX * cosine
    scale = self.param("scale", nn.initializers.constant(self.logit_scale_init), (), jnp.float32)
    bias = self.param("bias", nn.initializers.constant(-self.logit_scale_init * self.logit_threshold_init),
                      (), jnp.float32)
    return scale * cosine + bias


class DiffHead(PairHead):
  """Linear on [u; v; |u - v|; u * v] (SBERT; the reports' best single change)."""

  @nn.compact
  def __call__(self, u: Array, v: Array, deterministic: bool) -> Array:
    self._check_task()
    features = Dropout(self.dropout_rate)(sbert_features(u, v), deterministic=deterministic)
    return self._output(features)


class DenseGeluTrunk(nn.Module):
  """dense(hidden) then exact GELU: the shareable first layer of `DiffTwoDenseHead`."""
  hidden_dim: int

  @nn.compact
  def __call__(self, features: Array) -> Array:
    return nn.gelu(_dense(self.hidden_dim, "dense")(features), approximate=False)


class DiffTwoDenseHead(PairHead):
  """SBERT features -> dropout -> dense(hidden) -> GELU -> dropout -> dense(1).

  With `share_para_sts` the first dense (`DenseGeluTrunk`) is shared.
  """
  trunk_class: ClassVar[type[nn.Module]] = DenseGeluTrunk

  @nn.compact
  def __call__(self, u: Array, v: Array, deterministic: bool) -> Array:
    self._check_task()
    dropout = Dropout(self.dropout_rate)
    hidden = self._trunk()(dropout(sbert_features(u, v), deterministic=deterministic))
    return self._output(dropout(hidden, deterministic=deterministic))


class ProductProjections(nn.Module):
  """(A u) * (B v), one projection per sentence: the shareable part of `ProductHead`."""
  hidden_dim: int

  @nn.compact
  def __call__(self, u: Array, v: Array) -> Array:
    return _dense(self.hidden_dim, "project_a")(u) * _dense(self.hidden_dim, "project_b")(v)


class ProductHead(PairHead):
  """Per-sentence linear projections multiplied elementwise, then an "interact" linear layer.

  As in the reports, A and B are separate, so the head is not symmetric in (u, v).
  With `share_para_sts` the projections (`ProductProjections`) are shared and
  each task keeps its own interact layer.
  """
  trunk_class: ClassVar[type[nn.Module]] = ProductProjections

  @nn.compact
  def __call__(self, u: Array, v: Array, deterministic: bool) -> Array:
    self._check_task()
    dropout = Dropout(self.dropout_rate)
    product = self._trunk()(dropout(u, deterministic=deterministic), dropout(v, deterministic=deterministic))
    return _dense(1, "interact", bias_init=_output_bias_init(self.task))(product)[..., 0]


class CrossEncoderHead(PairHead):
  """Dropout and a linear layer on the pooled [CLS] of "[CLS] a [SEP] b [SEP]" (BERT's cross-encoder)."""
  encoding: ClassVar[str] = "joint"

  @nn.compact
  def __call__(self, pooled: Array, deterministic: bool) -> Array:
    self._check_task()
    pooled = Dropout(self.dropout_rate)(pooled, deterministic=deterministic)
    return self._output(pooled)


PAIR_HEADS: dict[str, type[PairHead]] = {
    "concat": ConcatHead,
    "cosine": CosineHead,
    "diff": DiffHead,
    "diff_2dense": DiffTwoDenseHead,
    "product": ProductHead,
    "cross": CrossEncoderHead,
}


def get_pair_head(name: str) -> type[PairHead]:
  """The pair-head class registered as `name`."""
  try:
    return PAIR_HEADS[name]
  except KeyError:
    raise ValueError(f"unknown pair head {name!r}; valid heads: {', '.join(PAIR_HEADS)}") from None


def pair_encoding(head_name: str) -> str:
  """The batch encoding ("separate" or "joint") that the named head reads."""
  return get_pair_head(head_name).encoding


def shareable_pair_heads() -> tuple[str, ...]:
  """Heads with a first layer that `share_para_sts` can share."""
  return tuple(name for name, cls in PAIR_HEADS.items() if cls.trunk_class is not None)
