"""Every preset builds, differs from the default only as its docstring says, and shows its command."""

import importlib
import pathlib

import pytest

from bert_jax import heads

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
  assert f"--config=train/configs/{name}.py" in module.__doc__ or name == "default"
  assert config.model.paraphrase_head in heads.PAIR_HEADS
  assert config.model.similarity_head in heads.PAIR_HEADS
  assert config.task_schedule in ("sequential", "round_robin")
  if config.pcgrad.enabled:
    assert config.task_schedule == "round_robin", "PCGrad needs every task's gradient in each step"
