"""Resident memory of the benchmark process, per table row.

One process runs every row of the step benchmark (see `bench/step_benchmark.py`
for why), so the process's peak, which only ever grows, cannot tell one row's
memory from the rows before it. `RssMonitor` measures the peak over a `with`
block instead: it resets the kernel's high-water mark on entry (Linux
/proc/self/clear_refs) and reads it on exit, and where that is not possible it
samples the RSS in a thread. Its peak is the row's "RSS MB" column and its
peak over the RSS at entry the "+MB" column.

Those columns still share one process with every other row (models, compiled
executables and allocator caches of earlier rows stay resident), so
`bench/step_memory.py` measures the step's own peak in a process per side and
workload, with the same two functions.
"""

from __future__ import annotations

import os
import resource
import threading


def current_rss_mb() -> float:
  """Resident set size now (Linux /proc; elsewhere the peak so far)."""
  try:
    with open("/proc/self/statm") as f:
      pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
  except (OSError, ValueError):
    return peak_rss_mb()


def peak_rss_mb() -> float:
  """The process's peak RSS since it started or since `reset_peak_rss` (Linux VmHWM; else getrusage)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024  # kB
  except (OSError, ValueError):
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak_rss() -> bool:
  """Resets the process's peak RSS to its RSS now (Linux >= 4.0); False where that is not possible."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    return False
  return True


def release_free_memory() -> None:
  """Hands memory that malloc holds but nobody uses back to the OS (glibc), so it is not counted as resident."""
  try:
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


class RssMonitor:
  """The peak RSS over a `with` block: the kernel's high-water mark, reset on entry, or sampled.

  The process's peak only ever grows, and one process runs every row here, so
  each row's own peak needs the reset (or, without it, sampling every few ms).
  `delta_mb` is the peak over the RSS at entry: what that workload's steps
  added on top of what was resident.
  """

  def __init__(self, interval_s: float = 0.005):
    self.interval_s = interval_s
    self.start_mb = self.peak_mb = 0.0
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def __enter__(self) -> "RssMonitor":
    self._exact = reset_peak_rss()
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
    if self._exact:
      self.peak_mb = max(self.peak_mb, peak_rss_mb())

  @property
  def delta_mb(self) -> float:
    return self.peak_mb - self.start_mb
