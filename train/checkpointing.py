"""Orbax checkpoints of a run: the latest (to resume) and the best by dev score.

One `CheckpointManager` per training stage keeps two kinds of step: the latest,
saved every `checkpoint_every_steps` and at each epoch end, and the best, saved
with its dev metrics after each evaluation. A preservation policy keeps the
union of `LatestN(1)` and `BestN(1)`, so a resumed run and the final "restore the
best" both find what they need, and nothing else piles up on disk.

Saves are asynchronous: training continues while the arrays are written. Orbax
writes into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint as the latest and a resume ignores the
partial one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class RunCheckpoints:
  """Save/restore of (train state, JSON progress) under `directory`, keyed by step."""

  def __init__(self, directory: str, *, best_metric: str = "overall_mean", async_save: bool = True):
    self.best_metric = best_metric
    keep = policies.AnyPreservationPolicy([
        policies.LatestN(n=1),
        policies.BestN(get_metric_fn=lambda metrics: metrics[best_metric], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, preservation_policy=keep,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                         item_names=("state", "progress"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, state: Any, progress: dict, metrics: dict | None = None) -> None:
    """Starts an async save; `metrics` (with `best_metric`) marks a candidate for best."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(progress)),
        metrics=metrics, force=True)

  def restore(self, step: int, like_state: Any) -> tuple[Any, dict]:
    """Restores step `step` with the tree structure, shapes and shardings of `like_state`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), progress=ocp.args.JsonRestore()))
    return restored.state, restored.progress

  def restore_progress(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore())).progress

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
