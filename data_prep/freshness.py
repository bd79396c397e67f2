"""Whether a prepared dataset is still what its source files would give today.

TFDS reuses a prepared dataset whenever its directory exists: name, config and
version are its whole key. Our builders read local CSVs that people edit, move,
or swap for others (config.data.data_root), so each prepared dataset records,
per source file, where it was read from and the file's size, mtime and sha256
(`fingerprint`). `changed_sources` compares that record with the file the
builder would read now:

- same path, size and mtime: unchanged, without reading a byte. This is the
  common case, and every trainer start checks every dataset it uses;
- a different size: changed, again without reading;
- otherwise the sha256 decides, so a copy of the same bytes under another data
  root, or a file that was only touched, is still the same source.

A dataset prepared before these records existed has nothing to compare with
and counts as changed, so it is prepared again once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Mapping

from data_prep import source_files


@dataclasses.dataclass(frozen=True)
class SourceChange:
  """One source file whose current state differs from what a prepared dataset was built from."""
  filename: str
  recorded_path: str
  current_path: str | None
  reason: str

  def describe(self) -> str:
    where = self.current_path or self.recorded_path
    return f"{self.filename} ({where}): {self.reason}"


def sha256_of(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fingerprint(path: str | os.PathLike) -> dict:
  """What a prepared dataset records about a source file to recognise it later."""
  stat = os.stat(path)
  return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_of(path)}


def remote_record(remote: source_files.RemoteFile) -> dict:
  """How to find the file again: its subdirectory, URL and archive member."""
  return {"subdir": remote.subdir, "url": remote.url, "archive_member": remote.archive_member}


def _content_differs(recorded: Mapping, path: pathlib.Path) -> str | None:
  """Why `path` is not the recorded file, or None when it is (see module doc for the order)."""
  stat = path.stat()
  if str(path) == recorded["path"] and stat.st_size == recorded["size"] \
      and stat.st_mtime_ns == recorded["mtime_ns"]:
    return None
  moved = "" if str(path) == recorded["path"] else f" (prepared from {recorded['path']})"
  if stat.st_size != recorded["size"]:
    return f"{stat.st_size} bytes now, {recorded['size']} when prepared{moved}"
  if sha256_of(path) != recorded["sha256"]:
    return f"content changed since it was prepared (sha256 differs){moved}"
  return None


def changed_sources(metadata: Mapping, *, local_dir: os.PathLike | None = None,
                    manual_dir: os.PathLike | None = None, skip_bad_rows: bool = False) -> list[SourceChange]:
  """The source files (and settings) that differ from those `metadata`'s dataset was prepared from.

  `local_dir`, `manual_dir` and the default data root are searched in the order
  the builders use (`source_files.locate_local`). A file found nowhere locally came
  from a download, or has been removed since: the prepared copy is then the
  only one and is kept, if its recorded download is still the same file.

  Raises:
    MissingDataRootError: `local_dir` is not a directory.
    MissingDataFileError: `local_dir` lacks one of the files.
  """
  recorded_files = metadata.get("source_files") or {}
  changes = []
  for filename, recorded in recorded_files.items():
    if not {"size", "mtime_ns", "subdir", "url"} <= set(recorded):
      changes.append(SourceChange(filename, recorded.get("path", "?"), None,
                                  "prepared by an earlier bert_jax that did not record its sources"))
      continue
    remote = source_files.RemoteFile(filename=filename, subdir=recorded["subdir"], url=recorded["url"],
                                     archive_member=recorded.get("archive_member"))
    current, _ = source_files.locate_local(remote, local_dir=local_dir, manual_dir=manual_dir)
    if current is None:
      recorded_path = pathlib.Path(recorded["path"])
      if not recorded_path.is_file():
        continue  # neither a local copy nor the download left: the prepared data is all there is
      current = recorded_path
    reason = _content_differs(recorded, current)
    if reason:
      changes.append(SourceChange(filename, recorded["path"], str(current), reason))
  dropped = sum(sum(counts.values()) for counts in (metadata.get("skipped_rows") or {}).values())
  dropped += sum(len(rows) for rows in (metadata.get("placeholder_rows") or {}).values())
  recorded_skip = metadata.get("skip_bad_rows")
  if recorded_skip and not skip_bad_rows and dropped:
    changes.append(SourceChange("(all files)", "", None, f"prepared with skip_bad_rows=True, which skipped or "
                                f"patched {dropped} malformed row(s); now skip_bad_rows=False"))
  return changes
