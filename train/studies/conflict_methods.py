"""Every gradient-conflict method of train/conflicts/ on the default preset's heads, 3 seeds each.

  python -m train.study --study=conflict_methods --workdir=/work/runs/study_conflict_methods \
      --report_dir=results/conflict_methods

The reference row is the default itself (the plain sum of the task gradients).
Each other row changes only `conflicts.method`, with the method's default options
(train/conflicts/registry.py), so a difference between rows is the method's. A
method becomes the default only if it beats the sum on dev, over the 3 seeds, by
more than the seed spread.
"""

from train.conflicts import registry
from train.study_spec import Budget, Row, Study

THREE_SEEDS = (0, 1, 2)


def get_study() -> Study:
  rows = [Row("sum", "Sum of the task gradients (the default)", "default", seeds=THREE_SEEDS)]
  for name, method in registry.METHODS.items():
    rows.append(Row(name, f"{name}: {method.summary}", "default", {"conflicts.method": name}, seeds=THREE_SEEDS))
  return Study(
      name="conflict_methods", title="Gradient-conflict methods on the default preset",
      rows=tuple(rows), budget=Budget(num_epochs=1), report_label="report",
      source="No report numbers: neither report tried these methods.",
      # Every run logs its task-gradient cosines, so the table can say how much conflict each method saw.
      common_overrides={"gradient_stats_every_steps": 50},
      notes=("Every row is the default preset (cosine pair heads on mean pooling, [CLS; mean] for SST, "
             "round-robin) with one `conflicts.method`; the loss-weighting methods (uncertainty, dwa, famo) "
             "weight the task losses rather than the gradients.",))
