"""The pieces of `bench/device_check.sh` that are Python: the platform, the training run, the summary.

  python -m bench.device_check platform --out=RUN/platform.json
  python -m bench.device_check tiny_checkpoint --out_dir=RUN/tiny_checkpoint
  python -m bench.device_check train --workdir=RUN/train --out=RUN/train.json -- --config.max_steps=200
  python -m bench.device_check summarize --run_dir=RUN

`train` runs the trainer's own command line (`train.main.run`, as `python -m
train.main` does) in this process, so that afterwards it can read the
process's peak memory: the device allocator's `peak_bytes_in_use` on a GPU or
TPU, the peak RSS on the CPU. From the run's `metrics.jsonl` it takes the
examples per second of every logged window but the first (which compiles the
step), and it counts the FLOPs of those very steps by drawing the same batches
again from the same data stream (`train.data.TaskData.train_stream`, the seed
and the packing of the run) with `bench.flops.encoder_forward_flops`, so MFU is
the FLOPs the run computed over its time, against the chips' bfloat16 peak.

`summarize` reads what each section left in the run directory and prints the
one table, a row per measurement, `| section | item | value | detail |`, with
"n/a (why)" where a section failed or ran out of time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence

# Dense bfloat16 peak per device, TFLOP/s, from the vendors' spec sheets; matched in this order
# against jax's device_kind. A device not listed is measured instead (the bfloat16 matmul rate).
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("H800", 989.4), ("GH200", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0),
    ("TPU v6 lite", 918.0), ("TPU v5 lite", 197.0), ("TPU v5p", 459.0), ("TPU v5", 459.0), ("TPU v4", 275.0),
)

SECTIONS = ("(a) tests", "(b) step vs torch", "(c) train", "(d) memory")


def spec_bf16_peak_tflops(device_kind: str) -> float | None:
  for name, tflops in BF16_PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return tflops
  return None


# ---- platform -------------------------------------------------------------------------------------

def platform_info() -> dict:
  import jax
  device = jax.devices()[0]
  # JAX_PLATFORMS wants the backend's name ("cuda", "rocm"), not the platform's ("gpu" would ask for all three
  # GPU backends, and fail on the ones not installed).
  version = str(getattr(device.client, "platform_version", "")).lower()
  backend = {"gpu": "rocm" if "rocm" in version else "cuda"}.get(device.platform, device.platform)
  info = {"platform": device.platform, "backend": backend, "device_kind": device.device_kind,
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "jax": jax.__version__}
  try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = bool(torch.cuda.is_available())
  except ImportError:
    info["torch"], info["torch_cuda"] = None, False
  return info


# ---- the training run -----------------------------------------------------------------------------

def device_memory_peak_mb() -> tuple[str, float]:
  """("device", the largest peak_bytes_in_use of the local devices) or ("RSS", the process's peak)."""
  import jax
  from bench.memory import peak_rss_mb
  stats = [d.memory_stats() for d in jax.local_devices()]
  if all(s and "peak_bytes_in_use" in s for s in stats):
    return "device", max(s["peak_bytes_in_use"] for s in stats) / 2 ** 20
  return "RSS", peak_rss_mb()


def read_train_windows(workdir: str) -> list[dict]:
  """The run's logged train windows, in order: {"step", "examples_per_s"}."""
  windows = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if record.get("kind") == "train" and "examples_per_s" in record:
        windows.append({"step": int(record["step"]), "examples_per_s": float(record["examples_per_s"])})
  return windows


def step_costs(config, num_steps: int) -> list[dict]:
  """Per step of the run: examples (filler rows included, as the trainer counts them) and training FLOPs.

  The same batches the run trained on: the data, the stream and the packing
  are built as `Trainer.make_stage` builds them, and the stream is
  deterministic in the seed.
  """
  from bench.flops import TRAIN_FLOPS_PER_FORWARD, encoder_forward_flops
  from bench.our_side import step_shapes_ours
  from bert_jax import checkpoints as bert_checkpoints
  from train import data as task_data_lib
  from train.parallel import DataParallel
  pretrained = bert_checkpoints.load_hf_checkpoint(config.checkpoint)
  data = task_data_lib.TaskData.create(config, pretrained.tokenizer)
  parallel = DataParallel.create(config.parallel.mode, config.parallel.num_devices)
  stream = data.train_stream(schedule=config.task_schedule, proportions=config.proportions,
                             batch_size=config.batch_size, num_epochs=config.num_epochs, seed=config.seed,
                             num_devices=parallel.num_devices, packing=data.packing_spec(num_devices=parallel.num_devices))
  costs = []
  for _ in range(num_steps):
    batches = next(stream)
    flops = TRAIN_FLOPS_PER_FORWARD * sum(encoder_forward_flops(pretrained.config, n, length)
                                          for n, length in step_shapes_ours(batches))
    costs.append({"examples": sum(int(b["weights"].shape[0]) for b in batches.values()), "flops": flops})
  return costs


def steady_throughput(windows: Sequence[dict], costs: Sequence[dict]) -> dict:
  """Examples/s and FLOP/s over every window but the first (which compiles the step)."""
  seconds = examples = flops = 0.0
  rates, start = [], 0
  for k, window in enumerate(windows):
    steps = costs[start:window["step"]]
    start = window["step"]
    if k == 0 or not steps:
      continue
    window_examples = sum(c["examples"] for c in steps)
    seconds += window_examples / window["examples_per_s"]
    examples += window_examples
    flops += sum(c["flops"] for c in steps)
    rates.append(window["examples_per_s"])
  if not seconds:
    return {"examples_per_s": math.nan, "flop_per_s": math.nan, "median_window_examples_per_s": math.nan,
            "steps": 0}
  return {"examples_per_s": examples / seconds, "flop_per_s": flops / seconds,
          "median_window_examples_per_s": statistics.median(rates), "steps": start - windows[0]["step"]}


def run_training(workdir: str, train_args: Sequence[str], matmul_size: int) -> dict:
  """`python -m train.main --workdir=<workdir> <train_args>` in this process; then its memory, speed and MFU."""
  import time
  sys.argv = ["train.main", f"--workdir={workdir}", *train_args]
  from train import main as train_main
  start = time.perf_counter()
  try:
    train_main.run()
  except SystemExit as done:  # absl's app.run always ends in sys.exit
    if done.code not in (None, 0):
      raise
  wall_s = time.perf_counter() - start
  memory_kind, memory_mb = device_memory_peak_mb()
  import jax
  import ml_collections
  from bench.flops import measure_matmul_peak
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  config = ml_collections.ConfigDict(results["config"])
  windows = read_train_windows(workdir)
  throughput = steady_throughput(windows, step_costs(config, windows[-1]["step"]))
  device = jax.devices()[0]
  devices = jax.device_count()
  spec = spec_bf16_peak_tflops(device.device_kind)
  measured = measure_matmul_peak(matmul_size, dtype="bfloat16", torch_device="cpu" if device.platform != "gpu"
                                 else "cuda")["xla"] * devices / 1e3  # TFLOP/s, XLA's own product
  return {"wall_s": wall_s, "steps": windows[-1]["step"], "dtype": config.dtype, "devices": devices,
          "device_kind": device.device_kind, "memory_kind": memory_kind, "memory_peak_mb": memory_mb,
          "compile_s": results.get("compilation", {}).get("seconds"), **throughput,
          "spec_bf16_peak_tflops": None if spec is None else spec * devices, "measured_bf16_peak_tflops": measured}


# ---- the summary table ----------------------------------------------------------------------------

def _load(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _failed(run_dir: str, name: str) -> str:
  status = (_load(os.path.join(run_dir, "status.json")) or {}).get(name, {})
  if status.get("timed_out"):
    return f"n/a (timed out after {status.get('limit_s')} s; log {name}.log)"
  return f"n/a (exit {status.get('rc', '?')}; log {name}.log)"


def test_rows(run_dir: str, platform: str) -> list[tuple]:
  try:
    suite = ElementTree.parse(os.path.join(run_dir, "tests.xml")).getroot()
  except (OSError, ElementTree.ParseError):
    return [(SECTIONS[0], f"tests on {platform}", _failed(run_dir, "tests"), "")]
  suites = [suite] if suite.tag == "testsuite" else list(suite.iter("testsuite"))
  total = lambda key: sum(int(s.get(key, 0)) for s in suites)
  failed = total("failures") + total("errors")
  passed = total("tests") - failed - total("skipped")
  seconds = sum(float(s.get("time", 0)) for s in suites)
  return [(SECTIONS[0], f"tests on {platform}", f"{passed} passed, {failed} failed, {total('skipped')} skipped",
           f"{seconds:.1f} s; log tests.log")]


def step_rows(run_dir: str) -> list[tuple]:
  result = _load(os.path.join(run_dir, "step.json"))
  if result is None:
    return [(SECTIONS[1], "ours / hf-sdpa, examples per second", _failed(run_dir, "step"), "")]
  rows = {(r["model"], r["workload"], r["padding"], r["dtype"], r["impl"]): r for r in result["rows"]}
  out = []
  for q in result["ratios"]:
    ours = rows[(q["model"], q["workload"], q["padding"], q["dtype"], "ours")]
    peer = rows[(q["model"], q["workload"], q["padding"], q["dtype"], q["peer"])]
    out.append((SECTIONS[1], f"{q['model']} {q['workload']} {q['padding']} {q['dtype']}: ours / {q['peer']}",
                f"{q['ratio']:.2f}x", f"ours {ours['examples_per_s']:.1f} ex/s (MFU {100 * ours['mfu']:.1f}%), "
                f"{q['peer']} {peer['examples_per_s']:.1f} ex/s (MFU {100 * peer['mfu']:.1f}%)"))
  return out or [(SECTIONS[1], "ours / hf-sdpa, examples per second", "n/a (no comparable rows)", "")]


def train_rows(run_dir: str) -> list[tuple]:
  result = _load(os.path.join(run_dir, "train.json"))
  if result is None:
    return [(SECTIONS[2], "examples/s", _failed(run_dir, "train"), "")]
  where = f"{result['steps']} steps, {result['dtype']}, {result['devices']} x {result['device_kind']}"
  rows = [(SECTIONS[2], "examples/s, every logged window but the first", f"{result['examples_per_s']:.1f}",
           f"{where}; median window {result['median_window_examples_per_s']:.1f}; wall {result['wall_s']:.0f} s, "
           f"compiling {result['compile_s'] or 0:.0f} s")]
  for label, peak in (("spec-sheet bf16 peak", result["spec_bf16_peak_tflops"]),
                      ("measured bf16 matmul rate", result["measured_bf16_peak_tflops"])):
    if peak:
      rows.append((SECTIONS[2], f"MFU vs the {label}", f"{100 * result['flop_per_s'] / (peak * 1e12):.2f}%",
                   f"{result['flop_per_s'] / 1e9:.1f} of {1e3 * peak:.1f} GFLOP/s"))
  return rows


def memory_rows(run_dir: str) -> list[tuple]:
  rows = []
  train = _load(os.path.join(run_dir, "train.json"))
  if train is None:
    rows.append((SECTIONS[3], "peak memory of the training run", _failed(run_dir, "train"), ""))
  else:
    rows.append((SECTIONS[3], f"peak {train['memory_kind']} memory of the training run",
                 f"{train['memory_peak_mb']:.0f} MB", f"{train['devices']} x {train['device_kind']}"))
  pcgrad = _load(os.path.join(run_dir, "pcgrad.json"))
  if pcgrad is None:
    return rows + [(SECTIONS[3], "pcgrad / summed", _failed(run_dir, "pcgrad"), "")]
  by_key = {(r["model"], r["workload"], r["dtype"], r["impl"]): r for r in pcgrad["rows"]}
  for (model, workload, dtype, impl), row in by_key.items():
    summed = by_key.get((model, "multitask", dtype, impl))
    if workload == "pcgrad" and summed:
      rows.append((SECTIONS[3], f"{model} {dtype} {impl}: pcgrad / summed step time",
                   f"{row['ms_per_step'] / summed['ms_per_step']:.2f}x",
                   f"{row['ms_per_step']:.1f} / {summed['ms_per_step']:.1f} ms per step"))
  measured = {(m["model"], m["impl"], m["step"]): m for m in pcgrad.get("memory", []) if not m["note"].startswith("n/a")}
  for q in pcgrad.get("memory_ratios", []):
    a, b = q["name"].split(" / ")
    first, second = (measured.get((q["model"], *name.split(" "))) for name in (a, b))
    verdict = "" if q["target"] is None else f"; target <= {q['target']:.1f}: {'met' if q['met'] else 'MISSED'}"
    rows.append((SECTIONS[3], f"{q['model']} {q['name']}: peak memory", f"{q['peak']:.2f}x",
                 f"{first['kind']} {first['peak_mb']:.0f} / {second['peak_mb']:.0f} MB; what the step adds "
                 f"{q['step']:.2f}x{verdict}"))
  for m in pcgrad.get("memory", []):
    if m["note"].startswith("n/a"):
      rows.append((SECTIONS[3], f"{m['model']} {m['impl']} {m['step']}: peak memory", m["note"], ""))
  return rows


def summary_table(run_dir: str) -> str:
  platform = _load(os.path.join(run_dir, "platform.json")) or {}
  status = _load(os.path.join(run_dir, "status.json")) or {}
  name = platform.get("platform", "unknown")
  header = (f"device check on {name}: {platform.get('local_device_count', '?')} x {platform.get('device_kind', '?')} "
            f"(jax {platform.get('jax', '?')}, torch {platform.get('torch', '?')}, torch CUDA "
            f"{'yes' if platform.get('torch_cuda') else 'no'}); {'dry run' if status.get('dry_run') else 'full run'}; "
            f"{status.get('total_s', 0):.0f} s; run dir {run_dir}")
  rows = test_rows(run_dir, name) + step_rows(run_dir) + train_rows(run_dir) + memory_rows(run_dir)
  widths = [max(len(str(r[i])) for r in rows + [("section", "item", "value", "detail")]) for i in range(4)]
  line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
  return "\n".join([header, line(("section", "item", "value", "detail")),
                    "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.device_check", description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest="command", required=True)
  platform = commands.add_parser("platform")
  platform.add_argument("--out", required=True)
  tiny = commands.add_parser("tiny_checkpoint", help="a tiny random BERT with all-MiniLM-L6's vocabulary")
  tiny.add_argument("--out_dir", required=True)
  train = commands.add_parser("train")
  train.add_argument("--workdir", required=True)
  train.add_argument("--out", required=True)
  train.add_argument("--matmul_size", type=int, default=4096)
  train.add_argument("train_args", nargs="*", help="flags for train.main, after --")
  summarize = commands.add_parser("summarize")
  summarize.add_argument("--run_dir", required=True)
  args = parser.parse_args(argv)
  if args.command == "platform":
    info = platform_info()
    with open(args.out, "w") as f:
      json.dump(info, f)
    print(f"{info['platform']}: {info['local_device_count']} x {info['device_kind']}")
  elif args.command == "tiny_checkpoint":
    import jax
    import jax.numpy as jnp
    from bert_jax import checkpoints
    from bert_jax.config import BertConfig
    from bert_jax.modeling import BertModel
    vocab = checkpoints.resolve_checkpoint("minilm-l6").vocab_path
    config = BertConfig.tiny(vocab_size=30522, max_position_embeddings=512)
    params = BertModel(config).init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))["params"]
    print(checkpoints.export_hf_checkpoint(params, config, vocab, args.out_dir))
  elif args.command == "train":
    result = run_training(args.workdir, args.train_args, args.matmul_size)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  else:
    print(summary_table(args.run_dir))


if __name__ == "__main__":
  main()
