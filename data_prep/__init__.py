"""bert_jax's data: TFDS datasets for the three tasks and a numpy input pipeline.

  builders/    TFDS builders cs224n_sst, cs224n_quora, cs224n_sts, cfimdb, sick
  csv_rows     strict reading of the course's tab-separated files
  source_files where source files are found (local copy, manual dir, download)
  tfds_split   the name of one TFDS split (`cfimdb/polar:train`) that feeds a task
  catalog      preparing and reading the TFDS datasets
  tokenized    tokenize a split once, cache it, collate padded batches
  bucketing    bucket lengths and padding statistics
  pipeline     training batches (shuffled, bucketed, resumable), eval batches, sharding
  sampler      multi-task schedules over the three tasks
  prepare      `python -m data_prep.prepare`: prepare everything, print the table

Importing this package imports nothing heavy; TFDS loads with `catalog`.
"""
