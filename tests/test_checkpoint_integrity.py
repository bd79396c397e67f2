"""Damaged checkpoints are detected, moved aside, and the newest good step is restored.

Each kind of damage an outside probe produced (a flipped low or high bit in an
array, a truncated data file, garbage metadata, an empty manifest, a deleted
progress item, an empty step directory) is applied to the newest of two saved
steps; the restore must name the damaged step, move it to `corrupt/`, and return
the older step's arrays exactly. The last test does the same through the trainer:
a resumed run falls back and ends with the params of an undamaged run.
"""

import glob
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.test_train import _final_params, _flat, tiny_config
from train import checkpointing, train
from train.checkpointing import RunCheckpoints

# Full-entropy int32 data: zstd stores it uncompressed, so the test can find the array's own
# bytes in the data file and flip exactly the bit it means to.
_RANDOM = np.random.default_rng(0).integers(-2**31, 2**31 - 1, size=(64, 64), dtype=np.int32)


def _state(step: int) -> dict:
  return {"params": {"w": jnp.asarray(_RANDOM + step), "scale": jnp.full((5,), 0.5 * step, jnp.float32)},
          "step": jnp.asarray(step, jnp.int32)}


def _save_two_steps(directory: pathlib.Path) -> None:
  checkpoints = RunCheckpoints(str(directory))
  for step in (2, 4):
    checkpoints.save(step, _state(step), {"epoch": step // 2, "data": {"position": step}})
  checkpoints.wait()
  checkpoints.close()


def _array_offset(step_dir: pathlib.Path) -> tuple[pathlib.Path, int]:
  """The data file holding `w` of `step_dir`, and the offset of element 1000 in it."""
  needle = (_RANDOM + int(step_dir.name)).tobytes()[4000:4032]
  for path in glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True):
    offset = pathlib.Path(path).read_bytes().find(needle)
    if offset >= 0:
      return pathlib.Path(path), offset
  raise AssertionError(f"the bytes of w are in no data file under {step_dir}")


def _flip(path: pathlib.Path, offset: int, bit: int) -> None:
  data = bytearray(path.read_bytes())
  data[offset] ^= 1 << bit
  path.write_bytes(bytes(data))


def _flip_in_merged_tree(step_dir: pathlib.Path) -> None:
  """Flips one bit in the middle of the merged OCDBT b-tree under `step_dir/state/d`.

  Restore always reads that tree. The per-process files under `ocdbt.process_0/d` also
  hold bytes that restore never reads after the merge, so a flip there may be harmless
  (the checksums then rightly pass), which made "the largest file" a flaky target.
  """
  trees = sorted(glob.glob(str(step_dir / "state" / "d" / "*")))
  assert trees, f"no merged b-tree under {step_dir}/state/d"
  for tree in trees:
    _flip(pathlib.Path(tree), pathlib.Path(tree).stat().st_size // 2, bit=0)


def _bit_flip_low(step_dir):
  _flip(*_array_offset(step_dir), bit=0)


def _bit_flip_high(step_dir):
  path, offset = _array_offset(step_dir)
  _flip(path, offset + 3, bit=7)  # the sign bit of a little-endian int32


def _truncated_data(step_dir):
  path, _ = _array_offset(step_dir)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _garbage_metadata(step_dir):
  (step_dir / "state" / "_METADATA").write_bytes(b"\x00\xffnot json{")


def _empty_manifest(step_dir):
  for manifest in glob.glob(str(step_dir / "state" / "**" / "manifest.ocdbt"), recursive=True):
    pathlib.Path(manifest).write_bytes(b"")


def _deleted_progress(step_dir):
  shutil.rmtree(step_dir / "progress")


def _empty_step_dir(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


DAMAGE = [_bit_flip_low, _bit_flip_high, _truncated_data, _garbage_metadata, _empty_manifest,
          _deleted_progress, _empty_step_dir]


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__.lstrip("_") for d in DAMAGE])
def test_damaged_newest_step_is_moved_aside_and_the_older_one_restored(tmp_path, damage):
  directory = tmp_path / "checkpoints"
  _save_two_steps(directory)
  damage(directory / "4")
  messages = []
  checkpoints = RunCheckpoints(str(directory))
  step, state, progress = checkpoints.restore_newest_good(_state(0), say=messages.append)
  assert step == 2 and progress["data"] == {"position": 2}
  for key, value in _flat(_state(2)).items():
    np.testing.assert_array_equal(_flat(state)[key], value, err_msg=key)
  assert len(messages) == 1 and "checkpoint step 4" in messages[0] and "damaged" in messages[0], messages
  assert (directory / "corrupt" / "4-0").is_dir() and not (directory / "4").exists()
  assert checkpoints.manager.all_steps() == [2]
  checkpoints.close()


def test_bit_flip_is_reported_by_array_path(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_two_steps(directory)
  _bit_flip_low(directory / "4")
  checkpoints = RunCheckpoints(str(directory))
  with pytest.raises(checkpointing.CheckpointCorruptError, match=r"\['params'\]\['w'\]"):
    checkpoints.restore(4, _state(0))
  checkpoints.close()


def test_every_step_damaged_is_a_clear_error(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_two_steps(directory)
  _bit_flip_low(directory / "4")
  _deleted_progress(directory / "2")
  checkpoints = RunCheckpoints(str(directory))
  with pytest.raises(checkpointing.NoGoodCheckpointError, match=r"every checkpoint .* is damaged \(steps \[4, 2\]\)"):
    checkpoints.restore_newest_good(_state(0), say=lambda message: None)
  assert sorted(os.listdir(directory / "corrupt")) == ["2-0", "4-0"]
  checkpoints.close()


def test_a_changed_tree_is_refused_without_moving_anything(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_two_steps(directory)
  checkpoints = RunCheckpoints(str(directory))
  other_tree = dict(_state(0), params={"w": jnp.asarray(_RANDOM), "new_head": jnp.zeros((2,))})
  with pytest.raises(checkpointing.CheckpointMismatchError, match=r"new_head.*scale"):
    checkpoints.restore_newest_good(other_tree)
  assert checkpoints.manager.all_steps() == [2, 4] and not (directory / "corrupt").exists()
  checkpoints.close()


def test_checkpoint_without_checksums_restores_with_one_warning(tmp_path, capsys):
  directory = tmp_path / "checkpoints"
  with ocp.CheckpointManager(str(directory), item_names=("state", "progress")) as manager:
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(3)),
                                            progress=ocp.args.JsonSave({"epoch": 1})))
  checkpoints = RunCheckpoints(str(directory))
  step, state, _ = checkpoints.restore_newest_good(_state(0))
  assert step == 3
  np.testing.assert_array_equal(state["params"]["w"], _RANDOM + 3)
  warnings = [line for line in capsys.readouterr().out.splitlines() if "no checksums" in line]
  assert len(warnings) == 1, warnings
  checkpoints.close()


def test_checksums_see_every_single_bit(tmp_path):
  """The checksum changes for a flip of any one bit of a float32 array, and for swapped elements."""
  x = np.asarray(jax.random.normal(jax.random.key(0), (3, 7)), np.float32)
  base = checkpointing.state_checksums({"x": jnp.asarray(x)})
  bits = x.view(np.uint32)
  for element in (0, 10, 20):
    for bit in range(32):
      flipped = bits.copy()
      flipped.flat[element] ^= np.uint32(1 << bit)
      assert checkpointing.state_checksums({"x": jnp.asarray(flipped.view(np.float32))}) != base, (element, bit)
  swapped = x.copy()
  swapped.flat[0], swapped.flat[1] = x.flat[1], x.flat[0]
  assert checkpointing.state_checksums({"x": jnp.asarray(swapped)}) != base


def test_resumed_run_falls_back_past_a_damaged_checkpoint(tiny_world, tmp_path, capsys):
  """A flipped bit in the newest checkpoint: the run says so, resumes from the one before, and ends equal."""
  workdir = tmp_path / "run"
  config = tiny_config(tiny_world, tmp_path, num_epochs=1)
  train.train_and_evaluate(config, str(workdir))
  final_step, undamaged = _final_params(str(workdir))
  checkpoint_dir = workdir / "checkpoints" / "main"
  assert sorted(int(p.name) for p in checkpoint_dir.iterdir()) == [final_step - 2, final_step]
  _flip_in_merged_tree(checkpoint_dir / str(final_step))
  capsys.readouterr()
  train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  assert f"checkpoint step {final_step} in" in out and "damaged" in out, out[-2000:]
  assert f"resumed from step {final_step - 2} of {final_step}" in out, out[-2000:]
  assert (checkpoint_dir / "corrupt" / f"{final_step}-0").is_dir()
  step, resumed = _final_params(str(workdir))
  assert step == final_step
  for key, value in _flat(undamaged).items():
    np.testing.assert_array_equal(_flat(resumed)[key], value, err_msg=key)
