"""notebooks/quickstart.ipynb runs from top to bottom on the tiny config and tiny course files.

The notebook is executed as a student would run it (nbclient, a fresh Python kernel),
with its parameters set through the environment: the tiny checkpoint and CSVs of
tests/test_train.py, PCGrad on so that the gradient-conflict plot is drawn, and one
--config override so the run lands in a default workdir of its own. The checks read
the cells' outputs (scores table, warnings, images) and, independently of the
notebook, the files it left: the workdir's plots, and an export whose model bundle
holds the run's parameters (the notebook itself predicts with both).
"""

import json
import pathlib
import re

import nbformat
import numpy as np
from flax import traverse_util
from nbclient import NotebookClient

from bert_jax import bundle
from tests.test_train import _write_config_file, tiny_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "quickstart.ipynb"


def _outputs(notebook, output_type=None):
  for cell in notebook.cells:
    for output in cell.get("outputs", []):
      if output_type is None or output.output_type == output_type:
        yield output


def _text(notebook, stream_name):
  return "".join(o.text for o in _outputs(notebook, "stream") if o.name == stream_name)


def test_quickstart_notebook_trains_plots_predicts_and_exports(tiny_world, tmp_path, monkeypatch):  # noqa: F811
  config = tiny_config(tiny_world, tmp_path, num_epochs=1, max_steps=3, **{"pcgrad.enabled": True})
  config_file = _write_config_file(tmp_path / "tiny_config.py", config)
  run_dir = tmp_path / "student"
  run_dir.mkdir()
  monkeypatch.setenv("BERT_JAX_PRESET", str(config_file))
  monkeypatch.setenv("BERT_JAX_TRAIN_FLAGS", "--config.optim.learning_rate=0.002")
  monkeypatch.setenv("BERT_JAX_DATA", tiny_world["data_root"])
  monkeypatch.setenv("BERT_JAX_INSTALL", "auto")  # bert_jax is installed (setup.sh): nothing to install
  monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the kernel runs in run_dir, outside the checkout

  notebook = nbformat.read(NOTEBOOK, as_version=4)
  try:
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(run_dir)}}).execute()
  finally:
    nbformat.write(notebook, tmp_path / "executed.ipynb")  # what the student would have seen

  stdout, stderr = _text(notebook, "stdout"), _text(notebook, "stderr")
  assert "jax" in stdout and "devices: [CpuDevice(id=0)" in stdout
  assert "WARNING: JAX is running on the CPU" in stderr
  assert "bert_jax is already installed:" in stdout
  workdir = run_dir / "workdirs" / "base-optim.learning_rate=0.002"  # the tiny config is the base preset
  assert f"the run is in workdirs/{workdir.name}" in stdout
  scores = json.loads((workdir / "results.json").read_text())["scores"]
  for name, key in (("SST accuracy", "sst_accuracy"), ("Para accuracy", "para_accuracy"),
                    ("STS Pearson r", "sts_pearson")):
    assert re.search(rf"^{name} +{scores[key]:.4f}$", stdout, re.M), (name, scores[key])
  images = [o for o in _outputs(notebook, "display_data") if "image/png" in o.data]
  assert len(images) == 2, "training_curves.png and gradient_conflicts.png, shown inline"
  assert (workdir / "training_curves.png").stat().st_size > 0
  assert (workdir / "gradient_conflicts.png").stat().st_size > 0
  assert stdout.count("  A gorgeous, witty, seductive movie.") == 1
  assert stdout.count("P(paraphrase) ") == 2
  assert "same SST probabilities as the run's model: True" in stdout

  export_dir = run_dir / "exports" / workdir.name
  assert (export_dir / "config.json").is_file() and (export_dir / "model.safetensors").is_file()
  exported, trained = bundle.read_bundle(export_dir), bundle.read_bundle(workdir / "model")
  flat_exported, flat_trained = traverse_util.flatten_dict(exported.params), traverse_util.flatten_dict(trained.params)
  assert set(flat_exported) == set(flat_trained)
  for key, value in flat_trained.items():
    np.testing.assert_array_equal(flat_exported[key], value, err_msg="/".join(key))


def test_notebook_is_stored_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  assert not list(_outputs(notebook)), "clear the outputs before committing the notebook"
  assert any("parameters" in cell.metadata.get("tags", []) for cell in notebook.cells)
