"""SIGKILLs at random moments, each followed by a resume, end in the uninterrupted run's params.

The tiny run (5 epochs of 4 steps, a checkpoint every 2 steps) is started, killed,
started again, `--kills` times (8 unless told), then left to finish. The kills take
turns at the three kinds of moment: during a train step (a few steps past the resumed
one), during an asynchronous checkpoint save (its temporary directory is on disk), and
during the dev evaluation at an epoch end (the epoch's last train record is written,
its eval record not yet); a seeded generator draws each one's step and delay, so the
moments are reproducible. Which checkpoint each start resumes from also depends on how
far a save got before its kill.

The final params must be bit-identical to a run that was never interrupted, and
metrics.jsonl must hold every train and eval step exactly once.

It starts the trainer `--kills` + 2 times (the uninterrupted run, the killed starts,
the final one), all sharing one persistent compilation cache, so it is among the slowest
tests here: `-m "not slow"` skips it locally; CI (`pytest -q tests`) runs it with 8
kills, and `pytest tests/test_kill_resume.py --kills=40` is the longer hunt.
"""

import collections
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_train import REPO_ROOT, _final_params, _flat, _train_subprocess, _write_config_file, tiny_config
from train.metric_writer import read_metrics

KINDS = ("step", "save", "eval")
_START = re.compile(r"main: (?:resumed from step (\d+) of|training \d+ steps)")


def _records(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  # The last line can be half-written when we look; it is complete on the next look.
  records = []
  for line in lines:
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return records


def _logged(workdir: pathlib.Path, kind: str) -> set[int]:
  return {r["step"] for r in _records(workdir) if r["kind"] == kind}


def _saving(checkpoints: pathlib.Path, step: int) -> str | None:
  """'tmp' while step's save is being written, 'done' once it is renamed into place, else None."""
  if not checkpoints.is_dir():
    return None
  names = os.listdir(checkpoints)
  if any(name.startswith(f"{step}.") for name in names):
    return "tmp"
  return "done" if str(step) in names else None


class KilledRun:
  """Starts the trainer on one workdir and SIGKILLs it at the moment a target names."""

  def __init__(self, config_file, workdir: pathlib.Path, logs: pathlib.Path, total_steps: int,
               epoch_ends: list[int]):
    self.config_file, self.workdir, self.logs = config_file, workdir, logs
    self.total_steps, self.epoch_ends = total_steps, epoch_ends
    self.checkpoints = workdir / "checkpoints" / "main"
    logs.mkdir(exist_ok=True)

  def start(self, attempt: int):
    log = self.logs / f"attempt-{attempt:02d}.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
      process = subprocess.Popen([sys.executable, "-m", "train.main", f"--config={self.config_file}",
                                  f"--workdir={self.workdir}"], cwd=REPO_ROOT, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
      match = _START.search(log.read_text(errors="replace"))
      if match:
        return process, int(match.group(1) or 0), log
      if process.poll() is not None:
        raise AssertionError(f"attempt {attempt} ended before training:\n{log.read_text()[-3000:]}")
      time.sleep(0.005)
    process.kill()
    raise AssertionError(f"attempt {attempt} did not start training within 300 s")

  def target(self, rng: np.random.Generator, resumed: int, kind: str) -> tuple[str, int]:
    """A kill moment of `kind` after `resumed`: ('step', k), ('save', k), ('eval', k), or ('end', 0)."""
    # Far enough ahead that the run usually gets past a checkpoint (an async save completes
    # some steps after it starts), so the kills spread over the whole run.
    if kind == "step":
      k = resumed + int(rng.integers(2, 8))
    elif kind == "save":
      k = resumed + 2 * int(rng.integers(1, 4))  # checkpoint steps: every 2 (and each epoch end)
    else:
      ahead = [e for e in self.epoch_ends if e > resumed + 1][:2]
      k = int(rng.choice(ahead)) if ahead else self.total_steps + 1
    if k > self.total_steps:
      return ("end", 0)
    return (str(kind), k)

  def kill_at(self, process, log, kind: str, step: int, delay: float) -> str:
    """Waits for the moment, kills, and says what the run was doing then."""
    deadline = time.time() + 300
    while time.time() < deadline:
      if process.poll() is not None:
        raise AssertionError(f"the run ended before the kill at {kind} {step}:\n{log.read_text()[-3000:]}")
      if kind == "step" and step - 1 in _logged(self.workdir, "train"):
        break  # step `step` is running now
      if kind == "eval" and step in _logged(self.workdir, "train"):
        break  # the epoch's last step is logged: its evaluation runs now
      if kind == "save" and _saving(self.checkpoints, step):
        break
      if kind == "end":
        break
      time.sleep(0.002)
    else:
      process.kill()
      raise AssertionError(f"no {kind} {step} within 300 s:\n{log.read_text()[-3000:]}")
    time.sleep(delay)
    state = _saving(self.checkpoints, step) if kind == "save" else None
    evaluated = kind == "eval" and step in _logged(self.workdir, "eval")
    process.kill()
    process.wait()
    assert process.returncode == -9, f"not killed (rc {process.returncode}):\n{log.read_text()[-3000:]}"
    if kind == "save":
      return "during save" if state == "tmp" else "after save"
    if kind == "eval":
      return "after eval" if evaluated else "during eval"
    return "during step" if kind == "step" else "during the final evaluation"


@pytest.mark.slow
def test_random_kills_resume_to_the_uninterrupted_params(tiny_world, tmp_path, request):
  kills = request.config.getoption("--kills")
  assert kills >= len(KINDS), f"--kills={kills}: at least one kill of each kind {KINDS}"
  config = tiny_config(tiny_world, tmp_path, num_epochs=5)
  config_file = _write_config_file(tmp_path / "tiny_config.py", config)
  reference = tmp_path / "uninterrupted"
  _train_subprocess(config_file, str(reference))
  epoch_ends = sorted(_logged(reference, "eval"))
  total_steps = max(_logged(reference, "train"))
  assert len(epoch_ends) == 5 and total_steps == epoch_ends[-1]

  workdir = tmp_path / "killed"
  run = KilledRun(config_file, workdir, tmp_path / "logs", total_steps, epoch_ends)
  rng = np.random.default_rng(2024)
  moments = []
  for attempt in range(kills):
    process, resumed, log = run.start(attempt)
    kind, step = run.target(rng, resumed, KINDS[attempt % len(KINDS)])
    delay = float(rng.uniform(0.0, 0.05 if kind != "end" else 0.2))
    moments.append((resumed, kind, step, run.kill_at(process, log, kind, step, delay)))
  _train_subprocess(config_file, str(workdir))

  summary = "\n".join(f"resumed at {r:2d}, killed {what} ({kind} {step})" for r, kind, step, what in moments)
  print(summary)
  assert max(r for r, *_ in moments) >= total_steps // 2, f"the kills stayed in the run's first half:\n{summary}"
  seen = collections.Counter(what for *_, what in moments)
  assert seen["during step"] and seen["during save"] and seen["during eval"], summary
  step_a, params_a = _final_params(str(reference))
  step_b, params_b = _final_params(str(workdir))
  assert step_a == step_b == total_steps
  for key, value in _flat(params_a).items():
    np.testing.assert_array_equal(_flat(params_b)[key], value, err_msg=f"{key}\n{summary}")
  records = read_metrics(str(workdir / "metrics.jsonl"))
  for kind, expected in (("train", list(range(1, total_steps + 1))), ("eval", epoch_ends)):
    steps = [r["step"] for r in records if r["kind"] == kind]
    assert steps == expected, f"{kind} records {steps}\n{summary}"
  assert [r["kind"] for r in records].count("final") == 1
  reference_losses = [r["loss_total"] for r in read_metrics(str(reference / "metrics.jsonl")) if r["kind"] == "train"]
  assert [r["loss_total"] for r in records if r["kind"] == "train"] == reference_losses
  results = [json.loads((w / "results.json").read_text())["scores"] for w in (reference, workdir)]
  assert results[0] == results[1]
