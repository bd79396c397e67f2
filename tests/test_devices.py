"""The train step on whatever devices JAX's default backend has: parallel modes and bfloat16.

`bench/device_check.sh` runs this module on the accelerator it finds (one GPU,
eight, a TPU host) as well as on the 8 simulated CPU devices of the suite;
nothing here assumes a device count or a platform. Float32 comparisons run
with full float32 matmuls (`jax.default_matmul_precision("highest")`), since
a GPU's default float32 dot may use TF32 and a TPU's bfloat16 passes.
"""

import jax
import numpy as np
import pytest

from tests.test_train import _flat, _run_steps, task_data, tiny_config  # noqa: F401  (task_data: a fixture)


def _close(a: dict, b: dict, atol: float, context: str) -> None:
  for key, value in a.items():
    np.testing.assert_allclose(b[key], value, atol=atol, err_msg=f"{context}: {key}")


@pytest.mark.parametrize("use_pcgrad", [False, True], ids=["summed", "pcgrad"])
def test_parallel_modes_over_the_local_devices_match_one_device(tiny_world, task_data, tmp_path, use_pcgrad):
  devices = jax.local_devices()
  config = tiny_config(tiny_world, tmp_path, **{"pcgrad.enabled": use_pcgrad})
  atol = 1e-5 if devices[0].platform == "cpu" else 1e-4  # another device's reduction order
  with jax.default_matmul_precision("highest"):
    before, single, _ = _run_steps(config, "jit", 1, *task_data)
    for mode in ("jit", "pmap"):
      _, parallel, metrics = _run_steps(config, mode, len(devices), *task_data)
      _close(_flat(single), _flat(parallel), atol, f"{mode} over {len(devices)} {devices[0].platform} devices")
      assert all(np.isfinite(float(np.asarray(loss))) for loss in metrics["loss"].values())
      if use_pcgrad:
        assert np.asarray(metrics["pcgrad"]["cosine"]).shape[-2:] == (3, 3)
  # The comparison is of parameters that trained (mean pooling leaves BERT's pooler idle).
  moved = [k for k, v in _flat(before).items() if not np.array_equal(v, _flat(single)[k])]
  assert len(moved) >= 0.9 * len(_flat(before)), sorted(set(_flat(before)) - set(moved))


def test_bfloat16_step_keeps_float32_params_and_follows_the_float32_step(tiny_world, task_data, tmp_path):
  with jax.default_matmul_precision("highest"):
    before, full, full_metrics = _run_steps(tiny_config(tiny_world, tmp_path), "jit", 1, *task_data, num_steps=2)
  _, half, half_metrics = _run_steps(tiny_config(tiny_world, tmp_path, dtype="bfloat16"), "jit", 1, *task_data,
                                     num_steps=2)
  before, full, half = _flat(before), _flat(full), _flat(half)
  for key, value in half.items():
    assert value.dtype == np.float32, key  # config.dtype is the compute dtype only
    assert np.all(np.isfinite(value)), key
  for task, loss in full_metrics["loss"].items():  # bfloat16 keeps ~3 significant digits
    assert float(half_metrics["loss"][task]) == pytest.approx(float(loss), rel=0.05, abs=0.02), task
  # Both steps move the parameters the same way: the cosine of their two updates, over all params.
  update = lambda params: np.concatenate([(params[k] - before[k]).ravel() for k in sorted(before)])
  full_update, half_update = update(full), update(half)
  cosine = full_update @ half_update / (np.linalg.norm(full_update) * np.linalg.norm(half_update))
  assert cosine > 0.9, cosine
