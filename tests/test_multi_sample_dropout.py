"""Multi-sample dropout (`config.model.head_dropout_samples`): K head passes on one encoder output,
and a loss that is the mean of their losses."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bert_jax import checkpoints as bert_checkpoints, losses
from bert_jax.tasks import TASK_METHODS
from train import train
from train.config_validation import ConfigError, validate
from train.configs import base
from tests.step_checks import sst_gradient_setup, sst_step_key, sst_task_gradient
from tests.test_train import _flat, task_data, tiny_config  # noqa: F401  (task_data is a fixture)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_the_loss_is_the_mean_of_the_samples_weighted_losses():
  rng = np.random.default_rng(0)
  outputs = rng.normal(size=(3, 4, 5))  # K=3 samples, 4 examples, 5 classes
  batch = {"labels": np.array([0, 3, 4, 7]), "weights": np.array([1.0, 1.0, 0.5, 0.0])}  # 7: padding
  labels, w = np.array([0, 3, 4, 0]), batch["weights"]
  per_sample = [np.sum(w * -np.log(_softmax(z)[np.arange(4), labels])) for z in outputs]
  loss, metrics = losses.multi_sample_loss("sst", outputs, batch)
  np.testing.assert_allclose(metrics["loss_sum"], np.mean(per_sample), rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(per_sample) / 2.5, rtol=1e-5)
  _, first = losses.task_loss("sst", outputs[0], batch)
  assert float(metrics["correct"]) == float(first["correct"]) and float(metrics["count"]) == 2.5

  scores = rng.normal(size=(2, 4)) + 2.5
  sts = {"labels": np.array([1.0, 2.0, 4.0, 0.0]), "weights": np.ones(4)}
  _, sts_metrics = losses.multi_sample_loss("sts", scores, sts)
  np.testing.assert_allclose(sts_metrics["loss_sum"], np.mean(np.sum((scores - sts["labels"]) ** 2, -1)),
                             rtol=1e-5)


def test_the_heads_run_k_times_on_one_encoder_pass(tiny_world, task_data, tmp_path):
  _, model, params, _, _, batch = sst_gradient_setup(tiny_world, task_data, tmp_path)
  # Encoder dropout on (the tiny world has none), so that a second encoder pass would differ.
  model = model.clone(config=dataclasses.replace(model.config, hidden_dropout_prob=0.1))
  key = jax.random.key(3)
  run = lambda m, deterministic=False: m.apply({"params": params}, batch, deterministic=deterministic,
                                               rngs={"dropout": key}, method=TASK_METHODS["sst"])
  single = run(model)
  samples = run(model.clone(head_dropout_samples=4))
  assert samples.shape == (4,) + single.shape
  np.testing.assert_array_equal(samples[0], single)  # the first sample is plain dropout's pass
  for i in range(4):
    for j in range(i):
      assert not np.allclose(samples[i], samples[j], atol=1e-4), f"samples {i} and {j} share a mask"
  # Without head dropout the samples are equal: the encoder's own dropout ran once for all of them.
  no_head_dropout = run(model.clone(head_dropout_samples=4, head_dropout=0.0))
  for k in range(1, 4):
    np.testing.assert_array_equal(no_head_dropout[k], no_head_dropout[0])
  np.testing.assert_array_equal(run(model.clone(head_dropout_samples=4), deterministic=True),
                                run(model, deterministic=True))


def test_task_gradient_differentiates_the_mean_of_the_sample_losses(tiny_world, task_data, tmp_path):
  _, model, params, freeze, parallel, batch = sst_gradient_setup(tiny_world, task_data, tmp_path)
  rng = jax.random.key(5)

  def built(samples):
    return sst_task_gradient(model.clone(head_dropout_samples=samples), params, freeze, parallel, batch, rng)

  key = sst_step_key(rng)

  @jax.jit
  def by_hand(trainable):
    variables = {"params": freeze.merge(trainable, params)}
    logits = model.clone(head_dropout_samples=3).apply(variables, batch, deterministic=False,
                                                       rngs={"dropout": key}, method=TASK_METHODS["sst"])
    weights = jnp.asarray(batch["weights"], jnp.float32)
    labels = jnp.where(weights > 0, jnp.asarray(batch["labels"], jnp.int32), 0)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[None, :, None], axis=-1)[..., 0]  # [K, B]
    return jnp.sum(weights * jnp.mean(ce, axis=0)) / jnp.sum(weights)

  expected_loss, expected_grads = jax.value_and_grad(by_hand)(freeze.trainable(params))
  grads, loss = built(3)
  np.testing.assert_allclose(loss, float(expected_loss), rtol=1e-5)
  expected = _flat(jax.device_get(expected_grads))
  assert grads.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_allclose(grads[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
  _, plain_loss = built(1)
  assert plain_loss != loss


@pytest.mark.parametrize("overrides, field, expected", [
    ({"model.head_dropout_samples": 0}, "model.head_dropout_samples", "an integer >= 1"),
    ({"model.head_dropout_samples": 4, "rdrop_alpha.sst": 1.0}, "rdrop_alpha.sst",
     "0 while model.head_dropout_samples=4"),
    ({"model.head_dropout_samples": 4, "smart.weight.para": 1.0}, "smart.weight.para",
     "0 while model.head_dropout_samples=4"),
])
def test_bad_multi_sample_settings_are_named(overrides, field, expected):
  config = base.get_config()
  for path, value in overrides.items():
    *sections, key = path.split(".")
    node = config
    for section in sections:
      node = node[section]
    with config.unlocked():
      node[key] = value
  with pytest.raises(ConfigError) as error:
    validate(config)
  assert field in str(error.value) and expected in str(error.value)


def test_the_trainer_builds_its_model_with_the_configs_samples(tiny_world, tmp_path):
  config = tiny_config(tiny_world, tmp_path, max_steps=2, **{"model.head_dropout_samples": 3})
  bert_config = bert_checkpoints.load_hf_checkpoint(config.checkpoint).config
  assert train.build_model(config, bert_config).head_dropout_samples == 3
  # A run written before the setting existed has no such key: it trained with one sample.
  old = ml_collections.ConfigDict(config.to_dict())
  del old.model["head_dropout_samples"]
  assert train.build_model(old, bert_config).head_dropout_samples == 1
  scores = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(scores["sst_accuracy"])
