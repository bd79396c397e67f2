"""Dev metrics, the overall score, and the CS224N submission files.

The course reports the overall score as the mean of SST accuracy, Para accuracy
and STS Pearson r mapped to (r + 1) / 2; the two reports quote the plain mean
of the three. Both are computed and each is named, so results are comparable
with either.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from train import storage

# Header lines of the course's submission files, verbatim (including its spelling).
SUBMISSION_HEADERS = {
    "sst": "id \t Predicted_Sentiment ",
    "para": "id \t Predicted_Is_Paraphrase ",
    "sts": "id \t Predicted_Similiarity ",
}
TASK_METRIC = {"sst": "sst_accuracy", "para": "para_accuracy", "sts": "sts_pearson"}


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
  predictions, labels = np.asarray(predictions, np.float64), np.asarray(labels, np.float64)
  if predictions.std() == 0 or labels.std() == 0:
    return 0.0  # constant predictions carry no correlation; avoid NaN in the score
  return float(np.corrcoef(predictions, labels)[0, 1])


def task_score(task: str, predictions: np.ndarray, labels: np.ndarray) -> float:
  if task == "sts":
    return pearson(predictions, labels)
  return accuracy(predictions, labels)


def overall_scores(scores: Mapping[str, float]) -> dict[str, float]:
  """Both overall scores from {"sst_accuracy", "para_accuracy", "sts_pearson"}."""
  sst, para, r = scores["sst_accuracy"], scores["para_accuracy"], scores["sts_pearson"]
  return {"overall_mean": (sst + para + r) / 3, "overall_cs224n": (sst + para + (r + 1) / 2) / 3}


def write_submission(path: str, task: str, ids: Sequence[str], predictions: np.ndarray) -> None:
  """One course-format file: the header, then `id , prediction` per line.

  Raises:
    ValueError: ids and predictions differ in number, or an id is empty or
      repeated: the file must hold each input id exactly once to be scored.
  """
  if len(ids) != len(predictions):
    raise ValueError(f"{path}: {len(ids)} ids but {len(predictions)} predictions")
  seen: dict[str, int] = {}
  for position, example_id in enumerate(ids):
    if not str(example_id).strip():
      raise ValueError(f"{path}: id number {position + 1} is empty")
    if example_id in seen:
      raise ValueError(f"{path}: id {example_id!r} appears twice (numbers {seen[example_id] + 1} and {position + 1})")
    seen[example_id] = position
  if not np.all(np.isfinite(np.asarray(predictions, np.float64))):
    bad = int(np.flatnonzero(~np.isfinite(np.asarray(predictions, np.float64)))[0])
    raise ValueError(f"{path}: the prediction for id {ids[bad]!r} is {predictions[bad]}, not a finite number")
  lines = [SUBMISSION_HEADERS[task]]
  for example_id, prediction in zip(ids, predictions):
    value = f"{float(prediction):.4f}" if task == "sts" else str(int(prediction))
    lines.append(f"{example_id} , {value} ")
  storage.write_text(path, "\n".join(lines) + "\n")  # local, NFS or gs://: see train/storage.py


def read_submission(path: str) -> dict[str, str]:
  """{id: prediction} from a submission file, for tests and for scoring elsewhere."""
  lines = storage.read_text(path).splitlines()
  rows = {}
  for line in lines[1:]:
    example_id, value = (part.strip() for part in line.split(" , "))
    rows[example_id] = value
  return rows
