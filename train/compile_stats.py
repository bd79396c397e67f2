"""How long a run spent in XLA compilation, and how much of it the persistent cache answered.

A listener on `jax.monitoring` events, used as a context manager around a run:
the trainer records the result in results.json and prints it, so a user sees
that a second start of the same run reads its executables from the cache
instead of compiling them (`bench/epoch_benchmark.py` uses it too).
"""

from __future__ import annotations

import threading

import jax

# JAX wraps `compile_or_get_cached` in this event, so its duration includes reading an
# executable from the persistent cache; cache reads are also recorded on their own.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_READ_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"
CACHE_EVENT_PREFIX = "/jax/compilation_cache/"


class CompilationStats:
  """Seconds compiling (cache reads included), seconds reading the cache, cache event counts."""

  def __init__(self):
    self.seconds = 0.0
    self.cache_read_seconds = 0.0
    self.cache_events: dict[str, int] = {}
    self._lock = threading.Lock()

  def _on_duration(self, event: str, duration: float, **_):
    with self._lock:
      if event == BACKEND_COMPILE_EVENT:
        self.seconds += duration
      elif event == CACHE_READ_EVENT:
        self.cache_read_seconds += duration

  def _on_event(self, event: str, **_):
    if event.startswith(CACHE_EVENT_PREFIX):
      name = event.rsplit("/", 1)[-1]
      with self._lock:
        self.cache_events[name] = self.cache_events.get(name, 0) + 1

  def __enter__(self) -> "CompilationStats":
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._on_duration)
    jax.monitoring.unregister_event_listener(self._on_event)

  def to_dict(self) -> dict:
    with self._lock:
      return {"seconds": self.seconds, "cache_read_seconds": self.cache_read_seconds,
              "cache_hits": self.cache_events.get("cache_hits", 0),
              "cache_misses": self.cache_events.get("cache_misses", 0)}

  def summary(self) -> str:
    stats = self.to_dict()
    return (f"XLA compilation: {stats['seconds']:.1f} s, of which {stats['cache_read_seconds']:.1f} s reading "
            f"{stats['cache_hits']} executables from the persistent cache ({stats['cache_misses']} compiled anew)")
