"""Tests for the multitask model (bert_jax/multitask.py), its heads (heads.py), losses and predictions."""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import heads, losses as losses_lib, multitask, tasks
from bert_jax.config import BertConfig
from bert_jax.modeling import BertModel

CONFIG = BertConfig.tiny()
# The encoder sees [8, LENGTH] in every test: 8 single or joint sequences, or 4
# separate pairs flattened to 8 rows. Eager ops compile once per shape, so a
# single shape keeps this file fast.
ROWS, LENGTH = 8, 8
PAIRS = ROWS // 2
PAD, CLS, SEP, FIRST_WORD = 0, 2, 3, 5


# ----------------------------------------------------------------------------
# Tiny padded batches (bert_jax/batch.py): [CLS] words [SEP] then padding.
# The last example of every batch is a padding example: weight 0, index -1,
# all-zero ids and attention mask, and a label outside the valid range.
# ----------------------------------------------------------------------------


def _sentence(rng, length, max_words):
  return [CLS, *rng.integers(FIRST_WORD, CONFIG.vocab_size, rng.integers(1, max_words + 1)), SEP][:length]


def _padded(rows, length):
  ids = np.full((len(rows), length), PAD, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask


def _finish(batch, labels, with_padding):
  size = len(labels)
  batch.update(labels=labels, weights=np.ones(size, np.float32), index=np.arange(size, dtype=np.int32))
  if with_padding:
    for key in ("input_ids", "attention_mask", "token_type_ids"):
      batch[key][-1] = 0
    batch["weights"][-1] = 0.0
    batch["index"][-1] = -1
  return batch


def sst_batch(rng, with_padding=True):
  ids, mask = _padded([_sentence(rng, LENGTH, LENGTH - 2) for _ in range(ROWS)], LENGTH)
  labels = rng.integers(0, 5, ROWS).astype(np.int32)
  labels[-1] = 99 if with_padding else labels[-1]
  batch = dict(input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))
  return _finish(batch, labels, with_padding)


def pair_batch(rng, task, encoding, with_padding=True):
  """A "separate" [B, 2, L] or "joint" [B, L] batch for "para" (0/1 labels) or "sts" (0..5)."""
  size = PAIRS if encoding == "separate" else ROWS
  if encoding == "separate":
    a, mask_a = _padded([_sentence(rng, LENGTH, LENGTH - 2) for _ in range(size)], LENGTH)
    b, mask_b = _padded([_sentence(rng, LENGTH, LENGTH - 2) for _ in range(size)], LENGTH)
    ids, mask = np.stack([a, b], 1), np.stack([mask_a, mask_b], 1)
    types = np.zeros_like(ids)
  else:
    rows, types = [], np.zeros((size, LENGTH), np.int32)
    for i in range(size):
      first = _sentence(rng, LENGTH, 2)
      second = _sentence(rng, LENGTH, LENGTH - len(first) - 1)[1:]  # "b [SEP]", no second [CLS]
      rows.append(first + second)
      types[i, len(first):len(rows[-1])] = 1
    ids, mask = _padded(rows, LENGTH)
  if task == "para":
    labels = rng.integers(0, 2, size).astype(np.float32)
  else:
    labels = rng.uniform(0, 5, size).astype(np.float32)
  if with_padding:
    labels[-1] = np.nan
  return _finish(dict(input_ids=ids, attention_mask=mask, token_type_ids=types), labels, with_padding)


def batches_for(model, seed=0, with_padding=True):
  rng = np.random.default_rng(seed)
  return {"sst": sst_batch(rng, with_padding),
          "para": pair_batch(rng, "para", heads.pair_encoding(model.paraphrase_head), with_padding),
          "sts": pair_batch(rng, "sts", heads.pair_encoding(model.similarity_head), with_padding)}


def flat(tree, prefix=""):
  """{'a/b/c': leaf} for a nested dict of params."""
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}/").items()}
  return {prefix[:-1]: tree}


def head_leaves(params, module):
  return {k: v for k, v in flat(params).items() if k.startswith(module + "/")}


# ----------------------------------------------------------------------------
# Pair heads.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("head", list(heads.PAIR_HEADS))
def test_pair_head_outputs_and_grads_for_both_tasks(head):
  model = multitask.MultitaskBert(CONFIG, paraphrase_head=head, similarity_head=head)
  batches = batches_for(model)
  params = multitask.init_params(model, jax.random.key(0), batches)

  outputs = model.apply({"params": params}, {t: batches[t] for t in ("para", "sts")})
  for task in ("para", "sts"):
    assert outputs[task].shape == batches[task]["labels"].shape and outputs[task].dtype == jnp.float32
    assert np.all(np.isfinite(outputs[task])), (task, outputs[task])

  def losses(p):
    para = losses_lib.task_loss("para", model.apply({"params": p}, batches["para"], method="paraphrase"),
                           batches["para"])[0]
    sts = losses_lib.task_loss("sts", model.apply({"params": p}, batches["sts"], method="similarity"),
                          batches["sts"])[0]
    return jnp.stack([para, sts])

  # Eager, not jitted: after the first test has compiled each op, tiny eager steps beat a fresh compile.
  per_task_grads = jax.jacrev(losses)(params)  # leaves: [2 (para, sts), *shape]
  encoder_kernel = "bert/encoder/layer/0/attention/self/query/kernel"
  tasks = [("para", "paraphrase", "similarity"), ("sts", "similarity", "paraphrase")]
  for i, (task, own, other) in enumerate(tasks):
    grads = jax.tree_util.tree_map(lambda g: g[i], per_task_grads)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)), task
    assert np.any(flat(grads)[encoder_kernel] != 0), f"{task} loss does not reach the encoder"
    own_leaves = head_leaves(grads, own)
    if head == "cosine" and task == "sts":
      assert not own_leaves and own not in params  # 5 * cos has no parameters
    else:
      assert own_leaves
      for path, g in own_leaves.items():
        assert np.any(g != 0), f"{task} loss gives zero gradient to {path}"
    assert all(np.all(g == 0) for g in head_leaves(grads, other).values()), f"{task} loss leaks into {other}"


def test_separate_batch_matches_encoding_each_sentence_alone():
  """The [B, 2, L] -> [2B, L] reshape keeps u = sentence a and v = sentence b (concat is order-sensitive)."""
  for pooling in ("mean", "cls"):
    model = multitask.MultitaskBert(CONFIG, paraphrase_head="concat", similarity_head="concat",
                                pair_pooling=pooling)
    batch = batches_for(model)["para"]
    params = multitask.init_params(model, jax.random.key(1))
    logits = model.apply({"params": params}, batch, method="paraphrase")

    # All a sentences, then all b sentences: a different row order from the model's own reshape.
    ids = np.concatenate([batch["input_ids"][:, 0], batch["input_ids"][:, 1]])
    mask = np.concatenate([batch["attention_mask"][:, 0], batch["attention_mask"][:, 1]])
    out = model.apply({"params": params}, ids, mask, np.zeros_like(ids), method="encode")
    if pooling == "cls":
      embeddings = np.asarray(out.pooled_output)
    else:
      m = mask[..., None].astype(np.float32)
      embeddings = (np.asarray(out.last_hidden_state) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    u, v = embeddings[:PAIRS], embeddings[PAIRS:]

    dense = params["paraphrase"]["output"]
    expected = np.concatenate([u, v], -1) @ np.asarray(dense["kernel"])[:, 0] + dense["bias"][0]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_joint_head_needs_joint_batch_and_bi_encoder_needs_separate():
  rng = np.random.default_rng(0)
  cross = multitask.MultitaskBert(CONFIG, paraphrase_head="cross", similarity_head="cross")
  with pytest.raises(ValueError, match="para batch is 'separate'.*head 'cross' reads 'joint'"):
    cross.init(jax.random.key(0), {"para": pair_batch(rng, "para", "separate")})
  diff = multitask.MultitaskBert(CONFIG, paraphrase_head="diff", similarity_head="diff")
  with pytest.raises(ValueError, match="sts batch is 'joint'.*head 'diff' reads 'separate'"):
    diff.init(jax.random.key(0), {"sts": pair_batch(rng, "sts", "joint")})
  with pytest.raises(ValueError, match=r"expected \[B, 2, L\] \(separate\) or \[B, L\] \(joint\)"):
    diff.init(jax.random.key(0), {"sts": {k: np.zeros((2, 3, 4), np.int32)
                                          for k in ("input_ids", "attention_mask", "token_type_ids")}})


def test_pair_encoding_per_head():
  assert heads.pair_encoding("cross") == "joint"
  assert {heads.pair_encoding(h) for h in heads.PAIR_HEADS if h != "cross"} == {"separate"}


def test_cosine_head_is_five_cosine_for_similarity_and_affine_for_paraphrase():
  u = np.array([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
  v = np.array([[4.0, 3.0, 0.0], [0.0, 2.0, 0.0], [-2.0, -4.0, -6.0], [1.0, 1.0, 1.0]], np.float32)
  cosines = np.array([24 / 25, 0.0, -1.0, 0.0])  # the zero vector counts as cosine 0
  similarity = heads.CosineHead("sts").apply({}, u, v, True)
  np.testing.assert_allclose(similarity, 5 * cosines, atol=1e-6)
  np.testing.assert_allclose(losses_lib.predict("sts", similarity), [4.8, 0.0, 0.0, 0.0], atol=1e-6)

  para_head = heads.CosineHead("para")
  variables = para_head.init(jax.random.key(0), u, v, True)
  assert float(variables["params"]["scale"]) == 10.0 and float(variables["params"]["bias"]) == -8.0
  np.testing.assert_allclose(para_head.apply(variables, u, v, True), 10 * cosines - 8, atol=1e-5)

  grad_u = jax.grad(lambda x: jnp.sum(heads.cosine_similarity(x, jnp.asarray(v))))(jnp.asarray(u))
  assert np.all(np.isfinite(grad_u))


def test_sbert_features_symmetric_parts():
  rng = np.random.default_rng(0)
  u, v = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=(3, 6)).astype(np.float32)
  forward, backward = np.asarray(heads.sbert_features(u, v)), np.asarray(heads.sbert_features(v, u))
  np.testing.assert_array_equal(forward[:, :12], np.concatenate([u, v], -1))
  np.testing.assert_array_equal(forward[:, 12:18], np.abs(u - v))
  np.testing.assert_array_equal(forward[:, 18:], u * v)
  np.testing.assert_array_equal(forward[:, 12:], backward[:, 12:])  # |u - v| and u * v
  np.testing.assert_array_equal(forward[:, :6], backward[:, 6:12])


def test_unknown_head_and_pooling_errors_list_valid_choices():
  with pytest.raises(ValueError, match="unknown pair head 'bilinear'; valid heads: concat, cosine, diff, "
                                       "diff_2dense, product, cross"):
    multitask.MultitaskBert(CONFIG, paraphrase_head="bilinear")
  with pytest.raises(ValueError, match=r"pair_pooling='max'; expected one of \('cls', 'mean', 'both'\)"):
    multitask.MultitaskBert(CONFIG, pair_pooling="max")
  with pytest.raises(ValueError, match="unknown tasks"):
    model = multitask.MultitaskBert(CONFIG)
    model.init(jax.random.key(0), {"qqp": batches_for(model)["para"]})


# ----------------------------------------------------------------------------
# Sharing the paraphrase and similarity heads' first layers.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("head, shared_layers",
                         [("diff_2dense", {"dense"}), ("product", {"project_a", "project_b"})])
def test_share_para_sts_shares_first_layers_and_both_tasks_train_them(head, shared_layers):
  model = multitask.MultitaskBert(CONFIG, paraphrase_head=head, similarity_head=head, share_para_sts=True,
                              head_hidden_dim=16)
  batches = batches_for(model)
  params = multitask.init_params(model, jax.random.key(0), batches)
  assert set(params["shared_pair"]) == shared_layers
  assert params["shared_pair"][sorted(shared_layers)[0]]["kernel"].shape[-1] == 16
  for task_module in ("paraphrase", "similarity"):
    assert "trunk" not in params[task_module] and len(params[task_module]) == 1  # own output layer only

  unshared = multitask.init_params(multitask.MultitaskBert(CONFIG, paraphrase_head=head, similarity_head=head),
                               jax.random.key(0), batches)
  assert "shared_pair" not in unshared and set(unshared["paraphrase"]["trunk"]) == shared_layers

  for task, method in (("para", "paraphrase"), ("sts", "similarity")):
    grads = jax.grad(lambda p: losses_lib.task_loss(
        task, model.apply({"params": p}, batches[task], method=method), batches[task])[0])(params)
    for path, g in head_leaves(grads, "shared_pair").items():
      assert np.any(g != 0), f"{task} loss gives zero gradient to {path}"


@pytest.mark.parametrize("para_head, sts_head, message", [
    ("cosine", "cosine", "head 'cosine' has no layer to share.*diff_2dense, product"),
    ("concat", "concat", "head 'concat' has no layer to share"),
    ("cross", "cross", "head 'cross' has no layer to share"),
    ("diff_2dense", "product", "needs the same head for both pair tasks"),
])
def test_share_para_sts_rejects_heads_without_shareable_layers(para_head, sts_head, message):
  with pytest.raises(ValueError, match=message):
    multitask.MultitaskBert(CONFIG, paraphrase_head=para_head, similarity_head=sts_head, share_para_sts=True)


# ----------------------------------------------------------------------------
# Sentiment, dropout, dtype.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["cls", "mean", "both"])
def test_sentiment_logits_are_linear_in_the_chosen_pooling(pooling):
  model = multitask.MultitaskBert(CONFIG, sentiment_pooling=pooling)
  batch = batches_for(model)["sst"]
  params = multitask.init_params(model, jax.random.key(2))
  logits = model.apply({"params": params}, batch, method="sentiment")
  assert logits.shape == (ROWS, 5) and logits.dtype == jnp.float32

  encoded = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                        batch["token_type_ids"], method="encode")
  mask = batch["attention_mask"][..., None].astype(np.float32)
  mean = (np.asarray(encoded.last_hidden_state) * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
  pooled = {"cls": np.asarray(encoded.pooled_output), "mean": mean,
            "both": np.concatenate([np.asarray(encoded.pooled_output), mean], axis=-1)}[pooling]
  dense = params["sentiment"]["output"]
  assert dense["kernel"].shape == (pooled.shape[-1], 5)
  expected = pooled @ np.asarray(dense["kernel"]) + dense["bias"]
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_dropout_only_when_not_deterministic():
  model = multitask.MultitaskBert(CONFIG, paraphrase_head="diff_2dense", similarity_head="cross")
  batches = batches_for(model)
  params = multitask.init_params(model, jax.random.key(0), batches)

  def run(seed, deterministic):
    return model.apply({"params": params}, batches, deterministic, rngs={"dropout": jax.random.key(seed)})

  first, second = run(1, True), run(2, True)
  noisy, noisy_again, other = run(1, False), run(1, False), run(2, False)
  for task in tasks.TASKS:
    assert np.all(np.isfinite(noisy[task])), task  # including the all-padding example
    np.testing.assert_array_equal(first[task], second[task])
    np.testing.assert_array_equal(noisy[task], noisy_again[task])
    assert not np.allclose(noisy[task], other[task]), task
    assert not np.allclose(noisy[task], first[task]), task


def test_bfloat16_encoder_gives_float32_head_outputs():
  model = multitask.MultitaskBert(CONFIG, dtype=jnp.bfloat16, paraphrase_head="product", similarity_head="cosine")
  batches = batches_for(model)
  params = multitask.init_params(model, jax.random.key(0), batches)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
  outputs = model.apply({"params": params}, batches)
  assert {task: out.dtype for task, out in outputs.items()} == {t: jnp.float32 for t in tasks.TASKS}


def test_similarity_output_starts_mid_scale():
  model = multitask.MultitaskBert(CONFIG, paraphrase_head="diff", similarity_head="diff")
  params = multitask.init_params(model, jax.random.key(0))
  assert float(params["similarity"]["output"]["bias"][0]) == 2.5
  assert float(params["paraphrase"]["output"]["bias"][0]) == 0.0


# ----------------------------------------------------------------------------
# Losses, metrics and predictions against numpy formulas.
# ----------------------------------------------------------------------------


def _numpy_per_example(task, outputs, labels, similarity_loss="mse"):
  outputs = outputs.astype(np.float64)
  if task == "sst":
    top = outputs.max(-1)
    log_norm = top + np.log(np.exp(outputs - top[:, None]).sum(-1))
    return log_norm - outputs[np.arange(len(labels)), labels]
  if task == "para":  # -y log sigmoid(x) - (1 - y) log(1 - sigmoid(x)), written stably
    return np.maximum(outputs, 0) - outputs * labels + np.log1p(np.exp(-np.abs(outputs)))
  error = outputs - labels
  return error ** 2 if similarity_loss == "mse" else np.abs(error)


LOSS_CASES = [("sst", "mse"), ("para", "mse"), ("sts", "mse"), ("sts", "l1")]


def _loss_case(task, rng, n):
  if task == "sst":
    return rng.normal(size=(n, 5)).astype(np.float32) * 3, rng.integers(0, 5, n).astype(np.int32)
  if task == "para":
    return rng.normal(size=n).astype(np.float32) * 3, rng.integers(0, 2, n).astype(np.float32)
  return rng.uniform(-1, 6, n).astype(np.float32), rng.uniform(0, 5, n).astype(np.float32)


@pytest.mark.parametrize("task, similarity_loss", LOSS_CASES)
def test_task_loss_matches_numpy_weighted_mean(task, similarity_loss):
  rng = np.random.default_rng(3)
  outputs, labels = _loss_case(task, rng, 6)
  weights = np.array([1.0, 0.5, 2.0, 1.0, 1.0, 1.5], np.float32)
  loss, metrics = losses_lib.task_loss(task, jnp.asarray(outputs), {"labels": labels, "weights": weights},
                                  similarity_loss=similarity_loss)
  per_example = _numpy_per_example(task, outputs, labels, similarity_loss)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, (weights * per_example).sum() / weights.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_sum"], (weights * per_example).sum(), rtol=1e-5)
  assert float(metrics["count"]) == weights.sum()


@pytest.mark.parametrize("task, similarity_loss", LOSS_CASES)
def test_padding_examples_change_neither_loss_nor_gradient(task, similarity_loss):
  rng = np.random.default_rng(4)
  outputs, labels = _loss_case(task, rng, 5)
  garbage_label = {"sst": 99, "para": np.nan, "sts": np.nan}[task]
  padded_outputs = np.concatenate([outputs, 1e4 * np.ones_like(outputs[:2])])
  padded_labels = np.concatenate([labels, np.full(2, garbage_label, labels.dtype)])
  weights = np.array([1, 1, 1, 1, 1, 0, 0], np.float32)

  def loss_and_metrics(out, lab, w):
    return losses_lib.task_loss(task, out, {"labels": lab, "weights": w}, similarity_loss=similarity_loss)

  loss, metrics = loss_and_metrics(jnp.asarray(outputs), labels, weights[:5])
  padded_loss, padded_metrics = loss_and_metrics(jnp.asarray(padded_outputs), padded_labels, weights)
  np.testing.assert_allclose(padded_loss, loss, rtol=1e-6)
  for key in metrics:
    np.testing.assert_allclose(padded_metrics[key], metrics[key], rtol=1e-6, err_msg=key)
  grad = jax.grad(lambda out: loss_and_metrics(out, padded_labels, weights)[0])(jnp.asarray(padded_outputs))
  assert np.all(np.isfinite(grad)) and np.all(grad[5:] == 0)


def test_all_padding_batch_has_zero_loss():
  loss, metrics = losses_lib.task_loss("sst", jnp.zeros((3, 5)), {"labels": np.zeros(3, np.int32),
                                                             "weights": np.zeros(3, np.float32)})
  assert float(loss) == 0.0 and float(metrics["count"]) == 0.0


def _summarize_metrics(task: str, sums: Mapping[str, Any]) -> dict[str, float]:
  """Means from `task_loss` metrics summed over steps: loss, and accuracy or mae + pearson."""
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




def test_metrics_sum_across_batches_to_accuracy_mae_and_pearson():
  rng = np.random.default_rng(5)
  for task in tasks.TASKS:
    outputs, labels = _loss_case(task, rng, 12)
    weights = np.ones(12, np.float32)
    weights[-2:] = 0.0
    halves = [losses_lib.task_loss(task, jnp.asarray(outputs[s]), {"labels": labels[s], "weights": weights[s]})[1]
              for s in (slice(0, 5), slice(5, 12))]
    summed = jax.tree_util.tree_map(lambda a, b: a + b, *halves)
    summary = _summarize_metrics(task, summed)
    real = slice(0, 10)
    np.testing.assert_allclose(summary["loss"], _numpy_per_example(task, outputs[real], labels[real]).mean(),
                               rtol=1e-5)
    if task == "sst":
      assert summary["accuracy"] == np.mean(outputs[real].argmax(-1) == labels[real])
    elif task == "para":
      assert summary["accuracy"] == np.mean((outputs[real] > 0) == (labels[real] == 1))
    else:
      clipped = np.clip(outputs[real], 0, 5)
      np.testing.assert_allclose(summary["mae"], np.abs(clipped - labels[real]).mean(), rtol=1e-5)
      np.testing.assert_allclose(summary["pearson"], np.corrcoef(clipped, labels[real])[0, 1], rtol=1e-4)


def test_predict():
  sst = losses_lib.predict("sst", jnp.array([[0.1, 2.0, 0, 0, 0], [0, 0, 0, 0, 3.0]]))
  assert sst.dtype == jnp.int32
  np.testing.assert_array_equal(sst, [1, 4])
  para = losses_lib.predict("para", jnp.array([-0.5, 0.0, 0.25]))
  assert para.dtype == jnp.int32
  np.testing.assert_array_equal(para, [0, 0, 1])
  np.testing.assert_allclose(losses_lib.predict("sts", jnp.array([-1.0, 2.5, 7.0])), [0.0, 2.5, 5.0])
  with pytest.raises(ValueError, match="unknown task 'qqp'"):
    losses_lib.predict("qqp", jnp.zeros(2))
  with pytest.raises(ValueError, match="similarity_loss='huber'"):
    losses_lib.task_loss("sts", jnp.zeros(2), {"labels": np.zeros(2), "weights": np.ones(2)},
                    similarity_loss="huber")


# ----------------------------------------------------------------------------
# Initialisation with a pretrained encoder.
# ----------------------------------------------------------------------------


def test_init_params_places_pretrained_encoder_and_works_under_eval_shape():
  model = multitask.MultitaskBert(CONFIG, paraphrase_head="diff", similarity_head="cross")
  ids = np.ones((1, 4), np.int32)
  pretrained = BertModel(CONFIG).init(jax.random.key(7), ids)["params"]
  pretrained = jax.tree_util.tree_map(np.asarray, pretrained)
  fresh = multitask.init_params(model, jax.random.key(0))
  loaded = multitask.init_params(model, jax.random.key(0), pretrained_bert=pretrained)
  for path, value in flat(loaded).items():
    if path.startswith("bert/"):
      np.testing.assert_array_equal(value, flat(pretrained)[path[len("bert/"):]], err_msg=path)
    else:
      np.testing.assert_array_equal(value, flat(fresh)[path], err_msg=path)

  shapes = jax.eval_shape(lambda rng: multitask.init_params(model, rng, pretrained_bert=pretrained),
                          jax.random.key(0))
  assert jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), shapes) == \
      jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), loaded)


def test_init_params_names_the_mismatching_paths():
  model = multitask.MultitaskBert(CONFIG)
  pretrained = BertModel(CONFIG).init(jax.random.key(7), np.ones((1, 4), np.int32))["params"]
  wrong_shape = jax.tree_util.tree_map(lambda x: x, pretrained)
  wrong_shape["encoder"]["layer"]["1"]["intermediate"]["dense"]["kernel"] = np.zeros((32, 63), np.float32)
  with pytest.raises(ValueError, match=r"shape mismatch: bert/encoder/layer/1/intermediate/dense/kernel "
                                       r"expected \(32, 64\), found \(32, 63\)"):
    multitask.init_params(model, jax.random.key(0), pretrained_bert=wrong_shape)
  missing = jax.tree_util.tree_map(lambda x: x, pretrained)
  del missing["pooler"]
  with pytest.raises(ValueError, match="missing: bert/pooler/dense/bias, bert/pooler/dense/kernel") as error:
    multitask.init_params(model, jax.random.key(0), pretrained_bert=missing)
  assert "allow_missing" not in str(error.value)  # init_params has no such option to suggest
  extra = jax.tree_util.tree_map(lambda x: x, pretrained)
  extra["embeddings"]["position_ids"] = np.arange(64)
  with pytest.raises(ValueError, match="unexpected: bert/embeddings/position_ids"):
    multitask.init_params(model, jax.random.key(0), pretrained_bert=extra)
