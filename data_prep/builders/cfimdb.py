"""CFIMDB movie-review polarity, mapped onto the SST-5 scale as extra sentiment data.

The reviews are binary (0 negative, 1 positive); SST-5 has five classes. Two
documented ways to use them as SST training data, as in the CS224N report that
added CFIMDB to SST training:

  polar:     negative -> 0 (negative),          positive -> 4 (positive)
  not_polar: negative -> 1 (somewhat negative), positive -> 3 (somewhat positive)

plus `binary` (0/1 as in the file) for evaluating on CFIMDB itself.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from data_prep import csv_rows, source_files
from data_prep.builders import base

# config name -> {binary label: label in the config's scale}
LABEL_MAPS = {
    "polar": {0: 0, 1: 4},
    "not_polar": {0: 1, 1: 3},
    "binary": {0: 0, 1: 1},
}
_CONFIG_DESCRIPTIONS = {
    "polar": "SST-5 scale, extreme classes: negative -> 0, positive -> 4.",
    "not_polar": "SST-5 scale, moderate classes: negative -> 1, positive -> 3.",
    "binary": "The file's own labels: 0 negative, 1 positive.",
}

_DESCRIPTION = """\
CFIMDB: highly polar IMDB movie reviews (label 0 negative / 1 positive) as
distributed in the CS224N default final project (ids-cfimdb-*.csv), used here
as extra SST training data. Configs `polar` and `not_polar` map the binary
labels onto the SST-5 scale (0/4 and 1/3); `binary` keeps them. The test split
is the course's unlabeled test-student file (labels -1).
"""

_CITATION = """\
@inproceedings{kaushik2020learning,
  title = {Learning the Difference that Makes a Difference with Counterfactually-Augmented Data},
  author = {Kaushik, Divyansh and Hovy, Eduard and Lipton, Zachary C.},
  booktitle = {International Conference on Learning Representations},
  year = {2020},
}
@inproceedings{maas2011learning,
  title = {Learning Word Vectors for Sentiment Analysis},
  author = {Maas, Andrew L. and Daly, Raymond E. and Pham, Peter T. and Huang, Dan and
            Ng, Andrew Y. and Potts, Christopher},
  booktitle = {Proceedings of ACL},
  pages = {142--150},
  year = {2011},
}
""" + base.CS224N_CITATION

LABELED = csv_rows.TableSpec("id", ("sentence",), csv_rows.LabelSpec("sentiment", True, 0, 1))
UNLABELED = csv_rows.TableSpec("id", ("sentence",))


class Cfimdb(base.CsvBuilder):
  """CFIMDB: train 1,707 / validation 245 / test 488 (unlabeled); configs polar, not_polar, binary."""

  name = "cfimdb"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Course CSVs; polar / not_polar SST-5 mappings and binary labels."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, version="1.0.0", description=description)
                     for name, description in _CONFIG_DESCRIPTIONS.items()]

  def _info(self) -> tfds.core.DatasetInfo:
    mapping = LABEL_MAPS[self.builder_config.name]
    return self._make_info(
        features=base.SINGLE_FEATURES, description=_DESCRIPTION, citation=_CITATION,
        homepage="https://github.com/acmi-lab/counterfactually-augmented-data",
        metadata={"label_mapping": {str(k): v for k, v in mapping.items()},
                  "num_classes": 2 if self.builder_config.name == "binary" else 5,
                  "unlabeled_splits": ["test"]})

  def _split_generators(self, dl_manager):
    mapping = LABEL_MAPS[self.builder_config.name]
    read = lambda name, spec, split: self._read(dl_manager, source_files.cs224n_file(name), spec, split)
    labeled = lambda rows: base.single_examples(rows, label_map=mapping.__getitem__)
    return {
        "train": self._generate_examples(labeled(read("ids-cfimdb-train.csv", LABELED, "train"))),
        "validation": self._generate_examples(labeled(read("ids-cfimdb-dev.csv", LABELED, "validation"))),
        "test": self._generate_examples(
            base.single_examples(read("ids-cfimdb-test-student.csv", UNLABELED, "test"))),
    }
