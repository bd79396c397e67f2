"""One run per workdir: an exclusive `flock` on `<workdir>/run.lock`.

Two runs on one workdir would interleave their checkpoints and metrics and each
resume from the other's steps. The lock is advisory and taken without waiting:
a second run stops at once and names the first one's pid, host and start time,
which the lock file holds as JSON. The kernel releases a `flock` when its process
dies, so a crashed or killed run never leaves a stale lock; the file stays, and
its contents are only information.

In a multi-host job every process trains the same run, so each locks its own file
(`run.lock` for process 0, `run.lock.process<k>` for the others): two jobs on one
shared workdir still collide on process 0's lock, while the hosts of one job do not
block each other. `flock` works on local disks; on network filesystems it depends
on the mount. An object store (a gs:// workdir) has no locks at all: there the run
goes on unlocked, says so, and one job per workdir is the user's to keep.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

from absl import logging

from train import storage

LOCK_FILE = "run.lock"


class WorkdirInUseError(RuntimeError):
  """Another live process holds the workdir's lock."""


def lock_path(workdir: str, process_index: int = 0) -> str:
  name = LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.process{process_index}"
  return os.path.join(workdir, name)


class WorkdirLock:
  """Context manager: holds the workdir's lock for the life of the run (or of the process)."""

  def __init__(self, workdir: str, process_index: int = 0):
    self.workdir = workdir
    self.path = lock_path(workdir, process_index)
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    if not storage.is_local(self.workdir):
      logging.warning("%s is on an object store, which has no file locks: nothing stops a second run on "
                      "it, so start one job per workdir", self.workdir)
      return self
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirInUseError(
          f"{self.workdir} is in use by another run (pid {holder.get('pid', '?')} on host "
          f"{holder.get('host', '?')}, started {holder.get('started', '?')}; lock file {self.path}). "
          f"Wait for it to finish, stop it, or pass another --workdir.") from None
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> dict:
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):  # written half-way, or not by us: the message says '?'
    return {}
