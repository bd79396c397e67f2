"""Dev scores and the course's prediction files, from one model or from several averaged.

`Evaluator` runs one model over every example of a split with the trainer's own
batching (packing, length buckets, devices), so its scores are the run's.
`score_and_write` turns raw outputs per task and split into the dev scores and,
with an `out_dir`, the six submission files; the trainer feeds it one model's
outputs, `train/ensemble.py` the average of several.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import logging

from bert_jax import losses as losses_lib, multitask
from bert_jax.tasks import TASKS
from train import metrics as metrics_lib, steps, storage
from train.data import TaskData
from train.parallel import DataParallel

SPLITS_WRITTEN = ("validation", "test")
_FILE_SPLIT = {"validation": "dev", "test": "test"}


@dataclasses.dataclass
class Evaluator:
  """One model's predictions on the task data, batched as the trainer evaluates."""
  model: multitask.MultitaskBert
  data: TaskData
  parallel: DataParallel
  batch_size: int
  _predict_fns: dict = dataclasses.field(default_factory=dict, repr=False)

  def outputs(self, params: Any, task: str, split: str) -> np.ndarray:
    """The model's raw outputs for every example of a split, in split order.

    [N, 5] SST logits, [N] paraphrase logits, [N] unclipped similarities:
    what `losses.predict` turns into predictions, and what an ensemble averages.

    Raises:
      RuntimeError: some example got no prediction (a batching bug; scores and
        submission files would otherwise hold zeros for it, unnoticed).
    """
    if task not in self._predict_fns:
      self._predict_fns[task] = self.parallel.compile_predict_step(steps.make_predict_step(self.model, task))
    fn = self._predict_fns[task]
    packing = self.data.packing_spec(num_devices=self.parallel.num_devices)
    outputs = None
    answered = np.zeros(self.data.num_examples(task, split), bool)
    for batch in self.data.eval_batches(task, split, self.batch_size, self.parallel.num_devices, packing=packing):
      values = np.asarray(self.parallel.gather(fn(params, self.parallel.put_batch(batch))), np.float32)
      if outputs is None:
        outputs = np.zeros((len(answered),) + values.shape[1:], np.float32)
      real = batch["weights"] > 0
      outputs[batch["index"][real]] = values[real]
      answered[batch["index"][real]] = True
    if not answered.all():
      missing = np.flatnonzero(~answered)
      ids = self.data.ids(task, split)
      raise RuntimeError(f"{task} {split}: {len(missing)} of {len(ids)} examples got no prediction, "
                         f"e.g. id {ids[missing[0]]}")
    return outputs

  def predict(self, params: Any, task: str, split: str) -> np.ndarray:
    """Predictions for every example of a split, in split order."""
    return predictions_of(task, self.outputs(params, task, split))

  def evaluate(self, params: Any, *, out_dir: str | None = None, write_files: bool = True) -> dict:
    """Dev scores; with `out_dir`, also the dev and test prediction files (see `score_and_write`)."""
    return score_and_write(self.data, lambda task, split: self.outputs(params, task, split), out_dir=out_dir,
                           write_files=write_files)


def predictions_of(task: str, outputs: np.ndarray) -> np.ndarray:
  """SST classes, paraphrase 0/1 or similarities clipped to [0, 5], from raw outputs."""
  return np.asarray(losses_lib.predict(task, outputs), np.float32)


def score_and_write(data: TaskData, outputs_of: Callable[[str, str], np.ndarray], *,
                    out_dir: str | None = None, write_files: bool = True) -> dict:
  """Dev scores of `outputs_of(task, split)`; with `out_dir`, its dev and test submission files.

  The test split is predicted only when there are files to write: its labels are
  never seen here, so it cannot be scored. `write_files=False` predicts it all the
  same and writes nothing: a multi-host job's other processes take part in every
  prediction, and process 0 writes.
  """
  scores = {}
  for task in TASKS:
    predictions = predictions_of(task, outputs_of(task, "validation"))
    scores[metrics_lib.TASK_METRIC[task]] = metrics_lib.task_score(task, predictions, data.labels(task, "validation"))
    if out_dir is None:
      continue
    for split in SPLITS_WRITTEN:
      values = predictions if split == "validation" else predictions_of(task, outputs_of(task, split))
      if not write_files:
        continue
      metrics_lib.write_submission(storage.join(out_dir, f"{task}-{_FILE_SPLIT[split]}-output.csv"), task,
                                   data.ids(task, split), values)
      placeholders = data.placeholder_rows(task, split)
      if placeholders:
        logging.warning("%s %s: %d row(s) could not be read in full and were predicted from what was left "
                        "(empty text); their ids are in the prediction file all the same:\n  %s",
                        task, split, len(placeholders), "\n  ".join(placeholders))
  scores.update(metrics_lib.overall_scores(scores))
  return scores
