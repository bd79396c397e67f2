"""Config validation: every bad field is reported at once, before any work, with its value and range."""

import glob
import importlib
import os
import pathlib
import subprocess
import sys

import pytest

from bert_jax import heads
from train import config_validation, train
from train.config_validation import ConfigError
from train.configs import base

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _with(**overrides):
  config = base.get_config()
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def _bad_fields(config):
  return {p.field: p for p in config_validation.problems(config)}


# The values an outside probe found to crash late or train without complaint, and what each must say.
PROBED = [
    ("num_epochs", 0, "an integer >= 1"),
    ("frozen_stage.epochs_per_task", 0, "an integer >= 1"),
    ("checkpoint_every_steps", 0, "an integer >= 1"),
    ("log_every_steps", 0, "an integer >= 1"),
    ("optim.learning_rate", -1.0, "a finite number > 0"),
    ("loss_weights.para", -0.5, "a finite number >= 0"),
    ("optim.warmup_fraction", 2.0, "a finite number >= 0 and <= 1"),
    ("dtype", "float16", "one of ['float32', 'bfloat16']"),
    ("data.data_root", "/no/such/data/root", "an existing directory"),
    ("model.paraphrase_head", "dif", "one of ['concat', 'cosine', 'diff'"),
    ("optim.schedule", "linear", "one of ['warmup_linear'"),
    ("num_epochs", True, "an integer"),  # a bool is not a count
    ("optim.eps", float("nan"), "a finite number > 0"),
    ("best_metric", "overall", "one of ['sst_accuracy', 'para_accuracy', 'sts_pearson', 'overall_mean', "
                               "'overall_cs224n']"),
    ("task_schedule", "random", "one of ['sequential', 'round_robin']"),
    ("frozen_stage.optim.learning_rate", 0.0, "a finite number > 0"),
    ("frozen_stage.optim.freeze", ("(",), "valid regular expressions"),
]


@pytest.mark.parametrize("field,value,expected", PROBED, ids=[f"{f}={v!r}" for f, v, _ in PROBED])
def test_a_bad_value_is_named_with_its_value_and_range(field, value, expected):
  problem = _bad_fields(_with(**{field: value}))[field]
  assert problem.value is value or problem.value == value
  assert problem.expected.startswith(expected), problem.expected
  assert f"config.{field}={value!r}" in str(problem)


def test_one_error_lists_every_bad_field():
  config = _with(**{field: value for field, value, _ in PROBED[:9]})
  with pytest.raises(ConfigError) as error:
    config_validation.validate(config)
  assert [p.field for p in error.value.problems] == sorted(
      (f for f, _, _ in PROBED[:9]), key=list(config_validation.RULES).index)
  assert str(error.value).splitlines()[0] == "9 bad config field(s):"


def test_train_and_evaluate_refuses_a_bad_config_before_any_work(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"config.num_epochs=0: expected an integer >= 1"):
    train.train_and_evaluate(_with(num_epochs=0, checkpoint="/no/such/checkpoint"), str(workdir))
  assert not workdir.exists()  # not even the workdir: nothing was loaded, prepared or compiled


def test_every_preset_is_valid():
  presets = sorted(glob.glob(str(REPO_ROOT / "train" / "configs" / "*.py")))
  for path in presets:
    name = os.path.basename(path)[:-3]
    if name == "__init__":
      continue
    config = importlib.import_module(f"train.configs.{name}").get_config()
    assert config_validation.problems(config) == [], name


def test_every_field_of_the_default_config_has_a_rule():
  unchecked = config_validation.unchecked_fields(base.get_config())
  assert not unchecked, (f"fields of train/configs/base.py without a rule: {unchecked}; add one line per "
                         f"field to RULES in train/config_validation.py")


def test_a_section_without_rules_is_not_an_error():
  config = base.get_config()
  config.brand_new_section = {"method": "something_new", "weights": {"a": 1}}
  assert config_validation.problems(config) == []
  assert config_validation.unchecked_fields(config) == ["brand_new_section.method", "brand_new_section.weights.a"]


def test_choices_come_from_the_registries(monkeypatch):
  assert "new_head" in _bad_fields(_with(**{"model.similarity_head": "new_head"})).get(
      "model.similarity_head").value
  monkeypatch.setitem(heads.PAIR_HEADS, "new_head", heads.PAIR_HEADS["diff"])
  assert "model.similarity_head" not in _bad_fields(_with(**{"model.similarity_head": "new_head"}))


def test_fields_that_must_agree():
  bad = _bad_fields(_with(**{"model.share_para_sts": True, "model.paraphrase_head": "diff",
                             "model.similarity_head": "cosine"}))
  assert "the same paraphrase_head and similarity_head" in bad["model.share_para_sts"].expected
  bad = _bad_fields(_with(**{"data.pack_lengths": (32, 64), "data.max_length": 128}))
  assert "a length >= data.max_length=128" in bad["data.pack_lengths"].expected
  config = base.get_config()
  config.loss_weights.sst, config.loss_weights.para, config.loss_weights.sts = 0.0, 0.0, 0.0
  assert "at least one task with a weight > 0" in _bad_fields(config)["loss_weights"].expected
  config = base.get_config()
  config.loss_weights.ssst = 1.0  # a typo would otherwise be ignored silently
  assert "['ssst'] would be ignored" in _bad_fields(config)["loss_weights"].expected


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  return subprocess.run([sys.executable, "-m", "train.main", *args, "--dry_run"], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def test_best_metric_is_a_declared_field_the_command_line_sets(tmp_path):
  assert base.get_config().best_metric == "overall_mean"
  chosen = _cli("--config.best_metric=overall_cs224n", f"--workdir={tmp_path}")
  assert chosen.returncode == 0, chosen.stderr[-3000:]
  assert "best_metric: overall_cs224n" in chosen.stdout
  bad = _cli("--config.best_metric=overall", f"--workdir={tmp_path}")
  assert bad.returncode == 1
  assert "config.best_metric='overall': expected one of ['sst_accuracy'" in bad.stderr, bad.stderr[-3000:]


def test_the_frozen_stage_optimizer_is_checked_like_the_main_one():
  frozen_fields = {f for f in config_validation.RULES if f.startswith("frozen_stage.optim.")}
  assert frozen_fields == {f"frozen_stage.{f}" for f in config_validation.RULES if f.startswith("optim.")}
