"""The multitask model: one shared BERT encoder and a head per task, with losses.

Tasks (`TASKS`): "sst" (5-way sentiment), "para" (paraphrase, one logit) and
"sts" (similarity on the 0..5 label scale). Sentiment has one head; the two pair
tasks pick their heads by name from one registry, `PAIR_HEADS`, so the same
architectures serve both: a head's `task` field says whether it emits a
paraphrase logit or a similarity score.

Pair batches come in two encodings (see the batch contract in the project notes):
"separate" ([B, 2, L]; each sentence encoded on its own, a bi-encoder) and
"joint" ([B, L]; "[CLS] a [SEP] b [SEP]", a cross-encoder). Each head class
declares which one it reads; `pair_encoding(name)` tells the input pipeline.

Every head computes in float32 whatever the encoder's compute dtype, and every
metric `task_loss` returns is a sum, so a trainer can add metrics over steps
(and devices) and divide by "count" at the end (`summarize_metrics`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.config import BertConfig
from bert_jax.dropout import Dropout
from bert_jax.modeling import BertModel, BertOutput, mean_pool, segment_mean_pool

Array = jax.Array
Batch = Mapping[str, Any]

TASKS = ("sst", "para", "sts")
PAIR_TASKS = ("para", "sts")
POOLINGS = ("cls", "mean")
SIMILARITY_LOSSES = ("mse", "l1")
NUM_SENTIMENT_CLASSES = 5
SIMILARITY_MAX = 5.0  # STS labels run from 0 (unrelated) to 5 (equivalent)

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


def is_packed(batch: Batch) -> bool:
  """Whether `batch` is packed (data_prep/packing.py): rows of several sequences with segment ids."""
  return "segment_ids" in batch


def batch_encoding(batch: Batch, task: str) -> str:
  """"separate" for [B, 2, L] input_ids (packed: two sequences per example), "joint" for [B, L]."""
  if is_packed(batch):
    per_example = np.shape(batch["sequence_slots"])[-1]
    if per_example in (1, 2):
      return "separate" if per_example == 2 else "joint"
    raise ValueError(f"{task} packed batch: sequence_slots has shape {np.shape(batch['sequence_slots'])}; "
                     "expected [B, 1] or [B, 2]")
  shape = np.shape(batch["input_ids"])
  if len(shape) == 3 and shape[1] == 2:
    return "separate"
  if len(shape) == 2:
    return "joint"
  raise ValueError(f"{task} batch: input_ids has shape {shape}; "
                   "expected [B, 2, L] (separate) or [B, L] (joint)")


# ----------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------


class MultitaskBert(nn.Module):
  """BERT encoder ("bert") plus "sentiment", "paraphrase", "similarity" heads (and "shared_pair").

  Attributes:
    config: the encoder's shape.
    dtype: the encoder's compute dtype; heads always compute in float32.
    sentiment_pooling: "cls" (BERT's pooled output, tanh(dense([CLS]))) or "mean".
    pair_pooling: how bi-encoder heads form u and v: "mean" (default; the default
      checkpoint all-MiniLM-L6-v2 is trained as a mean-pooling sentence encoder)
      or "cls" (the pooled output). The cross head always uses the pooled [CLS].
    paraphrase_head, similarity_head: names in `PAIR_HEADS`.
    share_para_sts: share the pair heads' first layer(s) as "shared_pair"; needs
      the same head for both tasks, one of `shareable_pair_heads()`.
    head_dropout: dropout on every learned head's input (and hidden layer).
    head_hidden_dim: hidden width of "diff_2dense" and "product"; 0 = hidden_size.
    num_sentiment_classes: 5 for SST-5.

  A head without parameters (the "cosine" similarity head) has no subtree in the params.
  """
  config: BertConfig
  dtype: Any = jnp.float32
  sentiment_pooling: str = "cls"
  pair_pooling: str = "mean"
  paraphrase_head: str = "diff"
  similarity_head: str = "diff"
  share_para_sts: bool = False
  head_dropout: float = 0.1
  head_hidden_dim: int = 0
  num_sentiment_classes: int = NUM_SENTIMENT_CLASSES

  def __post_init__(self):
    # Validate at construction, not at the first init/apply, so config mistakes surface early.
    for field, value in (("sentiment_pooling", self.sentiment_pooling), ("pair_pooling", self.pair_pooling)):
      if value not in POOLINGS:
        raise ValueError(f"MultitaskBert.{field}={value!r}; expected one of {POOLINGS}")
    para_cls, sts_cls = get_pair_head(self.paraphrase_head), get_pair_head(self.similarity_head)
    if self.share_para_sts:
      if para_cls is not sts_cls:
        raise ValueError(f"share_para_sts needs the same head for both pair tasks; got paraphrase_head="
                         f"{self.paraphrase_head!r}, similarity_head={self.similarity_head!r}")
      if para_cls.trunk_class is None:
        raise ValueError(f"share_para_sts: head {self.paraphrase_head!r} has no layer to share besides its "
                         f"output; heads that can share: {', '.join(shareable_pair_heads())}")
    super().__post_init__()

  @property
  def hidden_dim(self) -> int:
    return self.head_hidden_dim or self.config.hidden_size

  def setup(self):
    self.bert = BertModel(self.config, self.dtype, add_pooling_layer=True)
    para_cls, sts_cls = get_pair_head(self.paraphrase_head), get_pair_head(self.similarity_head)
    # One trunk module passed to both heads: its params live once, under "shared_pair".
    self.shared_pair = para_cls.trunk_class(self.hidden_dim) if self.share_para_sts else None
    trunk = self.shared_pair
    # Attribute names differ from the module names: the task methods own "sentiment" etc.
    self.sentiment_head = SentimentHead(self.num_sentiment_classes, self.head_dropout, name="sentiment")
    self.paraphrase_pair_head = para_cls("para", self.hidden_dim, self.head_dropout, trunk, name="paraphrase")
    self.similarity_pair_head = sts_cls("sts", self.hidden_dim, self.head_dropout, trunk, name="similarity")

  def encode(self, input_ids: Array, attention_mask: Array, token_type_ids: Array,
             deterministic: bool = True) -> BertOutput:
    return self.bert(input_ids, attention_mask, token_type_ids, deterministic=deterministic)

  def _pooled(self, batch: Batch, pooling: str, deterministic: bool) -> Array:
    """[B', H] float32 sentence embeddings of a [B', L] batch."""
    output = self.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], deterministic)
    if pooling == "cls":
      return output.pooled_output.astype(jnp.float32)
    return mean_pool(output.last_hidden_state, batch["attention_mask"])

  def _pooled_packed(self, batch: Batch, pooling: str, deterministic: bool) -> Array:
    """[B, k, H] float32 embeddings of each example's k packed sequences."""
    output = self.bert(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                       position_ids=batch["position_ids"], segment_ids=batch["segment_ids"],
                       sequence_starts=batch["sequence_starts"], deterministic=deterministic)
    if pooling == "cls":
      return output.pooled_output.astype(jnp.float32)
    return segment_mean_pool(output.last_hidden_state, batch["segment_ids"], batch["sequence_slots"])

  def sentiment(self, batch: Batch, deterministic: bool = True) -> Array:
    """[B, num_sentiment_classes] float32 logits."""
    if is_packed(batch):
      pooled = self._pooled_packed(batch, self.sentiment_pooling, deterministic)
      if pooled.shape[1] != 1:
        raise ValueError(f"sst packed batch: sequence_slots has shape {np.shape(batch['sequence_slots'])}; "
                         "expected [B, 1]")
      return self.sentiment_head(pooled[:, 0], deterministic)
    if np.ndim(batch["input_ids"]) != 2:
      raise ValueError(f"sst batch: input_ids has shape {np.shape(batch['input_ids'])}; expected [B, L]")
    return self.sentiment_head(self._pooled(batch, self.sentiment_pooling, deterministic), deterministic)

  def _pair(self, head: PairHead, head_name: str, task: str, batch: Batch, deterministic: bool) -> Array:
    encoding = batch_encoding(batch, task)
    if encoding != head.encoding:
      raise ValueError(
          f"{task} batch is {encoding!r} (input_ids {np.shape(batch['input_ids'])}) but head {head_name!r} "
          f"reads {head.encoding!r} batches ([B, 2, L] for bi-encoder heads, [B, L] for 'cross'); "
          f"build the {task} input with encoding={head.encoding!r}")
    if is_packed(batch):
      if encoding == "joint":
        return head(self._pooled_packed(batch, "cls", deterministic)[:, 0], deterministic)
      pooled = self._pooled_packed(batch, self.pair_pooling, deterministic)
      return head(pooled[:, 0], pooled[:, 1], deterministic)
    if encoding == "joint":
      return head(self._pooled(batch, "cls", deterministic), deterministic)
    # Both sentences go through the encoder in one call: [B, 2, L] -> [2B, L].
    batch_size, _, length = np.shape(batch["input_ids"])
    flat = {k: jnp.reshape(batch[k], (2 * batch_size, length))
            for k in ("input_ids", "attention_mask", "token_type_ids")}
    pooled = self._pooled(flat, self.pair_pooling, deterministic).reshape(batch_size, 2, -1)
    return head(pooled[:, 0], pooled[:, 1], deterministic)

  def paraphrase(self, batch: Batch, deterministic: bool = True) -> Array:
    """[B] float32 paraphrase logits."""
    return self._pair(self.paraphrase_pair_head, self.paraphrase_head, "para", batch, deterministic)

  def similarity(self, batch: Batch, deterministic: bool = True) -> Array:
    """[B] float32 predicted similarity on the 0..5 label scale (unclipped; see `predict`)."""
    return self._pair(self.similarity_pair_head, self.similarity_head, "sts", batch, deterministic)

  def __call__(self, batches: Mapping[str, Batch], deterministic: bool = True) -> dict[str, Array]:
    """{task: output} for the tasks present; init with all three to create every parameter."""
    unknown = set(batches) - set(TASKS)
    if unknown:
      raise ValueError(f"unknown tasks {sorted(unknown)}; expected keys among {TASKS}")
    methods = {"sst": self.sentiment, "para": self.paraphrase, "sts": self.similarity}
    return {task: methods[task](batch, deterministic) for task, batch in batches.items()}


# ----------------------------------------------------------------------------
# Losses, metrics, predictions.
# ----------------------------------------------------------------------------


def _check_task(task: str):
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def predict(task: str, outputs: Array) -> Array:
  """Final predictions: sst class (int32), para 0/1 (int32), sts similarity clipped to [0, 5]."""
  _check_task(task)
  if task == "sst":
    return jnp.argmax(outputs, axis=-1).astype(jnp.int32)
  if task == "para":
    return (outputs > 0).astype(jnp.int32)
  return jnp.clip(outputs.astype(jnp.float32), 0.0, SIMILARITY_MAX)


def task_loss(task: str, outputs: Array, batch: Batch,
              similarity_loss: str = "mse") -> tuple[Array, dict[str, Array]]:
  """(weighted mean loss, additive metrics) for one task's outputs and batch.

  The loss is sum(w * l) / max(sum(w), 1) with w = batch["weights"], so padding
  examples (w = 0) change neither the loss nor its gradient; their labels are
  replaced by a valid value first, so garbage there cannot produce NaNs.
  Losses: sst cross-entropy, para BCE-with-logits, sts MSE or L1 (`similarity_loss`).

  Metrics are all weighted sums, to be added across steps: "loss_sum", "count"
  (sum of weights), and "correct" (sst, para) or, for sts, "abs_error_sum" plus
  the five sums that give Pearson's r ("pred_sum", "label_sum", "pred_sq_sum",
  "label_sq_sum", "pred_label_sum"). Accuracy and error use `predict`'s outputs.
  """
  _check_task(task)
  if similarity_loss not in SIMILARITY_LOSSES:
    raise ValueError(f"similarity_loss={similarity_loss!r}; expected one of {SIMILARITY_LOSSES}")
  weights = jnp.asarray(batch["weights"], jnp.float32)
  real = weights > 0
  outputs = outputs.astype(jnp.float32)
  predictions = predict(task, outputs)
  if task == "sst":
    labels = jnp.where(real, jnp.asarray(batch["labels"], jnp.int32), 0)
    per_example = optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
    extra = {"correct": jnp.sum(weights * (predictions == labels))}
  elif task == "para":
    labels = jnp.where(real, jnp.asarray(batch["labels"], jnp.float32), 0.0)
    per_example = optax.sigmoid_binary_cross_entropy(outputs, labels)
    extra = {"correct": jnp.sum(weights * (predictions == (labels > 0.5)))}
  else:
    labels = jnp.where(real, jnp.asarray(batch["labels"], jnp.float32), 0.0)
    error = outputs - labels
    per_example = jnp.square(error) if similarity_loss == "mse" else jnp.abs(error)
    weighted_sum = lambda x: jnp.sum(jnp.where(real, weights * x, 0.0))
    extra = {"abs_error_sum": weighted_sum(jnp.abs(predictions - labels)),
             "pred_sum": weighted_sum(predictions), "label_sum": weighted_sum(labels),
             "pred_sq_sum": weighted_sum(predictions ** 2), "label_sq_sum": weighted_sum(labels ** 2),
             "pred_label_sum": weighted_sum(predictions * labels)}
  loss_sum = jnp.sum(jnp.where(real, weights * per_example, 0.0))
  count = jnp.sum(weights)
  loss = loss_sum / jnp.maximum(count, 1.0)
  return loss, {"loss_sum": loss_sum, "count": count, **extra}


def summarize_metrics(task: str, sums: Mapping[str, Any]) -> dict[str, float]:
  """Means from `task_loss` metrics summed over steps: loss, and accuracy or mae + pearson."""
  _check_task(task)
  sums = {k: float(v) for k, v in sums.items()}
  count = max(sums["count"], 1.0)
  summary = {"loss": sums["loss_sum"] / count}
  if task in ("sst", "para"):
    summary["accuracy"] = sums["correct"] / count
  else:
    summary["mae"] = sums["abs_error_sum"] / count
    covariance = count * sums["pred_label_sum"] - sums["pred_sum"] * sums["label_sum"]
    pred_var = count * sums["pred_sq_sum"] - sums["pred_sum"] ** 2
    label_var = count * sums["label_sq_sum"] - sums["label_sum"] ** 2
    denominator = np.sqrt(max(pred_var, 0.0) * max(label_var, 0.0))
    summary["pearson"] = covariance / denominator if denominator > 0 else float("nan")
  return summary


# ----------------------------------------------------------------------------
# Initialisation.
# ----------------------------------------------------------------------------


def example_batches(model: MultitaskBert, batch_size: int = 1,
                    length: int = 4) -> dict[str, dict[str, Array]]:
  """Tiny all-[CLS]-like batches in the encodings `model`'s heads read; enough to init every parameter."""
  def batch(shape, labels):
    ones = jnp.ones(shape, jnp.int32)
    return {"input_ids": ones, "attention_mask": ones, "token_type_ids": jnp.zeros(shape, jnp.int32),
            "labels": labels, "weights": jnp.ones((batch_size,), jnp.float32)}
  pair_shape = {"separate": (batch_size, 2, length), "joint": (batch_size, length)}
  return {
      "sst": batch((batch_size, length), jnp.zeros((batch_size,), jnp.int32)),
      "para": batch(pair_shape[pair_encoding(model.paraphrase_head)], jnp.zeros((batch_size,), jnp.float32)),
      "sts": batch(pair_shape[pair_encoding(model.similarity_head)], jnp.zeros((batch_size,), jnp.float32)),
  }


def _check_same_tree(expected: Any, given: Any, prefix: str):
  """Raises naming the first path where `given` differs from `expected` in keys or shapes."""
  if isinstance(expected, Mapping):
    if not isinstance(given, Mapping):
      raise ValueError(f"pretrained params: {prefix} is a {type(given).__name__}, expected a dict with keys "
                       f"{sorted(expected)}")
    for key in sorted(set(expected) | set(given)):
      path = f"{prefix}/{key}"
      if key not in given:
        raise ValueError(f"pretrained params: missing {path} (expected shape "
                         f"{jax.tree_util.tree_map(np.shape, expected[key])})")
      if key not in expected:
        raise ValueError(f"pretrained params: unexpected {path}; the model has no such parameter")
      _check_same_tree(expected[key], given[key], path)
  elif np.shape(given) != tuple(expected.shape):
    raise ValueError(f"pretrained params: {prefix} has shape {np.shape(given)}, the model expects "
                     f"{tuple(expected.shape)}")


def init_params(model: MultitaskBert, rng: Array, example: Mapping[str, Batch] | None = None,
                pretrained_bert: Any = None) -> dict[str, Any]:
  """All of `model`'s params (the "params" collection), with `pretrained_bert` under "bert" if given.

  Pure in (rng, example, pretrained_bert), so `jax.eval_shape` / `jax.jit` can
  wrap it (e.g. to get shapes for sharding without allocating). `example`
  defaults to `example_batches(model)`; its shapes do not affect the params.
  Pretrained params must match the encoder's tree exactly (keys and shapes) and
  are cast to float32.
  """
  if example is None:
    example = example_batches(model)
  params = model.init({"params": rng}, example, deterministic=True)["params"]
  if pretrained_bert is None:
    return dict(params)
  _check_same_tree(params["bert"], pretrained_bert, "bert")
  return {**params, "bert": jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), pretrained_bert)}
