r"""Prepares every bert_jax dataset once and prints what the trainer will get.

  python -m data_prep.prepare                      # finds ../shared/data by itself
  python -m data_prep.prepare --skip_bad_rows      # the course's quora-dev.csv has 2 bad rows
  python -m data_prep.prepare --data_root=/path/with/cs224n_and_extra --tfds_dir=/tmp/tfds

For each dataset it builds the TFDS dataset (array_record), tokenizes every
split with the default tokenizer (both pair encodings for pair datasets) into
the token cache, and prints per split: rows, rows skipped as malformed, token
length percentiles, the bucket lengths chosen on that dataset's train split,
and the padding fraction per bucket, in total, and when padding to max_length.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from data_prep import bucketing, catalog, pipeline
from data_prep.errors import DataError, MissingDataFileError, MissingDataRootError
from data_prep.tfds_split import TfdsSplit
from data_prep.tokenized import EncodedSplit, encode_tfds_split

FLAGS = flags.FLAGS
flags.DEFINE_string("data_root", None, "Directory with cs224n/ and extra/ (default: $BERT_JAX_DATA, "
                    "else ../shared/data beside the repo, else download).")
flags.DEFINE_string("tfds_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")
flags.DEFINE_string("cache_dir", None, "Token cache directory (default: <tfds_dir>/bert_jax_tokens).")
flags.DEFINE_string("tokenizer", "minilm-l6", "Checkpoint name or directory whose vocab.txt tokenizes.")
flags.DEFINE_integer("max_length", 128, "Truncation length in tokens, [CLS]/[SEP] included.")
flags.DEFINE_integer("num_buckets", 4, "Bucket lengths per dataset.")
flags.DEFINE_enum("quora_split", "dev_90_10", ["dev_90_10", "official"], "Quora config to prepare.")
flags.DEFINE_bool("skip_bad_rows", False, "Skip malformed rows (counted and reported) instead of failing.")
flags.DEFINE_bool("allow_download", True, "Download public files that are not found locally.")
flags.DEFINE_list("datasets", None, "Only these builder[/config] names (default: all).")
flags.DEFINE_integer("batch_size", 32, "Per-task batch size for the padding-in-training table.")


def default_datasets(quora_split: str) -> list[tuple[str, str]]:
  return [("cs224n_sst", "default"), ("cs224n_quora", quora_split), ("cs224n_sts", "default"),
          ("cfimdb", "polar"), ("cfimdb", "not_polar"), ("cfimdb", "binary"), ("sick", "relatedness")]


def length_row(split: EncodedSplit, buckets: Sequence[int]) -> dict:
  """Statistics of one tokenized split under the given (train) bucket lengths."""
  lengths = split.lengths
  buckets = bucketing.buckets_covering(lengths, buckets, split.max_length)
  stats = bucketing.bucket_stats(lengths, split.real_tokens, buckets, split.rows_per_example)
  at_max = 1.0 - split.real_tokens.sum() / (len(split) * split.max_length * split.rows_per_example)
  p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
  return {"p50": int(p50), "p90": int(p90), "p99": int(p99), "max": int(lengths.max()),
          "buckets": " ".join(f"{s.length}:{s.num_examples}/{100 * s.padding_fraction:.0f}%" for s in stats),
          "pad": f"{100 * bucketing.total_padding_fraction(stats):.1f}%", "pad_max_len": f"{100 * at_max:.1f}%"}


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
  lines = [" | ".join(c.ljust(widths[c]) for c in columns),
           "-|-".join("-" * widths[c] for c in columns)]
  lines += [" | ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(lines)


def prepare_all(*, datasets: Sequence[tuple[str, str]], tokenizer, max_length: int, num_buckets: int,
                tfds_dir=None, cache_dir=None, builder_kwargs=None) -> tuple[list[dict], list[str]]:
  """Prepares and tokenizes every split of `datasets`.

  Returns one table row per split and encoding, and the skipped lines (file:line: why).
  """
  rows, skipped_lines = [], []
  for name, config in datasets:
    builder = catalog.get_builder(TfdsSplit(name, "train", config), tfds_dir=tfds_dir,
                                  builder_kwargs=builder_kwargs)
    metadata = builder.info.metadata
    pair = "sentence1" in builder.info.features
    for encoding in (("separate", "joint") if pair else ("single",)):
      splits = {split: encode_tfds_split(TfdsSplit(name, split, config), tokenizer, max_length=max_length,
                                         pair_encoding="separate" if encoding == "single" else encoding,
                                         tfds_dir=tfds_dir, cache_dir=cache_dir, builder_kwargs=builder_kwargs)
                for split in builder.info.splits.keys()}
      buckets = bucketing.choose_bucket_lengths(splits["train"].lengths, num_buckets=num_buckets,
                                                max_length=max_length)
      for split_name, split in splits.items():
        skipped = sum(sum(counts.values()) for counts in split.provenance[0]["skipped_rows"].values())
        rows.append({"dataset": f"{name}/{config}", "split": split_name, "rows": len(split),
                     "skipped_in_file": skipped, "labeled": "yes" if split.labeled else "no",
                     "encoding": encoding, **length_row(split, buckets)})
    for file, lines in metadata.get("skipped_lines", {}).items():
      skipped_lines.extend(f"{file}:{line}: {message}" for line, message in lines)
  return rows, skipped_lines


def training_padding(split: EncodedSplit, buckets: Sequence[int], batch_size: int, seed: int = 0) -> dict:
  """Padding as the trainer sees it in one epoch: promoted leftovers and filler rows included."""
  bucket_of = bucketing.bucket_index(split.lengths, buckets)
  plan = pipeline.plan_epoch(np.arange(len(split)), bucket_of, buckets, batch_size,
                             np.random.default_rng(seed))
  real = split.real_tokens.sum()
  padded = sum(b.length for b in plan) * batch_size * split.rows_per_example
  per_bucket = {}
  for length in buckets:
    batches = [b for b in plan if b.length == length]
    rows = np.concatenate([b.indices for b in batches]) if batches else np.zeros(0, np.int64)
    bucket_real = split.real_tokens[rows[rows >= 0]].sum()
    bucket_padded = len(rows) * length * split.rows_per_example
    per_bucket[length] = (len(batches), 1.0 - bucket_real / bucket_padded if bucket_padded else 0.0)
  return {"steps": len(plan), "pad": f"{100 * (1.0 - real / padded):.1f}%",
          "batches": " ".join(f"{length}:{n}/{100 * frac:.0f}%" for length, (n, frac) in per_bucket.items())}


def task_rows(*, tokenizer, max_length: int, num_buckets: int, batch_size: int, quora_split: str,
              tfds_dir=None, cache_dir=None, builder_kwargs=None) -> list[dict]:
  """One row per task training set the trainer can ask for (with and without extra data)."""
  variants = [("sst", {}, "single"), ("sst", {"cfimdb": "polar"}, "single")]
  for pair_encoding in ("separate", "joint"):
    variants += [("para", {}, pair_encoding), ("sts", {}, pair_encoding), ("sts", {"sick": True}, pair_encoding)]
  rows = []
  for task, extra, pair_encoding in variants:
    tfds_splits = pipeline.task_splits(task, "train", quora_split=quora_split, **extra)
    split = pipeline.load_task_split(task, tfds_splits, tokenizer, max_length=max_length,
                                     pair_encoding="separate" if pair_encoding == "single" else pair_encoding,
                                     tfds_dir=tfds_dir, cache_dir=cache_dir,
                                     builder_kwargs=builder_kwargs)
    buckets = bucketing.choose_bucket_lengths(split.lengths, num_buckets=num_buckets, max_length=max_length)
    rows.append({"task": task, "train sources": " + ".join(str(s) for s in tfds_splits), "rows": len(split),
                 "encoding": pair_encoding,
                 "buckets": " ".join(map(str, buckets)),
                 **training_padding(split, buckets, batch_size)})
  return rows


COLUMNS = ("dataset", "split", "rows", "skipped_in_file", "labeled", "encoding", "p50", "p90", "p99", "max",
           "buckets", "pad", "pad_max_len")


def main(argv: Sequence[str]) -> None:
  del argv
  import tensorflow_datasets as tfds
  from bert_jax.tokenizer import Tokenizer
  tfds.disable_progress_bar()
  if os.path.isfile(FLAGS.tokenizer):
    tokenizer = Tokenizer.from_vocab_file(FLAGS.tokenizer)
  else:
    tokenizer = Tokenizer.from_checkpoint(FLAGS.tokenizer)
  datasets = default_datasets(FLAGS.quora_split)
  if FLAGS.datasets:
    wanted = set(FLAGS.datasets)
    datasets = [(n, c) for n, c in datasets if n in wanted or f"{n}/{c}" in wanted]
  builder_kwargs = {"skip_bad_rows": FLAGS.skip_bad_rows, "allow_download": FLAGS.allow_download}
  if FLAGS.data_root:
    builder_kwargs["local_dir"] = FLAGS.data_root
  common = dict(tokenizer=tokenizer, max_length=FLAGS.max_length, num_buckets=FLAGS.num_buckets,
                tfds_dir=FLAGS.tfds_dir, cache_dir=FLAGS.cache_dir, builder_kwargs=builder_kwargs)
  try:
    rows, skipped_lines = prepare_all(datasets=datasets, **common)
    tasks = [] if FLAGS.datasets else task_rows(batch_size=FLAGS.batch_size, quora_split=FLAGS.quora_split,
                                                **common)
  except (DataError, MissingDataFileError, MissingDataRootError) as e:
    sys.exit(f"data_prep.prepare: {e}")
  print(f"\nTFDS dir: {catalog.resolve_tfds_dir(FLAGS.tfds_dir)}; tokenizer: {tokenizer.vocab_path}; "
        f"max_length {FLAGS.max_length}")
  print("lengths in tokens incl. [CLS]/[SEP]; pairs 'separate' = longer of a, b; buckets from each dataset's "
        "train split, shown as length:examples/padding%; pad = padding fraction with these buckets; "
        "pad_max_len = padding fraction if every example were padded to max_length\n")
  print(format_table(rows, COLUMNS))
  print("\nskipped_in_file: malformed rows skipped in the source file(s) of the split "
        f"(--skip_bad_rows={FLAGS.skip_bad_rows}):")
  print("\n".join(f"  {line}" for line in skipped_lines) or "  none")
  if tasks:
    print(f"\nTask training sets as the trainer batches them (batch size {FLAGS.batch_size}, one epoch, "
          "filler rows and promoted leftovers included); batches shown as length:count/padding%")
    print(format_table(tasks, ("task", "train sources", "rows", "encoding", "buckets", "steps", "batches",
                               "pad")))
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
