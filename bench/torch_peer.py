"""The PyTorch peer: Hugging Face `BertModel` with the preset's heads, written as a PyTorch user writes them.

It is the reference our step is timed against, so it does what a user of
Hugging Face or of the CS224N starter code does, not what would flatter ours:
eager mode (`hf-sdpa`, `hf-eager`) or the encoder under `torch.compile`, the
default preset's heads and losses, torch.optim.AdamW with no decay on biases
and LayerNorm, clipping at 1.0 and a linear warmup, and PCGrad as the common
ports write it (one backward per task, projection on flat vectors). In
bfloat16 it does what the PyTorch AMP recipe says: float32 parameters, the
forward and the loss under `torch.autocast(device, dtype=torch.bfloat16)`, the
backward outside it (no loss scaling: bfloat16 has float32's range).
`PEER_HEADS` lists the head choices it implements; `bench.our_side` refuses a
preset that asks for another, so the two sides always train the same model.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.batches import Batches, sequence_keys

PEERS = ("hf-sdpa", "hf-eager", "torch.compile")
# Each config.model field the heads depend on, and the values make_torch_model implements.
PEER_HEADS = {"sentiment_pooling": ("mean", "cls"), "pair_pooling": ("mean", "cls"),
              "paraphrase_head": ("diff", "cosine"), "similarity_head": ("diff", "cosine"),
              "share_para_sts": (False,)}


def check_peer_matches(model_config) -> None:
  """The peer builds the preset's heads (`config.model`) from `PEER_HEADS`; fail loudly on one it lacks."""
  unsupported = {k: model_config[k] for k, allowed in PEER_HEADS.items() if model_config[k] not in allowed}
  if unsupported:
    raise ValueError(f"train/configs/base.py sets {unsupported}; the PyTorch peer (bench/torch_peer.py) "
                     f"implements {PEER_HEADS}. Add the head to make_torch_model.")


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
               total_steps: int = 1000, device: str = "cpu", autocast_dtype: str | None = None):
    import torch
    if name not in PEERS:
      raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    if autocast_dtype not in (None, "float32", "bfloat16"):
      raise ValueError(f"autocast_dtype={autocast_dtype!r}; expected None, 'float32' or 'bfloat16'")
    torch.manual_seed(seed)
    self.name = name
    self.device = torch.device(device)
    # float32 is the peer without autocast; bfloat16 autocasts the forward (params stay float32).
    self.autocast_dtype = torch.bfloat16 if autocast_dtype == "bfloat16" else None
    self.model = make_torch_model(bert_config, model_config, "eager" if name == "hf-eager" else "sdpa")
    self.model.to(self.device)
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

  def autocast(self):
    """`torch.autocast` to bfloat16 on this device, or a no-op context in float32."""
    import torch
    return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

  def to_device(self, tree: Any) -> Any:
    """A batch's tensors (nested dicts) on this peer's device."""
    if isinstance(tree, Mapping):
      return {k: self.to_device(v) for k, v in tree.items()}
    return tree.to(self.device, non_blocking=True) if hasattr(tree, "to") else tree

  def sync(self) -> None:
    """Waits for queued device work (CUDA runs asynchronously; the CPU does not)."""
    import torch
    if self.device.type == "cuda":
      torch.cuda.synchronize(self.device)

  def loss(self, task: str, batch: Mapping[str, Any]):
    import torch.nn.functional as F
    with self.autocast():
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
      with torch.inference_mode(), self.autocast():
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


def step_shapes_peer(step: Mapping[str, Mapping[str, Any]]) -> list[tuple[int, int]]:
  """[(sequences, length)] per encoder call of the peer's step: one per sentence side."""
  return [tuple(side["input_ids"].shape) for batch in step.values()
          for key, side in batch.items() if key.startswith("input_ids")]
