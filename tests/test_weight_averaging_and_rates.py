"""Layer-wise learning rates (train/optim.py) and the moving average of the weights (train/weight_averaging.py)."""

import json
import os

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import bundle as bundle_lib
from train import optim, weight_averaging
from train.configs import base

PATHS = {  # path -> the multiplier with layer_decay=0.5, head multiplier 3 and 2 encoder layers
    "bert/embeddings/word_embeddings/embedding": 0.5 ** 3,
    "bert/embeddings/LayerNorm/scale": 0.5 ** 3,
    "bert/encoder/layer/0/attention/self/query/kernel": 0.5 ** 2,
    "bert/encoder/layer/1/output/dense/bias": 0.5 ** 1,
    "bert/pooler/dense/kernel": 0.5,
    "sentiment/classifier/kernel": 3.0,
    "similarity/dense/kernel": 3.0,
}


def _tree(seed: int):
  rng = np.random.default_rng(seed)
  return flax.traverse_util.unflatten_dict(
      {p: jnp.asarray(rng.normal(size=(3, 2)), jnp.float32) for p in PATHS}, sep="/")


def _optim_config(**fields) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(base.get_config().optim.to_dict())
  config.schedule, config.warmup_steps = "constant", 0
  config.update(fields)
  return config


def test_layer_decay_and_head_multiplier_scale_each_update_by_its_depth():
  params, grads = _tree(0), _tree(1)
  plain = optim.parameter_update(_optim_config(), optax.constant_schedule(1e-3))
  scaled = optim.parameter_update(_optim_config(layer_decay=0.5, head_learning_rate_multiplier=3.0),
                                  optax.constant_schedule(1e-3))
  plain_state, scaled_state = plain.init(params), scaled.init(params)
  for step in range(3):  # AdamW's moments and the weight decay must scale alike, step after step
    step_grads = jax.tree.map(lambda g: g * (1.0 + step), grads)
    plain_updates, plain_state = plain.update(step_grads, plain_state, params)
    scaled_updates, scaled_state = scaled.update(step_grads, scaled_state, params)
  plain_flat = flax.traverse_util.flatten_dict(plain_updates, sep="/")
  scaled_flat = flax.traverse_util.flatten_dict(scaled_updates, sep="/")
  for path, factor in PATHS.items():
    np.testing.assert_allclose(scaled_flat[path], factor * plain_flat[path], rtol=1e-6, err_msg=path)
  # the default chain has no scaling step at all: its state tree is the one older runs saved
  assert jax.tree.structure(plain_state) == jax.tree.structure(
      optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(optax.constant_schedule(1e-3), mask=optim.decay_mask)).init(params))


def test_the_average_follows_the_ramped_decay_and_leaves_the_updates_alone():
  decay = 0.9
  params = {"w": jnp.asarray([1.0, -2.0])}
  tx = weight_averaging.params_ema(decay)
  state = tx.init(params)
  assert state.params_ema["w"] is not params["w"]  # its own buffer: the state is donated
  expected = np.asarray(params["w"], np.float64)
  current = params
  for t in range(25):
    updates = {"w": jnp.asarray([0.1 * (t + 1), -0.05])}
    out, state = jax.jit(tx.update)(updates, state, current)
    assert np.array_equal(out["w"], updates["w"])
    current = optax.apply_updates(current, updates)
    d = min(decay, (1 + t) / (10 + t))
    expected = d * expected + (1 - d) * np.asarray(current["w"], np.float64)
  np.testing.assert_allclose(state.params_ema["w"], expected, rtol=1e-5)
  assert int(state.count) == 25
  assert weight_averaging.effective_decay(decay, 0) == pytest.approx(0.1)  # step 0 keeps 90% of the new weights


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_an_average_decay_outside_0_1_is_refused(value):
  with pytest.raises(ValueError, match=rf"optim.ema_decay={value}"):
    weight_averaging.params_ema(value)


def test_a_run_with_an_average_trains_the_same_weights_and_evaluates_and_exports_the_average(tiny_world, tmp_path):
  from tests.test_train import _final_params, tiny_config
  from train import train

  def run(name, **overrides):
    config = tiny_config(tiny_world, tmp_path, num_epochs=1, max_steps=6, **overrides)
    scores = train.train_and_evaluate(config, str(tmp_path / name))
    return scores, _final_params(str(tmp_path / name))[1]

  plain_scores, plain = run("plain")
  averaged_scores, raw = run("ema", **{"optim.ema_decay": 0.5})
  # Training never reads the average: the raw weights are the plain run's, bit for bit.
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), plain, raw))

  import orbax.checkpoint as ocp
  manager_dir = tmp_path / "ema" / "checkpoints" / "main"
  with ocp.CheckpointManager(manager_dir, item_names=("state", "progress")) as manager:
    state = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  averaged = {}  # the checkpoint's moving average, by param path

  def collect(path, value):
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    if "params_ema" in keys:
      averaged["/".join(keys[keys.index("params_ema") + 1:])] = np.asarray(value)
  jax.tree_util.tree_map_with_path(collect, state["opt_state"])
  raw_flat = flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, raw), sep="/")
  assert set(averaged) == set(raw_flat), "the checkpoint holds no moving average of every weight"

  # The model the run exports (and scored on dev) is the average, not the raw weights.
  exported = flax.traverse_util.flatten_dict(bundle_lib.read_bundle(tmp_path / "ema" / "model").params, sep="/")
  for path, value in averaged.items():
    np.testing.assert_array_equal(exported[path], value, err_msg=path)
  assert any(not np.array_equal(averaged[p], raw_flat[p]) for p in raw_flat)
  # A workdir read from its checkpoints alone (no bundle) gives the average too.
  from train import trained_run
  from_checkpoints = flax.traverse_util.flatten_dict(trained_run.restore_best_params(manager_dir), sep="/")
  for path, value in averaged.items():
    np.testing.assert_array_equal(from_checkpoints[path], value, err_msg=path)
  assert averaged_scores != plain_scores  # the dev scores are the averaged model's
  results = json.loads((tmp_path / "ema" / "results.json").read_text())
  assert results["config"]["optim"]["ema_decay"] == 0.5
