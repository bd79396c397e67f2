"""SST-5 sentence sentiment (labels 0..4) as the CS224N course distributes it."""

from __future__ import annotations

import tensorflow_datasets as tfds

from data_prep import csv_rows, source_files
from data_prep.builders import base

_DESCRIPTION = """\
Stanford Sentiment Treebank, five classes (0 negative, 1 somewhat negative,
2 neutral, 3 somewhat positive, 4 positive), with the original train/dev/test
sentences, as distributed in the CS224N default final project
(ids-sst-{train,dev,test-student}.csv). Sentences keep their PTB tokens
(-LRB-, ``). The test split is the course's unlabeled test-student file:
labels are -1; keep it to write predictions by id.
"""

_CITATION = """\
@inproceedings{socher2013recursive,
  title = {Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank},
  author = {Socher, Richard and Perelygin, Alex and Wu, Jean and Chuang, Jason and
            Manning, Christopher D. and Ng, Andrew and Potts, Christopher},
  booktitle = {Proceedings of EMNLP},
  pages = {1631--1642},
  year = {2013},
}
""" + base.CS224N_CITATION

LABELED = csv_rows.TableSpec("id", ("sentence",), csv_rows.LabelSpec("sentiment", True, 0, 4))
UNLABELED = csv_rows.TableSpec("id", ("sentence",))


class Cs224nSst(base.CsvBuilder):
  """SST-5: train 8,544 / validation 1,101 / test 2,210 (unlabeled) in the course files."""

  name = "cs224n_sst"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Course CSVs, strict validation, file order kept."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default", version="1.0.0",
                                             description="The course's SST-5 files as they are.")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        features=base.SINGLE_FEATURES, description=_DESCRIPTION, citation=_CITATION,
        homepage="https://nlp.stanford.edu/sentiment/",
        metadata={"num_classes": 5, "unlabeled_splits": ["test"]})

  def _split_generators(self, dl_manager):
    read = lambda name, spec, split: self._read(dl_manager, source_files.cs224n_file(name), spec, split)
    return {
        "train": self._generate_examples(base.single_examples(read("ids-sst-train.csv", LABELED, "train"))),
        "validation": self._generate_examples(
            base.single_examples(read("ids-sst-dev.csv", LABELED, "validation"))),
        "test": self._generate_examples(
            base.single_examples(read("ids-sst-test-student.csv", UNLABELED, "test"))),
    }
