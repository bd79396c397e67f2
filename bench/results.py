"""What a step benchmark run found, and the table it prints.

`Row` is one line of the table (one implementation on one workload and
padding), `BenchResult` a whole run with the machine it ran on. `ratios`
compares ours with each peer in examples per second and checks the speed
targets in `TARGETS`: ours / hf-sdpa >= 1.5x where each side pads its natural
way (each side's padding is part of its speed), and >= 1.0x, parity, where
both run the same padded shape (the compute alone). Rows compare within one
compute dtype: our float32 step against the float32 peer, our bfloat16 step
(`config.dtype`, float32 params) against the peer under `torch.autocast`. The
targets were set for float32; bfloat16 ratios are shown without one.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Mapping, Sequence

# (workload, padding) -> the least ratio ours / hf-sdpa, in examples per second, that meets the target.
TARGETS = {("multitask", "natural"): 1.5, ("inference", "natural"): 1.5,
           ("multitask", "same"): 1.0, ("pcgrad", "same"): 1.0, ("sst", "same"): 1.0,
           ("inference", "same"): 1.0}


@dataclasses.dataclass
class Row:
  """One line of the table: one implementation timed on one workload and padding."""
  model: str
  workload: str
  padding: str
  impl: str
  dtype: str = "float32"  # compute dtype: ours config.dtype, the peer's torch.autocast dtype
  ms_per_step: float = float("nan")
  examples_per_s: float = float("nan")
  real_tokens_per_s: float = float("nan")
  real_fraction: float = float("nan")
  gflop_per_s: float = float("nan")
  mfu: float = float("nan")
  peak_rss_mb: float = float("nan")
  step_rss_mb: float = float("nan")
  warmup_s: float = float("nan")
  note: str = ""

  @property
  def ok(self) -> bool:
    return not self.note.startswith("n/a")


@dataclasses.dataclass
class BenchResult:
  machine: dict
  rows: list[Row]
  breakdowns: dict[str, dict[str, float]]
  memory: list = dataclasses.field(default_factory=list)  # bench.step_memory.MemoryRow, a process each

  def to_json(self) -> dict:
    from bench import step_memory
    return {"machine": self.machine, "rows": [dataclasses.asdict(r) for r in self.rows],
            "breakdowns": self.breakdowns, "ratios": ratios(self.rows),
            "memory": [dataclasses.asdict(r) for r in self.memory],
            "memory_ratios": step_memory.memory_ratios(self.memory)}


def ratios(rows: Sequence[Row], reference: str = "hf-sdpa") -> list[dict]:
  """ours / peer examples-per-second for every (model, workload, padding, dtype) and peer."""
  out = []
  by_key = {(r.model, r.workload, r.padding, r.dtype, r.impl): r for r in rows}
  for (model, workload, padding, dtype, impl), row in by_key.items():
    if impl.startswith("ours") or not row.ok:
      continue
    mine = by_key.get((model, workload, padding, dtype, "ours"))
    if mine is None or not mine.ok:
      continue
    ratio = mine.examples_per_s / row.examples_per_s
    target = TARGETS.get((workload, padding)) if impl == reference and dtype == "float32" else None
    out.append({"model": model, "workload": workload, "padding": padding, "dtype": dtype, "peer": impl,
                "ratio": ratio, "target": target, "met": None if target is None else bool(ratio >= target)})
  return out


def format_table(result: BenchResult) -> str:
  m = result.machine
  peak = m["matmul_gflops"]
  lines = [
      f"machine: {m['cpu']}, {m['cores']} cores; torch threads {m['torch_threads']} "
      f"(interop {m['torch_interop_threads']}); XLA: {', '.join(m['jax_devices'])} "
      f"(its own thread pool over all cores)",
      f"versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
      + f"; XLA_FLAGS={m['xla_flags'] or '(none)'}; jax prng {m['prng_impl']}",
      "fp32 matmul peak (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
      + "; encoder dropout " + ", ".join(f"{k} {v}" for k, v in m.get("encoder_dropout", {}).items()),
  ]
  if m.get("matmul_gflops_bf16"):
    lines.append("bf16 matmul peak (GFLOP/s), the bfloat16 rows' MFU: "
                 + ", ".join(f"{k} {v:.0f}" for k, v in m["matmul_gflops_bf16"].items()))
  if m.get("torch_device", "cpu") != "cpu":
    lines.append(f"torch device {m['torch_device']}; torch float32 matmul precision "
                 f"{m.get('torch_float32_matmul_precision')}; XLA's default float32 dot precision on GPU may use TF32")
  lines.append("")
  header = (f"{'model':<10} {'workload':<9} {'padding':<7} {'dtype':<8} {'impl':<19} {'ms/step':>9} {'ex/s':>8} "
            f"{'real tok/s':>10} {'real%':>6} {'GFLOP/s':>8} {'MFU':>6} {'RSS MB':>7} {'+MB':>6} {'warm s':>7}")
  lines += [header, "-" * len(header)]
  for r in result.rows:
    if not r.ok:
      lines.append(f"{r.model:<10} {r.workload:<9} {r.padding:<7} {r.dtype:<8} {r.impl:<19} {r.note}")
      continue
    lines.append(
        f"{r.model:<10} {r.workload:<9} {r.padding:<7} {r.dtype:<8} {r.impl:<19} {r.ms_per_step:9.1f} "
        f"{r.examples_per_s:8.1f} {r.real_tokens_per_s:10.0f} {100 * r.real_fraction:5.0f}% {r.gflop_per_s:8.1f} "
        f"{100 * r.mfu:5.1f}% {r.peak_rss_mb:7.0f} {r.step_rss_mb:6.0f} {r.warmup_s:7.1f}")
  lines += ["", "ours / peer, examples per second, within one dtype (targets, float32 against hf-sdpa: >= 1.5x "
            "with each side's natural padding, >= 1.0x at the same padded shape):"]
  for q in ratios(result.rows):
    verdict = "" if q["target"] is None else f"  target >= {q['target']:.1f}: {'met' if q['met'] else 'MISSED'}"
    lines.append(f"  {q['model']:<10} {q['workload']:<9} {q['padding']:<7} {q['dtype']:<8} vs {q['peer']:<14} "
                 f"{q['ratio']:5.2f}x{verdict}")
  if result.breakdowns:
    lines += ["", "ours, each compiled piece run alone (ms, mean over the timed batches):"]
    for key, pieces in result.breakdowns.items():
      lines.append(f"  {key}: " + ", ".join(f"{k} {v:.1f}" for k, v in pieces.items())
                   + f"; sum {sum(pieces.values()):.1f}")
  if result.memory:
    from bench import step_memory
    lines += ["", step_memory.format_memory_table(result.memory)]
  return "\n".join(lines)


def machine_info(peak: Mapping[str, float], torch_threads: int, *, bf16_peak: Mapping[str, float] | None = None,
                 torch_device: str = "cpu") -> dict:
  import jax
  import torch
  import transformers
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return {
      "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch_threads,
      "torch_interop_threads": torch.get_num_interop_threads(),
      "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
      "jax_devices": [str(d) for d in jax.devices()],
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "prng_impl": str(jax.config.jax_default_prng_impl),
      "matmul_gflops": dict(peak), "matmul_gflops_bf16": dict(bf16_peak or {}),
      "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
      "torch_device": torch_device, "torch_float32_matmul_precision": torch.get_float32_matmul_precision(),
  }
