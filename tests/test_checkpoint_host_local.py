"""Checkpoints of a state held as per-process replicas (pmap over several processes) go through host numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from train.checkpointing import RunCheckpoints
from train.parallel import DataParallel


def test_a_replicated_state_saved_as_host_numpy_restores_equal_and_placed_like_the_state(tmp_path):
  parallel = DataParallel.create("pmap", 8)
  state = parallel.replicate({"params": {"w": jnp.arange(12.0).reshape(3, 4)}, "step": jnp.int32(7)})
  checkpoints = RunCheckpoints(str(tmp_path / "ckpt"), host_local_replicas=True, async_save=False)
  checkpoints.save(7, state, {"epoch": 1})
  like = parallel.replicate(jax.tree.map(jnp.zeros_like, state))
  restored, progress = checkpoints.restore(7, like)
  checkpoints.close()
  assert progress["epoch"] == 1
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert isinstance(got, jax.Array) and got.sharding == want.sharding
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # What was written is one replica, as host data: a plain array of the state's own shape.
  with RunCheckpoints(str(tmp_path / "ckpt"), async_save=False).manager as manager:
    metadata = manager.item_metadata(7)["state"]
  tree = getattr(metadata, "tree", metadata)
  assert tuple(tree["params"]["w"].shape) == (3, 4)
