"""A gs:// workdir: every file the trainer writes besides Orbax's goes through etils.epath.

There is no network here, so `gs://` is served by an in-memory fsspec filesystem
registered under the names epath asks fsspec for ("gs", "gcs"): the code under
test takes epath's real gs:// path (its fsspec backend), and only the bytes' last
hop differs from Cloud Storage. What an object store lacks (append, locks,
local-file writers) is what these tests exercise. Orbax's checkpoints on gs://
go through tensorstore's own GCS driver, which this cannot stand in for.
"""

import json

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from train import metrics as metrics_lib, plots, storage, workdirs
from train.metric_writer import MetricWriter, read_metrics
from train.workdir_lock import WorkdirLock


class _FakeCloudStorage(MemoryFileSystem):
  protocol = ("gs", "gcs")
  store: dict = {}
  pseudo_dirs = [""]

  def __init__(self, *args, finalize_on_close=None, **kwargs):  # epath passes gcsfs's option
    super().__init__(*args, **kwargs)


@pytest.fixture()
def bucket():
  for name in ("gs", "gcs"):
    fsspec.register_implementation(name, _FakeCloudStorage, clobber=True)
  _FakeCloudStorage.store.clear()
  _FakeCloudStorage.pseudo_dirs[:] = [""]
  yield "gs://bucket"
  _FakeCloudStorage.store.clear()


def _records(writer):
  writer.write(1, {"loss": {"sst": 1.5, "para": 0.5}, "grad_norm": 2.0})
  writer.write(2, {"loss": {"sst": 1.25, "para": 0.25}, "grad_norm": 1.0})
  position = writer.position()
  writer.write(3, {"loss": {"sst": 1.0, "para": 0.2}, "grad_norm": 0.5})
  writer.write(3, {"dev": {"sst_accuracy": 0.3}}, kind="final")
  dropped = writer.truncate(position, tensorboard_purge_step=3)  # a resume from step 2's checkpoint
  writer.write(3, {"loss": {"sst": 0.9, "para": 0.2}, "grad_norm": 0.4})
  writer.write(3, {"dev": {"sst_accuracy": 0.4}}, kind="final")
  writer.write(3, {"dev": {"sst_accuracy": 0.5}}, kind="final")  # replaces the one before
  return dropped


def test_metrics_on_an_object_store_are_the_local_files_bytes(bucket, tmp_path):
  remote, local = MetricWriter(f"{bucket}/run"), MetricWriter(str(tmp_path / "run"))
  assert _records(remote) == _records(local) == 2
  remote.close()
  local.close()
  remote_bytes = storage.as_path(f"{bucket}/run/metrics.jsonl").read_bytes()
  assert remote_bytes == (tmp_path / "run" / "metrics.jsonl").read_bytes()
  rows = read_metrics(f"{bucket}/run/metrics.jsonl")
  assert [(r["step"], r["kind"]) for r in rows] == [(1, "train"), (2, "train"), (3, "train"), (3, "final")]
  assert rows[-1]["dev/sst_accuracy"] == 0.5 and rows[2]["loss/sst"] == 0.9

  events = {p.name: p.read_bytes() for p in storage.as_path(f"{bucket}/run/tensorboard").iterdir()}
  local_events = {p.name for p in (tmp_path / "run" / "tensorboard").iterdir()}
  assert events.keys() and len(events) == len(local_events)  # the event files, uploaded after each flush
  assert all(events.values())
  assert sum(len(data) for data in events.values()) > 200  # every scalar, not only the file header

  reopened = MetricWriter(f"{bucket}/run")  # a restarted run goes on from what was uploaded
  assert reopened.position() == len(remote_bytes)
  reopened.write(4, {"grad_norm": 0.3})
  assert read_metrics(f"{bucket}/run/metrics.jsonl")[-1] == {"step": 4, "kind": "train", "grad_norm": 0.3}


def test_predictions_and_plots_on_an_object_store(bucket):
  path = f"{bucket}/run/predictions/sts-test-output.csv"
  metrics_lib.write_submission(path, "sts", ["a1", "b2"], np.array([4.25, 0.5]))
  assert storage.read_text(path) == "id \t Predicted_Similiarity \na1 , 4.2500 \nb2 , 0.5000 \n"
  assert metrics_lib.read_submission(path) == {"a1": "4.2500", "b2": "0.5000"}
  assert not storage.exists(path + ".tmp")

  writer = MetricWriter(f"{bucket}/run")
  _records(writer)
  writer.write(3, {"dev": {"sst_accuracy": 0.5}}, kind="eval")
  writer.write(4, {"pcgrad": {"cosine": {"sst-para": -0.2}}})
  writer.close()
  written = plots.plot_run(f"{bucket}/run")
  assert written == [f"{bucket}/run/training_curves.png", f"{bucket}/run/gradient_conflicts.png"]
  for png in written:
    data = storage.as_path(png).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_workdir_helpers_on_an_object_store(bucket, caplog):
  for step in ("main/200", "main/400", "frozen_stage/corrupt/3-0"):
    storage.write_text(f"{bucket}/run/checkpoints/{step}/_CHECKPOINT_METADATA", json.dumps({"step": step}))
  storage.makedirs(f"{bucket}/run/checkpoints/empty_stage")
  assert workdirs.checkpointed_stages(f"{bucket}/run") == ["main"]
  assert workdirs.checkpointed_stages(f"{bucket}/nothing_here") == []
  with WorkdirLock(f"{bucket}/run"), WorkdirLock(f"{bucket}/run"):  # no locks there: said, not refused
    pass
  assert "has no file locks" in caplog.text

  staged = storage.staging_dir("test")
  (storage.as_path(staged) / "sub").mkdir()
  (storage.as_path(staged) / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
  (storage.as_path(staged) / "meta.json").write_text("{}")
  assert sorted(storage.copy_tree(staged, f"{bucket}/model")) == [f"{bucket}/model/meta.json",
                                                                   f"{bucket}/model/sub/weights.bin"]
  assert storage.as_path(f"{bucket}/model/sub/weights.bin").read_bytes() == b"\x00\x01" * 1000


def test_checkpoint_paths_keep_their_scheme_and_local_ones_are_absolute(bucket, tmp_path):
  from train.checkpointing import RunCheckpoints
  assert storage.join(f"{bucket}/run", "checkpoints", "main") == f"{bucket}/run/checkpoints/main"
  local = RunCheckpoints(str(tmp_path / "relative" / ".." / "checkpoints"), async_save=False)
  assert local.directory == str(tmp_path / "checkpoints")  # local paths are made absolute, as before
  local.close()
