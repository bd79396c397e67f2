"""The one command that prepares every dataset and prints the table."""

import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.test_data_csv_rows import SMALL, write_course_files


def test_prepare_command_prints_every_split(tmp_path):
  root = write_course_files(tmp_path / "data")
  with open(root / "cs224n" / "quora-dev.csv", "a", encoding="utf-8") as f:
    f.write("999\tqbad\t first ?\t second ?\t\n")  # no label, as in the course file
  command = [sys.executable, "-m", "data_prep.prepare", f"--data_root={root}", f"--tfds_dir={tmp_path / 'tfds'}",
             "--allow_download=false", "--num_buckets=2", "--batch_size=4"]
  strict = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert strict.returncode == 1
  assert f"{root / 'cs224n' / 'quora-dev.csv'}:{SMALL['quora_dev'] + 2}: column 'is_duplicate': empty label" \
      in strict.stderr
  result = subprocess.run(command + ["--skip_bad_rows"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  table = [line.split(" | ") for line in result.stdout.splitlines() if " | " in line]
  rows = {(r[0].strip(), r[1].strip(), r[5].strip()): r for r in table if r[0].strip() != "dataset"}
  for dataset in ("cs224n_sst/default", "cfimdb/polar", "cfimdb/not_polar", "cfimdb/binary"):
    for split in ("train", "validation", "test"):
      assert (dataset, split, "single") in rows
  for dataset in ("cs224n_quora/dev_90_10", "cs224n_sts/default", "sick/relatedness"):
    for split in ("train", "validation", "test"):
      for encoding in ("separate", "joint"):
        assert (dataset, split, encoding) in rows
  assert rows[("cs224n_sst/default", "train", "single")][2].strip() == str(SMALL["sst"][0])
  assert rows[("cs224n_quora/dev_90_10", "train", "joint")][3].strip() == "1"  # skipped, and said so
  assert f"quora-dev.csv:{SMALL['quora_dev'] + 2}: bad_label" in result.stdout
  assert "Task training sets as the trainer batches them" in result.stdout
