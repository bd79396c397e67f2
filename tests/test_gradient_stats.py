"""Task-gradient cosines and norms (train/gradient_stats.py) against numpy on flattened gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import gradient_stats

TASKS = ("sst", "para", "sts")


def _gradients(seed: int, tasks=TASKS):
  rng = np.random.default_rng(seed)
  shapes = {"bert": {"kernel": (5, 4), "bias": (4,)}, "head": {"w": (3,)}}
  return {t: jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                          is_leaf=lambda x: isinstance(x, tuple)) for t in tasks}


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def test_cosines_and_norms_equal_numpy_on_the_flattened_gradients():
  grads = _gradients(0)
  grads["sts"] = jax.tree.map(lambda x: -2.0 * x, grads["sst"])  # exactly opposed to sst: cosine -1
  stats = jax.jit(lambda g: gradient_stats.task_gradient_stats(g, TASKS))(grads)
  flat = {t: _flat(grads[t]) for t in TASKS}
  for i, a in enumerate(TASKS):
    np.testing.assert_allclose(stats["norm"][i], np.linalg.norm(flat[a]), rtol=1e-6)
    for j, b in enumerate(TASKS):
      expected = flat[a] @ flat[b] / np.linalg.norm(flat[a]) / np.linalg.norm(flat[b])
      np.testing.assert_allclose(stats["cosine"][i, j], expected, rtol=1e-5, atol=1e-6)
  assert stats["cosine"][0, 2] == pytest.approx(-1.0, abs=1e-6)


def test_an_absent_task_is_nan_and_the_others_are_in_task_order():
  grads = _gradients(1, tasks=("sts", "sst"))  # dict order differs from the task order on purpose
  stats = gradient_stats.task_gradient_stats(grads, TASKS)
  assert np.isnan(stats["norm"][1]) and np.all(np.isnan(stats["cosine"][1])) and np.all(np.isnan(stats["cosine"][:, 1]))
  np.testing.assert_allclose(stats["norm"][2], np.linalg.norm(_flat(grads["sts"])), rtol=1e-6)
  cosine = _flat(grads["sst"]) @ _flat(grads["sts"]) / np.linalg.norm(_flat(grads["sst"])) / np.linalg.norm(
      _flat(grads["sts"]))
  np.testing.assert_allclose([stats["cosine"][0, 2], stats["cosine"][2, 0]], [cosine, cosine], rtol=1e-5)


def test_only_every_nth_step_is_measured():
  grads = _gradients(2)
  measure = jax.jit(lambda step, g: gradient_stats.every_n_steps(step, 3, g, TASKS))
  measured = [not np.all(np.isnan(measure(jnp.int32(step), grads)["norm"])) for step in range(7)]
  assert measured == [True, False, False, True, False, False, True]


def test_window_summary_averages_measured_steps_and_names_pairs():
  first = jax.device_get(gradient_stats.task_gradient_stats(_gradients(3), TASKS))
  second = jax.device_get(gradient_stats.task_gradient_stats(_gradients(4), TASKS))
  skipped = gradient_stats.no_stats(TASKS)
  summary = gradient_stats.summarize([first, skipped, second], TASKS)
  assert set(summary["cosine"]) == {"sst-para", "sst-sts", "para-sts"}
  assert summary["cosine"]["para-sts"] == pytest.approx((first["cosine"][1, 2] + second["cosine"][1, 2]) / 2, rel=1e-6)
  assert summary["norm"]["sst"] == pytest.approx((first["norm"][0] + second["norm"][0]) / 2, rel=1e-6)
  assert gradient_stats.summarize([skipped, skipped], TASKS) is None
  one_task = jax.device_get(gradient_stats.task_gradient_stats(_gradients(5, tasks=("para",)), TASKS))
  assert gradient_stats.summarize([one_task], TASKS) == {"cosine": {}, "norm": {"para": pytest.approx(
      float(one_task["norm"][1]))}}


def test_a_run_logs_cosines_norms_and_learning_rate_without_changing_what_it_trains(tiny_world, tmp_path):
  """Every 2nd step measured on the tiny config: same params as without, cosines logged, lr logged."""
  import json

  from tests.test_train import _final_params, tiny_config
  from train import optim, train

  def run(name, every):
    config = tiny_config(tiny_world, tmp_path, num_epochs=1, max_steps=4, gradient_stats_every_steps=every,
                         **{"optim.warmup_steps": 2})
    train.train_and_evaluate(config, str(tmp_path / name))
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return config, _final_params(str(tmp_path / name)), [r for r in records if r["kind"] == "train"]

  _, (_, params_off), records_off = run("off", 0)
  config, (_, params_on), records_on = run("on", 2)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params_off, params_on))
  assert not any(k.startswith("gradients/") for r in records_off for k in r)
  by_step = {r["step"]: r for r in records_on}  # log_every_steps=1: record n is after step n (0-based n - 1)
  measured = [s for s, r in by_step.items() if "gradients/cosine/sst-para" in r]
  assert measured == [1, 3]  # the steps with 0-based index 0 and 2
  for step in measured:
    record = by_step[step]
    for pair in ("sst-para", "sst-sts", "para-sts"):
      assert -1.0 <= record[f"gradients/cosine/{pair}"] <= 1.0
    assert all(record[f"gradients/norm/{t}"] > 0 for t in ("sst", "para", "sts"))
  schedule = optim.create_learning_rate_schedule(config.optim, 4)
  for step, record in by_step.items():
    assert record["learning_rate"] == pytest.approx(float(schedule(step - 1)), rel=1e-6)
  assert by_step[1]["learning_rate"] == 0.0 and by_step[3]["learning_rate"] > 0.0  # warmup from 0
