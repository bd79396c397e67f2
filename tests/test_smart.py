"""SMART (`config.smart`): the ascent and the term against a hand derivation, the embedding noise
reaches the encoder where the batch's tokens are, and the trainer's task gradient differentiates
exactly the task loss plus the weighted term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import multitask, smart
from bert_jax.tasks import TASK_METHODS
from train import steps, train
from train.config_validation import ConfigError, validate
from train.configs import base
from tests.step_checks import (assert_matches_objective_and_off_is_plain, sst_gradient_setup, sst_step_key,
                               sst_task_gradient)
from tests.test_train import _initial_params, task_data, tiny_config  # noqa: F401  (task_data is a fixture)


def test_the_term_is_one_normalized_ascent_step_then_the_divergence():
  """On a linear regression 'model' every quantity has a closed form."""
  rng = np.random.default_rng(0)
  rows, length, hidden = 3, 4, 5
  w_out = rng.normal(size=hidden)
  clean = rng.normal(size=rows)
  weights = np.array([1.0, 0.5, 0.0])  # the last row is padding
  options = smart.SmartOptions(noise_std=0.3, step_size=0.7, epsilon=1e-6, num_steps=1)
  key = jax.random.key(3)
  # f(delta) = clean + sum over tokens of delta . w_out: f(0) is the clean output.
  forward = lambda d: jnp.asarray(clean) + jnp.einsum("rlh,h->r", d, jnp.asarray(w_out))

  delta0 = options.noise_std * np.asarray(jax.random.normal(key, (rows, length, hidden), jnp.float32))
  residual0 = np.einsum("rlh,h->r", delta0, w_out)  # f(delta0) - f(0)
  grad = 2 * (weights * residual0)[:, None, None] * w_out  # d/d delta of sum_r w_r (f(delta) - f(0))^2
  step = delta0 + options.step_size * grad
  delta1 = step / (np.abs(step).max(-1, keepdims=True) + options.epsilon)
  expected = np.sum(weights * np.einsum("rlh,h->r", delta1, w_out) ** 2)

  got = smart.smoothness_sum("sts", forward, jnp.asarray(clean), jnp.asarray(weights), delta0.shape, key, options)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  np.testing.assert_allclose(np.abs(delta1).max(-1), 1.0, rtol=1e-5)  # max-abs 1 per token

  # The clean output is not held fixed in the final term: d/d clean = -2 w (f(delta1) - clean).
  clean_grad = jax.grad(lambda c: smart.smoothness_sum("sts", forward, c, jnp.asarray(weights), delta0.shape,
                                                       key, options))(jnp.asarray(clean))
  np.testing.assert_allclose(clean_grad, -2 * weights * np.einsum("rlh,h->r", delta1, w_out), rtol=1e-5)

  # Two steps: the second starts where the first ended.
  grad1 = 2 * (weights * np.einsum("rlh,h->r", delta1, w_out))[:, None, None] * w_out
  step = delta1 + options.step_size * grad1
  delta2 = step / (np.abs(step).max(-1, keepdims=True) + options.epsilon)
  two = smart.SmartOptions(noise_std=0.3, step_size=0.7, epsilon=1e-6, num_steps=2)
  np.testing.assert_allclose(
      float(smart.smoothness_sum("sts", forward, jnp.asarray(clean), jnp.asarray(weights), delta0.shape, key, two)),
      np.sum(weights * np.einsum("rlh,h->r", delta2, w_out) ** 2), rtol=1e-5)


def test_embedding_noise_moves_the_outputs_only_through_real_tokens(tiny_world, task_data, tmp_path):
  loaded, data = task_data
  config = tiny_config(tiny_world, tmp_path)
  model = train.build_model(config, loaded.config)
  params = _initial_params(config, loaded, data)
  ids = np.array([[2, 7, 8, 3, 0, 0], [2, 9, 3, 0, 0, 0]])  # [CLS] w w [SEP] pad pad
  batch = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32), "token_type_ids": np.zeros_like(ids)}
  shape = multitask.embedding_shape(batch, loaded.config.hidden_size)
  assert shape == (2, 6, loaded.config.hidden_size)
  logits = lambda noise=None: np.asarray(model.apply({"params": params}, batch, embedding_noise=noise,
                                                     method=model.sentiment))
  clean = logits()
  np.testing.assert_array_equal(logits(jnp.zeros(shape)), clean)
  on_padding = np.zeros(shape, np.float32)
  on_padding[:, 4:] = 5.0
  on_padding[1, 3:] = 5.0
  np.testing.assert_allclose(logits(on_padding), clean, atol=1e-6)
  on_a_word = np.zeros(shape, np.float32)
  on_a_word[1, 1] = 0.5
  moved = logits(on_a_word)
  np.testing.assert_allclose(moved[0], clean[0], atol=1e-6)
  assert np.abs(moved[1] - clean[1]).max() > 1e-4

  pair = {k: np.stack([v, v[::-1]], axis=1) for k, v in batch.items()}  # [B, 2, L]: 2B rows
  assert multitask.embedding_shape(pair, loaded.config.hidden_size) == (4, 6, loaded.config.hidden_size)


def test_task_gradient_differentiates_the_task_loss_plus_the_smart_term(tiny_world, task_data, tmp_path):
  loaded, model, params, freeze, parallel, batch = sst_gradient_setup(tiny_world, task_data, tmp_path)
  weight = 2.0
  options = smart.SmartOptions(noise_std=1e-3, step_size=0.1, epsilon=1e-6, num_steps=1)
  rng = jax.random.key(5)

  def built(smart_weight):
    return sst_task_gradient(model, params, freeze, parallel, batch, rng, smart_weight=smart_weight, smart=options)

  key = sst_step_key(rng)
  shape = multitask.embedding_shape(batch, loaded.config.hidden_size)

  @jax.jit
  def by_hand(trainable):
    variables = {"params": freeze.merge(trainable, params)}
    forward = lambda noise=None: model.apply(variables, batch, deterministic=False, rngs={"dropout": key},
                                             embedding_noise=noise, method=TASK_METHODS["sst"])
    weights = jnp.asarray(batch["weights"], jnp.float32)
    labels = jnp.where(weights > 0, jnp.asarray(batch["labels"], jnp.int32), 0)
    clean = forward()
    ce = -jnp.take_along_axis(jax.nn.log_softmax(clean), labels[:, None], axis=-1)[:, 0]

    def sym_kl(a, b):
      log_p, log_q = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
      return jnp.sum((jnp.exp(log_p) - jnp.exp(log_q)) * (log_p - log_q), axis=-1)

    delta = options.noise_std * jax.random.normal(jax.random.fold_in(key, 2), shape, jnp.float32)
    target = jax.lax.stop_gradient(clean)
    grad = jax.grad(lambda d: jnp.sum(weights * sym_kl(forward(d), target)))(delta)
    step = delta + options.step_size * grad
    delta = jax.lax.stop_gradient(step / (jnp.max(jnp.abs(step), axis=-1, keepdims=True) + options.epsilon))
    term = jnp.sum(weights * sym_kl(forward(delta), clean))
    return (jnp.sum(weights * ce) + weight * term) / jnp.sum(weights), term

  (expected_loss, term), expected_grads = jax.value_and_grad(by_hand, has_aux=True)(freeze.trainable(params))
  assert float(term) > 1e-4, "the perturbation did not move the outputs"
  assert_matches_objective_and_off_is_plain(built, {"sst": weight}, expected_loss, expected_grads)


@pytest.mark.parametrize("overrides, field, expected", [
    ({"smart.weight.sst": -1.0}, "smart.weight.sst", "a finite number >= 0"),
    ({"smart.weight.ssst": 1.0}, "smart.weight", "['ssst'] would be ignored"),
    ({"smart.epsilon": 0.0}, "smart.epsilon", "> 0"),
    ({"smart.num_steps": 0}, "smart.num_steps", ">= 1"),
    ({"smart.weight.sst": 1.0, "rdrop_alpha.sst": 1.0}, "smart.weight.sst", "do not combine"),
])
def test_bad_smart_settings_are_named(overrides, field, expected):
  config = base.get_config()
  with config.unlocked():
    for dotted, value in overrides.items():
      *parents, key = dotted.split(".")
      node = config
      for parent in parents:
        node = node[parent]
      node[key] = value
  with pytest.raises(ConfigError) as error:
    validate(config)
  assert field in str(error.value) and expected in str(error.value)


def test_the_trainer_builds_its_step_with_the_configs_smart_settings(tiny_world, tmp_path, monkeypatch):
  seen = []
  real = steps.make_train_step

  def recording(*args, **kwargs):
    seen.append((kwargs.get("smart_weight"), kwargs.get("smart")))
    return real(*args, **kwargs)

  monkeypatch.setattr(steps, "make_train_step", recording)
  config = tiny_config(tiny_world, tmp_path, max_steps=2, **{"smart.weight.sst": 1.0, "smart.step_size": 0.01})
  scores = train.train_and_evaluate(config, str(tmp_path / "run"))
  expected = ({"sst": 1.0, "para": 0.0, "sts": 0.0}, smart.SmartOptions(step_size=0.01))
  assert seen and all(settings == expected for settings in seen)
  assert np.isfinite(scores["sst_accuracy"])
