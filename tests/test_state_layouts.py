"""Checkpoints in the optimizer-state layout of the code before `optim.Freeze` restore, to the same values.

That code froze parameters inside the optimizer (`optax.partition` with
`set_to_zero`, and a `masked(set_to_zero)` before a conflict method) and gave it
gradients of every parameter. `old_optimizer` below is it, as it was; each test
trains two steps with it, saves, restores into today's state and then takes one
more step each way.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax.tasks import TASKS
from tests.test_optim import KEY, flat_paths, make_config, random_tree
from train import optim, state_layouts, steps
from train.checkpointing import CheckpointMismatchError, RunCheckpoints
from train.conflicts import registry
from train.state import TrainState


def old_optimizer(config, total_steps=10, task_names=TASKS):
  """`optim.create_optimizer` before `optim.Freeze`, verbatim but for the names it used."""
  optim_config = config.optim
  patterns = [re.compile(r) for r in optim_config.freeze]
  labels = lambda tree: jax.tree.map(
      lambda path: "frozen" if any(p.search(path) for p in patterns) else "trainable", optim.param_paths(tree))
  trainable_chain = []
  if optim_config.clip_norm > 0:
    trainable_chain.append(optax.clip_by_global_norm(float(optim_config.clip_norm)))
  trainable_chain.append(optax.adamw(
      optim.create_learning_rate_schedule(optim_config, total_steps),
      b1=float(optim_config.b1), b2=float(optim_config.b2), eps=float(optim_config.eps),
      weight_decay=float(optim_config.weight_decay), mask=optim.decay_mask))
  partitioned = optax.partition(
      {"trainable": optax.chain(*trainable_chain), "frozen": optax.set_to_zero()}, labels)
  method = registry.create_conflict_transform(config, task_names)
  if method is None:
    return partitioned
  surgery = [method]
  if optim_config.freeze:
    frozen_mask = lambda tree: jax.tree.map(lambda label: label == "frozen", labels(tree))
    surgery.insert(0, optax.masked(optax.set_to_zero(), frozen_mask))
  return optax.chain(*surgery, partitioned)


def _config(freeze, method):
  config = make_config(freeze=freeze, learning_rate=1e-2, warmup_steps=0)
  config.conflicts = registry.default_config()
  config.conflicts.method = method
  return config


def _gradients(seed, per_task):
  """Gradients of every parameter, as the old step made them: [T, ...] leaves for a conflict method."""
  if per_task:
    return {t: random_tree(seed + i) for i, t in enumerate(TASKS)}
  return {"sst": random_tree(seed)}


def _old_step(tx, state, grads, config):
  """The old apply: frozen gradients zeroed, stacked or summed, then the partitioned optimizer."""
  frozen = optim.Freeze.from_regexes(state.params, config.optim.freeze).frozen_paths
  zero_frozen = lambda tree: jax.tree.map(lambda path, g: jnp.zeros_like(g) if path in frozen else g,
                                          optim.param_paths(tree), tree)
  task_grads = [zero_frozen(grads[t]) for t in TASKS if t in grads]
  if optim.uses_per_task_gradients(config):
    combined = jax.tree.map(lambda *g: jnp.stack(g), *task_grads)
  else:
    combined = jax.tree.map(lambda *g: sum(g), *task_grads)
  updates, opt_state = tx.update(combined, state.opt_state, state.params, rng=KEY)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state)


CASES = [((), "sum"), (("^bert/",), "sum"), (("word_embeddings",), "pcgrad")]


@pytest.mark.parametrize("freeze,method", CASES, ids=["nothing_frozen", "encoder_frozen", "pcgrad_words_frozen"])
def test_old_layout_restores_to_the_same_values_and_trains_on_alike(tmp_path, freeze, method):
  config = _config(freeze, method)
  per_task = optim.uses_per_task_gradients(config)
  old_tx = old_optimizer(config)
  old = TrainState.create(random_tree(0), old_tx)
  old_step = jax.jit(lambda state, grads: _old_step(old_tx, state, grads, config))
  for i in range(2):
    old = old_step(old, _gradients(10 * (i + 1), per_task))
  saved = RunCheckpoints(str(tmp_path / "ckpt"), async_save=False)
  saved.save(2, old, {"note": "old layout"})
  saved.close()

  params_like = random_tree(7)  # other values: the restore must not read them
  today = optim.Freeze.from_regexes(params_like, config.optim.freeze)
  tx = optim.create_optimizer(config, 10)
  like = TrainState.create(params_like, tx, today)
  layouts = (state_layouts.partitioned_optimizer_state(config, today, task_names=TASKS),)
  checkpoints = RunCheckpoints(str(tmp_path / "ckpt"), async_save=False, older_layouts=layouts)
  restored, progress = checkpoints.restore(2, like)
  assert progress["note"] == "old layout"
  assert jax.tree.structure(restored) == jax.tree.structure(like)
  for path, value in flat_paths(old.params).items():
    np.testing.assert_array_equal(flat_paths(restored.params)[path], value, err_msg=path)
  # The moments by name and parameter path, not by leaf order: frozen parameters had none.
  for moment in ("mu", "nu"):
    old_moment, new_moment = (flat_paths(optax.tree_utils.tree_get(s.opt_state, moment)) for s in (old, restored))
    assert set(new_moment) == set(flat_paths(old.params)) - today.frozen_paths
    assert set(old_moment) == set(new_moment)
    for path, value in old_moment.items():
      np.testing.assert_array_equal(new_moment[path], value, err_msg=f"{moment} {path}")
  old_leaves, new_leaves = jax.tree.leaves(old.opt_state), jax.tree.leaves(restored.opt_state)
  assert len(old_leaves) == len(new_leaves)
  for a, b in zip(old_leaves, new_leaves):
    np.testing.assert_array_equal(b, a)

  # One more step each way: today's apply from the restored state takes the old code's step.
  grads = _gradients(30, per_task)
  old = old_step(old, grads)
  apply = jax.jit(steps.make_apply_gradients(tx, task_order=TASKS, freeze=today, per_task_gradients=per_task))
  new, _ = apply(restored, {t: today.trainable(g) for t, g in grads.items()},
                 {t: jnp.float32(1.0) for t in grads}, KEY)
  for path, value in flat_paths(old.params).items():
    np.testing.assert_array_equal(flat_paths(new.params)[path], value, err_msg=path)
  for a, b in zip(jax.tree.leaves(old.opt_state), jax.tree.leaves(new.opt_state)):
    np.testing.assert_array_equal(b, a)
  checkpoints.close()


def test_old_layout_of_another_freeze_is_refused(tmp_path):
  config = _config((), "sum")
  old = TrainState.create(random_tree(0), old_optimizer(config))
  saved = RunCheckpoints(str(tmp_path / "ckpt"), async_save=False)
  saved.save(1, old, {})
  saved.close()
  frozen_config = _config(("^bert/",), "sum")
  freeze = optim.Freeze.from_regexes(old.params, frozen_config.optim.freeze)
  tx = optim.create_optimizer(frozen_config, 10)
  layouts = (state_layouts.partitioned_optimizer_state(frozen_config, freeze, task_names=TASKS),)
  checkpoints = RunCheckpoints(str(tmp_path / "ckpt"), async_save=False, older_layouts=layouts)
  with pytest.raises(CheckpointMismatchError, match="different parameter tree"):
    checkpoints.restore(1, TrainState.create(random_tree(1), tx, freeze))
  checkpoints.close()
