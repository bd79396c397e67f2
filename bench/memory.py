"""Resident memory of the benchmark process, per table row.

One process runs every row of the step benchmark (see `bench/step_benchmark.py`
for why), so getrusage's peak, which only ever grows, cannot tell one row's
memory from the rows before it. `RssMonitor` samples the RSS in a thread over a
`with` block instead: its peak is the row's "RSS MB" column and its peak over
the RSS at entry the "+MB" column.
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
