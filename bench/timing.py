"""One workload timed on one side: a row of the step benchmark's table.

Both sides are timed the way the trainer runs: a side first runs every step of
its plan once (so a jitted side has compiled every shape before the clock
starts; torch.compile likewise), then `warmup` more steps, then `iters` steps
back to back with one sync at the end, since the trainer never waits per step.
The row's FLOPs, padded and real tokens come from the shapes that side actually
ran, averaged over the timed steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.batches import BenchData, StepPlan, examples_per_step, real_tokens, split_of
from bench.flops import TRAIN_FLOPS_PER_FORWARD, encoder_forward_flops
from bench.memory import RssMonitor
from bench.our_side import OurSide, our_batch, step_shapes_ours
from bench.results import Row
from bench.torch_peer import TorchPeer, step_shapes_peer, torch_batch


def time_steps(run: Callable[[Any], None], inputs: Sequence[Any], *, warmup: int, iters: int,
               sync: Callable[[], None], compile_every_shape: bool) -> tuple[float, float]:
  """(seconds per timed step, warmup seconds).

  With `compile_every_shape`, the warmup first runs every input once, so that a
  jitted side has compiled each shape before the clock starts; then `warmup`
  more steps. The timed window runs `iters` steps cycling over `inputs` and
  syncs once at the end, as the trainer does (it never waits per step).
  """
  start = time.perf_counter()
  if compile_every_shape:
    for x in inputs:
      run(x)
  for k in range(warmup):
    run(inputs[k % len(inputs)])
  sync()
  warmup_s = time.perf_counter() - start
  start = time.perf_counter()
  for k in range(iters):
    run(inputs[k % len(inputs)])
  sync()
  return (time.perf_counter() - start) / iters, warmup_s


def fill_row(row: Row, *, seconds: float, warmup_s: float, examples: int, real: float, padded: float,
             flops: float, peak_gflops: float, monitor: RssMonitor) -> Row:
  row.ms_per_step = 1000 * seconds
  row.examples_per_s = examples / seconds
  row.real_tokens_per_s = real / seconds
  row.real_fraction = real / padded
  row.gflop_per_s = flops / seconds / 1e9
  row.mfu = row.gflop_per_s / peak_gflops
  row.peak_rss_mb = monitor.peak_mb
  row.step_rss_mb = monitor.delta_mb
  row.warmup_s = warmup_s
  return row


def run_ours(side: OurSide, data: BenchData, plan: StepPlan, *, model_name: str, impl: str, batch_size: int,
             warmup: int, iters: int, peak_gflops: float, breakdown: bool = False,
             dtype: str = "float32") -> tuple[Row, dict]:
  """Times our step (or predict step) on the plan's `ours` batches; `dtype` labels the row (the side's own)."""
  config = side.model.config
  host = [{t: our_batch(split_of(data, plan.workload, t), b) for t, b in step.items()} for step in plan.ours]
  device = [side.put(step) for step in host]
  multiplier = 1 if plan.workload == "inference" else TRAIN_FLOPS_PER_FORWARD
  flops = [multiplier * sum(encoder_forward_flops(config, n, length) for n, length in step_shapes_ours(step))
           for step in host]
  padded = [sum(n * length for n, length in step_shapes_ours(step)) for step in host]
  real = [sum(real_tokens(split_of(data, plan.workload, t), b.indices) for t, b in step.items())
          for step in plan.ours]
  outputs = []
  if plan.workload == "inference":
    run = lambda batches: outputs.append(side.predict("sst", batches["sst"]))
    sync = lambda: side.sync(outputs)
  else:
    run, sync = side.train_step, side.sync
  row = Row(model_name, plan.workload, plan.padding, impl, dtype)
  with RssMonitor() as monitor:
    seconds, warmup_s = time_steps(run, device, warmup=warmup, iters=iters, sync=sync, compile_every_shape=True)
  fill_row(row, seconds=seconds, warmup_s=warmup_s, examples=examples_per_step(plan.workload, batch_size),
           real=_cycle_mean(real, iters), padded=_cycle_mean(padded, iters), flops=_cycle_mean(flops, iters),
           peak_gflops=peak_gflops, monitor=monitor)
  pieces = side.breakdown(device) if breakdown and plan.workload != "inference" else {}
  return row, pieces


def run_peer(peer: TorchPeer | None, data: BenchData, plan: StepPlan, hf_tokenizer, *, model_name: str,
             peer_name: str, bert_config, batch_size: int, warmup: int, iters: int,
             peak_gflops: float, failure: str = "", dtype: str = "float32") -> Row:
  """Times one PyTorch peer on the plan's `peer` batches; "n/a (reason)" if it cannot run.

  The batches are on the peer's device before the clock starts, as ours are.
  """
  row = Row(model_name, plan.workload, plan.padding, peer_name, dtype)
  if peer is None:
    row.note = f"n/a ({failure})"
    return row
  inputs = [peer.to_device({t: torch_batch(split_of(data, plan.workload, t), b, hf_tokenizer)
                            for t, b in step.items()}) for step in plan.peer]
  multiplier = 1 if plan.workload == "inference" else TRAIN_FLOPS_PER_FORWARD
  flops = [multiplier * sum(encoder_forward_flops(bert_config, n, length) for n, length in step_shapes_peer(s))
           for s in inputs]
  padded = [sum(n * length for n, length in step_shapes_peer(s)) for s in inputs]
  real = [sum(int(side["attention_mask"].sum()) for batch in s.values() for k, side in batch.items()
              if k.startswith("input_ids")) for s in inputs]
  if plan.workload == "inference":
    run = lambda batches: peer.predict("sst", batches["sst"])
  elif plan.workload == "pcgrad":
    run = peer.pcgrad_step
  else:
    run = peer.train_step
  try:
    with RssMonitor() as monitor:
      seconds, warmup_s = time_steps(run, inputs, warmup=warmup, iters=iters, sync=peer.sync,
                                     compile_every_shape=peer.name == "torch.compile")
  except Exception as error:  # torch.compile fails in many ways (no compiler, unsupported op)
    if peer.name != "torch.compile":
      raise
    row.note = f"n/a ({type(error).__name__}: {str(error).splitlines()[0][:80] if str(error) else ''})"
    return row
  return fill_row(row, seconds=seconds, warmup_s=warmup_s, examples=examples_per_step(plan.workload, batch_size),
                  real=_cycle_mean(real, iters), padded=_cycle_mean(padded, iters),
                  flops=_cycle_mean(flops, iters), peak_gflops=peak_gflops, monitor=monitor)


def _cycle_mean(values: Sequence[float], iters: int) -> float:
  """Mean per timed step when the timed window cycles `iters` steps over `values`."""
  return float(np.mean([values[k % len(values)] for k in range(iters)]))
