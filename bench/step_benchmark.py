"""Our train step against the PyTorch peers', side by side, in one process.

  python -m bench.step_benchmark                     # minilm-l6, every workload, both paddings
  python -m bench.step_benchmark --model=bert-base --workloads=multitask,inference --iters=2
  python -m bench.step_benchmark --out=/tmp/step_benchmark.json
  python -m bench.step_benchmark --workloads=multitask --dtypes=float32,bfloat16 --nomemory

Why one process: on a shared 2-core CPU, timings taken minutes apart differ by
more than the effects we want to see, so every row of the table (and the matmul
peak its MFU is measured against) comes from the same run.

Implementations ("impl" column):
  ours           `train.steps.make_train_step`, built as `Trainer.make_stage` builds it
                 from train/configs/base.py: per-task jitted gradients, one donated
                 apply, AdamW with clipping (PCGrad for that workload), dropout on.
  hf-sdpa        `transformers.BertModel` (PyTorch eager, attn_implementation="sdpa")
                 with the preset's heads, the same losses and torch.optim.AdamW, written
                 the way a user of Hugging Face or of the CS224N starter code writes it.
  hf-eager       the same with attn_implementation="eager".
  torch.compile  hf-sdpa with its encoder under `torch.compile` ("n/a (reason)" where
                 inductor fails); by default only in the "same" padding, where one
                 compilation serves every step.
  ours (frozen wemb)  ours with the 30522-row word-embedding table frozen.

Workloads: "multitask" (one round-robin step: 32 SST sentences, 32 Para pairs and
32 STS pairs, each pair encoded as two sentences, then the optimizer), "pcgrad"
(the same with a gradient per task and PCGrad), "sst" (an SST-only step),
"inference" (SST dev sentences through the encoder and head, no gradient).

Padding: "natural" lets each side pad its own way: ours as the trainer does,
packing each batch's sentences into rows (`data_prep/packing.py`; with
--nopacking, padding them to the trainer's length buckets instead); the peer
pads each batch to its longest sentence, as the CS224N code does, over the
very same examples (reshuffled into batches the way a DataLoader would).
"same" pads both sides to the same fixed length (--same_length), which
compares the compute alone.

Dtypes ("dtype" column): "float32" on both sides; "bfloat16" is ours with
config.dtype="bfloat16" (bfloat16 compute, float32 params and optimizer state)
against the peer with its forward and loss under
`torch.autocast(device, dtype=torch.bfloat16)`, as PyTorch's AMP recipe writes
it. Ratios compare within one dtype. On a GPU the peer runs on CUDA
(--torch_device).

Memory: below the table, the peak memory of our summed and PCGrad steps and of
the first peer's, each measured in a process of its own (`bench.step_memory`),
since this process holds every model it has timed.

FLOPs are counted analytically (`bench.flops.encoder_forward_flops`: the matmuls
and the attention scores/context of every layer, on the padded shapes each side
actually ran; training counts 3x the forward). MFU is that rate over the
matmul peak of the row's dtype measured at the start of the run (the best of
numpy, torch and XLA; numpy only for float32 on the CPU).

The pieces, one module each: `bench.batches` (which examples each step gets,
on each side), `bench.our_side` (the trainer's step), `bench.torch_peer` (the
PyTorch peer), `bench.timing` (one row timed), `bench.flops` (FLOPs and the
matmul peak), `bench.memory` (RSS per row), `bench.step_memory` (a step's peak
memory, a process each) and `bench.results` (the rows, the
ratios against the speed targets, the table). This module runs them all and
holds the command line; bench/README.md has its results.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from collections.abc import Callable, Mapping, Sequence

from bench import step_memory
from bench.batches import PADDINGS, WORKLOADS, BenchData, load_course_data, plan_workload
from bench.flops import measure_matmul_peak
from bench.our_side import OurSide
from bench.results import BenchResult, format_table, machine_info
from bench.timing import run_ours, run_peer
from bench.torch_peer import PEERS, TorchPeer


DTYPES = ("float32", "bfloat16")


def default_torch_device() -> str:
  """"cuda" when XLA's default device is a GPU and PyTorch sees one too, else "cpu"."""
  import jax
  import torch
  return "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"


def run_benchmark(bert_config, data: BenchData, *, model_name: str, workloads: Sequence[str] = WORKLOADS,
                  paddings: Sequence[str] = PADDINGS, peers: Sequence[str] = ("hf-sdpa", "torch.compile"),
                  dtypes: Sequence[str] = ("float32",), frozen_word_embeddings: bool = True,
                  torch_compile_natural: bool = False, iters: int = 4, warmup: int = 1, batch_size: int = 32,
                  same_length: int = 64, seed: int = 0, torch_threads: int = 2, matmul_size: int = 2048,
                  peak: Mapping[str, Mapping[str, float]] | None = None, torch_device: str | None = None,
                  memory: bool = False, compilation_cache: bool = True,
                  log: Callable[[str], None] = print) -> BenchResult:
  """Every (workload, padding, dtype) for ours and each peer; returns the rows and our step's breakdown.

  `dtypes`: "float32" times both sides in float32; "bfloat16" times ours with
  `config.dtype="bfloat16"` against the peers under `torch.autocast`, and takes
  those rows' MFU against the bfloat16 matmul peak. `peak` is {dtype: rates}
  from an earlier call (measured when missing). With `memory`, the peak memory
  of our summed and PCGrad steps and of the first peer's is then measured in a
  process each (`bench.step_memory`), on the multitask plan of the first padding and dtype.
  """
  import torch
  from transformers import BertTokenizerFast
  from train.configs import base
  unknown = [w for w in workloads if w not in WORKLOADS] + [p for p in paddings if p not in PADDINGS] \
      + [p for p in peers if p not in PEERS] + [d for d in dtypes if d not in DTYPES]
  if unknown:
    raise ValueError(f"unknown workloads/paddings/peers/dtypes {unknown}; expected among {WORKLOADS}, "
                     f"{PADDINGS}, {PEERS}, {DTYPES}")
  torch.set_num_threads(torch_threads)
  torch_device = torch_device or default_torch_device()
  peak = dict(peak or {})
  for dtype in dict.fromkeys(("float32",) + tuple(dtypes)):
    if dtype not in peak:
      log(f"measuring the {dtype} matmul peak ({matmul_size}^3)...")
      peak[dtype] = measure_matmul_peak(matmul_size, dtype=dtype, torch_device=torch_device)
  machine = machine_info(peak["float32"], torch_threads, bf16_peak=peak.get("bfloat16"), torch_device=torch_device)
  machine["encoder_dropout"] = {"hidden": bert_config.hidden_dropout_prob,
                                "attention": bert_config.attention_probs_dropout_prob}
  hf_tokenizer = BertTokenizerFast(data.vocab_path)
  rows, breakdowns = [], {}
  ours_sides: dict[tuple, OurSide] = {}
  torch_peers: dict[tuple, TorchPeer | None] = {}
  failures: dict[str, str] = {}

  def ours(pcgrad: bool, dtype: str, freeze: tuple = ()) -> OurSide:
    key = (pcgrad, dtype, freeze)
    if key not in ours_sides:
      ours_sides[key] = OurSide(bert_config, pcgrad=pcgrad, freeze=freeze, seed=seed, dtype=dtype)
    return ours_sides[key]

  def peer(name: str, dtype: str) -> TorchPeer | None:
    if (name, dtype) not in torch_peers:
      try:
        torch_peers[(name, dtype)] = TorchPeer(name, bert_config, base.get_config().model, seed=seed,
                                               device=torch_device, autocast_dtype=dtype)
      except Exception as error:  # pylint: disable=broad-except
        if name != "torch.compile":
          raise
        torch_peers[(name, dtype)], failures[name] = None, f"{type(error).__name__}: {error}"[:80]
    return torch_peers[(name, dtype)]

  for workload in workloads:
    for padding in paddings:
      plan = plan_workload(data, workload, padding, batch_size=batch_size, count=iters,
                           same_length=same_length, seed=seed)
      for dtype in dtypes:
        label = f"{model_name} {workload} {padding} {dtype}"
        timing = dict(model_name=model_name, batch_size=batch_size, warmup=warmup, iters=iters,
                      peak_gflops=peak[dtype]["peak"], dtype=dtype)
        log(f"{label}: ours")
        row, pieces = run_ours(ours(workload == "pcgrad", dtype), data, plan, impl="ours",
                               breakdown=padding == "natural", **timing)
        rows.append(row)
        if pieces:
          breakdowns[label if dtype != "float32" else f"{model_name} {workload} {padding}"] = pieces
        if frozen_word_embeddings and workload == "multitask" and padding == "natural" and dtype == "float32":
          log(f"{label}: ours (frozen wemb)")
          side = ours(False, dtype, ("word_embeddings",))
          row, pieces = run_ours(side, data, plan, impl="ours (frozen wemb)", breakdown=True, **timing)
          rows.append(row)
          breakdowns[f"{model_name} {workload} {padding} (frozen wemb)"] = pieces
          del ours_sides[(False, dtype, ("word_embeddings",))]
        for name in peers:
          if name == "torch.compile" and padding == "natural" and not torch_compile_natural:
            continue  # a new padded shape nearly every batch: inductor would recompile most steps
          log(f"{label}: {name}")
          rows.append(run_peer(peer(name, dtype), data, plan, hf_tokenizer, peer_name=name,
                               bert_config=bert_config, failure=failures.get(name, ""), **timing))
          # A failure in one workload (e.g. one backward mode) leaves the peer to try the others.
        gc.collect()
  memory_rows = []
  if memory:
    ours_sides.clear()
    torch_peers.clear()
    gc.collect()
    memory_rows = step_memory.measure(
        memory_jobs(bert_config, data, hf_tokenizer, model_name=model_name, peer=peers[0], padding=paddings[0],
                    dtype=dtypes[0], batch_size=batch_size, iters=iters, same_length=same_length, seed=seed,
                    torch_device=torch_device, torch_threads=torch_threads, compilation_cache=compilation_cache),
        log=log)
  return BenchResult(machine, rows, breakdowns, memory_rows)


def memory_jobs(bert_config, data: BenchData, hf_tokenizer, *, model_name: str, peer: str, padding: str,
                dtype: str, batch_size: int, iters: int, same_length: int, seed: int, torch_device: str,
                torch_threads: int, compilation_cache: bool) -> list[step_memory.MemoryJob]:
  """Ours and `peer`, summed and PCGrad, all on the multitask workload's batches."""
  from bench.batches import split_of
  from bench.our_side import our_batch
  from bench.torch_peer import torch_batch
  from train.configs import base
  plan = plan_workload(data, "multitask", padding, batch_size=batch_size, count=iters, same_length=same_length,
                       seed=seed)
  ours_steps = [{t: our_batch(split_of(data, "multitask", t), b) for t, b in step.items()} for step in plan.ours]
  peer_steps = [{t: torch_batch(split_of(data, "multitask", t), b, hf_tokenizer) for t, b in step.items()}
                for step in plan.peer]
  common = dict(model=model_name, padding=padding, dtype=dtype, bert_config=bert_config,
                model_config=base.get_config().model.to_dict(), iters=iters, seed=seed,
                torch_device=torch_device, torch_threads=torch_threads, compilation_cache=compilation_cache)
  return [step_memory.MemoryJob(side=side, step=step, steps=steps, **common)
          for side, steps in (("ours", ours_steps), (peer, peer_steps)) for step in ("summed", "pcgrad")]


def model_config(name: str, vocab_size: int):
  """BertConfig for --model: "minilm-l6" (the default checkpoint's shape), "bert-base", "tiny"."""
  from bert_jax import checkpoints
  from bert_jax.config import BertConfig
  if name == "minilm-l6":
    return BertConfig.from_json_file(checkpoints.resolve_checkpoint("minilm-l6").config_path)
  if name == "bert-base":
    return BertConfig(vocab_size=vocab_size)
  if name == "tiny":
    return BertConfig.tiny(vocab_size=vocab_size, max_position_embeddings=512)
  raise ValueError(f"--model={name!r}; expected minilm-l6, bert-base or tiny")


def main(argv):
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  import jax
  if FLAGS.prng_impl:
    jax.config.update("jax_default_prng_impl", FLAGS.prng_impl)
  if FLAGS.compilation_cache:
    from train import train as train_lib
    from train.configs import base
    train_lib.enable_compilation_cache(base.get_config())
  from bert_jax import checkpoints
  vocab_path = str(checkpoints.resolve_checkpoint("minilm-l6").vocab_path)
  data = load_course_data(vocab_path, packing=FLAGS.packing)
  results = []
  peak = None
  for name in FLAGS.model:
    bert_config = model_config(name, vocab_size=30522)
    if not FLAGS.encoder_dropout:  # an ablation: what dropout (and its random bits) costs each side
      bert_config = dataclasses.replace(bert_config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    result = run_benchmark(
        bert_config, data, model_name=name, workloads=FLAGS.workloads, paddings=FLAGS.paddings,
        peers=FLAGS.peers, dtypes=FLAGS.dtypes, frozen_word_embeddings=FLAGS.frozen_word_embeddings,
        torch_compile_natural=FLAGS.torch_compile_natural, iters=FLAGS.iters,
        warmup=FLAGS.warmup, batch_size=FLAGS.batch_per_task, same_length=FLAGS.same_length,
        seed=FLAGS.seed, torch_threads=FLAGS.torch_threads, matmul_size=FLAGS.matmul_size, peak=peak,
        torch_device=FLAGS.torch_device or None, memory=FLAGS.memory, compilation_cache=FLAGS.compilation_cache,
        log=lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", flush=True))
    peak = {"float32": result.machine["matmul_gflops"]}
    if result.machine["matmul_gflops_bf16"]:
      peak["bfloat16"] = result.machine["matmul_gflops_bf16"]
    results.append(result)
  combined = BenchResult(results[0].machine, [r for res in results for r in res.rows],
                         {k: v for res in results for k, v in res.breakdowns.items()},
                         [r for res in results for r in res.memory])
  print()
  print(format_table(combined))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(combined.to_json(), f, indent=2)
    print(f"\nwrote {FLAGS.out}")


def define_flags():
  from absl import flags
  flags.DEFINE_list("model", ["minilm-l6"], "Encoder shapes to time: minilm-l6, bert-base, tiny (random init).")
  flags.DEFINE_list("workloads", list(WORKLOADS), f"Among {WORKLOADS}.")
  flags.DEFINE_list("paddings", list(PADDINGS), "natural: each side pads its own way; same: both --same_length.")
  flags.DEFINE_list("peers", ["hf-sdpa", "torch.compile"], f"PyTorch implementations, among {PEERS}.")
  flags.DEFINE_list("dtypes", list(DTYPES), "Compute dtypes, each timed on both sides: float32; bfloat16 "
                    "(ours config.dtype=bfloat16, float32 params; the peers under torch.autocast).")
  flags.DEFINE_string("torch_device", "", "The peers' device: cpu or cuda ('': cuda when XLA runs on a GPU).")
  flags.DEFINE_bool("memory", True, "Also measure the peak memory of our summed and PCGrad steps and of the "
                    "first peer's, each in a process of its own (bench/step_memory.py).")
  flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul whose rate is the MFU peak.")
  flags.DEFINE_bool("frozen_word_embeddings", True,
                    "Also time ours with the word-embedding table frozen (multitask, natural).")
  flags.DEFINE_bool("torch_compile_natural", False,
                    "Also time torch.compile with natural padding (recompiles per new shape; slow to warm up).")
  flags.DEFINE_bool("packing", True, "Ours packs natural batches as the trainer does (default preset); "
                    "--nopacking pads them to length buckets instead.")
  flags.DEFINE_integer("iters", 4, "Timed steps per row (distinct batches, at quantiles of an epoch's lengths).")
  flags.DEFINE_integer("warmup", 1, "Untimed steps per row, after ours has compiled every shape.")
  flags.DEFINE_integer("batch_per_task", 32, "Examples per task per step (pairs count once).")
  flags.DEFINE_integer("same_length", 64, "Padded length of the 'same' comparison.")
  flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the peers.")
  flags.DEFINE_integer("seed", 0, "Which batches, and the random init.")
  flags.DEFINE_string("prng_impl", "", "jax_default_prng_impl for ours (threefry2x32, rbg, unsafe_rbg); "
                      "'' leaves jax's default.")
  flags.DEFINE_bool("encoder_dropout", True, "False: both sides' encoders without dropout (an ablation; "
                    "ours then also trains through jax.nn.dot_product_attention).")
  flags.DEFINE_bool("compilation_cache", True, "Use the trainer's persistent XLA compilation cache.")
  flags.DEFINE_string("out", "", "Also write the rows, ratios and breakdowns as JSON here.")


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
