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

On an object store (a gs:// workdir, train/storage.py) there is no append: the
writer holds metrics.jsonl in memory and uploads it whole after every record, and
TensorBoard writes to a local staging directory that is copied up after each flush.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Mapping

from train import storage


def _import_summary_writer():
  """tensorboardX's SummaryWriter, without the PyTorch that tensorboardX imports whenever it is installed.

  The writer is given plain floats; importing torch (Colab has it) would only cost every
  trainer start a second or two and a few hundred MB. A `None` in sys.modules makes
  tensorboardX's `import torch` fail as if torch were absent; it is removed again at once,
  so code that wants torch later still gets it.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    if sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return SummaryWriter


SummaryWriter = _import_summary_writer()


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


class _LocalJsonl:
  """metrics.jsonl on a local disk: appended to, flushed after every record."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def append(self, line: str) -> None:
    self._file.write(line)
    self._file.flush()

  def size(self) -> int:
    self._file.flush()
    return self._file.tell()

  def read(self) -> bytes:
    self._file.flush()
    with open(self.path, "rb") as f:
      return f.read()

  def truncate(self, position: int) -> None:
    self._file.close()
    os.truncate(self.path, position)
    self._file = open(self.path, "a", encoding="utf-8")

  def replace(self, data: bytes) -> None:
    self._file.close()
    storage.write_bytes(self.path, data)
    self._file = open(self.path, "a", encoding="utf-8")

  def close(self) -> None:
    self._file.close()


class _ObjectJsonl:
  """metrics.jsonl on an object store: held in memory, uploaded whole after every change."""

  def __init__(self, path: str):
    self.path = path
    self._data = storage.as_path(path).read_bytes() if storage.exists(path) else b""

  def append(self, line: str) -> None:
    self._data += line.encode("utf-8")
    storage.write_bytes(self.path, self._data)

  def size(self) -> int:
    return len(self._data)

  def read(self) -> bytes:
    return self._data

  def truncate(self, position: int) -> None:
    self.replace(self._data[:position])

  def replace(self, data: bytes) -> None:
    self._data = data
    storage.write_bytes(self.path, data)

  def close(self) -> None:
    pass


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` and to TensorBoard events under `workdir/tensorboard`."""

  REPLACED_KINDS = ("final",)  # one record per run, whatever the number of starts

  def __init__(self, workdir: str):
    storage.makedirs(workdir)
    self.jsonl_path = storage.join(workdir, "metrics.jsonl")
    self._tensorboard_dir = storage.join(workdir, "tensorboard")
    local = storage.is_local(workdir)
    self._jsonl = _LocalJsonl(self.jsonl_path) if local else _ObjectJsonl(self.jsonl_path)
    # Where the event writer writes: the workdir itself, or a local copy that is uploaded.
    self._events_dir = self._tensorboard_dir if local else storage.staging_dir("tensorboard")
    self._tensorboard = SummaryWriter(self._events_dir)

  def write(self, step: int, scalars: Mapping, *, kind: str = "train") -> None:
    flat = flatten_scalars(scalars)
    if kind in self.REPLACED_KINDS:
      self._drop_records(kind)
    self._jsonl.append(json.dumps({"step": int(step), "kind": kind, **flat}) + "\n")
    for name, value in flat.items():
      self._tensorboard.add_scalar(f"{kind}/{name}", value, int(step))
    self._tensorboard.flush()
    self._upload_events()

  def position(self) -> int:
    """Bytes written to metrics.jsonl so far: what a checkpoint records, to `truncate` to on resume."""
    return self._jsonl.size()

  def truncate(self, position: int, *, tensorboard_purge_step: int | None = None) -> int:
    """Drops every metrics.jsonl record after byte `position`; returns how many were dropped.

    `tensorboard_purge_step`: the first step to be logged again; TensorBoard hides older
    events at or after it.
    """
    size = self._jsonl.size()
    if not 0 <= position <= size:
      raise ValueError(f"{self.jsonl_path}: cannot truncate to byte {position}; the file has {size} bytes "
                       f"(it was shortened or replaced since the checkpoint was written)")
    if position == size:
      return 0  # nothing was logged after it, in either file
    dropped = sum(1 for line in self._jsonl.read()[position:].splitlines() if line.strip())
    self._jsonl.truncate(position)
    if tensorboard_purge_step is not None:
      self._tensorboard.close()
      self._tensorboard = SummaryWriter(self._events_dir, purge_step=int(tensorboard_purge_step))
    return dropped

  def _drop_records(self, kind: str) -> None:
    lines = self._jsonl.read().decode("utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.strip() or json.loads(line).get("kind") != kind]
    if len(kept) != len(lines):
      self._jsonl.replace("".join(kept).encode("utf-8"))

  def _upload_events(self) -> None:
    if self._events_dir != self._tensorboard_dir:
      storage.copy_tree(self._events_dir, self._tensorboard_dir)

  def close(self) -> None:
    self._jsonl.close()
    self._tensorboard.close()
    self._upload_events()


def read_metrics(path: str) -> list[dict]:
  return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
