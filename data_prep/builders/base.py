"""What every bert_jax TFDS builder shares: features, source lookup, strict reading.

Each builder turns tab-separated course files into TFDS splits stored as
`array_record`, read back with `tfds.data_source` (random access, no
TensorFlow). All builders use one of two feature layouts, so the pipeline can
concatenate sources (CFIMDB into SST, SICK into STS) without per-source code:

  single: id, sentence, label (int32), line
  pair:   id, sentence1, sentence2, label (float32), line

`line` is the 1-based line of the row in its source file, so any example can be
traced back. Unlabeled test splits store `UNLABELED` as label and are listed in
`info.metadata["unlabeled_splits"]`.

Rows are written in file order (`disable_shuffling`): the pipeline shuffles by
(seed, epoch) itself, and an example's index in its split stays meaningful.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from data_prep import csv_rows, freshness, source_files
from data_prep.errors import DataError

UNLABELED = -1  # label of every example in an unlabeled (test-student) split
MAX_LISTED_SKIPS = 50  # skipped lines listed per split in the metadata; all are counted

SINGLE_FEATURES = {"id": tfds.features.Text(), "sentence": tfds.features.Text(),
                   "label": np.int32, "line": np.int32}
PAIR_FEATURES = {"id": tfds.features.Text(), "sentence1": tfds.features.Text(),
                 "sentence2": tfds.features.Text(), "label": np.float32, "line": np.int32}

CS224N_CITATION = """\
@misc{cs224n_default_final_project,
  title = {CS 224N Default Final Project: Multitask BERT},
  author = {Poesia, Gabriel and Hewitt, John and Byun, Amelie and Cho, John and others},
  howpublished = {Stanford University, \\url{https://github.com/gpoesia/minbert-default-final-project}},
  year = {2023},
}"""

MANUAL_DIR_NOTE = """\
Optional: a manual directory may hold the source files (directly, or under
cs224n/ and extra/ as in the project's shared data). Without one, the builder
uses $BERT_JAX_DATA or ../shared/data next to the repository, and downloads the
public files when neither has them."""


class CsvBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the bert_jax builders: strict CSV reading plus provenance metadata.

  Extra constructor arguments (pass them through `tfds.builder(name, **kwargs)`):
    local_dir: read the source files from this directory only (no download).
    skip_bad_rows: skip malformed rows, count them per reason and record them in
      `info.metadata["skipped_rows"]`, instead of failing on the first one.
    allow_download: set False to fail fast instead of trying the public URLs.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DIR_NOTE

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 resolves this through `importlib_resources`, a backport it
    # does not declare as a dependency; the file of the class is all it needs
    # (to look for an optional checksums.tsv beside it).
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, local_dir: os.PathLike | None = None, skip_bad_rows: bool = False,
               allow_download: bool = True, file_format: str = "array_record", **kwargs):
    self._local_dir = local_dir
    self._skip_bad_rows = skip_bad_rows
    self._allow_download = allow_download
    super().__init__(file_format=file_format, **kwargs)

  def _make_info(self, *, features: dict, description: str, citation: str, homepage: str,
                 metadata: dict) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=tfds.features.FeaturesDict(features),
        homepage=homepage,
        citation=citation,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(metadata),
    )

  def _read(self, dl_manager, remote: source_files.RemoteFile, spec: csv_rows.TableSpec,
            split: str | Sequence[str]) -> list[csv_rows.Row]:
    """Locates and strictly reads one source file; records where it came from and what was skipped.

    `split` names the split(s) this file feeds, for the metadata. The record
    (path, size, mtime, sha256: `freshness.fingerprint`) is what
    `catalog.get_builder` later compares with the current file to tell whether
    this prepared dataset is still that file's. An unlabeled file keeps every
    row that has an id (`csv_rows.read_table(keep_every_id=True)`), because
    predictions are written for all of its ids; those rows are listed under
    "placeholder_rows".

    Raises:
      DataError: a bad row (without skip_bad_rows), or a file left with no rows.
    """
    path = source_files.locate(remote, dl_manager, local_dir=self._local_dir,
                               allow_download=self._allow_download)
    report = csv_rows.read_table(path, spec, skip_bad_rows=self._skip_bad_rows,
                                 keep_every_id=spec.label is None)
    if not report.rows:  # else TFDS stops on "No examples were yielded", naming no file
      if report.skipped_lines:
        line, message = report.skipped_lines[0]
        why = f"all {report.num_skipped} rows are malformed ({dict(report.skipped)}); line {line}: {message}"
      else:
        why = "a header but no rows"
      raise DataError(path, 1, f"no usable rows ({why}); expected at least one row with columns "
                      f"{list(spec.required_columns)}")
    splits = [split] if isinstance(split, str) else list(split)
    metadata = self.info.metadata
    metadata["skip_bad_rows"] = self._skip_bad_rows
    metadata.setdefault("source_files", {})[remote.filename] = {
        **freshness.fingerprint(path), **freshness.remote_record(remote), "rows_read": len(report.rows),
        "splits": splits}
    metadata.setdefault("skipped_rows", {})[remote.filename] = dict(report.skipped)
    if report.skipped_lines:
      logging.warning("%s: skipped %d malformed rows (%s), e.g. line %d: %s", path, report.num_skipped,
                      dict(report.skipped), *report.skipped_lines[0])
      metadata.setdefault("skipped_lines", {})[remote.filename] = [
          [line, message] for line, message in report.skipped_lines[:MAX_LISTED_SKIPS]]
    if report.placeholders:
      # All of them (not capped like skipped_lines): the trainer names each one next to its prediction.
      metadata.setdefault("placeholder_rows", {})[remote.filename] = [
          [line, row_id, message] for line, row_id, message in report.placeholders]
      logging.warning("%s: %d malformed rows kept for their id, with empty text (their predictions "
                      "will come from what is left), e.g. line %d (id %s): %s", path, len(report.placeholders),
                      *report.placeholders[0])
    return report.rows

  def _generate_examples(self, examples: Sequence[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
    # Examples are built eagerly in `_split_generators`, so every file is fully
    # validated (and the metadata complete) before TFDS writes anything.
    yield from examples


def single_examples(rows: Sequence[csv_rows.Row], label_map=None) -> list[tuple[int, dict]]:
  """TFDS (key, example) pairs for single-sentence rows; `label_map` maps a source label."""
  examples = []
  for row in rows:
    label = UNLABELED if row.label is None else (label_map(row.label) if label_map else row.label)
    examples.append((row.line, {"id": row.id, "sentence": row.texts[0], "label": label,
                                "line": row.line}))
  return examples


def pair_examples(rows: Sequence[csv_rows.Row], label_map=None) -> list[tuple[int, dict]]:
  """TFDS (key, example) pairs for sentence-pair rows; `label_map` maps a source label."""
  examples = []
  for row in rows:
    label = UNLABELED if row.label is None else (label_map(row.label) if label_map else row.label)
    examples.append((row.line, {"id": row.id, "sentence1": row.texts[0], "sentence2": row.texts[1],
                                "label": float(label), "line": row.line}))
  return examples
