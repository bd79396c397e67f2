"""Two processes x 4 CPU devices as one JAX job train exactly what one process x 8 devices does.

`python -m train.main --coordinator_address=localhost:<port> --num_processes=2
--process_id=<i>` is started twice, each process with 4 simulated CPU devices;
JAX joins them into one 8-device job whose collectives go over gloo. That is the
code path of a TPU pod slice or a multi-node GPU job (every host runs the same
command with its own process id), on one machine. Its final params and dev scores
must equal a single process with 8 devices, and only process 0 writes metrics
and predictions.

jit mode trains straight through. pmap mode, whose state each process holds as
its own replica (saved as host numpy by the primary process,
train/checkpointing.py), is also killed, both processes at once, after its first
checkpoint, and restarted: the resumed job must still end where the single
process does.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.test_train import REPO_ROOT, _write_config_file, tiny_config

pytestmark = pytest.mark.multiprocess


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return env


def _start(config_file, workdir, num_processes: int, devices_per_process: int) -> list[subprocess.Popen]:
  command = [sys.executable, "-m", "train.main", f"--config={config_file}", f"--workdir={workdir}"]
  if num_processes == 1:
    return [subprocess.Popen(command, cwd=REPO_ROOT, env=_env(devices_per_process),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
  port = _free_port()
  return [subprocess.Popen([*command, f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
                            f"--process_id={i}"], cwd=REPO_ROOT, env=_env(devices_per_process),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
          for i in range(num_processes)]


def _wait(processes, timeout=600) -> list[str]:
  outputs = []
  for p in processes:
    out, _ = p.communicate(timeout=timeout)
    outputs.append(out.decode())
  for i, (p, out) in enumerate(zip(processes, outputs)):
    assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{out[-4000:]}"
  return outputs


def _config(tiny_world, root, mode: str):
  # Padded batches of a fixed length: the per-task batch (8) splits evenly over 8 devices.
  config = tiny_config(tiny_world, root, num_epochs=1, **{"parallel.mode": mode, "data.packing": False,
                                                          "data.num_buckets": 1, "checkpoint_every_steps": 3})
  return _write_config_file(root / f"tiny_{mode}.py", config)


def _results(workdir: pathlib.Path) -> tuple[dict, dict]:
  params = load_file(str(workdir / "model" / "params.safetensors"))
  scores = json.loads((workdir / "results.json").read_text())
  return params, scores


def _assert_same_run(a: pathlib.Path, b: pathlib.Path) -> None:
  params_a, results_a = _results(a)
  params_b, results_b = _results(b)
  assert params_a.keys() == params_b.keys()
  worst = max(float(np.max(np.abs(params_a[k] - params_b[k]))) for k in params_a)
  assert worst <= 1e-5, f"largest parameter difference {worst:.3g}"
  dev_a, dev_b = results_a["scores"], results_b["scores"]
  assert dev_a.keys() == dev_b.keys()
  for key in dev_a:
    assert dev_a[key] == pytest.approx(dev_b[key], abs=1e-5), key


@pytest.fixture(scope="module")
def one_process_run(tiny_world, tmp_path_factory) -> pathlib.Path:
  """The reference: the tiny config in one process with 8 devices, jit mode."""
  root = tmp_path_factory.mktemp("one_process")
  _wait(_start(_config(tiny_world, root, "jit"), root / "run", 1, 8))
  return root / "run"


def _kill_after_first_checkpoint(processes, workdir: pathlib.Path, timeout=600) -> None:
  """SIGKILL every process once a checkpoint step is complete (Orbax renames it into place when done)."""
  manager_dir = workdir / "checkpoints" / "main"
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in processes):
    if manager_dir.is_dir() and any(d.name.isdigit() for d in manager_dir.iterdir()):
      break
    time.sleep(0.05)
  for p in processes:
    p.send_signal(signal.SIGKILL)
  for p in processes:
    p.communicate()
    assert p.returncode == -signal.SIGKILL, "a process ended before it could be killed"


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_two_processes_of_four_devices_train_what_one_of_eight_does(tiny_world, tmp_path, mode, one_process_run):
  config_file = _config(tiny_world, tmp_path, mode)
  single, multi = one_process_run, tmp_path / "two_processes"
  started = time.time()
  if mode == "pmap":
    _kill_after_first_checkpoint(_start(config_file, multi, 2, 4), multi)
    outputs = _wait(_start(config_file, multi, 2, 4))
    assert "resumed from step" in outputs[0], outputs[0][-3000:]
  else:
    _wait(_start(config_file, multi, 2, 4))
  print(f"2 x 4 devices, {mode}: {time.time() - started:.1f} s")
  _assert_same_run(single, multi)
  # Process 0 alone writes what a person reads; the other writes only its share of the checkpoints.
  assert (multi / "metrics.jsonl").is_file() and (multi / "predictions").is_dir()
  assert not list(multi.glob("*.process1*")) or all(p.name.startswith("run.lock") for p in multi.glob("*.process1*"))
  metrics = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in metrics if r.get("kind") == "train"]
  assert steps == sorted(set(steps)), "a train step was logged twice: more than one process wrote metrics"
