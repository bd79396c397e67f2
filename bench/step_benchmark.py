"""Our train step against the PyTorch peers', side by side, in one process.

  python -m bench.step_benchmark                     # minilm-l6, every workload, both paddings
  python -m bench.step_benchmark --model=bert-base --workloads=multitask,inference --iters=2
  python -m bench.step_benchmark --out=/tmp/step_benchmark.json

Why one process: on a shared 2-core CPU, timings taken minutes apart differ by
more than the effects we want to see, so every row of the table (and the matmul
peak its MFU is measured against) comes from the same run.

Implementations ("impl" column):
  ours           `train.steps.make_train_step`, built as `Trainer.make_stage` builds it
                 from train/configs/default.py: per-task jitted gradients, one donated
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

FLOPs are counted analytically (`encoder_forward_flops`: the matmuls and the
attention scores/context of every layer, on the padded shapes each side actually
ran; training counts 3x the forward). MFU is that rate over the fp32 matmul peak
measured at the start of the run (the best of numpy, torch and XLA).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import random
import resource
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

TASKS = ("sst", "para", "sts")
WORKLOADS = ("multitask", "pcgrad", "sst", "inference")
PADDINGS = ("natural", "same")
PEERS = ("hf-sdpa", "hf-eager", "torch.compile")
TRAIN_FLOPS_PER_FORWARD = 3  # backward is about twice the forward's matmuls
# The speed targets, as ratios ours / hf-sdpa in examples per second: 1.5x where each side pads
# its natural way, parity where both run the same padded shape.
TARGETS = {("multitask", "natural"): 1.5, ("inference", "natural"): 1.5,
           ("multitask", "same"): 1.0, ("pcgrad", "same"): 1.0, ("sst", "same"): 1.0,
           ("inference", "same"): 1.0}


# ---------------------------------------------------------------------------
# The machine: peak matmul rate, memory.

def measure_matmul_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
  """Best fp32 GFLOP/s of a size x size matmul in numpy, torch and XLA; "peak" is the best.

  Each library gets one warmup product and then the fastest of `repeats`.
  """
  flops = 2.0 * size ** 3
  rng = np.random.default_rng(0)
  a = rng.standard_normal((size, size), dtype=np.float32)
  b = rng.standard_normal((size, size), dtype=np.float32)

  def best(fn: Callable[[], Any]) -> float:
    fn()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    return flops / min(times) / 1e9

  rates = {"numpy": best(lambda: a @ b)}
  try:
    import torch
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rates["torch"] = best(lambda: ta @ tb)
  except ImportError:
    pass
  import jax
  ja, jb = jax.device_put(a), jax.device_put(b)
  matmul = jax.jit(lambda x, y: x @ y)
  rates["xla"] = best(lambda: matmul(ja, jb).block_until_ready())
  rates["peak"] = max(rates.values())
  return rates


def current_rss_mb() -> float:
  """Resident set size now (Linux /proc; elsewhere the peak so far)."""
  try:
    with open("/proc/self/statm") as f:
      pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
  except (OSError, ValueError):
    return peak_rss_mb()


def peak_rss_mb() -> float:
  """The process's peak RSS so far (getrusage reports KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssMonitor:
  """Samples RSS every few ms in a thread, for the peak over a `with` block.

  getrusage's peak only ever grows over the whole process, and one process runs
  every row here, so each row's own peak needs sampling. `delta_mb` is the peak
  over the RSS at entry: what that workload's steps added on top of what was resident.
  """

  def __init__(self, interval_s: float = 0.005):
    self.interval_s = interval_s
    self.start_mb = self.peak_mb = 0.0
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def __enter__(self) -> "RssMonitor":
    self.start_mb = self.peak_mb = current_rss_mb()
    self._stop.clear()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def _sample(self):
    while not self._stop.wait(self.interval_s):
      self.peak_mb = max(self.peak_mb, current_rss_mb())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_mb = max(self.peak_mb, current_rss_mb())

  @property
  def delta_mb(self) -> float:
    return self.peak_mb - self.start_mb


# ---------------------------------------------------------------------------
# FLOPs.

def encoder_forward_flops(config, num_sequences: int, length: int) -> float:
  """Multiply-adds x 2 of one BERT encoder forward over [num_sequences, length] padded tokens.

  Per layer and token: the Q, K, V and output projections (4 H^2) and the two
  feed-forward matmuls (2 H I); per layer and sequence: the attention scores
  QK^T and the context PV (2 L^2 H). Plus the pooler on [CLS]. Embedding
  lookups, LayerNorm, softmax and GELU are left out: they are memory-bound and
  a few percent of the total at these widths.
  """
  hidden, inner = config.hidden_size, config.intermediate_size
  tokens = num_sequences * length
  per_layer = 2.0 * tokens * (4 * hidden * hidden + 2 * hidden * inner) \
      + 2.0 * 2 * num_sequences * length * length * hidden
  pooler = 2.0 * num_sequences * hidden * hidden
  return config.num_hidden_layers * per_layer + pooler


# ---------------------------------------------------------------------------
# The data: which examples each step gets, on each side.

@dataclasses.dataclass
class BenchData:
  """Tokenized examples per task, the trainer's bucket lengths, and the vocabulary.

  `train` holds each task's training split and `inference` the split that the
  inference workload encodes (SST dev); all `data_prep.tokenized.EncodedSplit`.
  """
  train: Mapping[str, Any]
  inference: Any
  buckets: Mapping[str, tuple[int, ...]]
  vocab_path: str
  packing: Any = None  # data_prep.packing.PackingSpec, as the trainer packs training and evaluation batches

  @classmethod
  def from_task_data(cls, task_data, vocab_path: str) -> "BenchData":
    """The trainer's own data (`train.data.TaskData`): real CS224N examples, buckets, packing on one device."""
    return cls(train={t: task_data.splits[t]["train"] for t in TASKS},
               inference=task_data.splits["sst"]["validation"], buckets=dict(task_data.buckets),
               vocab_path=str(vocab_path),
               packing=task_data.packing_spec(parallel_mode="jit", num_devices=1))

  @classmethod
  def from_sentences(cls, tokenizer, sentences: Sequence[str], pairs: Sequence[tuple[str, str]], *,
                     max_length: int = 128, num_buckets: int = 4, packing=None) -> "BenchData":
    """Small splits made from the given texts (random labels), for smoke tests."""
    from data_prep import bucketing
    from data_prep.tokenized import EncodedSplit, Ragged, SpecialIds
    rng = np.random.default_rng(0)
    special = SpecialIds(pad=tokenizer.pad_id, cls=tokenizer.cls_id, sep=tokenizer.sep_id)

    def split(name, tokens, labels):
      return EncodedSplit(name=name, pair="input_ids_a" in tokens,
                          pair_encoding="separate" if "input_ids_a" in tokens else None,
                          max_length=max_length, labeled=True, ids=np.arange(len(labels)).astype(str),
                          labels=labels, tokens=tokens, special=special, provenance=())

    ragged = lambda texts: Ragged.from_sequences(tokenizer.encode_ragged(list(texts), max_length=max_length)[0])
    sst = split("sst", {"input_ids": ragged(sentences)},
                rng.integers(0, 5, len(sentences)).astype(np.int32))
    firsts, seconds = zip(*pairs)
    pair_tokens = {"input_ids_a": ragged(firsts), "input_ids_b": ragged(seconds)}
    para = split("para", pair_tokens, rng.integers(0, 2, len(pairs)).astype(np.float32))
    sts = split("sts", pair_tokens, rng.uniform(0, 5, len(pairs)).astype(np.float32))
    train_splits = {"sst": sst, "para": para, "sts": sts}
    buckets = {t: bucketing.choose_bucket_lengths(s.lengths, num_buckets=num_buckets, max_length=max_length)
               for t, s in train_splits.items()}
    return cls(train=train_splits, inference=sst, buckets=buckets, vocab_path=str(tokenizer.vocab_path),
               packing=packing)


@dataclasses.dataclass
class Batches:
  """The example rows of one task's batch, and how ours lays them out.

  `length` is what ours pads them to (0: the peer pads to the batch's longest);
  `packing` (a PackingSpec) makes ours pack them instead, as the trainer does.
  """
  indices: np.ndarray
  length: int
  packing: Any = None


def quantile_picks(items: Sequence[Any], count: int) -> list[Any]:
  """`count` items at evenly spaced quantiles of `items` (repeating when there are fewer)."""
  return [items[min(int((k + 0.5) * len(items) / count), len(items) - 1)] for k in range(count)]


def representative_train_batches(split, buckets: Sequence[int], batch_size: int, count: int,
                                 rng: np.random.Generator, packing=None) -> list[Batches]:
  """`count` of the trainer's batches, with an epoch's mix of lengths.

  Plans an epoch exactly as the trainer does (`plan_epoch`: length buckets, or
  with `packing` one bucket, i.e. random batches that are then packed), sorts
  its full batches by their real tokens and takes them at evenly spaced
  quantiles: a few steps then carry the same mix of short and long batches as
  the whole epoch, where a random few could all be short (or long).
  """
  from data_prep import bucketing, pipeline
  buckets = pipeline.train_buckets(buckets, packing)
  plan = pipeline.plan_epoch(np.arange(len(split)), bucketing.bucket_index(split.lengths, buckets),
                             buckets, batch_size, rng)
  full = sorted((b for b in plan if np.all(b.indices >= 0)),
                key=lambda b: (b.length, int(split.real_tokens[b.indices].sum())))
  if not full:
    raise ValueError(f"{split.name}: {len(split)} examples make no full batch of {batch_size}")
  picks = quantile_picks(full, count)
  return [Batches(picks[i].indices, picks[i].length, packing) for i in rng.permutation(count)]


def representative_eval_batches(split, buckets: Sequence[int], batch_size: int, count: int,
                                packing=None) -> list[Batches]:
  """`count` of the trainer's evaluation batches (`eval_plan`), at quantiles of their lengths."""
  from data_prep import pipeline
  full = [b for b in pipeline.eval_plan(split, batch_size, pipeline.eval_buckets(split, buckets, packing))
          if np.all(b.indices >= 0)]
  if not full:
    raise ValueError(f"{split.name}: {len(split)} examples make no full batch of {batch_size}")
  full = sorted(full, key=lambda b: int(split.real_tokens[b.indices].sum())) if packing else full
  return [Batches(b.indices, b.length, packing) for b in quantile_picks(full, count)]


def reshuffled(batches: Sequence[Batches], rng: np.random.Generator, *, keep_order: bool = False) -> list[Batches]:
  """The same examples in new batches of the same size, padded by the peer (length 0).

  A DataLoader with shuffle=True (training) draws batches at random; evaluation
  (`keep_order`) walks the file in order. Either way the peer sees exactly the
  examples ours does, so real tokens match and the padding is each side's own.
  """
  rows = np.concatenate([b.indices for b in batches])
  rows = np.sort(rows) if keep_order else rng.permutation(rows)
  size = len(batches[0].indices)
  return [Batches(rows[k * size:(k + 1) * size], 0) for k in range(len(batches))]


def same_shape_batches(split, batch_size: int, count: int, length: int,
                       rng: np.random.Generator) -> list[Batches]:
  """`count` random batches of examples that fit `length`, padded to `length` on both sides."""
  fits = np.flatnonzero(split.lengths <= length)
  if len(fits) == 0:
    raise ValueError(f"{split.name}: no example fits --same_length={length}")
  rows = rng.choice(fits, size=batch_size * count, replace=len(fits) < batch_size * count)
  return [Batches(rows[k * batch_size:(k + 1) * batch_size], length) for k in range(count)]


def sequence_keys(split) -> tuple[str, ...]:
  """The token fields of a split that each become one encoder call's sequences."""
  if split.pair and split.pair_encoding != "separate":
    raise ValueError(f"{split.name}: the benchmark's peer encodes pairs as two sentences; "
                     f"got pair_encoding={split.pair_encoding!r} (use a bi-encoder head)")
  return ("input_ids_a", "input_ids_b") if split.pair else ("input_ids",)


def real_tokens(split, indices: np.ndarray) -> int:
  return int(sum(split.tokens[k].lengths[indices].sum() for k in sequence_keys(split)))


# ---------------------------------------------------------------------------
# Our side.

class OurSide:
  """The trainer's model, optimizer state and compiled step on one device.

  Built the way `train.train.Trainer.make_stage` builds them from the default
  preset (random init: only the shapes matter for timing).
  """

  def __init__(self, bert_config, *, pcgrad: bool, freeze: Sequence[str] = (), seed: int = 0,
               total_steps: int = 1000):
    import jax
    import ml_collections
    from bert_jax import heads
    from train import optim, steps
    from train import train as train_lib
    from train.configs import default
    from train.parallel import DataParallel
    from train.state import TrainState

    config = default.get_config()
    config.pcgrad.enabled = pcgrad
    config.optim.freeze = tuple(freeze)
    check_peer_matches(config.model)
    self.config = config
    self.parallel = DataParallel.create("jit", num_devices=1)
    self.model = train_lib.build_model(config, bert_config)
    # One compiled init rather than Flax's op-by-op one: far fewer (tiny) compilations.
    params = jax.jit(lambda key: heads.init_params(self.model, key))(jax.random.key(seed))
    stage_config = ml_collections.ConfigDict({"optim": config.optim, "pcgrad": config.pcgrad})
    tx = optim.create_optimizer(stage_config, total_steps, task_names=TASKS)
    frozen = frozenset(p for p, label in optim.trainable_labels_flat(params, config.optim.freeze).items()
                       if label == "frozen")
    self.state = self.parallel.replicate(TrainState.create(params, tx))
    self.step_fn = steps.make_train_step(
        self.model, tx, task_order=TASKS, compile_fn=self.parallel.compile, frozen_paths=frozen,
        loss_weights=dict(config.loss_weights), similarity_loss=config.similarity_loss,
        per_task_gradients=pcgrad)
    self._predict = {}
    self._base_rng = jax.random.key(seed + 1)
    self._steps = 0

  def put(self, batches: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {task: self.parallel.put_batch(dict(batch)) for task, batch in batches.items()}

  def train_step(self, device_batches: Mapping[str, Any]) -> None:
    import jax
    rng = jax.random.fold_in(self._base_rng, self._steps)
    self.state, _ = self.step_fn(self.state, device_batches, rng)
    self._steps += 1

  def predict(self, task: str, device_batch: Any) -> Any:
    from train import steps
    if task not in self._predict:
      self._predict[task] = self.parallel.compile_predict_step(steps.make_predict_step(self.model, task))
    return self._predict[task](self.state.params, device_batch)

  def sync(self, value: Any = None) -> None:
    import jax
    jax.block_until_ready(self.state if value is None else value)

  def breakdown(self, device_steps: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean ms of each compiled piece of the step (each task's gradient, the apply), run one by one."""
    import jax
    totals: dict[str, float] = {}
    for device_batches in device_steps:
      rng = jax.random.fold_in(self._base_rng, self._steps)
      grads, losses = {}, {}
      for task, batch in device_batches.items():
        start = time.perf_counter()
        grads[task], losses[task], _ = jax.block_until_ready(
            self.step_fn.task_gradients[task](self.state.params, batch, rng))
        totals[f"gradient {task}"] = totals.get(f"gradient {task}", 0.0) + time.perf_counter() - start
      start = time.perf_counter()
      self.state, _ = jax.block_until_ready(self.step_fn.apply_gradients(self.state, grads, losses, rng))
      totals["apply"] = totals.get("apply", 0.0) + time.perf_counter() - start
      self._steps += 1
    return {k: 1000 * v / len(device_steps) for k, v in totals.items()}


PEER_HEADS = {"sentiment_pooling": ("mean", "cls"), "pair_pooling": ("mean", "cls"),
              "paraphrase_head": ("diff", "cosine"), "similarity_head": ("diff", "cosine"),
              "share_para_sts": (False,)}


def check_peer_matches(model_config) -> None:
  """The peer builds the preset's heads (`config.model`) from `PEER_HEADS`; fail loudly on one it lacks."""
  unsupported = {k: model_config[k] for k, allowed in PEER_HEADS.items() if model_config[k] not in allowed}
  if unsupported:
    raise ValueError(f"train/configs/default.py sets {unsupported}; bench.step_benchmark's PyTorch peer "
                     f"implements {PEER_HEADS}. Add the head to make_torch_model.")


def our_batch(split, batches: Batches) -> dict[str, np.ndarray]:
  """The trainer's batch for these rows (`pipeline.collate`): packed, or padded to the bucket (or fixed) length."""
  from data_prep import pipeline
  return pipeline.collate(split, pipeline.PlannedBatch(batches.length, batches.indices), batches.packing)


# ---------------------------------------------------------------------------
# The PyTorch peer.

def make_torch_model(bert_config, model_config, attn_implementation: str):
  """HF `BertModel` plus the preset's heads (`model_config` = config.model), as a PyTorch user writes them.

  Pooling: "mean" over real tokens or "cls" (BERT's pooler). Pair heads: "diff"
  (linear on [u; v; |u-v|; u*v], after dropout) or "cosine" (sts: 5 cos(u, v);
  para: scale * cos + bias, learned, from 10 and -8 as ours).
  """
  import torch
  import transformers
  from torch import nn

  check_peer_matches(model_config)
  hf_config = transformers.BertConfig(**bert_config.to_hf_dict(), attn_implementation=attn_implementation)
  hidden = hf_config.hidden_size

  class PairHead(nn.Module):
    def __init__(self, kind: str, task: str):
      super().__init__()
      self.kind, self.task = kind, task
      if kind == "diff":
        self.dropout = nn.Dropout(model_config.head_dropout)
        self.output = nn.Linear(4 * hidden, 1)
      elif task == "para":
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.tensor(-8.0))

    def forward(self, u, v):
      if self.kind == "diff":
        return self.output(self.dropout(torch.cat([u, v, (u - v).abs(), u * v], dim=-1))).squeeze(-1)
      cosine = nn.functional.cosine_similarity(u, v, dim=-1)
      return 5.0 * cosine if self.task == "sts" else self.scale * cosine + self.bias

  class TorchMultitaskBert(nn.Module):
    def __init__(self):
      super().__init__()
      self.bert = transformers.BertModel(hf_config)
      self.dropout = nn.Dropout(model_config.head_dropout)
      self.sentiment = nn.Linear(hidden, 5)
      self.paraphrase = PairHead(model_config.paraphrase_head, "para")
      self.similarity = PairHead(model_config.similarity_head, "sts")

    def embed(self, side: Mapping[str, torch.Tensor], pooling: str) -> torch.Tensor:
      output = self.bert(**side)
      if pooling == "cls":
        return output.pooler_output
      hidden_states = output.last_hidden_state
      mask = side["attention_mask"].unsqueeze(-1).to(hidden_states.dtype)
      return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, task: str, batch: Mapping[str, Any]) -> torch.Tensor:
      if task == "sst":
        pooled = self.embed(batch["input_ids"], model_config.sentiment_pooling)
        return self.sentiment(self.dropout(pooled))
      u = self.embed(batch["input_ids_a"], model_config.pair_pooling)
      v = self.embed(batch["input_ids_b"], model_config.pair_pooling)
      return (self.paraphrase if task == "para" else self.similarity)(u, v)

  return TorchMultitaskBert()


class TorchPeer:
  """One PyTorch implementation ("hf-sdpa", "hf-eager" or "torch.compile") and its optimizer."""

  def __init__(self, name: str, bert_config, model_config, *, seed: int = 0, learning_rate: float = 5e-5,
               total_steps: int = 1000):
    import torch
    if name not in PEERS:
      raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    torch.manual_seed(seed)
    self.name = name
    self.model = make_torch_model(bert_config, model_config, "eager" if name == "hf-eager" else "sdpa")
    if name == "torch.compile":
      try:  # AOTAutograd's donated buffers refuse backward(retain_graph=True), which PCGrad needs
        import torch._functorch.config as functorch_config
        functorch_config.donated_buffer = False
      except (ImportError, AttributeError):
        pass
      self.model.bert = torch.compile(self.model.bert, dynamic=None)
    self.model.train()
    named = list(self.model.named_parameters())
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n
    self.optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": 0.01},
         {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}],
        lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)
    warmup = max(1, total_steps // 10)
    self.scheduler = torch.optim.lr_scheduler.LambdaLR(
        self.optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / (total_steps - warmup))))
    self.params = [p for _, p in named]
    self._rng = random.Random(seed)

  def loss(self, task: str, batch: Mapping[str, Any]):
    import torch.nn.functional as F
    outputs = self.model(task, batch)
    if task == "sst":
      return F.cross_entropy(outputs, batch["labels"])
    if task == "para":
      return F.binary_cross_entropy_with_logits(outputs, batch["labels"])
    return F.mse_loss(outputs, batch["labels"])

  def _finish(self):
    import torch
    torch.nn.utils.clip_grad_norm_(self.params, 1.0)
    self.optimizer.step()
    self.scheduler.step()

  def train_step(self, batches: Mapping[str, Mapping[str, Any]]) -> None:
    """Summed task losses, one backward, clip, AdamW."""
    self.optimizer.zero_grad(set_to_none=True)
    sum(self.loss(task, batch) for task, batch in batches.items()).backward()
    self._finish()

  def pcgrad_step(self, batches: Mapping[str, Mapping[str, Any]]) -> None:
    """PCGrad as the common PyTorch ports write it (Yu et al. 2020, Algorithm 1).

    One backward per task (retain_graph, gradients flattened into one vector),
    then each task's gradient is projected off every other task's, in random
    order, where they conflict (negative dot product), and the results summed.
    """
    import torch
    losses = [self.loss(task, batch) for task, batch in batches.items()]
    grads = []
    for k, loss in enumerate(losses):
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward(retain_graph=k < len(losses) - 1)
      grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                              for p in self.params]))
    projected = [g.clone() for g in grads]
    for i, g_i in enumerate(projected):
      others = [j for j in range(len(grads)) if j != i]
      self._rng.shuffle(others)
      for j in others:
        dot = torch.dot(g_i, grads[j])
        if dot < 0:
          g_i -= dot / grads[j].square().sum() * grads[j]
    merged = torch.stack(projected).sum(0)
    offset = 0
    for p in self.params:
      p.grad = merged[offset:offset + p.numel()].view_as(p).clone()
      offset += p.numel()
    self._finish()

  def predict(self, task: str, batch: Mapping[str, Any]):
    import torch
    self.model.eval()
    try:
      with torch.inference_mode():
        return self.model(task, batch)
    finally:
      self.model.train()


def torch_batch(split, batches: Batches, hf_tokenizer) -> dict[str, Any]:
  """The peer's tensors for these rows: each sentence side padded by the HF tokenizer.

  Padding "longest" per side is what the CS224N starter code's collate does;
  batches with a length (the "same" comparison) pad to exactly that.
  """
  import torch
  padding = dict(padding="max_length", max_length=batches.length) if batches.length else dict(padding="longest")
  batch = {}
  for key in sequence_keys(split):
    rows = [split.tokens[key].row(i).tolist() for i in batches.indices]
    padded = hf_tokenizer.pad({"input_ids": rows}, return_tensors="pt", return_attention_mask=True, **padding)
    batch[key] = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                  "token_type_ids": torch.zeros_like(padded["input_ids"])}
  labels = split.labels[batches.indices]
  batch["labels"] = torch.from_numpy(labels.astype(np.int64 if labels.dtype.kind in "iu" else np.float32))
  return batch


# ---------------------------------------------------------------------------
# One workload, both sides.

@dataclasses.dataclass
class Row:
  """One line of the table: one implementation timed on one workload and padding."""
  model: str
  workload: str
  padding: str
  impl: str
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
class StepPlan:
  """A workload's timed steps: per step, {task: Batches} for ours and for the peer."""
  workload: str
  padding: str
  ours: list[dict[str, Batches]]
  peer: list[dict[str, Batches]]

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(self.ours[0])


def plan_workload(data: BenchData, workload: str, padding: str, *, batch_size: int, count: int,
                  same_length: int, seed: int) -> StepPlan:
  """Which rows each of `count` steps gets, on each side."""
  rng = np.random.default_rng([seed, WORKLOADS.index(workload), PADDINGS.index(padding)])
  if workload == "inference":
    split = data.inference
    if padding == "same":
      ours = same_shape_batches(split, batch_size, count, same_length, rng)
      return StepPlan(workload, padding, [{"sst": b} for b in ours], [{"sst": b} for b in ours])
    ours = representative_eval_batches(split, data.buckets["sst"], batch_size, count, data.packing)
    return StepPlan(workload, padding, [{"sst": b} for b in ours],
                    [{"sst": b} for b in reshuffled(ours, rng, keep_order=True)])
  tasks = ("sst",) if workload == "sst" else TASKS
  ours, peer = {}, {}
  for task in tasks:
    split = data.train[task]
    if padding == "same":
      ours[task] = peer[task] = same_shape_batches(split, batch_size, count, same_length, rng)
    else:
      ours[task] = representative_train_batches(split, data.buckets[task], batch_size, count, rng,
                                                data.packing)
      peer[task] = reshuffled(ours[task], rng)
  return StepPlan(workload, padding, [{t: ours[t][k] for t in tasks} for k in range(count)],
                  [{t: peer[t][k] for t in tasks} for k in range(count)])


def split_of(data: BenchData, workload: str, task: str):
  return data.inference if workload == "inference" else data.train[task]


def step_shapes_ours(step: Mapping[str, Mapping[str, np.ndarray]]) -> list[tuple[int, int]]:
  """[(rows, length)] per encoder call of our step: pairs go through once as [2B, L]; packed as [R, P]."""
  from bert_jax import heads
  shapes = []
  for batch in step.values():
    ids = np.shape(batch["input_ids"])
    if heads.is_packed(batch):
      shapes.append((ids[0], ids[1]))
      continue
    shapes.append((ids[0] * ids[1], ids[2]) if len(ids) == 3 else (ids[0], ids[1]))
  return shapes


def step_shapes_peer(step: Mapping[str, Mapping[str, Any]]) -> list[tuple[int, int]]:
  """[(sequences, length)] per encoder call of the peer's step: one per sentence side."""
  return [tuple(side["input_ids"].shape) for batch in step.values()
          for key, side in batch.items() if key.startswith("input_ids")]


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


def examples_per_step(workload: str, batch_size: int) -> int:
  return batch_size * (3 if workload in ("multitask", "pcgrad") else 1)


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
             warmup: int, iters: int, peak_gflops: float, breakdown: bool = False) -> tuple[Row, dict]:
  """Times our step (or predict step) on the plan's `ours` batches."""
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
  row = Row(model_name, plan.workload, plan.padding, impl)
  with RssMonitor() as monitor:
    seconds, warmup_s = time_steps(run, device, warmup=warmup, iters=iters, sync=sync, compile_every_shape=True)
  fill_row(row, seconds=seconds, warmup_s=warmup_s, examples=examples_per_step(plan.workload, batch_size),
           real=_cycle_mean(real, iters), padded=_cycle_mean(padded, iters), flops=_cycle_mean(flops, iters),
           peak_gflops=peak_gflops, monitor=monitor)
  pieces = side.breakdown(device) if breakdown and plan.workload != "inference" else {}
  return row, pieces


def run_peer(peer: TorchPeer | None, data: BenchData, plan: StepPlan, hf_tokenizer, *, model_name: str,
             peer_name: str, bert_config, batch_size: int, warmup: int, iters: int,
             peak_gflops: float, failure: str = "") -> Row:
  """Times one PyTorch peer on the plan's `peer` batches; "n/a (reason)" if it cannot run."""
  row = Row(model_name, plan.workload, plan.padding, peer_name)
  if peer is None:
    row.note = f"n/a ({failure})"
    return row
  inputs = [{t: torch_batch(split_of(data, plan.workload, t), b, hf_tokenizer) for t, b in step.items()}
            for step in plan.peer]
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
      seconds, warmup_s = time_steps(run, inputs, warmup=warmup, iters=iters, sync=lambda: None,
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


# ---------------------------------------------------------------------------
# The whole run.

@dataclasses.dataclass
class BenchResult:
  machine: dict
  rows: list[Row]
  breakdowns: dict[str, dict[str, float]]

  def to_json(self) -> dict:
    return {"machine": self.machine, "rows": [dataclasses.asdict(r) for r in self.rows],
            "breakdowns": self.breakdowns, "ratios": ratios(self.rows)}


def machine_info(peak: Mapping[str, float], torch_threads: int) -> dict:
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
      "matmul_gflops": dict(peak),
  }


def run_benchmark(bert_config, data: BenchData, *, model_name: str, workloads: Sequence[str] = WORKLOADS,
                  paddings: Sequence[str] = PADDINGS, peers: Sequence[str] = ("hf-sdpa", "torch.compile"),
                  frozen_word_embeddings: bool = True, torch_compile_natural: bool = False, iters: int = 4, warmup: int = 1, batch_size: int = 32,
                  same_length: int = 64, seed: int = 0, torch_threads: int = 2, matmul_size: int = 2048,
                  peak: Mapping[str, float] | None = None, log: Callable[[str], None] = print) -> BenchResult:
  """Every (workload, padding) for ours and each peer; returns the rows and our step's breakdown."""
  import torch
  from transformers import BertTokenizerFast
  from train.configs import default
  unknown = [w for w in workloads if w not in WORKLOADS] + [p for p in paddings if p not in PADDINGS] \
      + [p for p in peers if p not in PEERS]
  if unknown:
    raise ValueError(f"unknown workloads/paddings/peers {unknown}; expected among {WORKLOADS}, {PADDINGS}, {PEERS}")
  torch.set_num_threads(torch_threads)
  if peak is None:
    log(f"measuring the fp32 matmul peak ({matmul_size}^3)...")
    peak = measure_matmul_peak(matmul_size)
  machine = machine_info(peak, torch_threads)
  machine["encoder_dropout"] = {"hidden": bert_config.hidden_dropout_prob,
                                "attention": bert_config.attention_probs_dropout_prob}
  hf_tokenizer = BertTokenizerFast(data.vocab_path)
  rows, breakdowns = [], {}
  ours_sides: dict[tuple, OurSide] = {}
  torch_peers: dict[str, TorchPeer | None] = {}
  failures: dict[str, str] = {}

  def ours(pcgrad: bool, freeze: tuple = ()) -> OurSide:
    key = (pcgrad, freeze)
    if key not in ours_sides:
      ours_sides[key] = OurSide(bert_config, pcgrad=pcgrad, freeze=freeze, seed=seed)
    return ours_sides[key]

  def peer(name: str) -> TorchPeer | None:
    if name not in torch_peers:
      try:
        torch_peers[name] = TorchPeer(name, bert_config, default.get_config().model, seed=seed)
      except Exception as error:  # pylint: disable=broad-except
        if name != "torch.compile":
          raise
        torch_peers[name], failures[name] = None, f"{type(error).__name__}: {error}"[:80]
    return torch_peers[name]

  for workload in workloads:
    for padding in paddings:
      plan = plan_workload(data, workload, padding, batch_size=batch_size, count=iters,
                           same_length=same_length, seed=seed)
      log(f"{model_name} {workload} {padding}: ours")
      row, pieces = run_ours(ours(workload == "pcgrad"), data, plan, model_name=model_name, impl="ours",
                             batch_size=batch_size, warmup=warmup, iters=iters, peak_gflops=peak["peak"],
                             breakdown=padding == "natural")
      rows.append(row)
      if pieces:
        breakdowns[f"{model_name} {workload} {padding}"] = pieces
      if frozen_word_embeddings and workload == "multitask" and padding == "natural":
        log(f"{model_name} {workload} {padding}: ours (frozen wemb)")
        side = ours(False, ("word_embeddings",))
        row, pieces = run_ours(side, data, plan, model_name=model_name, impl="ours (frozen wemb)",
                               batch_size=batch_size, warmup=warmup, iters=iters, peak_gflops=peak["peak"],
                               breakdown=True)
        rows.append(row)
        breakdowns[f"{model_name} {workload} {padding} (frozen wemb)"] = pieces
        del ours_sides[(False, ("word_embeddings",))]
      for name in peers:
        if name == "torch.compile" and padding == "natural" and not torch_compile_natural:
          continue  # a new padded shape nearly every batch: inductor would recompile most steps
        log(f"{model_name} {workload} {padding}: {name}")
        rows.append(run_peer(peer(name), data, plan, hf_tokenizer, model_name=model_name, peer_name=name,
                             bert_config=bert_config, batch_size=batch_size, warmup=warmup, iters=iters,
                             peak_gflops=peak["peak"], failure=failures.get(name, "")))
        # A failure in one workload (e.g. one backward mode) leaves the peer to try the others.
      gc.collect()
  return BenchResult(machine, rows, breakdowns)


def ratios(rows: Sequence[Row], reference: str = "hf-sdpa") -> list[dict]:
  """ours / peer examples-per-second for every (model, workload, padding) and peer."""
  out = []
  by_key = {(r.model, r.workload, r.padding, r.impl): r for r in rows}
  for (model, workload, padding, impl), row in by_key.items():
    if impl.startswith("ours") or not row.ok:
      continue
    mine = by_key.get((model, workload, padding, "ours"))
    if mine is None:
      continue
    ratio = mine.examples_per_s / row.examples_per_s
    target = TARGETS.get((workload, padding)) if impl == reference else None
    out.append({"model": model, "workload": workload, "padding": padding, "peer": impl, "ratio": ratio,
                "target": target, "met": None if target is None else bool(ratio >= target)})
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
      "",
  ]
  header = (f"{'model':<10} {'workload':<9} {'padding':<7} {'impl':<19} {'ms/step':>9} {'ex/s':>8} "
            f"{'real tok/s':>10} {'real%':>6} {'GFLOP/s':>8} {'MFU':>6} {'RSS MB':>7} {'+MB':>6} {'warm s':>7}")
  lines += [header, "-" * len(header)]
  for r in result.rows:
    if not r.ok:
      lines.append(f"{r.model:<10} {r.workload:<9} {r.padding:<7} {r.impl:<19} {r.note}")
      continue
    lines.append(
        f"{r.model:<10} {r.workload:<9} {r.padding:<7} {r.impl:<19} {r.ms_per_step:9.1f} {r.examples_per_s:8.1f} "
        f"{r.real_tokens_per_s:10.0f} {100 * r.real_fraction:5.0f}% {r.gflop_per_s:8.1f} {100 * r.mfu:5.1f}% "
        f"{r.peak_rss_mb:7.0f} {r.step_rss_mb:6.0f} {r.warmup_s:7.1f}")
  lines += ["", "ours / peer, examples per second (targets against hf-sdpa: >= 1.5x with each side's natural padding, >= 1.0x at the same padded shape):"]
  for q in ratios(result.rows):
    verdict = "" if q["target"] is None else f"  target >= {q['target']:.1f}: {'met' if q['met'] else 'MISSED'}"
    lines.append(f"  {q['model']:<10} {q['workload']:<9} {q['padding']:<7} vs {q['peer']:<14} "
                 f"{q['ratio']:5.2f}x{verdict}")
  if result.breakdowns:
    lines += ["", "ours, each compiled piece run alone (ms, mean over the timed batches):"]
    for key, pieces in result.breakdowns.items():
      lines.append(f"  {key}: " + ", ".join(f"{k} {v:.1f}" for k, v in pieces.items())
                   + f"; sum {sum(pieces.values()):.1f}")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line.

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


def load_course_data(vocab_path: str, packing: bool = True) -> BenchData:
  """The trainer's real data (CS224N train splits, SST dev) under the default preset's data config."""
  from bert_jax.tokenizer import Tokenizer
  from train import data as task_data_lib
  from train.configs import default
  config = default.get_config()
  config.data.packing = packing
  task_data = task_data_lib.TaskData.create(config, Tokenizer.from_vocab_file(vocab_path))
  return BenchData.from_task_data(task_data, vocab_path)


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
    from train.configs import default
    train_lib.enable_compilation_cache(default.get_config())
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
        peers=FLAGS.peers, frozen_word_embeddings=FLAGS.frozen_word_embeddings,
        torch_compile_natural=FLAGS.torch_compile_natural, iters=FLAGS.iters,
        warmup=FLAGS.warmup, batch_size=FLAGS.batch_per_task, same_length=FLAGS.same_length,
        seed=FLAGS.seed, torch_threads=FLAGS.torch_threads, peak=peak,
        log=lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", flush=True))
    peak = result.machine["matmul_gflops"]
    results.append(result)
  combined = BenchResult(results[0].machine, [r for res in results for r in res.rows],
                         {k: v for res in results for k, v in res.breakdowns.items()})
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
