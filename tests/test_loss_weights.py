"""`config.loss_weights` scales exactly its own task's gradient, through the trainer's step builder.

The encoder is frozen so the compiled gradients are the heads' only: the weight
multiplies the loss before differentiation, so what holds for the heads' leaves
holds for every leaf, at a fraction of the compile time.
"""

import jax
import numpy as np
import optax

from train import optim, steps, train
from train.parallel import DataParallel
from tests.test_train import _flat, _initial_params, task_data, tiny_config  # noqa: F401  (task_data is a fixture)


def _task_gradients(config, loaded, data, loss_weights):
  parallel = DataParallel.create("jit", 1)
  model = train.build_model(config, loaded.config)
  params = _initial_params(config, loaded, data)
  step = steps.make_train_step(model, optax.identity(), task_order=train.TASKS, parallel=parallel,
                               freeze=optim.Freeze.from_regexes(params, ("^bert/",)), loss_weights=loss_weights)
  batches = next(data.train_stream(schedule="round_robin", proportions="balanced", batch_size=24,
                                   num_epochs=1, seed=0, num_devices=1))
  rng = jax.random.key(3)
  out = {}
  for task in ("sst", "sts"):
    batch = batches[task]
    grads, loss, _ = step.task_gradients[task](params, parallel.put_batch(batch), rng)
    out[task] = (jax.device_get(grads), float(loss))
  return out


def test_loss_weight_scales_only_its_tasks_gradient(tiny_world, task_data, tmp_path):
  loaded, data = task_data
  config = tiny_config(tiny_world, tmp_path)
  plain = _task_gradients(config, loaded, data, {"sst": 1.0, "para": 1.0, "sts": 1.0})
  heavy = _task_gradients(config, loaded, data, {"sst": 1.0, "para": 1.0, "sts": 4.0})
  assert plain.keys() == {"sst", "sts"}
  for task in plain:
    (grads_plain, loss_plain), (grads_heavy, loss_heavy) = plain[task], heavy[task]
    assert loss_heavy == loss_plain, f"{task}: the reported loss stays unweighted"
    factor = 4.0 if task == "sts" else 1.0
    flat_plain, flat_heavy = _flat(grads_plain), _flat(grads_heavy)
    assert flat_plain.keys() == flat_heavy.keys()
    for key, value in flat_plain.items():
      np.testing.assert_allclose(flat_heavy[key], factor * value, rtol=1e-5, atol=1e-7, err_msg=f"{task} {key}")
    own_head = {"sst": "sentiment", "sts": "similarity"}[task]
    own = [k for k in flat_plain if k.startswith(f"['{own_head}")]
    assert own and all(np.any(flat_plain[k] != 0) for k in own), f"{task}: its head's gradient is zero"
