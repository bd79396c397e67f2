"""One epoch of a preset end to end (data, steps, eval, checkpoint), and where its time goes.

  python -m bench.epoch_benchmark                                  # default preset, 1 epoch
  python -m bench.epoch_benchmark --config.max_steps=40            # a short look
  python -m bench.epoch_benchmark --config=train/configs/pcgrad_diff.py --out=/tmp/epoch.json

It drives the trainer's own pieces (`Trainer`, `make_stage`, `run_stage`) and
times them from outside: the step, the evaluation and the checkpoint saves are
wrapped, the stream's batch assembly (which runs in the prefetch thread) is
wrapped, and XLA compilations are counted through `jax.monitoring`. What the
loop spends outside those (waiting for batches, logging, the progress bar, Python)
is the rest.

To see the step's own time the wrapper waits for each step to finish
(`--sync_steps`, the default). The trainer itself does not wait, so this removes
the overlap of host work with the next step; `--nosync_steps` times the run as
the trainer runs it, and then only the totals are meaningful.

Run it twice with the same --config: the second start should find every
executable in the persistent compilation cache ("compile s" near zero, cache hits).
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from typing import Any, Callable

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), os.pardir, "train", "configs", "base.py"),
    "Training preset; override fields with --config.x=y.", lock_config=False)
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs to run (overrides config.num_epochs).")
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory; '' = a fresh temporary one (no resume).")
_SYNC_STEPS = flags.DEFINE_bool("sync_steps", True, "Wait for each step, to time it alone.")
_OUT = flags.DEFINE_string("out", "", "Also write the breakdown as JSON here.")


class Clock:
  """Seconds and calls per named phase, plus XLA compile seconds and cache events seen meanwhile."""

  def __init__(self):
    from train.compile_stats import CompilationStats
    self.seconds = collections.defaultdict(float)
    self.calls = collections.defaultdict(int)
    self.compile_seconds = collections.defaultdict(float)
    self.compilation = CompilationStats()

  @property
  def compile_total(self) -> float:
    return self.compilation.seconds

  @property
  def cache_read_seconds(self) -> float:
    return self.compilation.cache_read_seconds

  @property
  def events(self) -> dict:
    return dict(self.compilation.cache_events)

  def wrap(self, name: str, fn: Callable, *, after: Callable[[Any], Any] | None = None) -> Callable:
    """`fn` timed under `name`; `after(result)` (e.g. a device sync) is inside the timing."""
    def timed(*args, **kwargs):
      compile_before = self.compile_total
      start = time.perf_counter()
      result = fn(*args, **kwargs)
      if after is not None:
        after(result)
      self.seconds[name] += time.perf_counter() - start
      self.calls[name] += 1
      self.compile_seconds[name] += self.compile_total - compile_before
      return result
    return timed


class TimedStream:
  """The sampler with `__next__` (host-side batch assembly) timed; everything else passes through."""

  def __init__(self, stream, clock: Clock):
    self._stream = stream
    self._next = clock.wrap("batch assembly (prefetch thread)", stream.__next__)

  def __iter__(self):
    return self

  def __next__(self):
    return self._next()

  def __getattr__(self, name):
    return getattr(self._stream, name)


def run_epoch(config, workdir: str, *, sync_steps: bool = True) -> dict:
  """Runs the preset's main stage for `config.num_epochs` and returns the time breakdown."""
  import jax
  from train import train as train_lib

  clock = Clock()
  with clock.compilation:  # listens to jax.monitoring for this run only
    cache_dir = train_lib.enable_compilation_cache(config)
    start = time.perf_counter()
    trainer = clock.wrap("setup: checkpoint, tokenized data", train_lib.Trainer)(config, workdir)
    params = clock.wrap("setup: initial params", trainer.initial_params)()
    make_stage = clock.wrap("setup: optimizer, state, step", trainer.make_stage)
    stage = make_stage("main", params, task_schedule=config.task_schedule, num_epochs=config.num_epochs,
                       optim_config=config.optim, pcgrad_config=config.pcgrad)
    sync = (lambda result: jax.block_until_ready(result)) if sync_steps else None
    stage.step_fn = clock.wrap("train step", stage.step_fn, after=sync)
    stage.stream = TimedStream(stage.stream, clock)
    trainer.evaluate = clock.wrap("evaluation", trainer.evaluate)
    stage.checkpoints.save = clock.wrap("checkpoint saves", stage.checkpoints.save)
    stage.checkpoints.wait = clock.wrap("checkpoint saves", stage.checkpoints.wait)
    loop_start = time.perf_counter()
    trainer.run_stage(stage)
    loop_seconds = time.perf_counter() - loop_start
    stage.checkpoints.close()
    total = time.perf_counter() - start

  steps = clock.calls["train step"]
  examples = steps * config.batch_size
  in_loop = ("train step", "evaluation", "checkpoint saves")
  outside = loop_seconds - sum(clock.seconds[k] for k in in_loop)
  return {
      "config": config.name, "epochs": config.num_epochs, "steps": steps, "examples": examples,
      "sync_steps": sync_steps, "compilation_cache": cache_dir, "total_s": total, "train_loop_s": loop_seconds,
      "phases_s": dict(clock.seconds), "calls": dict(clock.calls), "compile_s": dict(clock.compile_seconds),
      "compile_total_s": clock.compile_total, "cache_events": dict(clock.events),
      "cache_read_s": clock.cache_read_seconds,
      "outside_step_in_loop_s": outside,
      "step_examples_per_s": examples / max(clock.seconds["train step"] - clock.compile_seconds["train step"], 1e-9),
      "end_to_end_examples_per_s": examples / total,
  }


def format_report(report: dict) -> str:
  phases, compiles = report["phases_s"], report["compile_s"]
  total, loop = report["total_s"], report["train_loop_s"]
  lines = [f"{report['config']}: {report['epochs']} epoch(s), {report['steps']} steps, "
           f"{report['examples']} examples; steps {'synced' if report['sync_steps'] else 'not synced'}",
           f"{'phase':<40} {'s':>9} {'% total':>8} {'compile s':>10} {'calls':>6}", "-" * 77]
  def line(name, seconds, compile_s=0.0, calls=""):
    lines.append(f"{name:<40} {seconds:9.1f} {100 * seconds / total:7.1f}% {compile_s:10.1f} {calls!s:>6}")
  for name in ("setup: checkpoint, tokenized data", "setup: initial params", "setup: optimizer, state, step"):
    line(name, phases.get(name, 0.0), compiles.get(name, 0.0))
  line("train loop (run_stage)", loop)
  for name in ("train step", "evaluation", "checkpoint saves"):
    line("  " + name, phases.get(name, 0.0), compiles.get(name, 0.0), report["calls"].get(name, 0))
  line("  outside the step, eval and saves", report["outside_step_in_loop_s"])
  name = "batch assembly (prefetch thread)"
  line(f"  ({name}, overlapped)", phases.get(name, 0.0), 0.0, report["calls"].get(name, 0))
  line("total", total, report["compile_total_s"])
  lines += ["", f"XLA compile: {report['compile_total_s']:.1f} s in all, of which "
                f"{report.get('cache_read_s', 0.0):.1f} s reading executables from the persistent cache "
                f"{report['compilation_cache']}: {report['cache_events']}",
            f"train step alone (compiles excluded): {report['step_examples_per_s']:.1f} examples/s; "
            f"end to end: {report['end_to_end_examples_per_s']:.1f} examples/s"]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  config.num_epochs = _EPOCHS.value
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="epoch_benchmark_")
  report = run_epoch(config, workdir, sync_steps=_SYNC_STEPS.value)
  print(format_report(report))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main)
