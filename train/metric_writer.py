"""Scalars to TensorBoard event files and to `metrics.jsonl` in the workdir.

The JSON lines are what `plots.py` draws and what tests and scripts read; the
event files are for `tensorboard --logdir <workdir>`.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from tensorboardX import SummaryWriter


def flatten_scalars(tree: Mapping, prefix: str = "") -> dict[str, float]:
  """{"a": {"b": 1.0}} -> {"a/b": 1.0}."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten_scalars(value, name + "/"))
    else:
      flat[name] = float(value)
  return flat


class MetricWriter:
  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping, *, kind: str = "train") -> None:
    flat = flatten_scalars(scalars)
    self._jsonl.write(json.dumps({"step": int(step), "kind": kind, **flat}) + "\n")
    self._jsonl.flush()
    for name, value in flat.items():
      self._tensorboard.add_scalar(f"{kind}/{name}", value, int(step))
    self._tensorboard.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()


def read_metrics(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
