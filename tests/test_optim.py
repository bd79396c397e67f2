"""The optimizer built from config: masks, freezing, schedules, clipping, PCGrad wiring."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from train import steps
from train.configs import base
from train.optim import Freeze, create_learning_rate_schedule, create_optimizer, decay_mask, param_paths
from train.pcgrad import find_pcgrad_state, pcgrad_combine
from train.state import TrainState

KEY = jax.random.PRNGKey(0)

SHAPES = {
    "bert": {
        "embeddings": {"LayerNorm": {"scale": (8,), "bias": (8,)},
                       "word_embeddings": {"embedding": (16, 8)}},
        "encoder": {"layer": {"0": {"attention": {
            "self": {"query": {"kernel": (8, 8), "bias": (8,)}},
            "output": {"dense": {"kernel": (8, 8), "bias": (8,)},
                       "LayerNorm": {"scale": (8,), "bias": (8,)}}}}}},
    },
    "sentiment": {"dense": {"kernel": (8, 5), "bias": (5,)}},
}
NO_DECAY = {"bert/embeddings/LayerNorm/scale", "bert/embeddings/LayerNorm/bias",
            "bert/encoder/layer/0/attention/self/query/bias",
            "bert/encoder/layer/0/attention/output/dense/bias",
            "bert/encoder/layer/0/attention/output/LayerNorm/scale",
            "bert/encoder/layer/0/attention/output/LayerNorm/bias", "sentiment/dense/bias"}


def random_tree(seed, leading=()):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=leading + s), jnp.float32), SHAPES,
                      is_leaf=lambda x: isinstance(x, tuple))


def flat_paths(tree):
  return dict(zip(jax.tree.leaves(param_paths(tree)), jax.tree.leaves(tree)))


def make_config(**optim_overrides):
  config = ml_collections.ConfigDict()
  config.optim = base.get_config().optim
  config.optim.update(optim_overrides)
  config.pcgrad = base.get_config().pcgrad
  return config


def test_param_paths_are_slash_joined():
  paths = jax.tree.leaves(param_paths(random_tree(0)))
  assert "bert/encoder/layer/0/attention/self/query/kernel" in paths
  assert "sentiment/dense/bias" in paths
  assert len(paths) == 11


def test_decay_mask_skips_layer_norm_and_biases():
  mask = flat_paths(decay_mask(random_tree(0)))
  assert {path for path, decays in mask.items() if not decays} == NO_DECAY


def test_freeze_from_regexes():
  params = random_tree(0)
  encoder_frozen = Freeze.from_regexes(params, ("^bert/",))
  assert all((path in encoder_frozen.frozen_paths) == path.startswith("bert/") for path in flat_paths(params))
  words_frozen = Freeze.from_regexes(params, ("word_embeddings",))
  assert sorted(words_frozen.frozen_paths) == ["bert/embeddings/word_embeddings/embedding"]
  assert Freeze.from_regexes(params, "word_embeddings") == words_frozen
  with pytest.raises(ValueError, match=r"'\^bret/' matches no parameter"):
    Freeze.from_regexes(params, ("^bret/",))
  with pytest.raises(ValueError, match="not a valid regex"):
    Freeze.from_regexes(params, ("(",))


def test_freeze_splits_off_the_trainable_leaves_and_merges_them_back():
  params, other = random_tree(0), random_tree(1)
  freeze = Freeze.from_regexes(params, ("word_embeddings",))
  trainable = freeze.trainable(other)
  assert set(flat_paths(trainable)) == set(flat_paths(params)) - freeze.frozen_paths
  merged = flat_paths(freeze.merge(trainable, params))
  assert set(merged) == set(flat_paths(params))
  for path, value in merged.items():
    np.testing.assert_array_equal(value, flat_paths(params if path in freeze.frozen_paths else other)[path])
  assert jax.tree.structure(freeze.merge(trainable, params)) == jax.tree.structure(params)
  assert Freeze().trainable(params) is params


def test_weight_decay_moves_only_decayed_params():
  # Zero gradients: Adam's step is 0 / (0 + eps) = 0, so only decoupled weight
  # decay (-lr * wd * p) can move a parameter.
  params = random_tree(1)
  tx = create_optimizer(make_config(schedule="constant", warmup_steps=0, learning_rate=0.1,
                                    weight_decay=0.5), total_steps=10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  for path, update in flat_paths(updates).items():
    if path in NO_DECAY:
      np.testing.assert_array_equal(update, 0, err_msg=path)
    else:
      np.testing.assert_allclose(update, -0.1 * 0.5 * flat_paths(params)[path], rtol=1e-6,
                                 err_msg=path)


def test_frozen_params_never_move_and_hold_no_adam_state():
  # Through the trainer's apply (train/steps.py), which is where Freeze keeps them out.
  params = random_tree(2)
  freeze = Freeze.from_regexes(params, ("^bert/",))
  tx = create_optimizer(make_config(freeze=("^bert/",), learning_rate=1e-2, warmup_steps=0),
                        total_steps=10)
  apply = jax.jit(steps.make_apply_gradients(tx, task_order=("sst",), freeze=freeze, per_task_gradients=False))
  state = TrainState.create(jax.tree.map(jnp.copy, params), tx, freeze)
  for i in range(3):
    state, _ = apply(state, {"sst": freeze.trainable(random_tree(10 + i))}, {"sst": jnp.float32(1.0)}, KEY)
  before, after = flat_paths(params), flat_paths(state.params)
  assert set(after) == set(before)
  for path in before:
    if path.startswith("bert/"):
      np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    else:
      assert not np.allclose(after[path], before[path]), path

  for moment in ("mu", "nu"):
    tree = optax.tree_utils.tree_get(state.opt_state, moment)
    assert sorted(jax.tree.leaves(param_paths(tree))) == [
        "sentiment/dense/bias", "sentiment/dense/kernel"]


@pytest.mark.parametrize("schedule,mid_value", [
    ("warmup_linear", 0.5 * (1.0 + 0.1)),
    ("warmup_cosine", 0.5 * (1.0 + 0.1)),  # cos(pi/2) = 0: halfway between peak and end
    ("constant", 1.0),
])
def test_schedule_values_at_boundaries(schedule, mid_value):
  # total 110, warmup 10% = 11 steps, peak 1.0, end 0.1; decay midpoint at 11 + 99/2.
  config = make_config(schedule=schedule, learning_rate=1.0, end_learning_rate_fraction=0.1)
  lr = create_learning_rate_schedule(config.optim, total_steps=110)
  end = 1.0 if schedule == "constant" else 0.1
  np.testing.assert_allclose(lr(0), 0.0, atol=1e-7)
  np.testing.assert_allclose(lr(5), 5 / 11, rtol=1e-6)
  np.testing.assert_allclose(lr(11), 1.0, rtol=1e-6)
  np.testing.assert_allclose(lr(11 + 99 / 2), mid_value, rtol=1e-5)
  np.testing.assert_allclose(lr(110), end, rtol=1e-5)
  np.testing.assert_allclose(lr(500), end, rtol=1e-5)


def test_schedule_explicit_warmup_steps_and_errors():
  lr = create_learning_rate_schedule(make_config(warmup_steps=0, learning_rate=2.0).optim, 100)
  np.testing.assert_allclose(lr(0), 2.0)
  np.testing.assert_allclose(lr(50), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="optim.schedule='step'"):
    create_learning_rate_schedule(make_config(schedule="step").optim, 100)
  with pytest.raises(ValueError, match="exceeds total_steps"):
    create_learning_rate_schedule(make_config(warmup_steps=200).optim, 100)


def _adam_first_moment_norm(clip_norm, freeze=()):
  # After one step Adam's mu = (1 - b1) * (clipped) gradient, b1 = 0.9.
  params = random_tree(3)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 10.0), params)
  if freeze:  # trainable (head) grads of norm 0.5, huge frozen encoder grads
    grads["sentiment"] = jax.tree.map(lambda p: jnp.full_like(p, 0.5 / np.sqrt(45)),
                                      grads["sentiment"])
  trainable = Freeze.from_regexes(params, freeze).trainable  # what the trainer hands the optimizer
  tx = create_optimizer(make_config(clip_norm=clip_norm, freeze=freeze), total_steps=10)
  _, state = tx.update(trainable(grads), tx.init(trainable(params)), trainable(params))
  return float(optax.tree.norm(optax.tree_utils.tree_get(state, "mu")))


def test_clip_norm_bounds_the_gradient():
  np.testing.assert_allclose(_adam_first_moment_norm(1.0), 0.1 * 1.0, rtol=1e-5)
  unclipped = 10.0 * np.sqrt(sum(np.prod(s) for s in jax.tree.leaves(
      SHAPES, is_leaf=lambda x: isinstance(x, tuple))))
  np.testing.assert_allclose(_adam_first_moment_norm(0.0), 0.1 * unclipped, rtol=1e-5)


def test_clip_norm_ignores_frozen_gradients():
  np.testing.assert_allclose(_adam_first_moment_norm(1.0, freeze=("^bert/",)), 0.1 * 0.5, rtol=1e-5)


def test_pcgrad_runs_first_on_stacked_task_grads():
  params = random_tree(4)
  stacked = random_tree(5, leading=(3,))
  config = make_config(freeze=("word_embeddings",), learning_rate=1e-2, warmup_steps=0)
  config.pcgrad.enabled = True
  config.pcgrad.tasks = ("para", "sts")
  freeze = Freeze.from_regexes(params, config.optim.freeze)
  trainable = freeze.trainable  # the trainer hands the optimizer the trainable leaves alone
  tx = create_optimizer(config, total_steps=10)
  step_key = jax.random.fold_in(KEY, 7)
  updates, state = jax.jit(lambda g, s, p, k: tx.update(g, s, p, rng=k))(
      trainable(stacked), tx.init(trainable(params)), trainable(params), step_key)

  # Reference: frozen grads zeroed, surgery on tasks (1, 2), then the plain optimizer.
  no_words = lambda tree: {**tree, "bert": {**tree["bert"], "embeddings": {
      **tree["bert"]["embeddings"],
      "word_embeddings": jax.tree.map(jnp.zeros_like, tree["bert"]["embeddings"]["word_embeddings"])}}}
  combined, diagnostics = pcgrad_combine(no_words(stacked), step_key, pcgrad_tasks=(1, 2))
  config.pcgrad.enabled = False
  plain = create_optimizer(config, total_steps=10)
  expected, _ = plain.update(trainable(combined), plain.init(trainable(params)), trainable(params))
  assert set(flat_paths(updates)) == set(flat_paths(expected)) == set(flat_paths(params)) - freeze.frozen_paths
  for path, value in flat_paths(expected).items():
    np.testing.assert_allclose(flat_paths(updates)[path], value, rtol=1e-5, atol=1e-7,
                               err_msg=path)
  np.testing.assert_allclose(find_pcgrad_state(state).cosine_similarity,
                             diagnostics.cosine_similarity, rtol=1e-6)
  # And the trainer's apply leaves the frozen table as it was.
  apply = jax.jit(steps.make_apply_gradients(tx, task_order=("sst", "para", "sts"), freeze=freeze,
                                             per_task_gradients=True))
  task_grads = {t: trainable(jax.tree.map(lambda g: g[i], stacked)) for i, t in enumerate(("sst", "para", "sts"))}
  after, _ = apply(TrainState.create(jax.tree.map(jnp.copy, params), tx, freeze), task_grads,
                   {t: jnp.float32(1.0) for t in task_grads}, step_key)
  np.testing.assert_array_equal(flat_paths(after.params)["bert/embeddings/word_embeddings/embedding"],
                                flat_paths(params)["bert/embeddings/word_embeddings/embedding"])


def test_disabled_pcgrad_accepts_rng_and_unknown_pcgrad_task_raises():
  params = random_tree(6)
  tx = create_optimizer(make_config(), total_steps=10)
  updates, state = tx.update(random_tree(7), tx.init(params), params, rng=KEY)
  assert find_pcgrad_state(state) is None
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  config = make_config()
  config.pcgrad.enabled = True
  config.pcgrad.tasks = ("qqp",)
  with pytest.raises(ValueError, match="'qqp'"):
    create_optimizer(config, total_steps=10)
