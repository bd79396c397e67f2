"""Losses, metrics and final predictions of the three tasks.

Beside the model rather than beside the train step (as flax's sst2 example
has it) because predict, export and evaluation outside training need the same
`predict`, and bert_jax/ imports nothing from train/. Every metric
`task_loss` returns is a weighted sum, so a trainer adds metrics over steps
and devices and divides by "count" at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bert_jax.batch import Batch
from bert_jax.tasks import SIMILARITY_MAX, check_task

Array = jax.Array

SIMILARITY_LOSSES = ("mse", "l1")


def predict(task: str, outputs: Array) -> Array:
  """Final predictions: sst class (int32), para 0/1 (int32), sts similarity clipped to [0, 5]."""
  check_task(task)
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
  check_task(task)
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


def consistency(task: str, outputs_a: Array, outputs_b: Array) -> Array:
  """Per-example disagreement of two dropout passes over the same examples (R-Drop's term).

  sst: the symmetric KL divergence of the two softmax distributions,
  KL(p||q) + KL(q||p) = sum (p - q)(log p - log q); para: the same for the two
  Bernoulli distributions, which reduces to (p - q)(logit_p - logit_q); sts,
  a regression: the squared difference of the two scores.
  """
  check_task(task)
  a, b = outputs_a.astype(jnp.float32), outputs_b.astype(jnp.float32)
  if task == "sst":
    log_a, log_b = jax.nn.log_softmax(a, axis=-1), jax.nn.log_softmax(b, axis=-1)
    return jnp.sum((jnp.exp(log_a) - jnp.exp(log_b)) * (log_a - log_b), axis=-1)
  if task == "para":
    return (jax.nn.sigmoid(a) - jax.nn.sigmoid(b)) * (a - b)
  return jnp.square(a - b)


def rdrop_loss(task: str, outputs_a: Array, outputs_b: Array, batch: Batch, alpha: float,
               similarity_loss: str = "mse") -> tuple[Array, dict[str, Array]]:
  """R-Drop (Liang et al., 2021): the task loss of two dropout passes plus their disagreement.

  The paper's loss, L_a + L_b + alpha * (KL(a||b) + KL(b||a)) / 2, halved, so that the
  task part keeps the scale of one pass and `alpha` means what it means in the paper.
  Weighted like `task_loss` (padding examples count for nothing). The metrics are
  `task_loss`'s for the first pass, with "loss_sum" the whole objective's weighted sum,
  so the loss a trainer reports is the one it differentiates.
  """
  _, metrics = task_loss(task, outputs_a, batch, similarity_loss)
  _, metrics_b = task_loss(task, outputs_b, batch, similarity_loss)
  weights = jnp.asarray(batch["weights"], jnp.float32)
  disagreement = jnp.sum(jnp.where(weights > 0, weights * consistency(task, outputs_a, outputs_b), 0.0))
  loss_sum = 0.5 * (metrics["loss_sum"] + metrics_b["loss_sum"]) + 0.25 * alpha * disagreement
  metrics = {**metrics, "loss_sum": loss_sum}
  return loss_sum / jnp.maximum(metrics["count"], 1.0), metrics


def multi_sample_loss(task: str, outputs: Array, batch: Batch,
                      similarity_loss: str = "mse") -> tuple[Array, dict[str, Array]]:
  """Multi-sample dropout (Inoue, 2019): `task_loss` averaged over the head's K dropout samples.

  `outputs` is [K, ...], K runs of the head on one encoder output
  (`MultitaskBert.head_dropout_samples`). Averaging the losses, not the
  outputs, keeps each sample's full dropout: the objective is plain dropout's,
  with K draws of its noise per step. The metrics are `task_loss`'s for the
  first sample, with "loss_sum" the mean over samples, as `rdrop_loss` reports.
  """
  per_sample = [task_loss(task, outputs[k], batch, similarity_loss)[1] for k in range(outputs.shape[0])]
  metrics = {**per_sample[0], "loss_sum": sum(m["loss_sum"] for m in per_sample) / len(per_sample)}
  return metrics["loss_sum"] / jnp.maximum(metrics["count"], 1.0), metrics
