"""The trainer on a tiny checkpoint and tiny course-like CSVs written by the tests.

Covers: one step moves every trainable parameter; a frozen encoder stays put;
packed batches under jit and pmap over 8 devices give the params of single-device
training (unpacked: tests/test_devices.py); a non-finite loss stops the run naming
step and task; and the end-to-end outputs (scores, predictions, plots). Runs killed
mid-way and resumed: tests/test_kill_resume.py.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bert_jax import checkpoints as bert_checkpoints
from bert_jax import multitask
from bert_jax.tasks import TASKS
from train import metrics as metrics_lib
from train import optim, steps, train
from train.configs import base
from train.parallel import DataParallel
from train.state import TrainState

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(world, tmp_path, **overrides) -> ml_collections.ConfigDict:
  config = base.get_config()
  config.checkpoint = world["checkpoint"]
  config.data.data_root = world["data_root"]
  config.data.tfds_dir = str(world["root"] / "tfds")  # shared: prepared once per session
  config.data.max_length = 48
  config.data.num_buckets = 2
  config.model.head_dropout = 0.0
  config.model.paraphrase_head = "diff"
  config.model.similarity_head = "diff"
  config.batch_size = 24  # 8 per task in round-robin, divisible by 8 devices
  config.proportions = "balanced"
  config.eval_batch_size = 16
  config.num_epochs = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.compilation_cache_dir = str(world["jax_cache"])  # the session's one cache (conftest.py)
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 0  # warmup starts at lr 0: the first step would not move anything
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def build_step(config, parallel, params_like, data, *, freeze=()):
  """The trainer's own pieces, for tests that drive steps directly."""
  trainer_model = train.build_model(config, bert_checkpoints.load_hf_checkpoint(config.checkpoint).config)
  tx = optim.create_optimizer(config, 10, task_names=TASKS)
  frozen = optim.Freeze.from_regexes(params_like, freeze)
  step = steps.make_train_step(trainer_model, tx, task_order=TASKS, parallel=parallel,
                               freeze=frozen, per_task_gradients=config.pcgrad.enabled)
  return trainer_model, tx, frozen, step


@pytest.fixture(scope="module")
def task_data(tiny_world, tmp_path_factory):
  config = tiny_config(tiny_world, tmp_path_factory.mktemp("data"))
  loaded = bert_checkpoints.load_hf_checkpoint(config.checkpoint)
  from train import data as data_lib
  return loaded, data_lib.TaskData.create(config, loaded.tokenizer)


def _initial_params(config, loaded, data):
  model = train.build_model(config, loaded.config)
  # A copy: the train step donates the state, and with it these buffers.
  pretrained = jax.tree.map(jnp.copy, loaded.params)
  return multitask.init_params(model, jax.random.key(1), data.example_batches(), pretrained_bert=pretrained)


def _run_steps(config, mode, num_devices, loaded, data, num_steps=3, freeze=(), packed=False):
  parallel = DataParallel.create(mode, num_devices)
  params = _initial_params(config, loaded, data)
  before = jax.device_get(params)  # host copies: the device buffers are donated to the step
  _, tx, frozen, step = build_step(config, parallel, params, data, freeze=freeze)
  state = parallel.replicate(TrainState.create(params, tx, frozen))
  stream = data.train_stream(schedule=config.task_schedule, proportions=config.proportions,
                             batch_size=config.batch_size, num_epochs=1, seed=0, num_devices=8,
                             packing=data.packing_spec(num_devices=num_devices) if packed else None)
  for i in range(num_steps):
    batches = {t: parallel.put_batch(b) for t, b in next(stream).items()}
    state, metrics = step(state, batches, jax.random.fold_in(jax.random.key(0), i))
  return before, jax.device_get(state.params), metrics


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_one_step_changes_every_trainable_parameter(tiny_world, task_data, tmp_path):
  config = tiny_config(tiny_world, tmp_path, **{"model.sentiment_pooling": "cls",
                                                "model.pair_pooling": "cls"})
  before, after, _ = _run_steps(config, "jit", 1, *task_data, num_steps=1)
  unchanged = [k for k, v in _flat(before).items() if np.array_equal(v, _flat(after)[k])]
  assert not unchanged, f"parameters a step did not move: {unchanged}"


def test_frozen_encoder_is_bit_identical_after_steps(tiny_world, task_data, tmp_path):
  config = tiny_config(tiny_world, tmp_path, **{"optim.freeze": ("^bert/",)})
  before, after, _ = _run_steps(config, "jit", 1, *task_data, num_steps=3, freeze=("^bert/",))
  for key, value in _flat(before).items():
    if key.startswith("['bert']"):
      np.testing.assert_array_equal(value, _flat(after)[key], err_msg=key)
  heads_moved = [k for k in _flat(before) if not k.startswith("['bert']")
                 and not np.array_equal(_flat(before)[k], _flat(after)[k])]
  assert heads_moved


def test_packed_parallel_modes_match_single_device(tiny_world, task_data, tmp_path):
  # Each device's rows hold its own examples (one packing group per device). Unpacked, summed and
  # PCGrad: tests/test_devices.py, on the same 8 simulated devices here.
  assert jax.device_count() == 8, "conftest.py should give 8 simulated CPU devices"
  config = tiny_config(tiny_world, tmp_path)
  _, single, _ = _run_steps(config, "jit", 1, *task_data, packed=True)
  for mode in ("jit", "pmap"):
    _, parallel, _ = _run_steps(config, mode, 8, *task_data, packed=True)
    for key, value in _flat(single).items():
      np.testing.assert_allclose(_flat(parallel)[key], value, atol=1e-5, err_msg=f"{mode}: {key}")


def test_nonfinite_loss_stops_naming_step_and_task_and_keeps_last_checkpoint(tiny_world, tmp_path, monkeypatch):
  # The NaN loss weight below is the fault injected; config validation would refuse it before training.
  monkeypatch.setattr(train.config_validation, "validate", lambda config: None)
  workdir = str(tmp_path / "run")
  good = tiny_config(tiny_world, tmp_path, max_steps=4)
  train.train_and_evaluate(good, workdir)
  latest = sorted(os.listdir(os.path.join(workdir, "checkpoints", "main")))
  # A NaN loss weight poisons the paraphrase gradient of the first step after the resume.
  bad = tiny_config(tiny_world, tmp_path, max_steps=8, resume_with_changes=("max_steps", "loss_weights.para"),
                    **{"loss_weights.para": float("nan")})
  with pytest.raises(train.NonFiniteLossError, match=r"para .*step 4"):
    train.train_and_evaluate(bad, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "main"))) == latest


def _write_config_file(path: pathlib.Path, config: ml_collections.ConfigDict) -> pathlib.Path:
  path.write_text(
      "import ml_collections\n\n"
      f"def get_config():\n  return ml_collections.ConfigDict({config.to_dict()!r})\n")
  return path


def _final_params(workdir: str):
  manager_dir = os.path.join(workdir, "checkpoints", "main")
  latest = max(int(d) for d in os.listdir(manager_dir) if d.isdigit())
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(manager_dir, item_names=("state", "progress")) as manager:
    restored = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return latest, restored.state["params"]


def _train_subprocess(config_file, workdir):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  done = subprocess.run([sys.executable, "-m", "train.main", f"--config={config_file}", f"--workdir={workdir}"],
                        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
  assert done.returncode == 0, done.stdout.decode()[-3000:]


def test_end_to_end_outputs(tiny_world, tmp_path, capsys):
  workdir = tmp_path / "run"
  config = tiny_config(tiny_world, tmp_path, **{"model.paraphrase_head": "cross",
                                                "model.similarity_head": "cosine"})
  scores = train.train_and_evaluate(config, str(workdir))
  assert set(scores) >= {"sst_accuracy", "para_accuracy", "sts_pearson", "overall_mean", "overall_cs224n"}
  assert "dev scores" in capsys.readouterr().out
  results = json.loads((workdir / "results.json").read_text())
  assert results["data"]["quora_split"] == "dev_90_10"
  data_root = pathlib.Path(tiny_world["data_root"]) / "cs224n"
  for task, dev_file, test_file in [("sst", "ids-sst-dev.csv", "ids-sst-test-student.csv"),
                                    ("para", None, "quora-test-student.csv"),
                                    ("sts", "sts-dev.csv", "sts-test-student.csv")]:
    test_rows = metrics_lib.read_submission(workdir / "predictions" / f"{task}-test-output.csv")
    lines = (data_root / test_file).read_text().splitlines()
    id_column = lines[0].split("\t").index("id")
    expected_ids = [line.split("\t")[id_column] for line in lines[1:]]
    assert sorted(test_rows) == sorted(expected_ids)
    dev_rows = metrics_lib.read_submission(workdir / "predictions" / f"{task}-dev-output.csv")
    if dev_file:
      assert len(dev_rows) == len((data_root / dev_file).read_text().splitlines()) - 1
  for name in ("training_curves.png", "metrics.jsonl", "results.txt"):
    assert (workdir / name).stat().st_size > 0
  assert any((workdir / "tensorboard").iterdir())


def test_frozen_stage_trains_heads_only_and_keeps_the_better_stage(tiny_world, tmp_path):
  workdir = tmp_path / "run"
  config = tiny_config(tiny_world, tmp_path, num_epochs=1, **{
      "frozen_stage.enabled": True, "frozen_stage.epochs_per_task": 1,
      "frozen_stage.optim.learning_rate": 1e-3})
  train.train_and_evaluate(config, str(workdir))
  results = json.loads((workdir / "results.json").read_text())
  assert results["best_stage"] in ("main", "frozen_stage")
  import orbax.checkpoint as ocp
  def params_at(stage, pick):
    directory = workdir / "checkpoints" / stage
    with ocp.CheckpointManager(directory, item_names=("state", "progress")) as manager:
      step = pick(manager)
      return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state["params"]
  main_best = params_at("main", lambda m: m.best_step())
  frozen_last = params_at("frozen_stage", lambda m: m.latest_step())
  for key, value in _flat(main_best["bert"]).items():  # the encoder never moved in the frozen stage
    np.testing.assert_array_equal(_flat(frozen_last["bert"])[key], value, err_msg=key)
  assert any(not np.array_equal(_flat(main_best["sentiment"])[k], v)
             for k, v in _flat(frozen_last["sentiment"]).items())


def test_eval_every_epochs_evaluates_every_nth_epoch_and_at_the_end(tiny_world, tmp_path):
  from train.checkpointing import RunCheckpoints
  from train.metric_writer import read_metrics
  workdir = tmp_path / "run"
  config = tiny_config(tiny_world, tmp_path, num_epochs=3, eval_every_epochs=2, checkpoint_every_steps=100)
  train.train_and_evaluate(config, str(workdir))
  evals = [r for r in read_metrics(str(workdir / "metrics.jsonl")) if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [8, 12]  # epoch 2, and the last step (epoch 3); 4 steps an epoch
  checkpoints = RunCheckpoints(str(workdir / "checkpoints" / "main"), async_save=False)
  assert checkpoints.best_step() == max(evals, key=lambda r: r["dev/overall_mean"])["step"]
  checkpoints.close()


def test_the_trainer_does_not_import_torch_but_leaves_it_importable(tmp_path):
  # tensorboardX imports torch whenever it is installed (it is here, for the parity tests).
  code = ("import sys, glob\n"
          "import train.main, train.train\n"
          "from train.metric_writer import MetricWriter\n"
          f"writer = MetricWriter({str(tmp_path)!r}); writer.write(1, {{'loss': 0.5}}); writer.close()\n"
          "print('torch imported:', 'torch' in sys.modules)\n"
          f"print('event files:', len(glob.glob({str(tmp_path / 'tensorboard' / 'events.*')!r})))\n"
          "import torch; print('torch importable:', hasattr(torch, 'Tensor'))\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.splitlines() == ["torch imported: False", "event files: 1", "torch importable: True"], done.stdout
  assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == 0.5
