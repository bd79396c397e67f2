"""R-Drop (`config.rdrop_alpha`): the consistency terms against their definitions, and the trainer's
task gradient differentiates exactly the two-pass objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import losses
from bert_jax.tasks import TASK_METHODS
from train import steps, train
from train.config_validation import ConfigError, validate
from train.configs import base
from tests.step_checks import (assert_matches_objective_and_off_is_plain, sst_gradient_setup, sst_step_key,
                               sst_task_gradient)
from tests.test_train import task_data, tiny_config  # noqa: F401  (task_data is a fixture)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kl(p, q):
  return np.sum(p * np.log(p / q), axis=-1)


def test_consistency_terms_are_the_symmetric_divergences():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  p, q = _softmax(a), _softmax(b)
  np.testing.assert_allclose(losses.consistency("sst", a, b), _kl(p, q) + _kl(q, p), rtol=1e-5)

  x, y = rng.normal(size=6) * 3, rng.normal(size=6) * 3
  p, q = 1 / (1 + np.exp(-x)), 1 / (1 + np.exp(-y))
  bernoulli = lambda p, q: _kl(np.stack([p, 1 - p], -1), np.stack([q, 1 - q], -1))
  np.testing.assert_allclose(losses.consistency("para", x, y), bernoulli(p, q) + bernoulli(q, p), rtol=1e-5)
  np.testing.assert_allclose(losses.consistency("sts", x, y), (x - y) ** 2, rtol=1e-6)
  for task, z in (("sst", a), ("para", x), ("sts", x)):
    np.testing.assert_allclose(losses.consistency(task, z, z), 0.0, atol=1e-6)


def test_rdrop_loss_is_half_the_papers_objective_weighted_by_example():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
  batch = {"labels": np.array([0, 3, 4, 7]), "weights": np.array([1.0, 1.0, 0.5, 0.0])}  # 7: padding
  alpha = 2.0
  labels = np.array([0, 3, 4, 0])
  ce = lambda z: -np.log(_softmax(z)[np.arange(4), labels])
  p, q = _softmax(a), _softmax(b)
  per_example = ce(a) + ce(b) + alpha * (_kl(p, q) + _kl(q, p)) / 2
  w = batch["weights"]
  expected = np.sum(w * per_example / 2) / np.sum(w)
  loss, metrics = losses.rdrop_loss("sst", a, b, batch, alpha)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss_sum"], expected * np.sum(w), rtol=1e-5)
  _, first_pass = losses.task_loss("sst", a, batch)
  assert float(metrics["correct"]) == float(first_pass["correct"])
  assert float(metrics["count"]) == 2.5


def test_task_gradient_differentiates_two_dropout_passes(tiny_world, task_data, tmp_path):
  loaded, model, params, freeze, parallel, batch = sst_gradient_setup(tiny_world, task_data, tmp_path)
  alpha = 1.5
  rng = jax.random.key(5)

  def built(rdrop_alpha):
    return sst_task_gradient(model, params, freeze, parallel, batch, rng, rdrop_alpha=rdrop_alpha)

  key = sst_step_key(rng)

  @jax.jit
  def by_hand(trainable):
    variables = {"params": freeze.merge(trainable, params)}
    forward = lambda k: model.apply(variables, batch, deterministic=False, rngs={"dropout": k},
                                    method=TASK_METHODS["sst"])
    a, b = forward(key), forward(jax.random.fold_in(key, 1))
    weights = jnp.asarray(batch["weights"], jnp.float32)
    labels = jnp.where(weights > 0, jnp.asarray(batch["labels"], jnp.int32), 0)
    ce = lambda z: -jnp.take_along_axis(jax.nn.log_softmax(z), labels[:, None], axis=-1)[:, 0]
    log_p, log_q = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    sym_kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q) + jnp.exp(log_q) * (log_q - log_p), axis=-1)
    per_example = (ce(a) + ce(b) + alpha * sym_kl / 2) / 2
    return jnp.sum(weights * per_example) / jnp.sum(weights), (a, b)

  (expected_loss, (a, b)), expected_grads = jax.value_and_grad(by_hand, has_aux=True)(freeze.trainable(params))
  assert not np.allclose(a, b, atol=1e-3), "dropout did not make the two passes differ"
  assert_matches_objective_and_off_is_plain(built, {"sst": alpha}, expected_loss, expected_grads)


@pytest.mark.parametrize("field, value, expected", [
    ("rdrop_alpha.sst", -1.0, "a finite number >= 0"),
    ("rdrop_alpha.ssst", 1.0, "['ssst'] would be ignored"),
])
def test_bad_rdrop_alpha_is_named(field, value, expected):
  config = base.get_config()
  section, key = field.split(".")
  with config.unlocked():
    config[section][key] = value
  with pytest.raises(ConfigError) as error:
    validate(config)
  assert "rdrop_alpha" in str(error.value) and expected in str(error.value)


def test_the_trainer_builds_its_step_with_the_configs_rdrop_alpha(tiny_world, tmp_path, monkeypatch):
  seen = []
  real = steps.make_train_step

  def recording(*args, **kwargs):
    seen.append(kwargs.get("rdrop_alpha"))
    return real(*args, **kwargs)

  monkeypatch.setattr(steps, "make_train_step", recording)
  config = tiny_config(tiny_world, tmp_path, max_steps=2, **{"rdrop_alpha.sst": 1.0})
  scores = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert seen and all(alpha == {"sst": 1.0, "para": 0.0, "sts": 0.0} for alpha in seen)
  assert np.isfinite(scores["sst_accuracy"])
