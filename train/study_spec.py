"""What a study is: rows of (preset, overrides, seeds), a budget every row shares, the report's numbers.

A study file `train/studies/<name>.py` defines `get_study() -> Study`. Each `Row`
is one line of a report's table: a preset from `train/configs/` (or a path to a
config file), the config overrides that turn it into the report's method, the
seeds to run it with, and the report's own numbers for that line, if it gave any.
`train/study.py` turns every (row, seed) into one `python -m train.main` run.

The budget is the study's, not the rows': every row trains for the same number of
epochs (or examples), so the table compares methods and not training lengths. A
row that is *about* training longer says so with `epochs_factor`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Any, Mapping

STUDIES_DIR = os.path.join(os.path.dirname(__file__), "studies")
CONFIGS_DIR = os.path.join(os.path.dirname(__file__), "configs")
REPORT_KEYS = ("overall", "sst", "para", "sts")  # the reports' columns: overall, SST acc, Para acc, STS r
# Set by the budget and the seed list; a row that set them would silently break "every row equally".
RESERVED_KEYS = ("num_epochs", "max_steps", "seed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class StudyError(ValueError):
  """A study file that cannot be run as written; the message names the file, row and field."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table.

  name: short id used for the run folders and for `--only` (letters, digits, _ . + -).
  title: the line as the report names it.
  preset: a file name in train/configs/ without .py, or a path to a config file.
  overrides: {dotted config key: value}, passed as --config.<key>=<value>.
  seeds: one run per seed (config.seed).
  report: the report's numbers {"overall", "sst", "para", "sts"}, or None where it gave none.
  epochs_factor: this row trains epochs_factor x the study's budget (a row about longer training).
  note: one line for RESULTS.md: how the row maps onto the report's method.
  """
  name: str
  title: str
  preset: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  seeds: tuple[int, ...] = (0,)
  report: Mapping[str, float] | None = None
  epochs_factor: float = 1.0
  note: str = ""


@dataclasses.dataclass(frozen=True)
class Budget:
  """How long every row trains: `num_epochs`, or a number of training examples (`max_train_examples`).

  An example budget becomes `max_steps = ceil(max_train_examples / batch_size)` per row,
  so presets with different batch sizes see the same number of examples. With the
  sequential schedule it cuts the *last* tasks (SST, then Para, then STS), so prefer
  epochs there.
  """
  num_epochs: int = 2
  max_train_examples: int = 0  # > 0: also stop each row after this many training examples


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  title: str
  rows: tuple[Row, ...]
  budget: Budget = Budget()
  source: str = ""  # which report, and what its numbers were measured on
  report_label: str = "report"  # column header for the report's numbers
  common_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # applied to every row
  notes: tuple[str, ...] = ()  # paragraphs for RESULTS.md

  def row(self, name: str) -> Row:
    for row in self.rows:
      if row.name == name:
        return row
    raise KeyError(name)


def preset_path(preset: str) -> str:
  """The config file a preset name (or path) stands for."""
  if preset.endswith(".py"):
    return preset
  return os.path.join(CONFIGS_DIR, f"{preset}.py")


def validate(study: Study, where: str) -> Study:
  """Checks what can be checked without building configs; errors name `where`, the row and the field."""
  if not isinstance(study, Study):
    raise StudyError(f"{where}: get_study() returned {type(study).__name__}; expected train.study_spec.Study")
  if not study.rows:
    raise StudyError(f"{where}: study {study.name!r} has no rows")
  seen = set()
  for row in study.rows:
    label = f"{where}: row {row.name!r}"
    if not _NAME.match(row.name):
      raise StudyError(f"{label}: name must be letters, digits, '_', '.', '+' or '-' (it names a folder)")
    if row.name in seen:
      raise StudyError(f"{label}: a second row has this name")
    seen.add(row.name)
    if not os.path.isfile(preset_path(row.preset)):
      raise StudyError(f"{label}: preset {row.preset!r} is not a file ({preset_path(row.preset)})")
    if not row.seeds or len(set(row.seeds)) != len(row.seeds) or not all(
        isinstance(s, int) and s >= 0 for s in row.seeds):
      raise StudyError(f"{label}: seeds={row.seeds!r}; expected distinct non-negative ints")
    for key in list(row.overrides) + list(study.common_overrides):
      if key in RESERVED_KEYS:
        raise StudyError(f"{label}: overrides set {key!r}, which the study sets for every row "
                         f"(budget: num_epochs / max_train_examples; seeds: Row.seeds; longer: epochs_factor)")
    if row.report is not None and set(row.report) != set(REPORT_KEYS):
      raise StudyError(f"{label}: report={dict(row.report)!r}; expected exactly the keys {REPORT_KEYS}")
    if not row.epochs_factor > 0:
      raise StudyError(f"{label}: epochs_factor={row.epochs_factor}; expected > 0")
  if study.budget.num_epochs < 1:
    raise StudyError(f"{where}: budget.num_epochs={study.budget.num_epochs}; expected >= 1")
  return study


def load_study(name_or_path: str) -> tuple[Study, str]:
  """`get_study()` of train/studies/<name>.py, or of a file path; returns the study and its file."""
  path = name_or_path if name_or_path.endswith(".py") else os.path.join(STUDIES_DIR, f"{name_or_path}.py")
  if not os.path.isfile(path):
    known = sorted(f[:-3] for f in os.listdir(STUDIES_DIR) if f.endswith(".py") and f != "__init__.py")
    raise StudyError(f"no study file {path}; studies in train/studies/: {', '.join(known)}")
  spec = importlib.util.spec_from_file_location(f"study_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_study"):
    raise StudyError(f"{path}: defines no get_study()")
  return validate(module.get_study(), path), os.path.abspath(path)
