"""What the two reports left open: where PCGrad helps, how much STS weight, how much Quora.

  python -m train.study --study=open_questions --workdir=/work/runs/study_open_questions \
      --report_dir=results/open_questions --reuse_from=results/tian_wang

All rows start from pcgrad_diff (report 1's best single recipe), which is also the
reference row: PCGrad on all tasks, STS weight 1, all of Quora.
  - PCGrad on STS only (one report's proposal) against on all tasks;
  - a heavier STS loss (weights 2 and 4): STS is the smallest task and the reports'
    weakest score;
  - Quora volume per epoch: 0 (no paraphrase training at all: Para accuracy is then
    that of an untrained head), 25%, 50%, 100% (the reference).
"""

from train.study_spec import Budget, Row, Study

THREE_SEEDS = (0, 1, 2)


def get_study() -> Study:
  rows = (
      Row("pcgrad_all", "PCGrad on all tasks (reference)", "pcgrad_diff", seeds=THREE_SEEDS),
      Row("pcgrad_sts_only", "PCGrad on STS only", "pcgrad_sts_only", seeds=THREE_SEEDS),
      Row("sts_weight_2", "STS loss weight 2", "pcgrad_diff", {"loss_weights.sts": 2.0}),
      Row("sts_weight_4", "STS loss weight 4", "pcgrad_diff", {"loss_weights.sts": 4.0}),
      Row("para_0", "Quora 0% (no paraphrase training)", "pcgrad_diff", {"data.para_fraction": 0.0}),
      Row("para_25", "Quora 25%", "pcgrad_diff", {"data.para_fraction": 0.25}),
      Row("para_50", "Quora 50%", "pcgrad_diff", {"data.para_fraction": 0.5}),
  )
  return Study(
      name="open_questions", title="Open questions: PCGrad's scope, STS loss weight, Quora volume",
      rows=rows, budget=Budget(num_epochs=1), report_label="report",
      source="Questions the two CS224N reports raised and did not test; no report numbers.",
      notes=("Quora 100% is the reference row. With fewer Quora pairs an epoch is shorter, so those rows also "
             "take fewer optimizer steps: the question is the data volume, not the step count.",
             "The reference row is the same experiment as the tian_wang study's `pcgrad_diff` row (same preset, "
             "budget and seeds), so its runs are copies of those, as `--reuse_from=results/tian_wang` makes them: a "
             "finished run is taken only when its config matches the row's, and each copy's study_run.json "
             "says where it came from and keeps the command it ran under.",))
