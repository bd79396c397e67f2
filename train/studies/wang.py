"""Report 2 (Wang, CS224N): cumulative changes to the sequential baseline, rows 1-7.

  python -m train.study --study=wang --workdir=/work/runs/study_wang --report_dir=results/wang \
      --reuse_from=results/tian_wang

Each row adds one change to the row before it, as the report's table does; row 7
combines rows 3-5 (less Quora, extra data, round-robin) without the frozen stage
and trains twice the study's epochs. The report gives no numbers, so the table
has ours only. Seeds: 3 for the baseline and rows 5-7 (the full recipes).
"""

from train.study_spec import Budget, Row, Study

THREE_SEEDS = (0, 1, 2)
SHARE = {"model.paraphrase_head": "diff_2dense", "model.similarity_head": "diff_2dense",
         "model.share_para_sts": True}
LESS_PARA = {"data.para_fraction": 0.25}
EXTRA_DATA = {"data.extra_sst": "cfimdb_polar", "data.extra_sts": "sick"}
ROUND_ROBIN = {"task_schedule": "round_robin", "proportions": "size", "batch_size": 64}
FROZEN = {"frozen_stage.enabled": True}


def get_study() -> Study:
  rows = (
      Row("1_baseline", "1 baseline: task-by-task sequential", "baseline_cls", seeds=THREE_SEEDS,
          note="the pooled [CLS] everywhere, concatenated pair heads, one task after another."),
      Row("2_share", "2 share layers between PARA and STS", "baseline_cls", dict(SHARE),
          note="the pair heads become diff_2dense (the concat head has no layer to share) sharing their "
               "first dense layer."),
      Row("3_less_para", "3 cut down on PARA training", "baseline_cls", {**SHARE, **LESS_PARA},
          note="a quarter of the Quora pairs per epoch (data.para_fraction=0.25; the report's fraction is "
               "not known here)."),
      Row("4_extra_data", "4 additional SST and STS data (CFIMDB, SICK)", "baseline_cls",
          {**SHARE, **LESS_PARA, **EXTRA_DATA}),
      Row("5_round_robin", "5 round-robin", "baseline_cls", {**SHARE, **LESS_PARA, **EXTRA_DATA, **ROUND_ROBIN},
          seeds=THREE_SEEDS, note="every step has a batch of each task, shares by (Quora-reduced) data size, "
                                  "64 examples per step as in the default preset."),
      Row("6_frozen_stage", "6 additional training with the minBERT parameters fixed", "baseline_cls",
          {**SHARE, **LESS_PARA, **EXTRA_DATA, **ROUND_ROBIN, **FROZEN}, seeds=THREE_SEEDS,
          note="then one epoch per task with the encoder frozen at lr 1e-6; the better stage is kept."),
      Row("7_more_epochs", "7 rows 3+4+5 combined, more epochs", "baseline_cls",
          {**SHARE, **LESS_PARA, **EXTRA_DATA, **ROUND_ROBIN}, seeds=THREE_SEEDS, epochs_factor=2.0,
          note="row 5 trained for twice the study's epochs."),
  )
  return Study(
      name="wang", title="Report 2 (Wang): cumulative changes to the sequential minBERT baseline",
      rows=rows, budget=Budget(num_epochs=1), report_label="Wang",
      source="Report 2 (Wang, CS224N default final project) describes these rows but gives no numbers.",
      notes=("Rows are cumulative: each keeps every change of the rows above it (row 7 drops the frozen "
             "stage of row 6).",
             "Row 1 is the same experiment as the tian_wang study's `baseline` row (same preset, budget and "
             "seeds), so its runs are copies of those, as `--reuse_from=results/tian_wang` makes them: a "
             "finished run is taken only when its config matches the row's, and each copy's study_run.json "
             "says where it came from and keeps the command it ran under.",))
