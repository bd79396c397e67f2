"""The ways input data can be wrong: a bad row, a file that is not there, a data root that is not there.

They subclass `ValueError`/`FileNotFoundError` so generic handlers still work,
and each carries enough in its message for a user to fix the problem without
reading our code: the file, the 1-based line (as an editor shows it), the
column, what was expected, and how to skip or fetch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class DataError(ValueError):
  """A malformed input row or header: `<file>:<line>: column '<c>': <problem>`."""

  def __init__(self, path: str | os.PathLike, line: int, problem: str, column: str | None = None,
               hint: str | None = None):
    self.path = os.fspath(path)
    self.line = line
    self.column = column
    self.problem = problem
    where = f"{self.path}:{line}"
    what = f"column {column!r}: {problem}" if column is not None else problem
    message = f"{where}: {what}"
    if hint:
      message += f"\n  {hint}"
    super().__init__(message)


class MissingDataFileError(FileNotFoundError):
  """A source file found in none of the places we look, and not downloadable."""

  def __init__(self, filename: str, looked_in: Sequence[str], url: str | None,
               download_error: str | None = None):
    # Not `self.filename`: setting OSError's own attribute changes how it prints.
    self.missing_file = filename
    self.looked_in = list(looked_in)
    self.url = url
    lines = [f"data file {filename!r} not found. Looked in:"]
    lines += [f"  - {place}" for place in looked_in] or ["  (no local directory given)"]
    if url:
      lines.append(f"Download it from {url}")
      if download_error:
        lines.append(f"  (automatic download failed: {download_error})")
    lines.append("and put it in one of those directories, or point BERT_JAX_DATA (or --data_root) "
                 "at a directory holding cs224n/ and extra/.")
    super().__init__("\n".join(lines))


class MissingDataRootError(FileNotFoundError):
  """An explicitly named data root (config.data.data_root, --data_root) that is not a directory."""

  def __init__(self, data_root: str | os.PathLike):
    self.data_root = os.fspath(data_root)
    super().__init__(f"data root {self.data_root} does not exist or is not a directory; expected a "
                     "directory holding cs224n/ (and extra/ for SICK). Fix config.data.data_root "
                     "(--data_root), or leave it empty to use $BERT_JAX_DATA or ../shared/data.")
