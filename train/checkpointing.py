"""Orbax checkpoints of a run: the latest (to resume) and the best by dev score, verified.

One `CheckpointManager` per training stage keeps two kinds of step: the latest,
saved every `checkpoint_every_steps` and at each epoch end, and the best, saved
with its dev metrics after each evaluation. A preservation policy keeps the
union of `LatestN(2)` and `BestN(1)`. Two latest, not one: when the newest
checkpoint turns out damaged on resume, the one before it is the fallback; with
`LatestN(1)` the only other step left would be the best, which can be epochs
older, or the very step that is damaged.

Saves are asynchronous: training continues while the arrays are written. Orbax
writes into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint as the latest and a resume ignores the
partial one.

Integrity: Orbax stores arrays without checksums, so a flipped bit restores
silently to different parameters. Each save therefore records, in its JSON
progress item, two 32-bit checksums of every array of the state (computed on
device, where the state already is, and fetched at the save's existing host
sync) and a SHA-256 of the rest of the progress item. A restore recomputes and
compares them. `restore_newest_good` walks the steps newest first; a step that
fails to read or to verify is reported, moved aside to
`<directory>/corrupt/<step>-<n>` (kept, never deleted) and the next older step is
tried. Checkpoints written before checksums existed restore with a warning.

Layout: a step whose state tree is not the one this run builds is refused
(`CheckpointMismatchError`), unless it is one of the `older_layouts` the run
names (train/state_layouts.py): a tree that earlier code saved for the same
config. It is then restored and verified in that layout, and converted.

Host-local replicas: in a job of several processes, Orbax saves only global
arrays, whose shards together span every process. pmap mode keeps the state
replicated on each process's own devices instead: every process holds the whole
state, and no array spans processes. With `host_local_replicas` such a state is
saved as host numpy, which only the primary process writes (the replicas are
equal: every update is all-reduced over all devices), and restored as numpy
onto the like state's devices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies

from train import storage

INTEGRITY_KEY = "integrity"
INTEGRITY_FORMAT = 1
CORRUPT_DIR = "corrupt"
# An odd multiplier per element index (Knuth's golden-ratio constant): the weighted sum then
# changes for any single flipped bit, and for swapped or shifted elements, which a plain sum misses.
_GOLDEN = np.uint32(0x9E3779B1)


class CheckpointCorruptError(RuntimeError):
  """A saved step cannot be read, or its contents differ from what was saved."""


class CheckpointMismatchError(ValueError):
  """A saved step is intact but holds a different tree than this run builds (a changed config)."""


class NoGoodCheckpointError(RuntimeError):
  """Every saved step of a stage was damaged; they were moved aside."""


def _as_words(x: jax.Array) -> jax.Array:
  """The array's bits as a flat uint32 vector (narrower dtypes are widened, bit for bit)."""
  x = jnp.ravel(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jnp.ravel(jax.lax.bitcast_convert_type(x, width)).astype(jnp.uint32)


@jax.jit
def _array_checksums(tree: Any) -> Any:
  """Per leaf (sum of words, index-weighted sum of words), both mod 2**32."""
  def leaf(x):
    words = _as_words(x)
    weights = jax.lax.iota(jnp.uint32, words.size) * _GOLDEN | np.uint32(1)
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * weights, dtype=jnp.uint32)])
  return jax.tree.map(leaf, tree)


def state_checksums(state: Any) -> dict[str, list]:
  """{leaf path: [sum, weighted sum, shape, dtype]} of every array in `state` (JSON-able)."""
  sums = jax.device_get(_array_checksums(state))
  leaves = jax.tree_util.tree_leaves_with_path(state)
  flat_sums = jax.tree.leaves(sums)
  return {jax.tree_util.keystr(path): [int(s[0]), int(s[1]), list(np.shape(x)), str(x.dtype)]
          for (path, x), s in zip(leaves, flat_sums)}


def _progress_digest(progress: dict) -> str:
  body = {k: v for k, v in progress.items() if k != INTEGRITY_KEY}
  return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _compare_checksums(saved: dict, restored: dict) -> list[str]:
  problems = [f"{path}: missing from the restored state" for path in saved if path not in restored]
  problems += [f"{path}: not in the saved checksums" for path in restored if path not in saved]
  for path in saved:
    if path in restored and saved[path] != restored[path]:
      problems.append(f"{path}: saved checksum/shape/dtype {saved[path]}, restored {restored[path]}")
  return problems


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _tree_paths(tree: Any) -> set[str]:
  """Leaf paths as 'opt_state/0/mu/bert/...': Orbax's metadata has dicts where the state has dataclasses."""
  return {"/".join(_key_name(k) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


@dataclasses.dataclass(frozen=True)
class OlderLayout:
  """A state tree that earlier code saved, and how a restore reads it into today's.

  `like(like_state)` is today's `like_state` rearranged into that layout (the same
  arrays, its tree), or None when the two hold different arrays; `upgrade(restored,
  like_state)` turns a state restored in that layout into today's tree.
  """
  description: str
  like: Callable[[Any], Any]
  upgrade: Callable[[Any, Any], Any]


class RunCheckpoints:
  """Save/restore of (train state, JSON progress) under `directory`, keyed by step."""

  def __init__(self, directory: str, *, best_metric: str = "overall_mean", async_save: bool = True,
               older_layouts: Sequence[OlderLayout] = (), host_local_replicas: bool = False):
    self.best_metric = best_metric
    self.host_local_replicas = host_local_replicas
    self.older_layouts = tuple(older_layouts)
    self.directory = os.path.abspath(directory) if storage.is_local(directory) else directory
    keep = policies.AnyPreservationPolicy([
        policies.LatestN(n=2),
        policies.BestN(get_metric_fn=lambda metrics: metrics[best_metric], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, preservation_policy=keep,
        cleanup_tmp_directories=True)
    # Handlers named up front (not just item names): `item_metadata` then reads the saved tree.
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, state: Any, progress: dict, metrics: dict | None = None) -> None:
    """Starts an async save; `metrics` (with `best_metric`) marks a candidate for best.

    The checksums are taken here, before the save returns: the next train step donates
    `state`'s buffers.
    """
    if self.host_local_replicas:
      state = jax.tree.map(_one_replica, state)
    progress = dict(progress)
    progress.pop(INTEGRITY_KEY, None)
    progress[INTEGRITY_KEY] = {"format": INTEGRITY_FORMAT, "state": state_checksums(state),
                               "progress_sha256": _progress_digest(progress)}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)),
        metrics=metrics, force=True)

  def restore(self, step: int, like_state: Any) -> tuple[Any, dict]:
    """Restores and verifies step `step` with the tree, shapes and shardings of `like_state`.

    A step saved in one of `older_layouts` is restored and verified in that layout, then
    converted to `like_state`'s tree. Raises CheckpointCorruptError when the step cannot be
    read or fails its checksums, and CheckpointMismatchError when it is intact but holds a
    different tree than `like_state` (in any known layout).
    """
    progress = self.restore_progress(step)
    layout, saved_like = self._saved_layout(step, like_state)
    if self.host_local_replicas:  # read as host numpy, placed like `like_state` below
      abstract = jax.tree.map(lambda x: np.empty(x.shape, x.dtype), saved_like)
    else:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, saved_like)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract))).state
    except Exception as e:  # Orbax/TensorStore raise many kinds for unreadable data
      raise CheckpointCorruptError(f"its arrays cannot be read: {_first_line(e)}") from e
    integrity = progress.get(INTEGRITY_KEY)
    if integrity is None:
      _warn(f"checkpoint step {step} in {self.directory} has no checksums (written before they "
            f"existed); restored unverified")
    else:
      problems = _compare_checksums(integrity["state"], state_checksums(restored))
      if problems:
        raise CheckpointCorruptError(
            f"{len(problems)} array(s) differ from what was saved: " + "; ".join(problems[:3]))
    if layout is not None:
      logging.info("checkpoint step %d in %s holds %s; converted to today's state tree",
                   step, self.directory, layout.description)
      restored = layout.upgrade(restored, like_state)
    if self.host_local_replicas:
      restored = jax.tree.map(lambda value, like: jax.device_put(value, like.sharding), restored, like_state)
    return restored, progress

  def restore_progress(self, step: int) -> dict:
    """The JSON progress item of `step`, verified against its digest when it has one."""
    try:
      progress = self.manager.restore(
          step, args=ocp.args.Composite(progress=ocp.args.JsonRestore())).progress
    except Exception as e:
      raise CheckpointCorruptError(f"its progress item cannot be read: {_first_line(e)}") from e
    if not isinstance(progress, dict):
      raise CheckpointCorruptError(f"its progress item is {type(progress).__name__}, expected a JSON object")
    integrity = progress.get(INTEGRITY_KEY)
    if integrity is not None and integrity.get("progress_sha256") != _progress_digest(progress):
      raise CheckpointCorruptError("its progress item differs from what was saved (SHA-256 mismatch)")
    return progress

  def _saved_layout(self, step: int, like_state: Any) -> tuple[OlderLayout | None, Any]:
    """(None, like_state) when `step` holds today's tree, else (the older layout, its like_state).

    Raises CheckpointMismatchError when it holds neither.
    """
    try:
      metadata = self.manager.item_metadata(step)["state"]
      saved_paths = _tree_paths(metadata.tree if hasattr(metadata, "tree") else metadata)
    except Exception as e:
      raise CheckpointCorruptError(f"its array metadata cannot be read: {_first_line(e)}") from e
    if not saved_paths:
      raise CheckpointCorruptError("its array metadata lists no arrays")
    wanted = _tree_paths(like_state)
    if saved_paths == wanted:
      return None, like_state
    for layout in self.older_layouts:
      older_like = layout.like(like_state)
      if older_like is not None and _tree_paths(older_like) == saved_paths:
        return layout, older_like
    missing, extra = sorted(wanted - saved_paths), sorted(saved_paths - wanted)
    raise CheckpointMismatchError(
        f"checkpoint step {step} in {self.directory} holds a different parameter tree than this "
        f"config builds: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
        f"{extra[:5]}{' ...' if len(extra) > 5 else ''}. The model config changed since it was saved.")

  def restore_newest_good(self, like_state: Any, check_progress: Callable[[int, dict], None] = lambda s, p: None,
                          say: Callable[[str], None] = logging.warning) -> tuple[int, Any, dict] | None:
    """(step, state, progress) of the newest step that reads and verifies; None if there are no steps.

    `check_progress(step, progress)` runs before the arrays are read (e.g. to refuse a changed
    config); its exceptions propagate. A damaged step is moved aside and the next older one
    tried; if none is left, NoGoodCheckpointError.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    moved = []
    for step in steps:
      try:
        progress = self.restore_progress(step)
        check_progress(step, progress)
        state, progress = self.restore(step, like_state)
      except CheckpointCorruptError as e:
        destination = self.move_aside(step)
        moved.append(destination)
        say(f"checkpoint step {step} in {self.directory} is damaged: {e}. Moved it to {destination}; "
            f"trying the next older step.")
        continue
      return step, state, progress
    if moved:
      raise NoGoodCheckpointError(
          f"every checkpoint in {self.directory} is damaged (steps {steps}); they were moved to "
          f"{os.path.join(self.directory, CORRUPT_DIR)}. Start again in a new --workdir, or remove "
          f"the checkpoints directory to retrain here from the beginning.")
    return None

  def move_aside(self, step: int) -> str:
    """Moves step `step` to `<directory>/corrupt/<step>-<n>` and makes the manager forget it."""
    source = os.path.join(self.directory, str(step))
    corrupt = os.path.join(self.directory, CORRUPT_DIR)
    n = 0
    while storage.exists(os.path.join(corrupt, f"{step}-{n}")):
      n += 1
    destination = os.path.join(corrupt, f"{step}-{n}")
    if jax.process_index() == 0:  # a local disk, NFS or gs:// (train/storage.py)
      storage.makedirs(corrupt)
      storage.as_path(source).rename(destination)
    self.manager.reload()
    return destination

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _one_replica(x: Any) -> Any:
  """Host numpy of one device's copy of a replicated array (other leaves as they are)."""
  if isinstance(x, jax.Array):
    return np.asarray(x.addressable_data(0))
  return x


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _warn(message: str) -> None:
  if jax.process_index() == 0:
    print(f"warning: {message}", flush=True)
