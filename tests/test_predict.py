"""`python -m train.predict`: course files and stdin in, submission files or JSON lines out.

One tiny run (module fixture) is the model. Evaluating its dev files must give
exactly the scores its results.json reports (the CLI batches as the run's own
evaluation did); a workdir without a bundle predicts the same from its best
Orbax checkpoint; bad input is reported by file and line; empty input gives an
empty output.
"""

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_prep.builders.cs224n_quora import validation_fold
from data_prep.errors import DataError
from tests.test_data_csv_rows import write_tsv
from tests.test_train import REPO_ROOT, tiny_config
from train import metrics as metrics_lib
from train import predict, train, trained_run

DEV_FILES = {"sst": "ids-sst-dev.csv", "para": "quora-dev.csv", "sts": "sts-dev.csv"}


@pytest.fixture(scope="module")
def run_workdir(tiny_world, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("predict") / "run"
  train.train_and_evaluate(tiny_config(tiny_world, workdir.parent), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def dev_files(tiny_world, tmp_path_factory):
  """The run's dev sets as course files; Quora's is the dev_90_10 validation part of quora-dev.csv."""
  source = pathlib.Path(tiny_world["data_root"]) / "cs224n"
  out = tmp_path_factory.mktemp("dev")
  files = {task: source / name for task, name in DEV_FILES.items()}
  lines = (source / "quora-dev.csv").read_text().splitlines()
  id_column = lines[0].split("\t").index("id")
  kept = [lines[0]] + [line for line in lines[1:] if validation_fold(line.split("\t")[id_column])]
  files["para"] = out / "quora-validation.csv"
  files["para"].write_text("\n".join(kept) + "\n")
  return files


def _cli(*args, stdin: str = "") -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=8")
  result = subprocess.run([sys.executable, "-m", "train.predict", *args], cwd=REPO_ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_evaluating_the_dev_files_reproduces_the_runs_scores_exactly(run_workdir, dev_files, task):
  reported = json.loads((run_workdir / "results.json").read_text())["scores"][metrics_lib.TASK_METRIC[task]]
  examples, labeled = predict.read_course_file(str(dev_files[task]), task)
  assert labeled
  result = predict.predict_examples(trained_run.load_trained(run_workdir), task, examples, labeled=True)
  assert result.score == reported  # exactly: same tokens, batches, packing and devices as the run
  expected = metrics_lib.read_submission(run_workdir / "predictions" / f"{task}-dev-output.csv")
  assert sorted(result.ids) == sorted(expected)


def test_course_file_to_submission_file_prints_the_metric(run_workdir, dev_files, tmp_path):
  output = tmp_path / "sts-dev-output.csv"
  result = _cli(f"--model={run_workdir}", "--task=sts", f"--input={dev_files['sts']}", f"--output={output}")
  reported = json.loads((run_workdir / "results.json").read_text())["scores"]["sts_pearson"]
  assert f"sts_pearson = {reported} on 4 labeled examples" in result.stdout
  assert "sentences/s" in result.stdout
  # The same file the run wrote for its dev set, line for line.
  assert output.read_text() == (run_workdir / "predictions" / "sts-dev-output.csv").read_text()


def test_stdin_pairs_to_jsonl(run_workdir):
  result = _cli(f"--model={run_workdir}", "--task=para", "--format=jsonl",
                stdin="the film is quiet\tthe film is a triumph\n\nnever once bores\tit bores\n")
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r["id"] for r in rows] == ["1", "3"]  # line numbers; the blank line is skipped
  for row in rows:
    assert row["prediction"] in (0, 1) and 0.0 <= row["probability"] <= 1.0
    assert row["prediction"] == int(row["probability"] > 0.5) or abs(row["probability"] - 0.5) < 1e-6
  assert "predicted 2 examples (4 sentences)" in result.stderr


def test_jsonl_sst_has_five_probabilities(run_workdir, dev_files, tmp_path):
  examples, _ = predict.read_course_file(str(dev_files["sst"]), "sst")
  result = predict.predict_examples(trained_run.load_trained(run_workdir), "sst", examples, labeled=False)
  assert result.score is None
  buffer = io.StringIO()
  predict.write_jsonl(buffer, result)
  rows = [json.loads(line) for line in buffer.getvalue().splitlines()]
  assert [r["id"] for r in rows] == [e["id"] for e in examples]
  for row, prediction in zip(rows, result.predictions):
    assert len(row["probabilities"]) == 5 and abs(sum(row["probabilities"]) - 1) < 1e-5
    assert row["prediction"] == int(prediction) == int(np.argmax(row["probabilities"]))


def test_empty_input_gives_an_empty_output(run_workdir, tmp_path):
  trained = trained_run.load_trained(run_workdir)
  examples = predict.read_text_lines(io.StringIO("\n  \n"), "sts")
  result = predict.predict_examples(trained, "sts", examples, labeled=False)
  assert result.ids == [] and result.predictions.shape == (0,)
  predict.write_output(result, str(tmp_path / "empty.csv"), "submission")
  assert (tmp_path / "empty.csv").read_text() == metrics_lib.SUBMISSION_HEADERS["sts"] + "\n"
  predict.write_output(result, str(tmp_path / "empty.jsonl"), "jsonl")
  assert (tmp_path / "empty.jsonl").read_text() == ""


def test_workdir_without_a_bundle_predicts_from_its_best_checkpoint(run_workdir, dev_files, tmp_path):
  bare = tmp_path / "bare"
  shutil.copytree(run_workdir, bare, ignore=shutil.ignore_patterns("model"))
  from_checkpoint = trained_run.load_trained(bare)
  from_bundle = trained_run.load_trained(run_workdir)
  assert from_checkpoint.directory is None and from_bundle.directory == run_workdir / "model"
  assert from_checkpoint.settings == from_bundle.settings
  examples, _ = predict.read_course_file(str(dev_files["sts"]), "sts")
  a = predict.predict_examples(from_checkpoint, "sts", examples, labeled=True)
  b = predict.predict_examples(from_bundle, "sts", examples, labeled=True)
  np.testing.assert_array_equal(a.outputs, b.outputs)
  assert a.score == b.score


def test_course_file_errors_name_file_line_and_column(tmp_path):
  missing_column = write_tsv(tmp_path / "no-sentence.csv", ["", "id", "text"], [["0", "a1", "hello"]])
  with pytest.raises(DataError, match=r"no-sentence\.csv:1: header lacks column\(s\) \['sentence'\]"):
    predict.read_course_file(str(missing_column), "sst")
  short_row = write_tsv(tmp_path / "short.csv", ["", "id", "sentence1", "sentence2", "similarity"],
                        [["0", "s1", "a b", "c d", "1.0"], ["1", "s2", "a b"]])
  with pytest.raises(DataError, match=r"short\.csv:3: column 'sentence2': row has 3 fields"):
    predict.read_course_file(str(short_row), "sts")
  examples, labeled = predict.read_course_file(str(short_row), "sts", skip_bad_rows=True)
  assert labeled and [e["id"] for e in examples] == ["s1"]


def test_text_pair_line_without_a_tab_names_the_line():
  with pytest.raises(DataError, match=r"<stdin>:2: expected two non-empty sentences .* found 1 field"):
    predict.read_text_lines(io.StringIO("a\tb\njust one sentence\n"), "sts")
