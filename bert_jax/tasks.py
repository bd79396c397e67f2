"""The three tasks, named once: what each predicts and which model method serves it.

"sst" is 5-way sentiment, "para" a paraphrase logit and "sts" a similarity
score on the 0..5 label scale. Everything that loops over tasks (the model,
the input pipeline, the trainer, predict, the benchmarks) reads `TASKS` from
here, so a fourth task is one edit.
"""

TASKS = ("sst", "para", "sts")
PAIR_TASKS = ("para", "sts")
NUM_SENTIMENT_CLASSES = 5
SIMILARITY_MAX = 5.0  # STS labels run from 0 (unrelated) to 5 (equivalent)

# The MultitaskBert method that computes each task's output (for `model.apply(..., method=...)`).
TASK_METHODS = {"sst": "sentiment", "para": "paraphrase", "sts": "similarity"}


def check_task(task: str) -> None:
  """Raises ValueError naming `task` unless it is one of TASKS."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
