"""Resuming a run: config checks, more epochs, metrics written once, one run per workdir.

The trainer tests share one finished one-epoch run (4 steps, checkpoints at 2 and
4) and work on copies of it. Removing its step-4 checkpoint gives a run that was
stopped after step 4 had been logged but before its checkpoint: a resume from
step 2 then trains steps 3 and 4 again.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import ml_collections
import numpy as np
import optax
import pytest

from tests.test_train import REPO_ROOT, tiny_config
from train import config_changes, optim, train
from train.configs import base
from train.metric_writer import read_metrics
from train.workdir_lock import WorkdirInUseError, WorkdirLock, lock_path


@pytest.fixture(scope="module")
def finished_run(tiny_world, tmp_path_factory):
  root = tmp_path_factory.mktemp("finished")
  workdir = root / "run"
  train.train_and_evaluate(tiny_config(tiny_world, root, num_epochs=1), str(workdir))
  return workdir


def _copy(run: pathlib.Path, tmp_path: pathlib.Path, *, drop_step: int | None = None) -> pathlib.Path:
  workdir = tmp_path / "run"
  shutil.copytree(run, workdir)
  if drop_step is not None:
    shutil.rmtree(workdir / "checkpoints" / "main" / str(drop_step))
  return workdir


def _train_steps(workdir: pathlib.Path) -> list[int]:
  return [r["step"] for r in read_metrics(str(workdir / "metrics.jsonl")) if r["kind"] == "train"]


# ---- config changes ----------------------------------------------------------------------------


def test_changed_config_is_refused_naming_each_field(tiny_world, finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path, drop_step=4)
  before = sorted(os.listdir(workdir / "checkpoints" / "main"))
  changed = tiny_config(tiny_world, tmp_path, num_epochs=1, **{
      "optim.learning_rate": 2e-3, "model.paraphrase_head": "cosine", "data.max_length": 40,
      "log_every_steps": 3})  # free: not reported
  with pytest.raises(config_changes.ConfigChangedError) as error:
    train.train_and_evaluate(changed, str(workdir))
  message = str(error.value)
  assert "checkpoint at step 2" in message and "3 field(s)" in message, message
  for line in ("optim.learning_rate: 0.001 -> 0.002", 'model.paraphrase_head: "diff" -> "cosine"',
               "data.max_length: 48 -> 40"):
    assert line in message, message
  assert "log_every_steps" not in message.split("Resuming")[0]
  assert "resume_with_changes='(\"data.max_length\", \"model.paraphrase_head\", \"optim.learning_rate\",)'" in message
  assert sorted(os.listdir(workdir / "checkpoints" / "main")) == before


def test_check_resume_rules():
  from train.configs import base
  saved = config_changes.config_as_json(base.get_config())
  defaults = config_changes.config_as_json(base.get_config())

  def check(**changes):
    config = base.get_config()
    for key, value in changes.items():
      *parents, leaf = key.split("__")
      node = config
      for p in parents:
        node = node[p]
      node[leaf] = value
    return config_changes.check_resume(saved, config, stage="main", step=7, where="here", defaults=defaults)

  assert check(log_every_steps=1, checkpoint_every_steps=5, eval_batch_size=7, compilation_cache_dir="/x") == {}
  epochs = base.get_config().num_epochs
  assert check(num_epochs=epochs + 2) == {"num_epochs": (epochs, epochs + 2)}
  with pytest.raises(config_changes.ConfigChangedError, match=r"num_epochs: 2 -> 1.*cannot be taken back"):
    check(num_epochs=1)
  for field, value in [("dtype", "bfloat16"), ("max_steps", 10), ("model__sentiment_pooling", "cls"),
                       ("loss_weights__sts", 2.0), ("optim__freeze", ("word_embeddings",)), ("seed", 1)]:
    with pytest.raises(config_changes.ConfigChangedError, match=field.replace("__", ".")):
      check(**{field: value})
  assert check(resume_with_changes=("seed",), seed=3) == {"seed": (0, 3)}
  with pytest.raises(config_changes.ConfigChangedError, match=r"\['optim.lr'\].*not config fields"):
    check(resume_with_changes=("optim.lr",))
  # NaN equals NaN; a field the saved config lacks counts as unchanged at its default only.
  nan_saved = dict(saved, loss_weights=dict(saved["loss_weights"], sst=float("nan")))
  config = base.get_config()
  config.loss_weights.sst = float("nan")
  assert config_changes.check_resume(nan_saved, config, stage="main", step=1, where="here") == {}
  older = {k: v for k, v in saved.items() if k != "max_steps"}
  assert config_changes.check_resume(older, base.get_config(), stage="main", step=1, where="here",
                                     defaults=defaults) == {}
  config.max_steps = 5
  config.loss_weights.sst = float("nan")
  with pytest.raises(config_changes.ConfigChangedError, match=r"max_steps: \(absent\) -> 5"):
    config_changes.check_resume(dict(older, loss_weights=nan_saved["loss_weights"]), config, stage="main",
                                step=1, where="here", defaults=defaults)


def _old_layout(config_json: dict) -> dict:
  """A config as checkpoints stored it before `schedule` became `task_schedule` and
  `frozen_stage.learning_rate` the section `frozen_stage.optim`."""
  saved = json.loads(json.dumps(config_json))
  saved["schedule"] = saved.pop("task_schedule")
  saved["frozen_stage"]["learning_rate"] = saved["frozen_stage"].pop("optim")["learning_rate"]
  return saved


def test_a_config_saved_under_the_old_field_names_compares_in_the_new_ones():
  defaults = config_changes.config_as_json(base.get_config())

  def check(saved_config, config):
    saved = _old_layout(config_changes.config_as_json(saved_config))
    return config_changes.check_resume(saved, config, stage="main", step=2, where="here", defaults=defaults)

  def with_weight_decay(frozen_enabled, frozen_weight_decay=0.01):
    config = base.get_config()
    config.optim.weight_decay = 0.1
    config.frozen_stage.enabled = frozen_enabled
    config.frozen_stage.optim.weight_decay = frozen_weight_decay
    return config

  assert check(base.get_config(), base.get_config()) == {}
  sequential = base.get_config()
  sequential.task_schedule = "sequential"
  with pytest.raises(config_changes.ConfigChangedError, match='task_schedule: "sequential" -> "round_robin"'):
    check(sequential, base.get_config())
  # An enabled frozen stage trained with the saved `optim` at its own rate; a disabled one never ran.
  assert check(with_weight_decay(True, 0.1), with_weight_decay(True, 0.1)) == {}
  with pytest.raises(config_changes.ConfigChangedError, match=r"frozen_stage.optim.weight_decay: 0.1 -> 0.01"):
    check(with_weight_decay(True, 0.1), with_weight_decay(True))
  assert check(with_weight_decay(False), with_weight_decay(False)) == {}


def test_a_workdir_written_under_the_old_field_names_resumes(tiny_world, finished_run, tmp_path, capsys):
  from train import checkpointing
  workdir = _copy(finished_run, tmp_path, drop_step=4)
  for progress_file in (workdir / "checkpoints" / "main").glob("*/progress/metadata"):
    progress = json.loads(progress_file.read_text())
    progress["config"] = _old_layout(progress["config"])
    progress[checkpointing.INTEGRITY_KEY]["progress_sha256"] = checkpointing._progress_digest(progress)
    progress_file.write_text(json.dumps(progress))
  capsys.readouterr()
  train.train_and_evaluate(tiny_config(tiny_world, tmp_path, num_epochs=1), str(workdir))
  assert "resumed from step 2 of 4" in capsys.readouterr().out
  assert _train_steps(workdir) == [1, 2, 3, 4]
  saved = json.loads((workdir / "checkpoints" / "main" / "4" / "progress" / "metadata").read_text())["config"]
  assert saved["task_schedule"] == "round_robin" and "schedule" not in saved  # stored in the new layout
  assert json.loads((workdir / "results.json").read_text())["config_history"] == {"main": []}  # no change


def _raw_state(step_dir: pathlib.Path):
  """(state as saved, progress) of one step, read without a target tree: dicts and lists, by name."""
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(step_dir.parent, item_names=("state", "progress")) as manager:
    restored = manager.restore(int(step_dir.name), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), progress=ocp.args.JsonRestore()))
  return restored.state, restored.progress


def _named_leaves(tree) -> dict:
  import jax
  from train.checkpointing import _key_name
  return {"/".join(_key_name(k) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_a_workdir_saved_with_the_old_optimizer_state_layout_resumes_to_the_same_run(
    tiny_world, finished_run, tmp_path, capsys):
  """Checkpoints from before optim.Freeze hold optax.partition's optimizer state; a resume converts it."""
  import jax
  from tests.test_state_layouts import old_optimizer
  from train.checkpointing import RunCheckpoints
  from train.state import TrainState
  workdir = _copy(finished_run, tmp_path, drop_step=4)
  config = tiny_config(tiny_world, tmp_path, num_epochs=1)
  main = workdir / "checkpoints" / "main"
  # Step 2 as the old code saved it: each array moved, by its name, into optax.partition's tree.
  saved, progress = _raw_state(main / "2")
  today = _named_leaves(saved["opt_state"])
  old_tx = old_optimizer(ml_collections.ConfigDict({"optim": config.optim, "pcgrad": config.pcgrad,
                                                    "conflicts": config.conflicts}))
  old_tree = old_tx.init(saved["params"])
  prefix = "inner_states/trainable/inner_state/"
  old_names = list(_named_leaves(old_tree))
  assert old_names and all(name.startswith(prefix) for name in old_names)
  assert sorted(name[len(prefix):] for name in old_names) == sorted(today)
  old_opt_state = jax.tree.unflatten(jax.tree.structure(old_tree), [today[name[len(prefix):]] for name in old_names])
  old_state = TrainState(step=saved["step"], params=saved["params"], opt_state=old_opt_state,
                         first_nonfinite=saved["first_nonfinite"])
  shutil.rmtree(main / "2")
  checkpoints = RunCheckpoints(str(main), async_save=False)
  checkpoints.save(2, old_state, progress)
  checkpoints.close()
  assert any(name.startswith("opt_state/" + prefix) for name in _named_leaves(_raw_state(main / "2")[0]))

  capsys.readouterr()
  train.train_and_evaluate(config, str(workdir))
  assert "resumed from step 2 of 4" in capsys.readouterr().out
  resumed, uninterrupted = _raw_state(main / "4")[0], _raw_state(finished_run / "checkpoints" / "main" / "4")[0]
  resumed, uninterrupted = _named_leaves(resumed), _named_leaves(uninterrupted)
  assert resumed.keys() == uninterrupted.keys()
  for name, value in uninterrupted.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)


# ---- more epochs -------------------------------------------------------------------------------


def test_raising_num_epochs_continues_a_finished_run(tiny_world, finished_run, tmp_path, capsys):
  workdir = _copy(finished_run, tmp_path)
  first_records = [r for r in read_metrics(str(workdir / "metrics.jsonl")) if r["kind"] != "final"]
  capsys.readouterr()
  train.train_and_evaluate(tiny_config(tiny_world, tmp_path, num_epochs=2), str(workdir))
  out = capsys.readouterr().out
  assert "continuing to step 8" in out and "resumed from step 4 of 8" in out, out[-2000:]
  assert max(int(p.name) for p in (workdir / "checkpoints" / "main").iterdir() if p.name.isdigit()) == 8
  records = read_metrics(str(workdir / "metrics.jsonl"))
  assert _train_steps(workdir) == list(range(1, 9))
  assert records[:len(first_records)] == first_records  # the first epoch's history is kept as it was
  assert [r["step"] for r in records if r["kind"] == "eval"] == [4, 8]
  results = json.loads((workdir / "results.json").read_text())
  assert results["config_history"] == {"main": [{"step": 4, "changes": {"num_epochs": [1, 2]}}]}
  with pytest.raises(config_changes.ConfigChangedError, match=r"num_epochs: 2 -> 1"):
    train.train_and_evaluate(tiny_config(tiny_world, tmp_path, num_epochs=1), str(workdir))


def test_segmented_schedule_restarts_the_configured_schedule_per_segment():
  config = ml_collections.ConfigDict(dict(base.get_config().optim.to_dict(), learning_rate=1.0,
                                          warmup_steps=-1, warmup_fraction=0.25))
  segmented = train.segmented_schedule(config, [8, 12])
  first, added = optim.create_learning_rate_schedule(config, 8), optim.create_learning_rate_schedule(config, 4)
  np.testing.assert_allclose([segmented(k) for k in range(8)], [first(k) for k in range(8)])
  np.testing.assert_allclose([segmented(8 + k) for k in range(4)], [added(k) for k in range(4)])
  assert float(segmented(8)) == 0.0 and float(segmented(9)) == 1.0  # warms up again over the added steps
  single = train.segmented_schedule(config, [8])
  assert [float(single(k)) for k in range(8)] == [float(first(k)) for k in range(8)]
  assert isinstance(optim.create_optimizer(ml_collections.ConfigDict({"optim": config}), 12,
                                           learning_rate_schedule=segmented), optax.GradientTransformation)


# ---- metrics.jsonl -----------------------------------------------------------------------------


def test_resumed_run_logs_each_step_once(tiny_world, finished_run, tmp_path, capsys):
  """Also: a change allowed with resume_with_changes continues the run and is recorded in results.json."""
  workdir = _copy(finished_run, tmp_path, drop_step=4)
  assert _train_steps(workdir) == [1, 2, 3, 4]
  capsys.readouterr()
  config = tiny_config(tiny_world, tmp_path, num_epochs=1, resume_with_changes=("optim.learning_rate",),
                       **{"optim.learning_rate": 2e-3, "checkpoint_every_steps": 3})
  train.train_and_evaluate(config, str(workdir))
  assert "dropped 4 metrics records" in capsys.readouterr().out  # train 3 and 4, eval 4, final
  records = read_metrics(str(workdir / "metrics.jsonl"))
  assert _train_steps(workdir) == [1, 2, 3, 4]
  assert [r["step"] for r in records if r["kind"] == "eval"] == [4]
  assert [r["kind"] for r in records].count("final") == 1
  original = [r for r in read_metrics(str(finished_run / "metrics.jsonl")) if r["kind"] == "train"]
  restarted = [r for r in records if r["kind"] == "train"]
  assert restarted[:2] == original[:2]  # kept as logged
  assert restarted[2]["loss_total"] == original[2]["loss_total"]  # step 3's loss: the params of step 2
  assert restarted[3]["loss_total"] != original[3]["loss_total"]  # step 3 updated them at the new rate
  results = json.loads((workdir / "results.json").read_text())
  assert results["config_history"] == {"main": [{"step": 2, "changes": {"optim.learning_rate": [1e-3, 2e-3]}}]}
  assert results["config"]["optim"]["learning_rate"] == 2e-3


# ---- one run per workdir -----------------------------------------------------------------------


def test_second_run_on_a_workdir_is_refused_naming_the_first(tiny_world, tmp_path):
  workdir = tmp_path / "run"
  with WorkdirLock(str(workdir)):
    holder = json.loads(pathlib.Path(lock_path(str(workdir))).read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(WorkdirInUseError, match=rf"pid {os.getpid()} on host {holder['host']}"):
      train.train_and_evaluate(tiny_config(tiny_world, tmp_path), str(workdir))
  assert not (workdir / "checkpoints").exists()  # refused before any work
  assert (workdir / "run.lock").exists()  # the file stays; only its flock counts
  with WorkdirLock(str(workdir)):  # released: free again
    pass


def test_lock_of_a_killed_run_is_free(tmp_path):
  workdir = tmp_path / "run"
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from train.workdir_lock import WorkdirLock; "
       f"WorkdirLock({str(workdir)!r}).acquire(); print('locked', flush=True); time.sleep(600)"],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirInUseError, match=rf"pid {holder.pid} "):
      WorkdirLock(str(workdir)).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with WorkdirLock(str(workdir)):
    pass
