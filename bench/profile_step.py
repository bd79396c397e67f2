"""Where our train step's time goes: each compiled piece traced alone, op by op.

  python -m bench.profile_step                                  # multitask step, natural padding
  python -m bench.profile_step --workload=pcgrad --top=30
  python -m bench.profile_step --workload=sst --padding=same --dump_dir=/tmp/hlo

The step is the trainer's own (built exactly as `bench.our_side.OurSide` builds
it for `bench.step_benchmark`, on the same batches). Each compiled piece of it
(every task's gradient at its bucket shape, then the apply) runs `--iters`
times under `jax.profiler`, and the trace's per-thunk times are joined with
that executable's optimized HLO, whose `op_name` metadata names the model code
each fusion came from (".../encoder/layer/3/intermediate/erf"). Layers are
folded together, so a line reads "all six layers' GELU forward".

Categories: `matmul` (every dot: projections, feed-forward, attention scores
and context, their gradients), `attention` (softmax, masking, head
transposes), `gelu`, `layernorm`, `dropout`, `embeddings` (lookups and their
gradient), `optimizer` (the apply: clipping, AdamW, PCGrad), `other`.

Thunks of one executable can run concurrently on the CPU's thread pool, so
the ops' times may add up to more than the wall time; both are printed.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


CATEGORIES = ("matmul", "attention", "gelu", "layernorm", "dropout", "embeddings", "optimizer", "other")


@dataclasses.dataclass
class OpTime:
  """One HLO instruction of the entry computation and the time its thunk took per call."""
  name: str
  shape: str
  op_name: str
  ms: float


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{instruction name: (shape, op_name metadata)} for the entry computation of optimized HLO text."""
  entry = hlo_text[hlo_text.index("\nENTRY"):] if "\nENTRY" in hlo_text else hlo_text
  instructions = {}
  for line in entry.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
    if match:
      op_name = re.search(r'op_name="([^"]*)"', line)
      instructions[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "")
  return instructions


def thunk_times(trace_dir: str) -> collections.Counter:
  """{event name: total microseconds} from the perfetto trace `jax.profiler` wrote."""
  files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
  if not files:
    raise FileNotFoundError(f"no perfetto trace under {trace_dir}")
  with gzip.open(files[0]) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  totals: collections.Counter = collections.Counter()
  for event in events:
    if event.get("ph") == "X":
      totals[event["name"]] += event.get("dur", 0)
  return totals


def category(op_name: str, instruction: str) -> str:
  """Which part of the model (or optimizer) an instruction's `op_name` points at."""
  if "dot_general" in op_name or instruction.startswith("dot"):
    return "matmul"
  if "Dropout" in op_name or "dropout" in op_name:
    return "dropout"
  if "LayerNorm" in op_name:
    return "layernorm"
  if "intermediate" in op_name:
    return "gelu"
  if "attention/self" in op_name:
    return "attention"
  if "embeddings" in op_name:
    return "embeddings"
  if any(k in op_name for k in ("adam", "clip", "pcgrad", "apply_gradients", "scale_by", "partition")):
    return "optimizer"
  return "other"


def logical_op(op_name: str) -> str:
  """`op_name` with layer indices and the jit/module prefixes folded away."""
  op = re.sub(r"layer/\d+", "layer/*", op_name)
  op = re.sub(r"^jit\([^)]*\)/", "", op)
  return op.replace("MultitaskBert._pooled/MultitaskBert.encode/bert/", "")


def profile_executable(run: Callable[[], Any], hlo_text: str, iters: int) -> tuple[float, list[OpTime]]:
  """(wall ms per call, per-instruction times) of `run` (which must block until done)."""
  run()
  start = time.perf_counter()
  for _ in range(iters):
    run()
  wall_ms = 1000 * (time.perf_counter() - start) / iters
  import jax
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    try:
      for _ in range(iters):
        run()
    finally:
      jax.profiler.stop_trace()
    totals = thunk_times(trace_dir)
  instructions = hlo_instructions(hlo_text)
  ops = [OpTime(name, *instructions[name], ms=us / 1000 / iters)
         for name, us in totals.items() if name in instructions]
  return wall_ms, ops


def summarize(ops: Sequence[OpTime], top: int) -> tuple[dict[str, float], list[tuple[str, str, str, float]]]:
  """(ms per category, the `top` logical ops as (kind, shape, op, ms)), layers folded together."""
  by_category: dict[str, float] = {c: 0.0 for c in CATEGORIES}
  by_op: dict[tuple[str, str], list] = {}
  for op in ops:
    by_category[category(op.op_name, op.name)] += op.ms
    kind = re.sub(r"\.\d+$", "", op.name)
    key = (kind, logical_op(op.op_name))
    entry = by_op.setdefault(key, [op.shape, 0.0])
    entry[1] += op.ms
  ranked = sorted(((k[0], v[0], k[1], v[1]) for k, v in by_op.items()), key=lambda r: -r[3])
  return by_category, ranked[:top]


def format_profile(title: str, wall_ms: float, ops: Sequence[OpTime], top: int) -> str:
  by_category, ranked = summarize(ops, top)
  total = sum(by_category.values())
  lines = [f"{title}: wall {wall_ms:.1f} ms/call; ops {total:.1f} ms "
           f"(concurrent thunks can make ops > wall)",
           "  " + ", ".join(f"{c} {ms:.1f}" for c, ms in by_category.items() if ms >= 0.05)]
  for kind, shape, op, ms in ranked:
    lines.append(f"  {ms:8.1f} ms  {kind[:24]:<24} {shape[:30]:<30} {op[:110]}")
  return "\n".join(lines)


def step_pieces(side, device_batches: Mapping[str, Any], rng) -> list[tuple[str, Callable[[], Any], str]]:
  """(label, run, optimized HLO) for each compiled piece of one train step, in step order.

  The apply donates the state, so its `run` keeps the returned state for the next call.
  """
  import jax
  pieces = []
  grads, losses = {}, {}
  for task, batch in device_batches.items():
    fn = side.step_fn.task_gradients[task]
    hlo = fn.lower(side.state.params, batch, rng).compile().as_text()
    grads[task], losses[task], _ = fn(side.state.params, batch, rng)
    shape = "x".join(str(d) for d in batch["input_ids"].shape)
    pieces.append((f"gradient {task} [{shape}]",
                   lambda fn=fn, batch=batch: jax.block_until_ready(fn(side.state.params, batch, rng)), hlo))
  apply = side.step_fn.apply_gradients
  hlo = apply.lower(side.state, grads, losses, rng).compile().as_text()

  def run_apply():
    side.state, metrics = apply(side.state, grads, losses, rng)
    return jax.block_until_ready(metrics)
  pieces.append(("apply", run_apply, hlo))
  return pieces


def main(argv):
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  import jax
  from bench.batches import load_course_data, plan_workload, split_of
  from bench.our_side import OurSide, our_batch
  from bench.step_benchmark import model_config
  from bert_jax import checkpoints
  vocab_path = str(checkpoints.resolve_checkpoint("minilm-l6").vocab_path)
  data = load_course_data(vocab_path, packing=FLAGS.packing)
  bert_config = model_config(FLAGS.model, vocab_size=30522)
  if FLAGS.workload == "inference":
    raise app.UsageError("profile_step profiles train steps; use --workload=multitask, pcgrad or sst")
  plan = plan_workload(data, FLAGS.workload, FLAGS.padding, batch_size=FLAGS.batch_per_task,
                       count=FLAGS.steps, same_length=FLAGS.same_length, seed=FLAGS.seed)
  freeze = ("word_embeddings",) if FLAGS.frozen_word_embeddings else ()
  side = OurSide(bert_config, pcgrad=FLAGS.workload == "pcgrad", freeze=freeze, seed=FLAGS.seed)
  totals: dict[str, float] = {}
  all_ops: list[OpTime] = []
  for k, step in enumerate(plan.ours):
    host = {t: our_batch(split_of(data, plan.workload, t), b) for t, b in step.items()}
    device = side.put(host)
    rng = jax.random.fold_in(jax.random.key(FLAGS.seed), k)
    for label, run, hlo in step_pieces(side, device, rng):
      wall_ms, ops = profile_executable(run, hlo, FLAGS.iters)
      print(format_profile(f"step {k} {label}", wall_ms, ops, FLAGS.top), flush=True)
      totals[label.split(" [")[0]] = totals.get(label.split(" [")[0], 0.0) + wall_ms / len(plan.ours)
      all_ops += [dataclasses.replace(op, ms=op.ms / len(plan.ours)) for op in ops]
      if FLAGS.dump_dir:
        os.makedirs(FLAGS.dump_dir, exist_ok=True)
        with open(os.path.join(FLAGS.dump_dir, f"step{k}_{label.split(' [')[0].replace(' ', '_')}.hlo.txt"),
                  "w") as f:
          f.write(hlo)
  print()
  print(f"mean per step over {len(plan.ours)} steps ({FLAGS.workload}, {FLAGS.padding}): "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in totals.items()) + f"; sum {sum(totals.values()):.1f} ms")
  print(format_profile("all pieces, per step", sum(totals.values()), all_ops, FLAGS.top))


def define_flags():
  from absl import flags
  flags.DEFINE_enum("workload", "multitask", ["multitask", "pcgrad", "sst"], "Which train step.")
  flags.DEFINE_enum("padding", "natural", ["natural", "same"], "As in bench.step_benchmark.")
  flags.DEFINE_string("model", "minilm-l6", "minilm-l6, bert-base or tiny (random init).")
  flags.DEFINE_bool("packing", True, "Pack natural batches as the trainer does; --nopacking: length buckets.")
  flags.DEFINE_integer("steps", 2, "Distinct steps (batches at quantiles of an epoch's lengths).")
  flags.DEFINE_integer("iters", 3, "Traced calls of each piece.")
  flags.DEFINE_integer("top", 20, "Logical ops listed per piece.")
  flags.DEFINE_integer("batch_per_task", 32, "Examples per task per step.")
  flags.DEFINE_integer("same_length", 64, "Padded length with --padding=same.")
  flags.DEFINE_integer("seed", 0, "Which batches, and the random init.")
  flags.DEFINE_bool("frozen_word_embeddings", False, "Freeze the word-embedding table.")
  flags.DEFINE_string("dump_dir", "", "Also write each piece's optimized HLO text here.")


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
