"""`bash bench/device_check.sh --dry_run` runs every section on the CPU and prints the one table.

The full run needs an accelerator; the dry run is the same script on a tiny
model and a handful of steps, so this pins the script's plumbing: each section
runs, leaves its numbers, and the summary shows them (no "n/a"), with numbers
that parse and ratios that are positive. What the numbers are is for
bench/README.md, not for a test.
"""

import os
import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT

SECTIONS = ("(a) tests", "(b) step vs torch", "(c) train", "(d) memory")


def _number(value: str, suffix: str) -> float:
  assert value.endswith(suffix), value
  return float(value[:-len(suffix)])


@pytest.mark.slow  # a few minutes on 2 cores: every section compiles its own executables
def test_dry_run_prints_every_section_with_numbers(shared_data, tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}  # one CPU device
  env["BERT_JAX_DATA"] = str(shared_data)
  done = subprocess.run(["bash", "bench/device_check.sh", "--dry_run", f"--run_dir={tmp_path}"], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=1800)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.strip().splitlines()
  header = next(line for line in lines if line.startswith("device check on "))
  assert header.startswith("device check on cpu:") and "dry run" in header, header
  rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| (")]
  by_section = {s: [r for r in rows if r[0] == s] for s in SECTIONS}
  assert all(by_section.values()), (by_section, done.stdout)
  assert not [r for r in rows if r[2].startswith("n/a")], done.stdout

  (tests,) = by_section["(a) tests"]
  passed, failed, _ = (int(n) for n in re.fullmatch(r"(\d+) passed, (\d+) failed, (\d+) skipped", tests[2]).groups())
  assert passed > 0 and failed == 0, tests

  ratios = {r[1]: _number(r[2], "x") for r in by_section["(b) step vs torch"]}
  assert {tuple(item.split(":")[0].split()[2:4]) for item in ratios} == {
      (padding, dtype) for padding in ("natural", "same") for dtype in ("float32", "bfloat16")}, ratios
  assert all(ratio > 0 for ratio in ratios.values()), ratios

  train = {r[1]: r[2] for r in by_section["(c) train"]}
  assert float(train["examples/s, every logged window but the first"]) > 0, train
  mfu = [_number(v, "%") for k, v in train.items() if k.startswith("MFU vs")]
  assert mfu and all(m > 0 for m in mfu), train

  memory = {r[1]: r[2] for r in by_section["(d) memory"]}
  assert _number(memory["peak RSS memory of the training run"], " MB") > 0, memory
  times = {k.split(":")[0].split()[-1]: _number(v, "x") for k, v in memory.items()
           if k.endswith("pcgrad / summed step time")}
  peaks = {k: _number(v, "x") for k, v in memory.items() if k.endswith(": peak memory")}
  assert set(times) == {"ours", "hf-sdpa"} and all(t > 0 for t in times.values()), memory
  assert {k.split(": ")[0].split(" ", 1)[1] for k in peaks} == {
      "ours pcgrad / ours summed", "hf-sdpa pcgrad / hf-sdpa summed", "ours summed / hf-sdpa summed",
      "ours pcgrad / hf-sdpa pcgrad"}, peaks
  assert all(p > 0 for p in peaks.values()), peaks
