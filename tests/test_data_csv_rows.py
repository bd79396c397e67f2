"""Strict CSV reading: every kind of bad row is reported with file, line and column.

Also home of the small course-like CSVs the other data tests build datasets from
(`write_course_files`), so all data tests share one picture of the file format.
"""

import pathlib

import pytest

from data_prep import csv_rows, source_files
from data_prep.csv_rows import LabelSpec, TableSpec, read_table
from data_prep.errors import DataError, MissingDataFileError

WORDS = ("the film is a quiet triumph of style over substance and never once bores "
         "although its plot wanders through many long scenes about nothing much at all").split()


def sentence(n_words: int, offset: int = 0) -> str:
  """A sentence of n_words words; the CS224N files start sentences with a space."""
  return " " + " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n_words))


def write_tsv(path: pathlib.Path, header, rows, raw_lines: bytes = b"") -> pathlib.Path:
  """Tab-separated file: header, rows (lists of strings), then raw bytes verbatim."""
  path.parent.mkdir(parents=True, exist_ok=True)
  text = "\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n"
  path.write_bytes(text.encode("utf-8") + raw_lines)
  return path


# Row counts of the small course files; the builder tests check them.
SMALL = {"sst": (15, 5, 4), "quora_dev": 60, "quora_test": 3, "sts": (10, 4, 3), "cfimdb": (6, 2, 2),
         "sick": {"TRAIN": 6, "TRIAL": 2, "TEST": 3}}


def write_course_files(root: pathlib.Path) -> pathlib.Path:
  """A miniature ../shared/data: cs224n/ and extra/ with every file the builders read."""
  cs224n = root / "cs224n"
  n_train, n_dev, n_test = SMALL["sst"]
  write_tsv(cs224n / "ids-sst-train.csv", ["", "id", "sentence", "sentiment"],
            [[i, f"sst{i:03d}", sentence(3 + 2 * i, i), i % 5] for i in range(n_train)])
  write_tsv(cs224n / "ids-sst-dev.csv", ["", "id", "sentence", "sentiment"],
            [[i, f"sstdev{i}", sentence(4 + i, i), (i + 1) % 5] for i in range(n_dev)])
  # The course's test-student files carry an extra index column and a "0" header cell.
  write_tsv(cs224n / "ids-sst-test-student.csv", ["0", "", "id", "sentence"],
            [[i + 1, f"{i}.0", f"ssttest{i}", sentence(5 + i, i)] for i in range(n_test)])
  write_tsv(cs224n / "quora-dev.csv", ["", "id", "sentence1", "sentence2", "is_duplicate"],
            [[i, f"q{i:04d}", sentence(2 + i % 7, i) + "?", sentence(3 + i % 5, i + 1) + "?", f"{i % 2}.0"]
             for i in range(SMALL["quora_dev"])])
  write_tsv(cs224n / "quora-test-student.csv", ["", "id", "sentence1", "sentence2"],
            [[i, f"qt{i}", sentence(4, i) + "?", sentence(6, i) + "?"] for i in range(SMALL["quora_test"])])
  n_train, n_dev, n_test = SMALL["sts"]
  write_tsv(cs224n / "sts-train.csv", ["", "id", "sentence1", "sentence2", "similarity"],
            [[i, f"sts{i}", sentence(2 + i, i), sentence(4 + i % 3, i), f"{i * 0.5:.1f}"] for i in range(n_train)])
  write_tsv(cs224n / "sts-dev.csv", ["", "id", "sentence1", "sentence2", "similarity"],
            [[i, f"stsdev{i}", sentence(3, i), sentence(5, i), f"{i:.1f}"] for i in range(n_dev)])
  write_tsv(cs224n / "sts-test-student.csv", ["", "id", "sentence1", "sentence2"],
            [[i, f"ststest{i}", sentence(3, i), sentence(2 + i, i)] for i in range(n_test)])
  n_train, n_dev, n_test = SMALL["cfimdb"]
  write_tsv(cs224n / "ids-cfimdb-train.csv", ["", "id", "sentence", "sentiment"],
            [[i, f"cf{i}", sentence(20 + i, i), i % 2] for i in range(n_train)])
  write_tsv(cs224n / "ids-cfimdb-dev.csv", ["", "id", "sentence", "sentiment"],
            [[i, f"cfdev{i}", sentence(10, i), 1 - i % 2] for i in range(n_dev)])
  write_tsv(cs224n / "ids-cfimdb-test-student.csv", ["0", "", "id", "sentence"],
            [[i + 1, f"{i}.0", f"cftest{i}", sentence(12, i)] for i in range(n_test)])
  sick_header = ["pair_ID", "sentence_A", "sentence_B", "entailment_label", "relatedness_score",
                 "entailment_AB", "entailment_BA", "sentence_A_original", "sentence_B_original",
                 "sentence_A_dataset", "sentence_B_dataset", "SemEval_set"]
  sick_rows, pair_id = [], 1
  for semeval, count in SMALL["sick"].items():
    for i in range(count):
      score = 1.0 + (pair_id % 9) * 0.5  # 1.0 .. 5.0
      sick_rows.append([pair_id, sentence(4 + i, i).strip(), sentence(5, i).strip(), "NEUTRAL", score,
                        "A_neutral_B", "B_neutral_A", "orig a", "orig b", "FLICKR", "FLICKR", semeval])
      pair_id += 1
  write_tsv(root / "extra" / "sick2014.csv", sick_header, sick_rows)
  return root


SST = TableSpec("id", ("sentence",), LabelSpec("sentiment", True, 0, 4))
QUORA = TableSpec("id", ("sentence1", "sentence2"), LabelSpec("is_duplicate", True, 0, 1))
STS = TableSpec("id", ("sentence1", "sentence2"), LabelSpec("similarity", False, 0.0, 5.0))
HEADER = ["", "id", "sentence", "sentiment"]


def test_course_quirks_are_read_like_the_course_loader(tmp_path):
  path = write_tsv(tmp_path / "q.csv", ["", "id", "sentence1", "sentence2", "is_duplicate"], [
      [7, "a1", '"""Which is it? Do I need """"the"""" here?"""', " Plain question ?", "1.0"],
      [9, "a2", " Leading space", "-LRB- PTB -RRB- tokens `` ''", "0.0"],
  ])
  report = read_table(path, QUORA)
  assert [r.line for r in report.rows] == [2, 3]
  assert report.rows[0].texts == ('"Which is it? Do I need ""the"" here?"', "Plain question ?")
  assert report.rows[0].label == 1 and isinstance(report.rows[0].label, int)
  assert report.rows[1].texts[0] == "Leading space"
  assert report.rows[1].label == 0


def test_test_student_header_with_extra_index_column(tmp_path):
  path = write_tsv(tmp_path / "t.csv", ["0", "", "id", "sentence"], [[1, "0.0", "x1", " Some text ."]])
  report = read_table(path, TableSpec("id", ("sentence",)))
  assert report.rows[0].id == "x1" and report.rows[0].label is None


def test_line_numbers_count_blank_lines_and_multiline_records(tmp_path):
  path = tmp_path / "m.csv"
  path.write_text("\tid\tsentence\tsentiment\n0\ta\t\"two\nlines\"\t1\n\n1\tb\tok\t9\n", encoding="utf-8")
  with pytest.raises(DataError) as error:
    read_table(path, SST)
  assert error.value.line == 5 and error.value.column == "sentiment"
  assert f"{path}:5: column 'sentiment'" in str(error.value)


# (rows after the header, expected reason, expected line, expected column, words in the message)
BAD_ROWS = {
    "missing column": ([["0", "a", " text"]], csv_rows.MISSING_COLUMN, 2, "sentiment", "no value for"),
    "extra field": ([["0", "a", " text", "1", "surplus"]], csv_rows.EXTRA_FIELDS, 2, None, "5 fields"),
    "non-numeric label": ([["0", "a", " x", "1"], ["1", "b", " text", "good"]], csv_rows.BAD_LABEL, 3,
                          "sentiment", "not a number"),
    "empty label": ([["0", "a", " text", ""]], csv_rows.BAD_LABEL, 2, "sentiment", "empty label"),
    "fractional class": ([["0", "a", " text", "2.5"]], csv_rows.BAD_LABEL, 2, "sentiment", "whole number"),
    "out-of-range label": ([["0", "a", " text", "5"]], csv_rows.LABEL_OUT_OF_RANGE, 2, "sentiment",
                           "[0, 4]"),
    "empty sentence": ([["0", "a", "   ", "1"]], csv_rows.EMPTY_TEXT, 2, "sentence", "empty sentence"),
    "empty id": ([["0", " ", " text", "1"]], csv_rows.EMPTY_ID, 2, "id", "empty id"),
    "duplicated id": ([["0", "a", " one", "1"], ["1", "b", " two", "1"], ["2", "a", " three", "2"]],
                      csv_rows.DUPLICATE_ID, 4, "id", "first on line 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_error_names_file_line_column_and_problem(tmp_path, case):
  rows, reason, line, column, words = BAD_ROWS[case]
  path = write_tsv(tmp_path / "bad.csv", HEADER, rows)
  with pytest.raises(DataError) as error:
    read_table(path, SST)
  message = str(error.value)
  assert error.value.path == str(path) and error.value.line == line and error.value.column == column
  assert message.startswith(f"{path}:{line}: ")
  assert words in message
  assert "skip_bad_rows" in message  # says how to get past it
  report = read_table(path, SST, skip_bad_rows=True)
  assert dict(report.skipped) == {reason: 1}
  assert [skipped_line for skipped_line, _ in report.skipped_lines] == [line]
  assert len(report.rows) == len(rows) - 1


def test_undecodable_bytes_name_the_line(tmp_path):
  path = write_tsv(tmp_path / "bytes.csv", HEADER, [["0", "a", " fine", "1"]],
                   raw_lines=b"1\tb\t caf\xe9 au lait\t2\n2\tc\t also fine\t3\n")
  with pytest.raises(DataError) as error:
    read_table(path, SST)
  assert error.value.line == 3 and error.value.column == "sentence"
  assert "not valid UTF-8" in str(error.value)
  report = read_table(path, SST, skip_bad_rows=True)
  assert dict(report.skipped) == {csv_rows.UNDECODABLE_BYTES: 1}
  assert [r.id for r in report.rows] == ["a", "c"]


def test_skip_bad_rows_counts_every_reason(tmp_path):
  path = write_tsv(tmp_path / "mixed.csv", HEADER, [
      ["0", "a", " ok", "1"], ["1", "b", " x", "nan"], ["2", "c", "", "1"], ["3", "a", " dup", "2"],
      ["4", "d", " ok too", "-1"], ["5", "e", " last", "4"]])
  report = read_table(path, SST, skip_bad_rows=True)
  assert [r.id for r in report.rows] == ["a", "e"]
  assert dict(report.skipped) == {csv_rows.BAD_LABEL: 1, csv_rows.EMPTY_TEXT: 1, csv_rows.DUPLICATE_ID: 1,
                                  csv_rows.LABEL_OUT_OF_RANGE: 1}
  assert report.num_skipped == 4
  assert [line for line, _ in report.skipped_lines] == [3, 4, 5, 6]


def test_header_problems_always_raise(tmp_path):
  path = write_tsv(tmp_path / "h.csv", ["", "id", "text", "sentiment"], [["0", "a", " x", "1"]])
  with pytest.raises(DataError, match=r"h.csv:1: header lacks column\(s\) \['sentence'\]"):
    read_table(path, SST, skip_bad_rows=True)
  empty = tmp_path / "empty.csv"
  empty.write_bytes(b"")
  with pytest.raises(DataError, match="empty file"):
    read_table(empty, SST, skip_bad_rows=True)


def test_float_labels_and_ranges(tmp_path):
  path = write_tsv(tmp_path / "s.csv", ["", "id", "sentence1", "sentence2", "similarity"],
                   [["0", "a", " x", " y", "0.0"], ["1", "b", " x", " y", "4.6"], ["2", "c", " x", " y", "5.2"]])
  report = read_table(path, STS, skip_bad_rows=True)
  assert [r.label for r in report.rows] == [0.0, 4.6]
  assert dict(report.skipped) == {csv_rows.LABEL_OUT_OF_RANGE: 1}


def test_missing_file_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
  monkeypatch.setenv(source_files.DATA_ROOT_ENV, str(tmp_path / "root"))
  remote = source_files.cs224n_file("quora-train.csv")
  with pytest.raises(MissingDataFileError) as error:
    source_files.locate(remote, None, allow_download=False)
  message = str(error.value)
  assert str(tmp_path / "root" / "cs224n" / "quora-train.csv") in message
  assert "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data/quora-train.csv" in message
  # An explicit local directory is the only place looked in.
  (tmp_path / "mine").mkdir()
  with pytest.raises(MissingDataFileError) as error:
    source_files.locate(remote, None, local_dir=tmp_path / "mine")
  assert str(tmp_path / "mine" / "quora-train.csv") in str(error.value)
  assert str(tmp_path / "root") not in str(error.value)


def test_locate_prefers_local_dir_then_data_root(tmp_path, monkeypatch):
  root = write_course_files(tmp_path / "root")
  monkeypatch.setenv(source_files.DATA_ROOT_ENV, str(root))
  remote = source_files.cs224n_file("sts-dev.csv")
  assert source_files.locate(remote, None, allow_download=False) == root / "cs224n" / "sts-dev.csv"
  flat = tmp_path / "flat"
  flat.mkdir()
  (flat / "sts-dev.csv").write_bytes((root / "cs224n" / "sts-dev.csv").read_bytes())
  assert source_files.locate(remote, None, local_dir=flat) == flat / "sts-dev.csv"
