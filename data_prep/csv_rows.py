"""Strict reading of the tab-separated course files, one validated row at a time.

The course's own loader wraps row parsing in `try: ... except: pass`, so rows
with a missing label vanish without a trace (quora-dev.csv has two). Here every
row is either valid or reported: by default the first bad row raises a
`DataError` naming file, line and column; with `skip_bad_rows=True` bad rows
are skipped, counted per reason and listed, and the caller records the counts.

Format, as the CS224N files use it: tab-separated, a header row, fields quoted
with `"` when they contain quotes (doubled inside), surrounding whitespace
insignificant (sentences start with a space), numeric labels possibly written
as floats ("0.0"). Entirely blank lines are not rows and are ignored.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
import re
from collections.abc import Sequence

from data_prep.errors import DataError

# Reasons a row can be skipped; the keys of `ReadReport.skipped`.
MISSING_COLUMN = "missing_column"
EXTRA_FIELDS = "extra_fields"
EMPTY_ID = "empty_id"
EMPTY_TEXT = "empty_text"
BAD_LABEL = "bad_label"
LABEL_OUT_OF_RANGE = "label_out_of_range"
UNDECODABLE_BYTES = "undecodable_bytes"
DUPLICATE_ID = "duplicate_id"
UNKNOWN_CATEGORY = "unknown_category"

# Bytes that are not UTF-8 come back as lone surrogates under "surrogateescape",
# which lets us read on and report the line instead of dying in the decoder.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
SKIP_HINT = "Fix the row, or pass skip_bad_rows=True (--skip_bad_rows) to skip and count such rows."


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """A numeric label column and the closed range its values must lie in."""
  column: str
  integer: bool
  low: float
  high: float

  def describe(self) -> str:
    kind = "an integer" if self.integer else "a number"
    return f"{kind} in [{self.low:g}, {self.high:g}]"


@dataclasses.dataclass(frozen=True)
class TableSpec:
  """What a file must contain: an id column, text columns, an optional label."""
  id_column: str
  text_columns: tuple[str, ...]
  label: LabelSpec | None = None
  # Categorical columns passed through to `Row.other`, as (column, allowed values),
  # e.g. ("SemEval_set", ("TRAIN", "TRIAL", "TEST")) for SICK.
  category_columns: tuple[tuple[str, tuple[str, ...]], ...] = ()

  @property
  def required_columns(self) -> tuple[str, ...]:
    label = (self.label.column,) if self.label else ()
    categories = tuple(column for column, _ in self.category_columns)
    return (self.id_column, *self.text_columns, *label, *categories)


@dataclasses.dataclass(frozen=True)
class Row:
  line: int  # 1-based line where the record starts, as an editor shows it
  id: str
  texts: tuple[str, ...]  # stripped, in `TableSpec.text_columns` order
  label: int | float | None
  other: dict[str, str]


@dataclasses.dataclass
class ReadReport:
  """Valid rows of one file, and what was skipped (only with `skip_bad_rows`)."""
  path: str
  rows: list[Row]
  skipped: collections.Counter  # reason -> count
  skipped_lines: list[tuple[int, str]]  # (line, message), in file order
  # With `keep_every_id`: bad rows kept for their id, as (line, id, message), in file order.
  placeholders: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())


def read_table(path: str | os.PathLike, spec: TableSpec, *, skip_bad_rows: bool = False,
               keep_every_id: bool = False) -> ReadReport:
  """Reads and validates every row of a tab-separated file with a header.

  `keep_every_id` (unlabeled files only, and only with `skip_bad_rows`): a bad
  row whose id is still readable and new is kept rather than skipped, with ""
  for each text that could not be read, and listed in `ReadReport.placeholders`.
  A prediction file must answer every id of its input (the course's
  test-student files); a prediction from what is left of the row, flagged as
  such, is better than a silently missing line.

  Raises:
    DataError: a bad header (always), or the first bad row (unless `skip_bad_rows`).
    FileNotFoundError: `path` does not exist.
    ValueError: `keep_every_id` with a labeled spec (a kept row would have no label).
  """
  if keep_every_id and spec.label is not None:
    raise ValueError(f"{path}: keep_every_id is for unlabeled files; a kept bad row would have no label")
  path = os.fspath(path)
  report = ReadReport(path=path, rows=[], skipped=collections.Counter(), skipped_lines=[])
  first_line_of_id: dict[str, int] = {}
  with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
    reader = csv.reader(f, delimiter="\t")
    header = _read_header(reader, path, spec)
    column_index = {name: i for i, name in enumerate(header)}
    previous_end = reader.line_num
    while True:
      try:
        fields = next(reader)
      except StopIteration:
        break
      except csv.Error as e:  # e.g. a NUL byte: nothing sensible to skip to
        raise DataError(path, previous_end + 1, f"not readable as tab-separated text ({e})") from None
      start, previous_end = previous_end + 1, reader.line_num
      if not fields:  # a blank line, not a row
        continue
      try:
        row = _parse_row(fields, start, header, column_index, spec)
        first = first_line_of_id.get(row.id)
        if first is not None:
          raise _RowProblem(DUPLICATE_ID, spec.id_column, f"duplicate id {row.id!r} (first on line {first})")
        first_line_of_id[row.id] = start
        report.rows.append(row)
      except _RowProblem as problem:
        span = f" (record spans lines {start}-{previous_end})" if previous_end > start else ""
        if not skip_bad_rows:
          raise DataError(path, start, problem.message + span, column=problem.column, hint=SKIP_HINT) from None
        column = f"column {problem.column!r}: " if problem.column else ""
        message = f"{problem.reason}: {column}{problem.message}{span}"
        placeholder = (_placeholder_row(fields, start, column_index, spec, problem, first_line_of_id)
                       if keep_every_id else None)
        if placeholder is not None:
          first_line_of_id[placeholder.id] = start
          report.rows.append(placeholder)
          report.placeholders.append((start, placeholder.id, message))
          continue
        report.skipped[problem.reason] += 1
        report.skipped_lines.append((start, message))
  return report


def _placeholder_row(fields: Sequence[str], line: int, column_index: dict[str, int], spec: TableSpec,
                     problem: "_RowProblem", first_line_of_id: dict[str, int]) -> Row | None:
  """A bad unlabeled row kept for its id, its unreadable texts "" (None: no usable id)."""
  def field(column: str) -> str:
    index = column_index[column]
    text = fields[index].strip() if index < len(fields) else ""
    return "" if _UNDECODABLE.search(text) else text

  row_id = field(spec.id_column)
  if not row_id or row_id in first_line_of_id:
    return None  # no id to answer, or one already answered
  # Extra fields shift columns by an unknown amount: no text can be trusted then.
  texts = tuple("" if problem.reason == EXTRA_FIELDS else field(c) for c in spec.text_columns)
  return Row(line=line, id=row_id, texts=texts, label=None, other={})


class _RowProblem(Exception):
  """Internal: why one row is bad (becomes a DataError or a skip count)."""

  def __init__(self, reason: str, column: str | None, message: str):
    super().__init__(message)
    self.reason, self.column, self.message = reason, column, message


def _read_header(reader, path: str, spec: TableSpec) -> list[str]:
  try:
    header = next(reader)
  except StopIteration:
    raise DataError(path, 1, f"empty file; expected a header row with columns "
                    f"{list(spec.required_columns)}") from None
  except csv.Error as e:
    raise DataError(path, 1, f"header not readable as tab-separated text ({e})") from None
  header = [name.strip() for name in header]
  if any(_UNDECODABLE.search(name) for name in header):
    raise DataError(path, 1, "header has bytes that are not valid UTF-8")
  missing = [c for c in spec.required_columns if c not in header]
  if missing:
    raise DataError(path, reader.line_num, f"header lacks column(s) {missing}; found {header}. "
                    f"Is this the right file?")
  return header


def _parse_row(fields: Sequence[str], line: int, header: Sequence[str], column_index: dict[str, int],
               spec: TableSpec) -> Row:
  """A validated `Row`, or `_RowProblem`; the caller adds file and line to the message."""
  if len(fields) < len(header):
    absent = [c for c in spec.required_columns if column_index[c] >= len(fields)]
    if absent:
      raise _RowProblem(MISSING_COLUMN, absent[0],
                        f"row has {len(fields)} fields, header has {len(header)}: no value for {absent}")
  if len(fields) > len(header):
    raise _RowProblem(EXTRA_FIELDS, None, f"row has {len(fields)} fields, header has {len(header)} "
                      f"(a stray tab or an unbalanced quote?)")

  def value(column: str) -> str:
    index = column_index[column]
    text = fields[index].strip() if index < len(fields) else ""
    match = _UNDECODABLE.search(text)
    if match:
      raise _RowProblem(UNDECODABLE_BYTES, column,
                        f"bytes that are not valid UTF-8 at character {match.start()} "
                        f"(near {text[max(0, match.start() - 20):match.start()]!r})")
    return text

  row_id = value(spec.id_column)
  if not row_id:
    raise _RowProblem(EMPTY_ID, spec.id_column, "empty id")
  texts = []
  for column in spec.text_columns:
    text = value(column)
    if not text:
      raise _RowProblem(EMPTY_TEXT, column, "empty sentence")
    texts.append(text)
  label = None
  if spec.label is not None:
    label = _parse_label(value(spec.label.column), spec.label)
  other = {}
  for column, allowed in spec.category_columns:
    other[column] = value(column)
    if other[column] not in allowed:
      raise _RowProblem(UNKNOWN_CATEGORY, column, f"value {other[column]!r} is not one of {list(allowed)}")
  return Row(line=line, id=row_id, texts=tuple(texts), label=label, other=other)


def _parse_label(text: str, label: LabelSpec) -> int | float:
  expected = f"expected {label.describe()}"
  if not text:
    raise _RowProblem(BAD_LABEL, label.column, f"empty label; {expected}")
  try:
    number = float(text)
  except ValueError:
    raise _RowProblem(BAD_LABEL, label.column, f"label {text!r} is not a number; {expected}") from None
  if not math.isfinite(number):
    raise _RowProblem(BAD_LABEL, label.column, f"label {text!r} is not finite; {expected}")
  if label.integer and number != round(number):
    raise _RowProblem(BAD_LABEL, label.column, f"label {text!r} is not a whole number; {expected}")
  if not label.low <= number <= label.high:
    raise _RowProblem(LABEL_OUT_OF_RANGE, label.column, f"label {text!r} is out of range; {expected}")
  return int(number) if label.integer else number
