"""Quora Question Pairs (paraphrase, label 0/1) from the CS224N course files.

The course trains on the 141k-row quora-train.csv, which is public but not
available on this project's machines. The default config therefore makes a
deterministic train/validation split of quora-dev.csv (17,677 rows; see
`validation_fold`), and the choice is recorded in `info.metadata["quora_split"]`
so every result can say which split it used.
"""

from __future__ import annotations

import hashlib

import tensorflow_datasets as tfds

from data_prep import csv_rows, source_files
from data_prep.builders import base

DEV_90_10 = "dev_90_10"
OFFICIAL = "official"
# Sizes of the dev_90_10 split of the course's quora-dev.csv, whose 17,677 rows
# include two malformed ones (lines 2256 and 12451: no label / no second
# question) that the course loader drops silently and we skip only on request.
DEV_90_10_SIZES = {"train": 15_916, "validation": 1_759}

_SPLIT_RULES = {
    DEV_90_10: ("train = rows of quora-dev.csv with int(sha1(id).hexdigest(), 16) % 10 != 0, "
                "validation = rows with == 0 (about 90/10; stable under row order and "
                "additions); test = quora-test-student.csv (unlabeled)."),
    OFFICIAL: ("train = quora-train.csv, validation = quora-dev.csv, "
               "test = quora-test-student.csv (unlabeled): the course's split."),
}

_DESCRIPTION = """\
Quora Question Pairs as distributed in the CS224N default final project:
pairs of questions and whether they are paraphrases (label 0.0/1.0). The test
split is the course's unlabeled quora-test-student.csv (labels -1): keep it to
write predictions by id. Config `dev_90_10` (default) splits quora-dev.csv
90/10 into train/validation by a hash of the id, for machines without
quora-train.csv; `official` uses quora-train.csv / quora-dev.csv.
"""

_CITATION = """\
@misc{iyer2017quora,
  title = {First Quora Dataset Release: Question Pairs},
  author = {Iyer, Shankar and Dandekar, Nikhil and Csernai, Korn{\\'e}l},
  howpublished = {\\url{https://quoradata.quora.com/First-Quora-Dataset-Release-Question-Pairs}},
  year = {2017},
}
""" + base.CS224N_CITATION

LABELED = csv_rows.TableSpec("id", ("sentence1", "sentence2"),
                             csv_rows.LabelSpec("is_duplicate", True, 0, 1))
UNLABELED = csv_rows.TableSpec("id", ("sentence1", "sentence2"))


def validation_fold(example_id: str) -> bool:
  """True when a quora-dev row goes to validation under `dev_90_10`.

  A hash of the id rather than a shuffled row range: the assignment of a row
  never depends on the other rows, their order, or a random seed.
  """
  return int(hashlib.sha1(example_id.encode("utf-8")).hexdigest(), 16) % 10 == 0


class Cs224nQuora(base.CsvBuilder):
  """Quora paraphrase pairs; configs `dev_90_10` (default) and `official`."""

  name = "cs224n_quora"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Course CSVs, strict validation, dev_90_10 and official splits."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=DEV_90_10, version="1.0.0", description=_SPLIT_RULES[DEV_90_10]),
      tfds.core.BuilderConfig(name=OFFICIAL, version="1.0.0", description=_SPLIT_RULES[OFFICIAL]),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        features=base.PAIR_FEATURES, description=_DESCRIPTION, citation=_CITATION,
        homepage="https://github.com/gpoesia/minbert-default-final-project",
        metadata={"quora_split": self.builder_config.name,
                  "quora_split_rule": _SPLIT_RULES[self.builder_config.name],
                  "unlabeled_splits": ["test"]})

  def _split_generators(self, dl_manager):
    read = lambda name, spec, split: self._read(dl_manager, source_files.cs224n_file(name), spec, split)
    test = read("quora-test-student.csv", UNLABELED, "test")
    if self.builder_config.name == OFFICIAL:
      train = read("quora-train.csv", LABELED, "train")
      validation = read("quora-dev.csv", LABELED, "validation")
    else:
      dev = read("quora-dev.csv", LABELED, ["train", "validation"])
      train = [row for row in dev if not validation_fold(row.id)]
      validation = [row for row in dev if validation_fold(row.id)]
    return {
        "train": self._generate_examples(base.pair_examples(train)),
        "validation": self._generate_examples(base.pair_examples(validation)),
        "test": self._generate_examples(base.pair_examples(test)),
    }
