"""The peak memory of one train step, each side and workload in a process of its own.

A process's peak only ever grows, and the step benchmark's one process holds
every model it has timed, so its "RSS MB" column cannot say what one step
needs. Here each measurement gets a fresh Python process (`python -m
bench.step_memory JOB OUT`, started by `measure`): it builds one side (ours or a
PyTorch peer), runs every step of the plan once (ours compiles each shape; both
create their optimizer state), waits for the device, hands malloc's free memory
back to the OS, and records what is resident; then it resets the peak and runs
the timed steps again, and the peak over those is the step's.

What "memory" is depends on where the step runs: on the CPU the process's RSS
(the kernel's high-water mark, `bench.memory`); on a GPU or TPU the device's
allocator (`memory_stats()["peak_bytes_in_use"]` for ours, which cannot be
reset, so it also covers the untimed runs of the same steps;
`torch.cuda.max_memory_allocated` for the peer).

The four measurements per model: our summed step, our PCGrad step, and the
PyTorch peer's of each (`TorchPeer.train_step`: one backward of the summed
losses; `TorchPeer.pcgrad_step`: `backward(retain_graph=True)` once per task,
as the common PyTorch PCGrad ports do). All four run the same batches: the
multitask workload's plan.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_PCGRAD_OVER_SUMMED = 1.3  # our PCGrad step's peak over our summed step's


@dataclasses.dataclass
class MemoryJob:
  """One measurement: which side runs which step on which batches (host arrays, pickled to the child)."""
  model: str
  side: str  # "ours" or a peer name (bench.torch_peer.PEERS)
  step: str  # "summed" or "pcgrad"
  padding: str
  dtype: str
  bert_config: Any
  model_config: dict  # config.model, for the peer's heads
  steps: list  # per step {task: batch}: ours numpy (our_batch), the peer's torch tensors on the CPU
  iters: int
  seed: int = 0
  torch_device: str = "cpu"
  torch_threads: int = 2
  compilation_cache: bool = True


@dataclasses.dataclass
class MemoryRow:
  model: str
  impl: str
  step: str
  padding: str
  dtype: str
  kind: str = ""  # "RSS" (host process) or "device"
  resident_mb: float = float("nan")  # after the warm-up runs: params, optimizer state, executables, batches
  peak_mb: float = float("nan")  # the peak over the timed steps
  note: str = ""

  @property
  def ok(self) -> bool:
    return not self.note.startswith("n/a")

  @property
  def step_mb(self) -> float:
    """What the step adds on top of what stays resident between steps."""
    return self.peak_mb - self.resident_mb


# ---- the parent: one process per measurement ------------------------------------------------------

def measure(jobs: Sequence[MemoryJob], *, log: Callable[[str], None] = print,
            timeout_s: float = 1800) -> list[MemoryRow]:
  """Runs each job in a fresh `python -m bench.step_memory`, one after the other."""
  rows = []
  with tempfile.TemporaryDirectory(prefix="bench_step_memory_") as tmp:
    for k, job in enumerate(jobs):
      log(f"{job.model} memory: {job.side} {job.step} ({job.padding}, {job.dtype}), own process")
      job_path, out_path = os.path.join(tmp, f"job{k}.pkl"), os.path.join(tmp, f"out{k}.json")
      with open(job_path, "wb") as f:
        pickle.dump(job, f)
      row = MemoryRow(job.model, job.side, job.step, job.padding, job.dtype)
      try:
        done = subprocess.run([sys.executable, "-m", "bench.step_memory", job_path, out_path], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=timeout_s)
      except subprocess.TimeoutExpired:
        row.note = f"n/a (timed out after {timeout_s:.0f} s)"
        rows.append(row)
        continue
      if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        row.note = f"n/a (exit {done.returncode}: {last[:100]})"
      else:
        with open(out_path) as f:
          measured = json.load(f)
        row.kind, row.resident_mb, row.peak_mb = measured["kind"], measured["resident_mb"], measured["peak_mb"]
        row.note = measured.get("note", "")
      rows.append(row)
  return rows


def memory_ratios(rows: Sequence[MemoryRow]) -> list[dict]:
  """PCGrad over summed on each side, and ours over the peer for each step, per model.

  Each has the ratio of peaks and of what the step adds (`step_mb`); the
  target applies to our PCGrad peak over our summed peak.
  """
  by_key = {(r.model, r.impl, r.step): r for r in rows if r.ok}
  out = []
  for model in dict.fromkeys(r.model for r in rows):
    peers = [impl for (m, impl, _) in by_key if m == model and impl != "ours"]
    pairs = [(("ours", "pcgrad"), ("ours", "summed"))]
    pairs += [((p, "pcgrad"), (p, "summed")) for p in dict.fromkeys(peers)]
    pairs += [(("ours", step), (p, step)) for p in dict.fromkeys(peers) for step in ("summed", "pcgrad")]
    for (impl_a, step_a), (impl_b, step_b) in pairs:
      a, b = by_key.get((model, impl_a, step_a)), by_key.get((model, impl_b, step_b))
      if a is None or b is None:
        continue
      peak = a.peak_mb / b.peak_mb
      target = TARGET_PCGRAD_OVER_SUMMED if (impl_a, step_a, impl_b, step_b) == ("ours", "pcgrad", "ours", "summed") \
          else None
      out.append({"model": model, "name": f"{impl_a} {step_a} / {impl_b} {step_b}", "peak": peak,
                  "step": a.step_mb / b.step_mb if b.step_mb > 0 else math.nan,
                  "target": target, "met": None if target is None else bool(peak <= target)})
  return out


def format_memory_table(rows: Sequence[MemoryRow]) -> str:
  lines = ["peak memory of one step, each measured in a process of its own (resident: after the warm-up "
           "runs; peak: over the timed steps; +MB: peak - resident):"]
  header = f"  {'model':<10} {'impl':<14} {'step':<7} {'padding':<7} {'dtype':<8} {'memory':<6} " \
           f"{'resident MB':>11} {'peak MB':>8} {'+MB':>7}"
  lines += [header, "  " + "-" * (len(header) - 2)]
  for r in rows:
    start = f"  {r.model:<10} {r.impl:<14} {r.step:<7} {r.padding:<7} {r.dtype:<8} "
    if not r.ok:
      lines.append(start + r.note)
      continue
    lines.append(start + f"{r.kind:<6} {r.resident_mb:11.0f} {r.peak_mb:8.0f} {r.step_mb:7.0f}"
                 + (f"  {r.note}" if r.note else ""))
  ratios = memory_ratios(rows)
  if ratios:
    lines.append("  ratios (peak; +MB):")
  for q in ratios:
    verdict = "" if q["target"] is None else f"  target <= {q['target']:.1f}: {'met' if q['met'] else 'MISSED'}"
    lines.append(f"    {q['model']:<10} {q['name']:<32} {q['peak']:5.2f}x; {q['step']:5.2f}x{verdict}")
  return "\n".join(lines)


# ---- the child: one side, one step, one process ---------------------------------------------------

def _ours(job: MemoryJob) -> dict:
  import jax
  from bench.memory import current_rss_mb, peak_rss_mb, release_free_memory, reset_peak_rss
  from bench.our_side import OurSide
  if job.compilation_cache:  # the parent's timing rows compiled these shapes already
    from train import train as train_lib
    from train.configs import base
    train_lib.enable_compilation_cache(base.get_config())
  side = OurSide(job.bert_config, pcgrad=job.step == "pcgrad", seed=job.seed, dtype=job.dtype)
  device_steps = [side.put(step) for step in job.steps]
  for step in device_steps:  # compiles every shape; the optimizer state exists from the start
    side.train_step(step)
  side.sync()
  device = jax.devices()[0]
  gc.collect()
  release_free_memory()
  if device.platform == "cpu":
    resident = current_rss_mb()
    exact = reset_peak_rss()
  else:
    resident = device.memory_stats()["bytes_in_use"] / 2 ** 20
  for k in range(job.iters):
    side.train_step(device_steps[k % len(device_steps)])
  side.sync()
  if device.platform == "cpu":
    note = "" if exact else "peak since the process started (no /proc/self/clear_refs)"
    return {"kind": "RSS", "resident_mb": resident, "peak_mb": peak_rss_mb(), "note": note}
  return {"kind": "device", "resident_mb": resident,
          "peak_mb": device.memory_stats()["peak_bytes_in_use"] / 2 ** 20}


def _peer(job: MemoryJob) -> dict:
  import ml_collections
  import torch
  from bench.memory import current_rss_mb, peak_rss_mb, release_free_memory, reset_peak_rss
  from bench.torch_peer import TorchPeer
  torch.set_num_threads(job.torch_threads)
  peer = TorchPeer(job.side, job.bert_config, ml_collections.ConfigDict(job.model_config), seed=job.seed,
                   device=job.torch_device, autocast_dtype=job.dtype)
  inputs = [peer.to_device(step) for step in job.steps]
  run = peer.pcgrad_step if job.step == "pcgrad" else peer.train_step
  for step in inputs:  # AdamW creates its moments at the first step
    run(step)
  peer.sync()
  gc.collect()
  release_free_memory()
  cuda = peer.device.type == "cuda"
  if cuda:
    torch.cuda.reset_peak_memory_stats(peer.device)
    resident = torch.cuda.memory_allocated(peer.device) / 2 ** 20
  else:
    resident = current_rss_mb()
    exact = reset_peak_rss()
  for k in range(job.iters):
    run(inputs[k % len(inputs)])
  peer.sync()
  if cuda:
    return {"kind": "device", "resident_mb": resident,
            "peak_mb": torch.cuda.max_memory_allocated(peer.device) / 2 ** 20}
  note = "" if exact else "peak since the process started (no /proc/self/clear_refs)"
  return {"kind": "RSS", "resident_mb": resident, "peak_mb": peak_rss_mb(), "note": note}


def run_job(job: MemoryJob) -> dict:
  return _ours(job) if job.side == "ours" else _peer(job)


def main(argv: Sequence[str]) -> None:
  if len(argv) != 3:
    sys.exit("usage: python -m bench.step_memory JOB.pkl OUT.json (started by bench.step_memory.measure)")
  with open(argv[1], "rb") as f:
    job = pickle.load(f)
  result = run_job(job)
  with open(argv[2], "w") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main(sys.argv)
