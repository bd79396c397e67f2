"""SICK 2014 relatedness as extra similarity data, rescaled onto the STS [0, 5] scale.

SICK's relatedness scores lie in [1, 5], STS similarity in [0, 5]; the linear
map s' = (s - 1) * 1.25 sends 1 -> 0 and 5 -> 5, so both datasets train the
same regression head on one scale. The SemEval-2014 partition in the file's
`SemEval_set` column becomes the splits: TRAIN -> train, TRIAL -> validation,
TEST -> test (all labeled).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from data_prep import csv_rows, source_files
from data_prep.builders import base

SEMEVAL_SETS = {"TRAIN": "train", "TRIAL": "validation", "TEST": "test"}
SPEC = csv_rows.TableSpec(
    "pair_ID", ("sentence_A", "sentence_B"), csv_rows.LabelSpec("relatedness_score", False, 1.0, 5.0),
    category_columns=(("SemEval_set", tuple(SEMEVAL_SETS)),))


def rescale_relatedness(score: float) -> float:
  """SICK relatedness [1, 5] -> STS similarity scale [0, 5]."""
  return (score - 1.0) * 1.25


_DESCRIPTION = """\
SICK (Sentences Involving Compositional Knowledge), SemEval-2014 Task 1:
sentence pairs with a relatedness score in [1, 5], rescaled to the STS range
[0, 5] as label = (score - 1) * 1.25. Splits follow the SemEval_set column:
TRAIN -> train, TRIAL -> validation, TEST -> test.
"""

_CITATION = """\
@inproceedings{marelli2014sick,
  title = {A {SICK} cure for the evaluation of compositional distributional semantic models},
  author = {Marelli, Marco and Menini, Stefano and Baroni, Marco and Bentivogli, Luisa and
            Bernardi, Raffaella and Zamparelli, Roberto},
  booktitle = {Proceedings of LREC 2014},
  pages = {216--223},
  year = {2014},
}"""


class Sick(base.CsvBuilder):
  """SICK 2014: train 4,439 / validation (TRIAL) 495 / test 4,906 in the shared copy."""

  name = "sick"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Relatedness rescaled to [0, 5]; SemEval_set partition."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(
      name="relatedness", version="1.0.0",
      description="Relatedness as label, rescaled (s - 1) * 1.25 onto [0, 5].")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        features=base.PAIR_FEATURES, description=_DESCRIPTION, citation=_CITATION,
        homepage="https://marcobaroni.org/composes/sick.html",
        metadata={"label_transform": "(relatedness_score - 1) * 1.25",
                  "split_source": {split: semeval for semeval, split in SEMEVAL_SETS.items()},
                  "label_range": [0.0, 5.0], "unlabeled_splits": []})

  def _split_generators(self, dl_manager):
    rows = self._read(dl_manager, source_files.SICK_FILE, SPEC, list(SEMEVAL_SETS.values()))
    by_split = {split: [] for split in SEMEVAL_SETS.values()}
    for row in rows:
      by_split[SEMEVAL_SETS[row.other["SemEval_set"]]].append(row)
    return {split: self._generate_examples(base.pair_examples(split_rows, label_map=rescale_relatedness))
            for split, split_rows in by_split.items()}
