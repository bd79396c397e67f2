"""Scalars to TensorBoard event files and to `metrics.jsonl` in the workdir.

The JSON lines are what `plots.py` draws and what tests and scripts read; the
event files are for `tensorboard --logdir <workdir>`.

A resumed run retrains the steps between its checkpoint and the moment it stopped,
and logs them again. So each checkpoint records `position()`, the length of
`metrics.jsonl` when it was taken, and a resume `truncate`s the file back to it:
every record appears once, written by the steps that the final params went through.
TensorBoard's event files cannot be cut; the writer instead starts a new event file
with `purge_step`, which tells TensorBoard to hide the older events from that step on.
A "final" record replaces any earlier one (a finished run started again writes it again).
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
  """Appends scalars to `workdir/metrics.jsonl` and to TensorBoard events under `workdir/tensorboard`."""

  REPLACED_KINDS = ("final",)  # one record per run, whatever the number of starts

  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard_dir = os.path.join(workdir, "tensorboard")
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    self._tensorboard = SummaryWriter(self._tensorboard_dir)

  def write(self, step: int, scalars: Mapping, *, kind: str = "train") -> None:
    flat = flatten_scalars(scalars)
    if kind in self.REPLACED_KINDS:
      self._drop_records(kind)
    self._jsonl.write(json.dumps({"step": int(step), "kind": kind, **flat}) + "\n")
    self._jsonl.flush()
    for name, value in flat.items():
      self._tensorboard.add_scalar(f"{kind}/{name}", value, int(step))
    self._tensorboard.flush()

  def position(self) -> int:
    """Bytes written to metrics.jsonl so far: what a checkpoint records, to `truncate` to on resume."""
    self._jsonl.flush()
    return self._jsonl.tell()

  def truncate(self, position: int, *, tensorboard_purge_step: int | None = None) -> int:
    """Drops every metrics.jsonl record after byte `position`; returns how many were dropped.

    `tensorboard_purge_step`: the first step to be logged again; TensorBoard hides older
    events at or after it.
    """
    self._jsonl.flush()
    size = os.path.getsize(self.jsonl_path)
    if not 0 <= position <= size:
      raise ValueError(f"{self.jsonl_path}: cannot truncate to byte {position}; the file has {size} bytes "
                       f"(it was shortened or replaced since the checkpoint was written)")
    if position == size:
      return 0  # nothing was logged after it, in either file
    with open(self.jsonl_path, "rb") as f:
      f.seek(position)
      dropped = sum(1 for line in f if line.strip())
    self._jsonl.close()
    os.truncate(self.jsonl_path, position)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    if tensorboard_purge_step is not None:
      self._tensorboard.close()
      self._tensorboard = SummaryWriter(self._tensorboard_dir, purge_step=int(tensorboard_purge_step))
    return dropped

  def _drop_records(self, kind: str) -> None:
    self._jsonl.close()
    with open(self.jsonl_path, encoding="utf-8") as f:
      lines = f.readlines()
    kept = [line for line in lines if not line.strip() or json.loads(line).get("kind") != kind]
    if len(kept) != len(lines):
      with open(self.jsonl_path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(kept)
      os.replace(self.jsonl_path + ".tmp", self.jsonl_path)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()


def read_metrics(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
