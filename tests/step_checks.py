"""Checks shared by the regulariser tests (R-Drop, SMART, multi-sample dropout) on the trainer's task gradient."""

import jax
import numpy as np
import optax

from train import optim, steps, train
from train.parallel import DataParallel
from tests.test_train import _flat, _initial_params, tiny_config


def sst_gradient_setup(world, task_data, tmp_path):
  """(loaded, model, params, freeze, parallel, an SST batch) for one task gradient on the tiny model.

  Head dropout 0.3, so that dropout passes differ; encoder layer 0 frozen, for a smaller compile.
  """
  loaded, data = task_data
  config = tiny_config(world, tmp_path, **{"model.head_dropout": 0.3})
  model = train.build_model(config, loaded.config)
  params = _initial_params(config, loaded, data)
  freeze = optim.Freeze.from_regexes(params, ("^bert/encoder/layer/0/",))
  batch = next(data.train_stream(schedule="round_robin", proportions="balanced", batch_size=24,
                                 num_epochs=1, seed=0, num_devices=1))["sst"]
  return loaded, model, params, freeze, DataParallel.create("jit", 1), batch


def sst_task_gradient(model, params, freeze, parallel, batch, rng, **step_options):
  """(flat gradient, loss) of the trainer's own SST task gradient, built with `make_train_step` options."""
  step = steps.make_train_step(model, optax.identity(), task_order=train.TASKS, parallel=parallel,
                               freeze=freeze, **step_options)
  grads, loss, _ = step.task_gradients["sst"](params, parallel.put_batch(batch), rng)
  return _flat(jax.device_get(grads)), float(loss)


def sst_step_key(rng):
  """The dropout key the step gives the SST task for step key `rng`."""
  return jax.random.fold_in(rng, train.TASKS.index("sst"))


def assert_matches_objective_and_off_is_plain(built, setting: dict, expected_loss, expected_grads) -> None:
  """`built(setting)` -> (flat gradient, loss) equals the hand-written objective; weight 0 is the plain step.

  `setting` is {task: weight}; the same task at 0 and no setting at all (None) must give
  the one-pass step bit for bit, and a loss other than the regularised one.
  """
  grads, loss = built(setting)
  np.testing.assert_allclose(loss, float(expected_loss), rtol=1e-5)
  expected = _flat(jax.device_get(expected_grads))
  assert grads.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_allclose(grads[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
  off, off_loss = built({task: 0.0 for task in setting})
  plain, plain_loss = built(None)
  assert off_loss == plain_loss and off_loss != loss
  assert all(np.array_equal(off[k], plain[k]) for k in plain), "weight 0 is not the plain step"
