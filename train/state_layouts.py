"""Train-state trees that older code saved, and how a resume reads them into today's.

Checkpoints hold the train state as a tree of arrays. When the code changes
that tree for the same config, a workdir written before must still resume, and
to the same values: each layout here says what the older tree was and turns a
state restored in it into today's. `train/checkpointing.py` tries them when a
saved tree is not today's, as `train/config_changes.py` reads renamed config
fields.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import optax

from train import optim
from train.checkpointing import OlderLayout
from train.conflicts import registry


def partitioned_optimizer_state(stage_config: ml_collections.ConfigDict, freeze: optim.Freeze, *,
                                task_names: Sequence[str]) -> OlderLayout:
  """The optimizer state of the code that froze parameters inside the optimizer.

  That optimizer took gradients of every parameter, frozen ones as zeros, and was

      [masked(set_to_zero, frozen) ->] [conflict method ->]
      partition(trainable: today's clip -> adamw, frozen: set_to_zero)

  the first link only with both a freeze and a conflict method. Its state held
  the very arrays today's holds, in the same order: `optax.MaskedNode` (no
  array) wherever a frozen parameter's moments would be, and no arrays in the
  set_to_zero links. So the conversion moves the arrays into today's tree and
  changes none of them.
  """
  def frozen(tree):
    return jax.tree.map(lambda path: path in freeze.frozen_paths, optim.param_paths(tree))

  def old_optimizer() -> optax.GradientTransformation:
    # Only `init`'s tree is read, never an update: any schedule builds the same tree.
    update = optim.parameter_update(stage_config.optim, optax.constant_schedule(0.0))
    labels = lambda tree: jax.tree.map(lambda is_frozen: "frozen" if is_frozen else "trainable", frozen(tree))
    partitioned = optax.partition({"trainable": update, "frozen": optax.set_to_zero()}, labels)
    method = registry.create_conflict_transform(stage_config, tuple(task_names))
    if method is None:
      return partitioned
    surgery = [method]
    if freeze.frozen_paths:
      surgery.insert(0, optax.masked(optax.set_to_zero(), frozen))
    return optax.chain(*surgery, partitioned)

  def like(state):
    old_state = jax.eval_shape(old_optimizer().init, state.params)
    old_leaves, today_leaves = jax.tree.leaves(old_state), jax.tree.leaves(state.opt_state)
    if [(x.shape, x.dtype) for x in old_leaves] != [(x.shape, x.dtype) for x in today_leaves]:
      return None
    return state.replace(opt_state=jax.tree.unflatten(jax.tree.structure(old_state), today_leaves))

  def upgrade(restored, like_state):
    return restored.replace(opt_state=jax.tree.unflatten(jax.tree.structure(like_state.opt_state),
                                                         jax.tree.leaves(restored.opt_state)))

  return OlderLayout("the optimizer state of optax.partition (frozen parameters inside the optimizer)",
                     like, upgrade)
