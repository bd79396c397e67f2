"""`pip install .` (not editable) gives working console scripts that use the installed files only.

Offline and fast: the test venv has no packages of its own beyond bert_jax; a .pth line
puts .venv's site-packages after its own, so jax & co. come from there, while bert_jax,
train and data_prep must come from the fresh install (a plain path line in a .pth file
does not run the .pth files of that directory, so .venv's editable hook for the checkout
stays off). The source is copied out of the checkout first, so the build leaves no build/
or egg-info in it, and every command runs from a directory outside the repository.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from tests.test_train import tiny_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "bert_jax", "data_prep", "train")


def _run(command, cwd, env, timeout=300):
  return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  root = tmp_path_factory.mktemp("install")
  source = root / "source"
  for name in SOURCES:
    if (REPO_ROOT / name).is_dir():
      shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
      source.mkdir(exist_ok=True)
      shutil.copy(REPO_ROOT / name, source / name)
  venv = root / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
  python = venv / "bin" / "python"
  site_packages = pathlib.Path(subprocess.run(
      [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True, capture_output=True, text=True).stdout.strip())
  (site_packages / "zz_base_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
  env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
  work = root / "elsewhere"
  work.mkdir()
  install = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                  "--no-build-isolation", "--ignore-installed", "--no-index", "-q", str(source)], work, env)
  assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
  return {"venv": venv, "python": python, "site_packages": site_packages, "env": env, "cwd": work}


def test_packages_come_from_the_install_not_the_checkout(installed):
  result = _run([str(installed["python"]), "-c",
                 "import bert_jax, data_prep, train.configs, train.main; "
                 "print(bert_jax.__file__); print(data_prep.__file__); print(train.configs.__file__)"],
                installed["cwd"], installed["env"])
  assert result.returncode == 0, result.stderr[-3000:]
  for line in result.stdout.split():
    assert pathlib.Path(line).is_relative_to(installed["site_packages"]), line
  def modules(root):  # every module of the three packages, presets (train/configs/) included
    return sorted(str(p.relative_to(root)) for name in ("bert_jax", "data_prep", "train")
                  for p in (root / name).rglob("*.py"))
  assert modules(installed["site_packages"]) == modules(REPO_ROOT)
  assert not (installed["site_packages"] / "tests").exists() and not (installed["site_packages"] / "bench").exists()


def test_train_script_help_and_a_preset_by_name(installed):
  script = str(installed["venv"] / "bin" / "bert-jax-train")
  help_result = _run([script, "--help"], installed["cwd"], installed["env"])
  assert help_result.stderr == ""  # (absl's exit status after --help depends on its version)
  assert all(flag in help_result.stdout for flag in ("--config: Training preset", "--workdir", "dry_run")), help_result.stdout
  dry = _run([script, "--config=cross", "--config.optim.learning_rate=3e-5", "--dry_run"],
             installed["cwd"], installed["env"])
  assert dry.returncode == 0, dry.stderr[-3000:]
  assert dry.stdout.startswith("workdir: workdirs/cross-optim.learning_rate=3e-05 (the default")
  assert f"config ({installed['site_packages'] / 'train' / 'configs' / 'cross.py'})" in dry.stdout
  assert "paraphrase_head: cross" in dry.stdout


def test_scripts_ignore_look_alike_modules_in_the_working_directory(installed):
  decoys = installed["cwd"].parent / "decoys"
  decoys.mkdir()
  for name in ("train.py", "data_prep.py", "bert_jax.py"):
    (decoys / name).write_text("raise SystemExit('a look-alike module was imported')\n")
  result = _run([str(installed["venv"] / "bin" / "bert-jax-train"), "--config=diff", "--dry_run"],
                decoys, installed["env"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("workdir: workdirs/diff (the default")


def test_a_foreign_data_prep_first_on_the_path_is_named(installed, tmp_path):
  (tmp_path / "data_prep").mkdir()
  (tmp_path / "data_prep" / "__init__.py").write_text("")
  env = dict(installed["env"], PYTHONPATH=str(tmp_path))
  result = _run([str(installed["venv"] / "bin" / "bert-jax-train"), "--dry_run"], installed["cwd"], env)
  assert result.returncode != 0
  assert f"finds {tmp_path / 'data_prep' / '__init__.py'}" in result.stderr
  assert "another package of that name comes first on sys.path" in result.stderr


def test_installed_predict_script_gives_the_library_s_predictions(installed, tiny_world, tmp_path):  # noqa: F811
  """A bundle of the tiny model (fresh heads: no training needed to check the plumbing) predicted on stdin."""
  import bert_jax  # pylint: disable=import-outside-toplevel
  from bert_jax import bundle as bundle_lib  # pylint: disable=import-outside-toplevel
  from train import train, trained_run  # pylint: disable=import-outside-toplevel
  config = tiny_config(tiny_world, tmp_path)
  trainer = train.Trainer(config, str(tmp_path / "run"))
  untrained = trained_run.bundle_of_run(trainer.model, trainer.initial_params(), trainer.pretrained.tokenizer,
                                        config, scores={}, data_description=trainer.data.description(),
                                        best_stage=None)
  model_dir = bundle_lib.save_bundle(untrained, tmp_path / "model")
  sentences = ["a quiet triumph .", "the movie is long ?"]
  result = subprocess.run([str(installed["venv"] / "bin" / "bert-jax-predict"), f"--model={model_dir}", "--task=sst",
                           "--format=jsonl"], input="\n".join(sentences) + "\n", cwd=installed["cwd"],
                          env=installed["env"], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert len(rows) == len(sentences)
  expected = bert_jax.load_model(model_dir).sst_probabilities(sentences)
  np.testing.assert_allclose([row["probabilities"] for row in rows], expected, atol=1e-5)


@pytest.mark.parametrize("script,module", [("bert-jax-predict", "predict"), ("bert-jax-export", "export"),
                                           ("bert-jax-ensemble", "ensemble")])
def test_predict_and_export_scripts_help(installed, script, module):
  if not (REPO_ROOT / "train" / f"{module}.py").exists():
    pytest.skip(f"train/{module}.py is not in this checkout yet")
  result = _run([str(installed["venv"] / "bin" / script), "--help"], installed["cwd"], installed["env"])
  assert result.stderr == "", result.stderr[-3000:]
  assert f"{script}:\n  --" in result.stdout, result.stdout  # its own flags, not only absl's
