"""The CLI's default workdir (one per set of overrides), its resume report, and `--config=<preset name>`."""

import os
import pathlib
import subprocess
import sys

import pytest

from train import presets, workdirs
from train.configs import cross

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_no_overrides_is_the_preset_name():
  assert workdirs.default_workdir("cross", {}) == os.path.join("workdirs", "cross")
  assert workdirs.default_workdir("cross", {"name": "cross"}) == os.path.join("workdirs", "cross")


def test_different_overrides_get_different_readable_workdirs():
  first = workdirs.default_workdir("cross", {"optim.learning_rate": 3e-5})
  second = workdirs.default_workdir("cross", {"optim.learning_rate": 1e-5})
  assert first == os.path.join("workdirs", "cross-optim.learning_rate=3e-05")
  assert second == os.path.join("workdirs", "cross-optim.learning_rate=1e-05")
  assert first != workdirs.default_workdir("cross", {})


def test_overrides_order_does_not_matter():
  a = workdirs.default_workdir("default", {"num_epochs": 3, "optim.learning_rate": 3e-5})
  b = workdirs.default_workdir("default", {"optim.learning_rate": 3e-5, "num_epochs": 3})
  assert a == b == os.path.join("workdirs", "default-num_epochs=3+optim.learning_rate=3e-05")


def test_values_that_sanitise_alike_still_get_distinct_workdirs():
  paths = [workdirs.default_workdir("default", {"checkpoint": value})
           for value in ("/data/ckpt", "/data_ckpt", "_data_ckpt")]
  assert len(set(paths)) == 3
  for path in paths:
    leaf = os.path.basename(path)
    assert "/" not in leaf and " " not in leaf and leaf.startswith("default-checkpoint=")


def test_long_overrides_are_shortened_and_hashed():
  overrides = {f"data.field_{i}": "x" * 20 for i in range(10)}
  path = workdirs.default_workdir("default", overrides)
  assert len(os.path.basename(path)) <= len("default-") + 48 + 1 + 10
  changed = dict(overrides, **{"data.field_9": "y" * 20})
  assert workdirs.default_workdir("default", changed) != path


def test_resume_is_reported_with_its_reason(tmp_path):
  workdir = str(tmp_path / "run")
  config = cross.get_config()
  assert workdirs.describe_workdir(workdir, config, chosen_by_default=False, overrides={}) == [
      f"workdir: {workdir}"]
  os.makedirs(os.path.join(workdir, "checkpoints", "frozen_stage", "2.orbax-checkpoint-tmp-1"))  # unfinished save
  assert len(workdirs.describe_workdir(workdir, config, chosen_by_default=False, overrides={})) == 1
  os.makedirs(os.path.join(workdir, "checkpoints", "main", "4"))
  by_default = workdirs.describe_workdir(workdir, config, chosen_by_default=True,
                                         overrides={"optim.learning_rate": 3e-5})
  assert by_default == [
      f"workdir: {workdir} (the default for preset 'cross' with --config.optim.learning_rate=3e-05; "
      "--workdir picks another)",
      f"resuming: {workdir} holds checkpoints (main) of an earlier run, and it is the default workdir of "
      "this preset with these same overrides; pass a new --workdir to start afresh"]
  explicit = workdirs.describe_workdir(workdir, config, chosen_by_default=False, overrides={})
  assert "and --workdir names it" in explicit[1]


def test_preset_names_resolve_to_the_packaged_files(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # outside the repository
  cross_file = str(presets.CONFIG_DIR / "cross.py")
  assert presets.resolve_config_value("cross") == cross_file
  assert presets.resolve_config_value("train/configs/cross.py") == cross_file
  assert presets.resolve_config_value("cross:arg") == cross_file + ":arg"
  own = tmp_path / "cross"
  own.write_text("def get_config(): ...\n")
  assert presets.resolve_config_value("cross") == "cross"  # a file of that name comes first
  assert set(presets.preset_names()) >= {"default", "cross", "pcgrad_diff", "frozen_stage"}


def test_unknown_preset_names_the_value_and_the_presets(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match=r"--config=crosss: 'crosss' is neither a file .* the presets are: .*cross"):
    presets.resolve_config_value("crosss")
  with pytest.raises(ValueError, match="neither a file"):
    presets.resolve_config_value("configs/missing.py")


def test_argv_rewrites_only_the_config_value():
  argv = ["prog", "--config", "cross", "--config.optim.learning_rate=3e-5", "--workdir=w"]
  assert presets.resolve_config_argv(argv) == [
      "prog", "--config", str(presets.CONFIG_DIR / "cross.py"), "--config.optim.learning_rate=3e-5", "--workdir=w"]
  assert presets.resolve_config_argv(["prog", "--config=default"]) == [
      "prog", f"--config={presets.CONFIG_DIR / 'default.py'}"]
  assert presets.resolve_config_argv(["prog", "--", "--config=nope"]) == ["prog", "--", "--config=nope"]


def _dry_run(cwd, *args):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  result = subprocess.run([sys.executable, "-m", "train.main", *args, "--dry_run"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_cli_two_learning_rates_land_in_two_workdirs_outside_the_repo(tmp_path):
  first = _dry_run(tmp_path, "--config=cross", "--config.optim.learning_rate=3e-5")
  second = _dry_run(tmp_path, "--config=cross", "--config.optim.learning_rate=1e-5")
  assert first.splitlines()[0].startswith("workdir: workdirs/cross-optim.learning_rate=3e-05 (the default")
  assert second.splitlines()[0].startswith("workdir: workdirs/cross-optim.learning_rate=1e-05 (the default")
  assert "learning_rate: 3.0e-05" in first and "paraphrase_head: cross" in first


def test_cli_unknown_preset_fails_with_the_preset_list(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  result = subprocess.run([sys.executable, "-m", "train.main", "--config=crosss", "--dry_run"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert "'crosss' is neither a file" in result.stderr and "cross" in result.stderr.split("presets are:")[1]
