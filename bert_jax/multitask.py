"""The multitask model: one shared BERT encoder and a head per task.

`MultitaskBert` owns the encoder and the heads (bert_jax/heads.py) and turns
a batch (bert_jax/batch.py) into each task's output; the losses are in
bert_jax/losses.py. `init_params` builds every parameter, with the
pretrained encoder under "bert".
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import batch as batch_layout
from bert_jax.batch import Batch, PackedBatch
from bert_jax.checkpoints import check_encoder_params
from bert_jax.config import BertConfig
from bert_jax.heads import PairHead, SentimentHead, get_pair_head, pair_encoding, shareable_pair_heads
from bert_jax.modeling import BertModel, BertOutput, segment_mean_pool
from bert_jax.tasks import NUM_SENTIMENT_CLASSES, TASK_METHODS, TASKS

Array = jax.Array

POOLINGS = ("cls", "mean", "both")


def embedding_shape(batch: Batch, hidden_size: int) -> tuple[int, int, int]:
  """[rows, length, hidden]: the encoder input's shape for `batch`, padded or packed.

  A padded [B, L] or [B, 2, L] batch runs as B or 2B rows (`as_packed`).
  """
  shape = np.shape(batch["input_ids"])
  return int(np.prod(shape[:-1])), int(shape[-1]), hidden_size


def as_packed(batch: Batch) -> PackedBatch:
  """A padded batch as the packed layout with one sequence per row; a packed batch as it is.

  The model reads only the packed layout (bert_jax/batch.py). A padded [B, L]
  or [B, 2, L] batch becomes B * k rows whose segment 1 is the real tokens
  (padding is at the end), with slot and start indices computed from the
  batch's own shape, so this works on traced arrays and on each device's
  share under `jax.pmap` alike.
  """
  if batch_layout.is_packed(batch):
    return batch
  k = batch_layout.sequences_per_example(batch, "padded")
  length = np.shape(batch["input_ids"])[-1]
  if length < 2:
    raise ValueError(f"padded batch of length {length}: a sequence needs at least [CLS] and [SEP]")
  rows = lambda key: jnp.reshape(jnp.asarray(batch[key], jnp.int32), (-1, length))
  input_ids = rows("input_ids")
  num_rows = input_ids.shape[0]
  row = jnp.arange(num_rows, dtype=jnp.int32).reshape(-1, k)
  packed = {"input_ids": input_ids, "token_type_ids": rows("token_type_ids"),
            "segment_ids": rows("attention_mask"),
            "position_ids": jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (num_rows, length)),
            "sequence_slots": row * (length // 2), "sequence_starts": row * length}
  return {**{key: batch[key] for key in batch_layout.EXAMPLE_KEYS if key in batch}, **packed}


class MultitaskBert(nn.Module):
  """BERT encoder ("bert") plus "sentiment", "paraphrase", "similarity" heads (and "shared_pair").

  Attributes:
    config: the encoder's shape.
    dtype: the encoder's compute dtype; heads always compute in float32.
    sentiment_pooling: "cls" (BERT's pooled output, tanh(dense([CLS]))), "mean", or
      "both": the two concatenated, [cls; mean] (2H wide), so the head sees the token
      average the default checkpoint was trained to give and a [CLS] summary it can tune.
    pair_pooling: how bi-encoder heads form u and v: "mean" (default; the default
      checkpoint all-MiniLM-L6-v2 is trained as a mean-pooling sentence encoder)
      or "cls" (the pooled output), or "both" ([cls; mean]). The cross head always
      uses the pooled [CLS].
    paraphrase_head, similarity_head: names in `PAIR_HEADS`.
    share_para_sts: share the pair heads' first layer(s) as "shared_pair"; needs
      the same head for both tasks, one of `shareable_pair_heads()`.
    head_dropout: dropout on every learned head's input (and hidden layer).
    head_dropout_samples: multi-sample dropout (Inoue, 2019). In training
      (deterministic=False), with K > 1, every task method runs its head K times
      on the one encoder output, each time with its own dropout mask, and returns
      the K outputs stacked on a new leading axis; `losses.multi_sample_loss`
      averages their losses. The encoder runs once, so the samples cost only
      heads. Evaluation (deterministic) returns one output, as with K = 1. A
      training setting: bundles do not record it.
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
  head_dropout_samples: int = 1
  head_hidden_dim: int = 0
  num_sentiment_classes: int = NUM_SENTIMENT_CLASSES

  def __post_init__(self):
    # Validate at construction, not at the first init/apply, so config mistakes surface early.
    for field, value in (("sentiment_pooling", self.sentiment_pooling), ("pair_pooling", self.pair_pooling)):
      if value not in POOLINGS:
        raise ValueError(f"MultitaskBert.{field}={value!r}; expected one of {POOLINGS}")
    if not isinstance(self.head_dropout_samples, int) or self.head_dropout_samples < 1:
      raise ValueError(f"MultitaskBert.head_dropout_samples={self.head_dropout_samples!r}; expected an integer >= 1")
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

  def _pooled(self, batch: Batch, pooling: str, deterministic: bool,
              embedding_noise: Array | None = None) -> Array:
    """[B, k] + [H] float32 embeddings of each example's k sequences, from a packed batch."""
    output = self.bert(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                       position_ids=batch["position_ids"], segment_ids=batch["segment_ids"],
                       sequence_starts=batch["sequence_starts"], deterministic=deterministic,
                       embedding_noise=embedding_noise)
    if pooling == "cls":
      return output.pooled_output.astype(jnp.float32)
    mean = segment_mean_pool(output.last_hidden_state, batch["segment_ids"], batch["sequence_slots"])
    if pooling == "mean":
      return mean
    return jnp.concatenate([output.pooled_output.astype(jnp.float32), mean], axis=-1)  # mean: float32

  def sentiment(self, batch: Batch, deterministic: bool = True, embedding_noise: Array | None = None) -> Array:
    """[B, num_sentiment_classes] float32 logits.

    `embedding_noise`, in every task method: added to the encoder's input, of
    shape `embedding_shape(batch, hidden_size)`; None (the default) adds nothing.
    """
    if batch_layout.sequences_per_example(batch, "sst") != 1:
      raise ValueError(f"sst batch: input_ids {np.shape(batch['input_ids'])}, sequence_slots "
                       f"{np.shape(batch.get('sequence_slots'))}; expected one sentence per example "
                       "([B, L] padded, or sequence_slots [B, 1] packed)")
    pooled = self._pooled(as_packed(batch), self.sentiment_pooling, deterministic, embedding_noise)
    return self._head_samples(lambda: self.sentiment_head(pooled[:, 0], deterministic), deterministic)

  def _head_samples(self, run_head: Callable[[], Array], deterministic: bool) -> Array:
    """`run_head()`, or with multi-sample dropout in training, K runs stacked as [K, ...].

    Each call of a head draws new dropout masks: flax counts the calls to
    make_rng, so the same module and key give a new key at every call.
    """
    if deterministic or self.head_dropout_samples == 1:
      return run_head()
    return jnp.stack([run_head() for _ in range(self.head_dropout_samples)])

  def _pair(self, head: PairHead, head_name: str, task: str, batch: Batch, deterministic: bool,
            embedding_noise: Array | None) -> Array:
    encoding = batch_layout.pair_encoding_of(batch, task)
    if encoding != head.encoding:
      raise ValueError(
          f"{task} batch is {encoding!r} (input_ids {np.shape(batch['input_ids'])}) but head {head_name!r} "
          f"reads {head.encoding!r} batches ([B, 2, L] for bi-encoder heads, [B, L] for 'cross'); "
          f"build the {task} input with encoding={head.encoding!r}")
    packed = as_packed(batch)
    if encoding == batch_layout.JOINT:
      joint = self._pooled(packed, "cls", deterministic, embedding_noise)[:, 0]
      return self._head_samples(lambda: head(joint, deterministic), deterministic)
    pooled = self._pooled(packed, self.pair_pooling, deterministic, embedding_noise)
    return self._head_samples(lambda: head(pooled[:, 0], pooled[:, 1], deterministic), deterministic)

  def paraphrase(self, batch: Batch, deterministic: bool = True, embedding_noise: Array | None = None) -> Array:
    """[B] float32 paraphrase logits."""
    return self._pair(self.paraphrase_pair_head, self.paraphrase_head, "para", batch, deterministic,
                      embedding_noise)

  def similarity(self, batch: Batch, deterministic: bool = True, embedding_noise: Array | None = None) -> Array:
    """[B] float32 predicted similarity on the 0..5 label scale (unclipped; see `predict`)."""
    return self._pair(self.similarity_pair_head, self.similarity_head, "sts", batch, deterministic,
                      embedding_noise)

  def __call__(self, batches: Mapping[str, Batch], deterministic: bool = True) -> dict[str, Array]:
    """{task: output} for the tasks present; init with all three to create every parameter."""
    unknown = set(batches) - set(TASKS)
    if unknown:
      raise ValueError(f"unknown tasks {sorted(unknown)}; expected keys among {TASKS}")
    return {task: getattr(self, TASK_METHODS[task])(batch, deterministic) for task, batch in batches.items()}


# ----------------------------------------------------------------------------
# Losses, metrics, predictions.

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
  check_encoder_params(pretrained_bert, model.config, source="pretrained params")
  return {**params, "bert": jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), pretrained_bert)}
