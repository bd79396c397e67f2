"""Every preset builds and shows its command; the default is the base preset plus the SST recipe, nothing else."""

import importlib
import json
import pathlib

import pytest

from bert_jax import heads
from train.config_changes import flatten

PRESETS = sorted(p.stem for p in (pathlib.Path(__file__).resolve().parents[1] / "train" / "configs").glob("*.py")
                 if p.stem != "__init__")


def test_every_preset_the_issue_names_exists():
  assert set(PRESETS) >= {"default", "baseline_sequential", "round_robin", "round_robin_balanced",
                          "share_para_sts", "cosine", "diff", "diff_2dense", "cross", "pcgrad_diff",
                          "pcgrad_sts_only", "pcgrad_diff_extra_data", "frozen_stage"}


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_and_documents_its_command_line(name):
  module = importlib.import_module(f"train.configs.{name}")
  config = module.get_config()
  assert config.name == name
  assert f"--config=train/configs/{name}.py" in module.__doc__
  assert config.model.paraphrase_head in heads.PAIR_HEADS
  assert config.model.similarity_head in heads.PAIR_HEADS
  assert config.task_schedule in ("sequential", "round_robin")
  if config.pcgrad.enabled:
    assert config.task_schedule == "round_robin", "PCGrad needs every task's gradient in each step"


def test_the_default_is_the_base_preset_plus_the_sst_recipe():
  from train.configs import base, default

  def fields(config):
    return flatten(json.loads(json.dumps(config.to_dict(), default=str)))
  ours, theirs = fields(default.get_config()), fields(base.get_config())
  assert ours.keys() == theirs.keys()
  assert {k: (theirs[k], v) for k, v in ours.items() if v != theirs[k]} == {
      "name": ("base", "default"), "data.sst_fraction": (1.0, 2.0),
      "optim.head_learning_rate_multiplier": (1.0, 10.0), "optim.ema_decay": (0.0, 0.995),
      "model.sentiment_pooling": ("mean", "both")}
  # The frozen stage keeps its own optimizer: the recipe's head rate and average are the main stage's.
  assert default.get_config().frozen_stage.optim.to_dict() == base.get_config().frozen_stage.optim.to_dict()
