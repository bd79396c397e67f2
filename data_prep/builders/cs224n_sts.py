"""STS Benchmark sentence-pair similarity (0..5, float) from the CS224N course files."""

from __future__ import annotations

import tensorflow_datasets as tfds

from data_prep import csv_rows, source_files
from data_prep.builders import base

_DESCRIPTION = """\
SemEval STS Benchmark pairs as distributed in the CS224N default final project
(sts-{train,dev,test-student}.csv): two sentences and their similarity, a float
in [0, 5]. The test split is the course's unlabeled test-student file (labels
-1): keep it to write predictions by id.
"""

_CITATION = """\
@inproceedings{cer2017semeval,
  title = {{SemEval}-2017 Task 1: Semantic Textual Similarity Multilingual and Crosslingual Focused Evaluation},
  author = {Cer, Daniel and Diab, Mona and Agirre, Eneko and Lopez-Gazpio, I{\\~n}igo and Specia, Lucia},
  booktitle = {Proceedings of SemEval-2017},
  pages = {1--14},
  year = {2017},
}
""" + base.CS224N_CITATION

LABELED = csv_rows.TableSpec("id", ("sentence1", "sentence2"),
                             csv_rows.LabelSpec("similarity", False, 0.0, 5.0))
UNLABELED = csv_rows.TableSpec("id", ("sentence1", "sentence2"))


class Cs224nSts(base.CsvBuilder):
  """STS: train 6,040 / validation 863 / test 1,725 (unlabeled) in the course files."""

  name = "cs224n_sts"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Course CSVs, strict validation, file order kept."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default", version="1.0.0",
                                             description="The course's STS files as they are.")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        features=base.PAIR_FEATURES, description=_DESCRIPTION, citation=_CITATION,
        homepage="https://ixa2.si.ehu.eus/stswiki/index.php/STSbenchmark",
        metadata={"label_range": [0.0, 5.0], "unlabeled_splits": ["test"]})

  def _split_generators(self, dl_manager):
    read = lambda name, spec, split: self._read(dl_manager, source_files.cs224n_file(name), spec, split)
    return {
        "train": self._generate_examples(base.pair_examples(read("sts-train.csv", LABELED, "train"))),
        "validation": self._generate_examples(
            base.pair_examples(read("sts-dev.csv", LABELED, "validation"))),
        "test": self._generate_examples(
            base.pair_examples(read("sts-test-student.csv", UNLABELED, "test"))),
    }
