"""A run's files on any filesystem etils.epath supports: a local disk, NFS, gs://, s3://.

Orbax writes the checkpoints itself and takes the same paths. Everything else a
run writes (metrics.jsonl, TensorBoard events, results, predictions, plots, the
model bundle) goes through here, so that `--workdir=gs://bucket/runs/x` works on
a TPU VM whose local disk is gone when the VM is.

Object stores have no append, no rename that is atomic, and no file locks. So a
whole file is written at once (an upload is all-or-nothing, as a local
write-then-rename is), files that grow are rewritten whole (`MetricWriter`), and
what needs a local file (TensorBoard's event writer, safetensors) is written to a
local staging directory and copied up.
"""

from __future__ import annotations

import os
import tempfile

from etils import epath


def is_local(path: str | os.PathLike) -> bool:
  """True for a path of the local filesystem (NFS included); False for gs://, s3://, ..."""
  return "://" not in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  return epath.Path(path)


def join(path: str | os.PathLike, *parts: str) -> str:
  """os.path.join, which also keeps a URL's scheme ("gs://b" + "x" -> "gs://b/x")."""
  return os.fspath(as_path(path).joinpath(*parts))


def makedirs(path: str | os.PathLike) -> None:
  as_path(path).mkdir(parents=True, exist_ok=True)


def exists(path: str | os.PathLike) -> bool:
  return as_path(path).exists()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes a whole file so that a reader sees the old file or the new one, never half of one."""
  if is_local(path):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "wb") as f:
      f.write(data)
    os.replace(path + ".tmp", path)
  else:  # one upload: the object appears whole or not at all
    target = as_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def read_text(path: str | os.PathLike) -> str:
  return as_path(path).read_text(encoding="utf-8")


def copy_tree(local_dir: str, target: str | os.PathLike) -> list[str]:
  """Copies every file under a local directory to `target` (any filesystem); returns the targets."""
  written = []
  for root, _, files in os.walk(local_dir):
    for name in sorted(files):
      source = os.path.join(root, name)
      destination = join(target, os.path.relpath(source, local_dir))
      with open(source, "rb") as f:
        write_bytes(destination, f.read())
      written.append(destination)
  return written


def staging_dir(prefix: str) -> str:
  """A new local directory for what must be written locally first."""
  return tempfile.mkdtemp(prefix=f"bert_jax_{prefix}_")
