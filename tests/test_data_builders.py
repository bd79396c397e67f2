"""The TFDS builders, prepared from small CSVs the tests write (no network, no shared data)."""

import csv

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import catalog, csv_rows, source_files
from data_prep.builders import cs224n_quora, sick
from data_prep.errors import DataError, MissingDataFileError
from data_prep.tfds_split import TfdsSplit
from tests.test_data_csv_rows import SMALL, write_course_files, write_tsv

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def course_root(tmp_path_factory):
  return write_course_files(tmp_path_factory.mktemp("course"))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def prepared(name, config, root, tfds_dir, **kwargs):
  builder = catalog.get_builder(TfdsSplit(name, "train", config), tfds_dir=tfds_dir,
                                builder_kwargs={"local_dir": root, "allow_download": False, **kwargs})
  return builder, {split: catalog.read_split(builder, split) for split in builder.info.splits.keys()}


def file_rows(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f, delimiter="\t"))


EXPECTED_SIZES = {
    ("cs224n_sst", "default"): dict(zip(("train", "validation", "test"), SMALL["sst"])),
    ("cs224n_sts", "default"): dict(zip(("train", "validation", "test"), SMALL["sts"])),
    ("cfimdb", "polar"): dict(zip(("train", "validation", "test"), SMALL["cfimdb"])),
    ("sick", "relatedness"): {"train": SMALL["sick"]["TRAIN"], "validation": SMALL["sick"]["TRIAL"],
                              "test": SMALL["sick"]["TEST"]},
}


@pytest.mark.parametrize("name,config", sorted(EXPECTED_SIZES))
def test_builder_prepares_every_split_from_local_files(name, config, course_root, tfds_dir):
  builder, splits = prepared(name, config, course_root, tfds_dir)
  assert builder.info.file_format.value == "array_record"
  assert builder.info.description and builder.info.citation and str(builder.version) == "1.0.0"
  assert {s: len(e) for s, e in splits.items()} == EXPECTED_SIZES[(name, config)]
  unlabeled = builder.info.metadata["unlabeled_splits"]
  for split, examples in splits.items():
    lines = [e["line"] for e in examples]
    assert lines == sorted(lines), "examples keep file order"
    labels = np.array([e["label"] for e in examples])
    if split in unlabeled:
      assert (labels == -1).all()
    else:
      assert (labels >= 0).all()
  # Every source file is recorded with its hash, for provenance.
  assert all(len(entry["sha256"]) == 64 for entry in builder.info.metadata["source_files"].values())


def test_sst_examples_match_the_file(course_root, tfds_dir):
  _, splits = prepared("cs224n_sst", None, course_root, tfds_dir)
  rows = file_rows(course_root / "cs224n" / "ids-sst-train.csv")
  assert [e["id"] for e in splits["train"]] == [r["id"] for r in rows]
  assert [e["sentence"] for e in splits["train"]] == [r["sentence"].strip() for r in rows]
  assert [e["label"] for e in splits["train"]] == [int(r["sentiment"]) for r in rows]
  test_rows = file_rows(course_root / "cs224n" / "ids-sst-test-student.csv")
  assert [e["id"] for e in splits["test"]] == [r["id"] for r in test_rows]  # ids kept for predictions


def test_quora_dev_split_is_deterministic_disjoint_and_documented(course_root, tmp_path):
  builder, splits = prepared("cs224n_quora", None, course_root, tmp_path / "a")
  assert builder.builder_config.name == "dev_90_10"
  dev_ids = [r["id"] for r in file_rows(course_root / "cs224n" / "quora-dev.csv")]
  train = [e["id"] for e in splits["train"]]
  validation = [e["id"] for e in splits["validation"]]
  assert not set(train) & set(validation)
  assert sorted(train + validation) == sorted(dev_ids)
  assert validation == [i for i in dev_ids if cs224n_quora.validation_fold(i)]
  assert 0 < len(validation) < len(train)
  assert len(splits["test"]) == SMALL["quora_test"]
  assert all(e["label"] in (0.0, 1.0) for e in splits["train"])
  metadata = builder.info.metadata
  assert metadata["quora_split"] == "dev_90_10" and "sha1(id)" in metadata["quora_split_rule"]
  assert catalog.provenance(builder, "train")["quora_split"] == "dev_90_10"
  # Deterministic: a second preparation elsewhere gives the same split.
  _, again = prepared("cs224n_quora", "dev_90_10", course_root, tmp_path / "b")
  assert [e["id"] for e in again["validation"]] == validation


def test_quora_official_config_uses_quora_train(course_root, tmp_path):
  local = tmp_path / "data"
  write_course_files(local)
  write_tsv(local / "cs224n" / "quora-train.csv", ["", "id", "sentence1", "sentence2", "is_duplicate"],
            [[i, f"tr{i}", " one ?", " two ?", f"{i % 2}.0"] for i in range(7)])
  builder, splits = prepared("cs224n_quora", "official", local, tmp_path / "tfds")
  assert {s: len(e) for s, e in splits.items()} == {"train": 7, "validation": SMALL["quora_dev"],
                                                      "test": SMALL["quora_test"]}
  assert builder.info.metadata["quora_split"] == "official"


def test_quora_official_without_quora_train_says_where_to_get_it(course_root, tmp_path):
  with pytest.raises(MissingDataFileError) as error:
    prepared("cs224n_quora", "official", course_root, tmp_path)
  assert "quora-train.csv" in str(error.value) and source_files.CS224N_BASE_URL in str(error.value)
  assert str(course_root / "cs224n" / "quora-train.csv") in str(error.value)


@pytest.mark.parametrize("config,mapping", [("polar", {0: 0, 1: 4}), ("not_polar", {0: 1, 1: 3}),
                                            ("binary", {0: 0, 1: 1})])
def test_cfimdb_label_mapping(config, mapping, course_root, tfds_dir):
  builder, splits = prepared("cfimdb", config, course_root, tfds_dir)
  for split, name in (("train", "ids-cfimdb-train.csv"), ("validation", "ids-cfimdb-dev.csv")):
    source_labels = [int(r["sentiment"]) for r in file_rows(course_root / "cs224n" / name)]
    assert [e["label"] for e in splits[split]] == [mapping[label] for label in source_labels]
  assert builder.info.metadata["label_mapping"] == {str(k): v for k, v in mapping.items()}


def test_sick_rescaled_and_partitioned_by_semeval_set(course_root, tfds_dir):
  _, splits = prepared("sick", None, course_root, tfds_dir)
  rows = file_rows(course_root / "extra" / "sick2014.csv")
  for split, semeval in (("train", "TRAIN"), ("validation", "TRIAL"), ("test", "TEST")):
    expected = [(r["pair_ID"], (float(r["relatedness_score"]) - 1) * 1.25) for r in rows
                if r["SemEval_set"] == semeval]
    assert [e["id"] for e in splits[split]] == [pair_id for pair_id, _ in expected]
    assert [e["label"] for e in splits[split]] == pytest.approx([label for _, label in expected])
  assert sick.rescale_relatedness(1.0) == 0.0 and sick.rescale_relatedness(5.0) == 5.0
  assert sick.rescale_relatedness(3.0) == 2.5


def test_unknown_semeval_set_is_a_bad_row(tmp_path):
  root = write_course_files(tmp_path / "data")
  path = root / "extra" / "sick2014.csv"
  lines = path.read_text().splitlines()
  lines[2] = lines[2].rsplit("\t", 1)[0] + "\tDEV"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(DataError, match=r"sick2014.csv:3: column 'SemEval_set': value 'DEV'"):
    prepared("sick", None, root, tmp_path / "tfds")


def test_bad_row_stops_preparation_with_its_location(tmp_path):
  root = write_course_files(tmp_path / "data")
  path = root / "cs224n" / "sts-train.csv"
  with open(path, "a", encoding="utf-8") as f:
    f.write("99\tbad\t one\t two\tseven\n")
  with pytest.raises(DataError) as error:
    prepared("cs224n_sts", None, root, tmp_path / "strict")
  assert error.value.path == str(path) and error.value.line == SMALL["sts"][0] + 2
  assert "'seven' is not a number" in str(error.value)
  # Nothing half-written is left to be mistaken for a prepared dataset.
  with pytest.raises(FileNotFoundError, match="not prepared"):
    catalog.get_builder(TfdsSplit("cs224n_sts", "train"), tfds_dir=tmp_path / "strict", prepare=False)


def test_skip_bad_rows_is_counted_in_metadata_and_provenance(tmp_path):
  root = write_course_files(tmp_path / "data")
  with open(root / "cs224n" / "sts-train.csv", "a", encoding="utf-8") as f:
    f.write("99\tbad\t one\t two\tseven\n100\tbad2\t \t two\t1.0\n")
  builder, splits = prepared("cs224n_sts", None, root, tmp_path / "tfds", skip_bad_rows=True)
  assert len(splits["train"]) == SMALL["sts"][0]
  metadata = builder.info.metadata
  assert metadata["skipped_rows"]["sts-train.csv"] == {csv_rows.BAD_LABEL: 1, csv_rows.EMPTY_TEXT: 1}
  assert [line for line, _ in metadata["skipped_lines"]["sts-train.csv"]] == [12, 13]
  provenance = catalog.provenance(builder, "train")
  assert provenance["skipped_rows"] == {"sts-train.csv": {csv_rows.BAD_LABEL: 1, csv_rows.EMPTY_TEXT: 1}}
  assert catalog.provenance(builder, "validation")["skipped_rows"] == {}


def test_default_data_root_needs_no_manual_step(tmp_path, monkeypatch):
  root = write_course_files(tmp_path / "shared_data")
  monkeypatch.setenv(source_files.DATA_ROOT_ENV, str(root))
  builder = catalog.get_builder(TfdsSplit("cs224n_sts", "train"), tfds_dir=tmp_path / "tfds",
                                builder_kwargs={"allow_download": False})
  assert builder.info.splits["train"].num_examples == SMALL["sts"][0]
  assert builder.info.metadata["source_files"]["sts-train.csv"]["path"] == str(root / "cs224n" / "sts-train.csv")


def test_tfds_manual_dir_is_used_before_the_default_root(tmp_path, monkeypatch):
  monkeypatch.setenv(source_files.DATA_ROOT_ENV, str(tmp_path / "nowhere"))
  manual = write_course_files(tmp_path / "manual")
  builder = catalog.get_builder(TfdsSplit("sick", "train"), tfds_dir=tmp_path / "tfds", manual_dir=manual,
                                builder_kwargs={"allow_download": False})
  assert builder.info.metadata["source_files"]["sick2014.csv"]["path"] == str(manual / "extra" / "sick2014.csv")


def test_unknown_dataset_or_config_lists_the_known_ones(tmp_path):
  with pytest.raises(ValueError, match="known: .*cs224n_sst"):
    catalog.get_builder(TfdsSplit("imdb", "train"), tfds_dir=tmp_path)
  with pytest.raises(ValueError, match=r"configs: \['polar', 'not_polar', 'binary'\]"):
    catalog.get_builder(TfdsSplit("cfimdb", "train", "very_polar"), tfds_dir=tmp_path)


def test_quora_dev_90_10_sizes_on_the_shared_data(shared_data):
  """The split sizes documented in cs224n_quora.DEV_90_10_SIZES hold for the course file."""
  report = csv_rows.read_table(shared_data / "cs224n" / "quora-dev.csv", cs224n_quora.LABELED,
                               skip_bad_rows=True)
  assert report.num_skipped == 2 and [line for line, _ in report.skipped_lines] == [2256, 12451]
  validation = sum(cs224n_quora.validation_fold(row.id) for row in report.rows)
  assert {"train": len(report.rows) - validation, "validation": validation} == cs224n_quora.DEV_90_10_SIZES
