"""Reliability of the data side and of the command line, on the tiny checkpoint and tiny CSVs.

One test per defect class: prepared data follows its source files (reused while
they are the same, prepared again when they change, an error when the data
root is not there); every id of a test-student file gets a prediction; a
training file without usable rows is an error naming it; and a failed command
line run prints a short message naming the cause and exits with status 1.
"""

import errno
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_prep import catalog, csv_rows, freshness, pipeline
from data_prep.builders import cs224n_sst
from data_prep.errors import DataError, MissingDataRootError
from data_prep.tfds_split import TfdsSplit
from tests.test_data_csv_rows import SMALL, write_course_files
from tests.test_train import _write_config_file, tiny_config
from train import cli_errors
from train import metrics as metrics_lib
from train import train

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SST = TfdsSplit("cs224n_sst", "train")


def _prepare(root, tfds_dir, **kwargs):
  return catalog.get_builder(SST, tfds_dir=tfds_dir,
                             builder_kwargs={"local_dir": root, "allow_download": False, **kwargs})


@pytest.fixture
def count_preparations(monkeypatch):
  """How often the SST builder reads its CSVs, i.e. prepares the dataset."""
  calls = []
  original = cs224n_sst.Cs224nSst._split_generators

  def counting(self, dl_manager):
    calls.append(self.data_dir)
    return original(self, dl_manager)
  monkeypatch.setattr(cs224n_sst.Cs224nSst, "_split_generators", counting)
  return calls


def _labels(builder):
  return [e["label"] for e in catalog.read_split(builder, "train")]


# ---- 1. prepared data follows its sources --------------------------------------------------------

def test_prepared_data_is_reused_while_the_sources_are_the_same(tmp_path, count_preparations):
  root = write_course_files(tmp_path / "data")
  builder = _prepare(root, tmp_path / "tfds")
  info_file = pathlib.Path(builder.data_dir) / "dataset_info.json"
  written = info_file.stat().st_mtime_ns
  _prepare(root, tmp_path / "tfds")
  # Touched (new mtime, same bytes) and copied to another data root: still the same source.
  train_csv = root / "cs224n" / "ids-sst-train.csv"
  os.utime(train_csv, ns=(train_csv.stat().st_atime_ns, train_csv.stat().st_mtime_ns + 10**9))
  _prepare(root, tmp_path / "tfds")
  copy = shutil.copytree(root, tmp_path / "copy")
  reused = _prepare(copy, tmp_path / "tfds")
  assert len(count_preparations) == 1
  assert info_file.stat().st_mtime_ns == written
  assert len(catalog.read_split(reused, "train")) == SMALL["sst"][0]


def test_an_edited_source_is_prepared_again_and_its_hash_recorded(tmp_path, count_preparations):
  root = write_course_files(tmp_path / "data")
  cache = tmp_path / "tokens"
  from bert_jax.tokenizer import Tokenizer
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film"]) + "\n")
  tokenizer = Tokenizer.from_vocab_file(str(vocab))
  load = lambda: pipeline.load_task_split(
      "sst", [SST], tokenizer, max_length=16, tfds_dir=tmp_path / "tfds", cache_dir=cache,
      builder_kwargs={"local_dir": root, "allow_download": False})
  before = load()
  # Change one label digit: the same size, so only the hash can tell (the new mtime only says "look").
  train_csv = root / "cs224n" / "ids-sst-train.csv"
  stat = train_csv.stat()
  lines = train_csv.read_text().splitlines()
  fields = lines[1].split("\t")
  fields[-1] = str((int(fields[-1]) + 1) % 5)
  lines[1] = "\t".join(fields)
  train_csv.write_text("\n".join(lines) + "\n")
  os.utime(train_csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks: a visible step
  assert train_csv.stat().st_size == stat.st_size
  after = load()
  assert len(count_preparations) == 2
  assert after.labels[0] == (before.labels[0] + 1) % 5
  np.testing.assert_array_equal(after.labels[1:], before.labels[1:])
  recorded = after.provenance[0]["source_files"]["ids-sst-train.csv"]
  assert recorded == freshness.sha256_of(train_csv)[:12] != before.provenance[0]["source_files"]["ids-sst-train.csv"]
  assert len(list(cache.glob("cs224n_sst-*.npz"))) == 2  # a new token cache entry, not the old one


def test_another_data_root_with_other_files_is_prepared_from_them(tmp_path, count_preparations):
  first = write_course_files(tmp_path / "first")
  second = write_course_files(tmp_path / "second")
  with open(second / "cs224n" / "ids-sst-train.csv", "a", encoding="utf-8") as f:
    f.write("99\tsst099\t the film\t4\n")
  assert len(_labels(_prepare(first, tmp_path / "tfds"))) == SMALL["sst"][0]
  builder = _prepare(second, tmp_path / "tfds")
  assert len(_labels(builder)) == SMALL["sst"][0] + 1
  assert builder.info.metadata["source_files"]["ids-sst-train.csv"]["path"] == \
      str(second / "cs224n" / "ids-sst-train.csv")
  with pytest.raises(FileNotFoundError, match="ids-sst-train.csv.*bytes now"):  # prepare=False refuses
    catalog.get_builder(SST, tfds_dir=tmp_path / "tfds", prepare=False,
                        builder_kwargs={"local_dir": first, "allow_download": False})


def test_a_data_root_that_does_not_exist_is_an_error_naming_it(tmp_path):
  root = write_course_files(tmp_path / "data")
  _prepare(root, tmp_path / "tfds")
  with pytest.raises(MissingDataRootError, match=str(tmp_path / "typo")):
    _prepare(tmp_path / "typo", tmp_path / "tfds")  # prepared data exists, but not from there


# ---- 2. every test-student id gets a prediction -------------------------------------------------

def _blank_sentence(path: pathlib.Path, row: int, column: str) -> str:
  """Empties `column` of data row `row` (1-based) in a course file; returns that row's id."""
  lines = path.read_text().splitlines()
  header = lines[0].split("\t")
  fields = lines[row].split("\t")
  fields[header.index(column)] = " "
  lines[row] = "\t".join(fields)
  path.write_text("\n".join(lines) + "\n")
  return fields[header.index("id")]


def _file_ids(path: pathlib.Path) -> list[str]:
  lines = path.read_text().splitlines()
  column = lines[0].split("\t").index("id")
  return [line.split("\t")[column] for line in lines[1:]]


def test_a_test_student_row_with_an_empty_sentence_is_still_predicted(tiny_world, tmp_path, caplog):
  root = write_course_files(tmp_path / "data")
  sst_test = root / "cs224n" / "ids-sst-test-student.csv"
  sts_test = root / "cs224n" / "sts-test-student.csv"
  sst_id = _blank_sentence(sst_test, 2, "sentence")
  sts_id = _blank_sentence(sts_test, 1, "sentence2")
  config = tiny_config(tiny_world, tmp_path, **{"data.data_root": str(root),
                                                "data.tfds_dir": str(tmp_path / "tfds")})
  # The trainer's own evaluation on its initial parameters: training adds nothing to what is tested.
  trainer = train.Trainer(config, str(tmp_path / "run"))
  out_dir = tmp_path / "predictions"
  trainer.evaluate(trainer.initial_params(), write_predictions=True, out_dir=str(out_dir))
  for task, path, blank_id in (("sst", sst_test, sst_id), ("sts", sts_test, sts_id)):
    written = metrics_lib.read_submission(out_dir / f"{task}-test-output.csv")
    assert list(written) == _file_ids(path)  # every id, in file order
    assert blank_id in written
  warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
  assert f"id {sst_id}: {csv_rows.EMPTY_TEXT}" in warnings and f"id {sts_id}: {csv_rows.EMPTY_TEXT}" in warnings
  # Results record them with the data they describe.
  provenance = trainer.data.description()["splits"]["sst"]["test"]["provenance"]
  [(line, row_id, why)] = provenance[0]["placeholder_rows"]["ids-sst-test-student.csv"]
  assert (line, row_id) == (3, sst_id) and "empty sentence" in why


def test_submission_refuses_a_repeated_or_empty_id(tmp_path):
  with pytest.raises(ValueError, match="'a' appears twice"):
    metrics_lib.write_submission(str(tmp_path / "x.csv"), "sst", ["a", "b", "a"], np.zeros(3))
  with pytest.raises(ValueError, match="id number 2 is empty"):
    metrics_lib.write_submission(str(tmp_path / "x.csv"), "sst", ["a", " "], np.zeros(2))


# ---- 3. a training file without usable rows ------------------------------------------------------

@pytest.mark.parametrize("skip_bad_rows", [False, True], ids=["header_only", "all_rows_bad"])
def test_a_training_file_without_usable_rows_is_an_error_naming_it(tmp_path, skip_bad_rows):
  root = write_course_files(tmp_path / "data")
  train_csv = root / "cs224n" / "ids-sst-train.csv"
  header = train_csv.read_text().splitlines()[0]
  train_csv.write_text(header + "\n" + ("0\tsst000\t the film\tnine\n" if skip_bad_rows else ""))
  with pytest.raises(DataError, match="no usable rows") as error:
    _prepare(root, tmp_path / "tfds", skip_bad_rows=skip_bad_rows)
  assert error.value.path == str(train_csv)


# ---- 4. one short message and exit status 1 from the command line --------------------------------

def _cli(*args, cwd=REPO_ROOT):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  env.pop(cli_errors.TRACEBACK_ENV, None)
  return subprocess.run([sys.executable, "-m", "train.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,named", [
    (["--config.num_epochs=0", "--config.optim.learning_rate=-1", "--dry_run"],
     ["config.num_epochs=0", "config.optim.learning_rate=-1.0"]),
    (["--config=no_such_preset.py"], ["no_such_preset.py"]),
    (["--config.optim.learning_rat=1e-4"], ["--config.optim.learning_rat", "learning_rate"]),
    (["--num_processes=2", "--process_id=2", "--dry_run"], ["--process_id=2", "--num_processes=2", "0 to 1"]),
], ids=["bad_values", "missing_config_file", "unknown_key", "process_id_out_of_range"])
def test_cli_config_errors_are_one_short_message_and_status_1(args, named):
  result = _cli(*args)
  assert result.returncode == 1, result.stderr[-2000:]
  assert len(result.stderr.strip().splitlines()) < 15, result.stderr
  assert "Traceback" not in result.stderr
  for name in named:
    assert name in result.stderr


def test_cli_data_error_mid_start_is_one_short_message_and_status_1(tiny_world, tmp_path):
  root = write_course_files(tmp_path / "data")
  train_csv = root / "cs224n" / "sts-train.csv"
  train_csv.write_text(train_csv.read_text().splitlines()[0] + "\n")
  config = tiny_config(tiny_world, tmp_path, **{"data.data_root": str(root),
                                                "data.tfds_dir": str(tmp_path / "tfds")})
  result = _cli(f"--config={_write_config_file(tmp_path / 'cfg.py', config)}", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 1, result.stderr[-3000:]
  # Preparing the datasets that come before it prints TFDS progress bars; the error is the end of stderr.
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  message = result.stderr[result.stderr.index("train.main: error:"):].strip().splitlines()
  assert len(message) < 15, message
  assert f"{train_csv}:1" in message[0] and "no usable rows" in message[0]


def test_a_wrapped_disk_full_error_is_named_in_the_message():
  try:
    try:
      raise OSError(errno.ENOSPC, "No space left on device", "/ckpt/tmp")
    except OSError as disk:
      raise ValueError("Checkpoint save failed: array write aborted") from disk
  except ValueError as wrapped:
    message = cli_errors.describe(wrapped)
  assert message.splitlines()[0] == "ValueError: Checkpoint save failed: array write aborted"
  assert "caused by OSError (ENOSPC): [Errno 28] No space left on device: '/ckpt/tmp'" in message
