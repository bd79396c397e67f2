"""Finding, preparing and reading the bert_jax TFDS datasets.

The TFDS data directory defaults to TFDS's own default ($TFDS_DATA_DIR, else
~/tensorflow_datasets): prepared datasets are then shared by every clone and
run on the machine, which is what "prepared once" should mean. Pass
`tfds_dir` (or --tfds_dir) to keep them elsewhere, e.g. per test.

"Prepared once" holds only while the sources stay the same: `get_builder`
compares the source files a prepared dataset recorded with the files the
builder would read now (data_prep/freshness.py) and prepares it again when
they differ, so an edited CSV or another data root is never answered with
the old data.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Mapping

import tensorflow_datasets as tfds
from absl import logging

from data_prep import freshness
from data_prep.builders import BUILDERS
from data_prep.tfds_split import TfdsSplit


def resolve_tfds_dir(tfds_dir: str | os.PathLike | None = None) -> pathlib.Path:
  if tfds_dir:
    return pathlib.Path(tfds_dir).expanduser()
  return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR).expanduser()


def get_builder(tfds_split: TfdsSplit, *, tfds_dir: str | os.PathLike | None = None,
                prepare: bool = True, manual_dir: str | os.PathLike | None = None,
                builder_kwargs: Mapping | None = None) -> tfds.core.DatasetBuilder:
  """The builder of `tfds_split`, prepared (generated from the source files) if needed.

  A dataset already prepared from other source files than the builder would
  read now (edited, replaced, or under another data root) is prepared again.

  Raises:
    ValueError: an unknown builder or config name.
    FileNotFoundError: not prepared (or prepared from other sources) and `prepare=False`.
    data_prep.errors.DataError / MissingDataFileError / MissingDataRootError: from preparing.
  """
  builder_cls = BUILDERS.get(tfds_split.builder)
  if builder_cls is None:
    raise ValueError(f"unknown dataset {tfds_split.builder!r} in {tfds_split}; "
                     f"known: {sorted(BUILDERS)}")
  configs = [c.name for c in builder_cls.BUILDER_CONFIGS]
  if tfds_split.config is not None and tfds_split.config not in configs:
    raise ValueError(f"{tfds_split}: {tfds_split.builder} has no config {tfds_split.config!r}; "
                     f"configs: {configs}")
  data_dir = resolve_tfds_dir(tfds_dir)
  builder_kwargs = dict(builder_kwargs or {})
  builder = builder_cls(config=tfds_split.config, data_dir=os.fspath(data_dir), **builder_kwargs)
  if builder.is_prepared():
    changes = freshness.changed_sources(
        builder.info.metadata, local_dir=builder_kwargs.get("local_dir"),
        manual_dir=manual_dir or data_dir / "downloads" / "manual",
        skip_bad_rows=builder_kwargs.get("skip_bad_rows", False))
    if changes:
      what = "; ".join(change.describe() for change in changes)
      if not prepare:
        raise FileNotFoundError(f"{tfds_split}: prepared in {builder.data_dir} from other sources than now: "
                                f"{what}. Run `python -m data_prep.prepare --tfds_dir={data_dir}` again")
      logging.warning("%s: preparing again, its sources changed since %s was prepared: %s",
                      tfds_split, builder.data_dir, what)
      shutil.rmtree(builder.data_dir)
      builder = builder_cls(config=tfds_split.config, data_dir=os.fspath(data_dir), **builder_kwargs)
  if not builder.is_prepared():
    if not prepare:
      raise FileNotFoundError(f"{tfds_split}: not prepared in {builder.data_dir}; run "
                              f"`python -m data_prep.prepare --tfds_dir={data_dir}` first")
    download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir) if manual_dir else None)
    builder.download_and_prepare(download_config=download_config)
  return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
  """Every example of a prepared split, in file order, with text decoded to str."""
  data_source = builder.as_data_source(split=split)
  examples = data_source.__getitems__(list(range(len(data_source))))
  return [{key: value.decode("utf-8") if isinstance(value, bytes) else value for key, value in e.items()}
          for e in examples]


def source_hashes(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, str]:
  """{file name: sha256} of the source files that fed `split`: what its contents derive from."""
  files = (builder.info.metadata or {}).get("source_files", {})
  return {name: entry.get("sha256", "") for name, entry in sorted(files.items())
          if split in entry.get("splits", [])}


def placeholder_rows(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, list]:
  """{file name: [[line, id, why], ...]}: rows of `split` kept for their id although malformed."""
  metadata = builder.info.metadata or {}
  return {name: rows for name, rows in metadata.get("placeholder_rows", {}).items()
          if split in metadata.get("source_files", {}).get(name, {}).get("splits", [])}


def provenance(builder: tfds.core.DatasetBuilder, split: str) -> dict:
  """What a result should record about the data it used: dataset, version, sizes, skips, split rule."""
  metadata = builder.info.metadata or {}
  files = {name: entry for name, entry in metadata.get("source_files", {}).items()
           if split in entry.get("splits", [])}
  skipped = {name: metadata.get("skipped_rows", {}).get(name, {}) for name in files}
  record = {
      "dataset": f"{builder.name}/{builder.builder_config.name}",
      "version": str(builder.version),
      "split": split,
      "num_examples": builder.info.splits[split].num_examples,
      "source_files": {name: entry.get("sha256", "")[:12] for name, entry in files.items()},
      "skipped_rows": {name: counts for name, counts in skipped.items() if counts},
  }
  placeholders = placeholder_rows(builder, split)
  if placeholders:
    record["placeholder_rows"] = placeholders
  for key in ("quora_split", "quora_split_rule", "label_mapping", "label_transform"):
    if key in metadata:
      record[key] = metadata[key]
  return record
