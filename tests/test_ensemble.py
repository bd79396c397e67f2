"""`python -m train.ensemble`: the average of several runs, scored on dev, written in the course's format."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.test_train import REPO_ROOT, tiny_config
from train import ensemble, train


def test_combine_averages_probabilities_not_votes():
  # Two members sure of class 0 by a little, one sure of class 4 by a lot: the vote says 0, the
  # mean probability says 4.
  sst = [np.log([[0.40, 0.15, 0.15, 0.15, 0.15]]), np.log([[0.40, 0.15, 0.15, 0.15, 0.15]]),
         np.log([[0.01, 0.01, 0.01, 0.01, 0.96]])]
  combined = ensemble.combine("sst", sst)
  np.testing.assert_allclose(np.exp(combined), [[0.27, 0.1033333, 0.1033333, 0.1033333, 0.42]], rtol=1e-5)
  assert int(np.argmax(combined)) == 4
  para = [np.array([0.5, -3.0]), np.array([0.5, -3.0]), np.array([-4.0, 9.0])]
  mean_probability = np.mean(1 / (1 + np.exp(-np.stack(para))), axis=0)
  np.testing.assert_allclose(1 / (1 + np.exp(-ensemble.combine("para", para))), mean_probability, rtol=1e-5)
  np.testing.assert_allclose(ensemble.combine("sts", [np.array([1.0, 6.0]), np.array([2.0, 5.5])]), [1.5, 5.75])


@pytest.fixture(scope="module")
def two_runs(tiny_world, tmp_path_factory):
  root = tmp_path_factory.mktemp("ensemble")
  workdirs = []
  for seed in (0, 1):
    workdir = root / f"seed{seed}"
    train.train_and_evaluate(tiny_config(tiny_world, root, seed=seed, num_epochs=1), str(workdir))
    workdirs.append(workdir)
  return workdirs


def _ids(path):
  with open(path, newline="") as f:
    return [row[0].strip() for row in csv.reader(f)][1:]


def test_members_score_what_their_runs_reported_and_the_ensemble_scores_the_average(two_runs, tmp_path):
  out = tmp_path / "out"
  results = ensemble.ensemble([str(w) for w in two_runs], out)
  for workdir, scores in zip(two_runs, results["member_scores"]):
    reported = json.loads((workdir / "results.json").read_text())["scores"]
    for key, value in reported.items():
      assert scores[key] == pytest.approx(value, abs=1e-6), (workdir, key)
  # The ensemble's own scores are those of the combined outputs, recomputed here from the members.
  from train import evaluation
  members = [ensemble._member(str(w), None) for w in two_runs]
  data = members[0][3]
  for task, metric in (("sst", "sst_accuracy"), ("para", "para_accuracy"), ("sts", "sts_pearson")):
    outputs = [evaluator.outputs(params, task, "validation") for _, evaluator, params, _ in members]
    predictions = evaluation.predictions_of(task, ensemble.combine(task, outputs))
    from train import metrics
    assert results["scores"][metric] == pytest.approx(
        metrics.task_score(task, predictions, data.labels(task, "validation")), abs=1e-9)
  # Every dev and test id of the runs' own files, once, in the same order.
  for task in ("sst", "para", "sts"):
    for split in ("dev", "test"):
      assert _ids(out / "predictions" / f"{task}-{split}-output.csv") == _ids(
          two_runs[0] / "predictions" / f"{task}-{split}-output.csv")
  assert json.loads((out / "results.json").read_text())["members"] == [str(w) for w in two_runs]


def test_the_cli_needs_two_members_and_says_so(two_runs, tmp_path):
  process = subprocess.run([sys.executable, "-m", "train.ensemble", f"--models={two_runs[0]}",
                            f"--out={tmp_path / 'out'}"], cwd=REPO_ROOT, capture_output=True, text=True)
  assert process.returncode != 0
  assert "lists 1 model(s); an ensemble needs at least 2" in process.stderr
