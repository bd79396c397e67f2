"""Every field of a training config, checked before any work starts.

A bad value found late costs minutes of data preparation and compilation, and
then surfaces far from its cause: `num_epochs=0` as an IndexError,
`log_every_steps=0` as a ZeroDivisionError, `dtype="float16"` inside XLA, and
`learning_rate=-1` or a negative loss weight not at all. `validate(config)`
checks the whole config at once and raises one `ConfigError` that lists every
bad field with its value and what is allowed.

A rule is one line of `RULES`: a dotted field path and a check built from the
small checkers below, e.g. `"num_epochs": integer(min=1)`. Choices come from
the registries that define them (heads.PAIR_HEADS, optim.SCHEDULES, ...), so a
new head or schedule is valid here as soon as it is registered there. Rules
that relate several fields are functions in `CROSS_FIELD_RULES`.

A field without a rule is not an error (a section another part of the trainer
has just added must not stop a run); `unchecked_fields` lists them, and the
tests require a rule for every field of train/configs/base.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import ml_collections

from bert_jax import heads, losses as losses_lib, multitask, tasks
from data_prep import pipeline, sampler
from train import data as task_data
from train import metrics, optim, parallel
from train.conflicts import pcgrad
from train.conflicts import registry as conflicts_registry

# Compute dtypes the model runs in (parameters stay float32). float16 has no loss
# scaling here: its gradients underflow, and XLA:CPU lacks some of its kernels.
COMPUTE_DTYPES = ("float32", "bfloat16")
# What `best_metric` may name: a task's dev score or one of the overall scores.
SCORE_NAMES = (*metrics.TASK_METRIC.values(), "overall_mean", "overall_cs224n")

# A check returns None for a good value, else what was expected ("an integer >= 1").
Check = Callable[[Any], "str | None"]


@dataclasses.dataclass(frozen=True)
class Problem:
  field: str
  value: Any
  expected: str

  def __str__(self) -> str:
    return f"config.{self.field}={self.value!r}: expected {self.expected}"


class ConfigError(ValueError):
  """One or more config fields are bad; `problems` lists each of them."""

  def __init__(self, problems: Iterable[Problem]):
    self.problems = list(problems)
    lines = [f"{len(self.problems)} bad config field(s):"] + [f"  {p}" for p in self.problems]
    super().__init__("\n".join(lines))


# ---- checkers -------------------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bounds(min: float | None, max: float | None, min_open: bool, max_open: bool) -> str:
  parts = []
  if min is not None:
    parts.append(f"> {min:g}" if min_open else f">= {min:g}")
  if max is not None:
    parts.append(f"< {max:g}" if max_open else f"<= {max:g}")
  return " and ".join(parts)


def _in_bounds(value: float, min, max, min_open, max_open) -> bool:
  if min is not None and (value <= min if min_open else value < min):
    return False
  return max is None or (value < max if max_open else value <= max)


def integer(min: int | None = None, max: int | None = None) -> Check:
  expected = " ".join(filter(None, ["an integer", _bounds(min, max, False, False)]))
  return lambda v: None if (isinstance(v, int) and not isinstance(v, bool)
                            and _in_bounds(v, min, max, False, False)) else expected


def number(min: float | None = None, max: float | None = None, *, min_open: bool = False,
           max_open: bool = False) -> Check:
  expected = " ".join(filter(None, ["a finite number", _bounds(min, max, min_open, max_open)]))
  return lambda v: None if (_is_number(v) and math.isfinite(v)
                            and _in_bounds(v, min, max, min_open, max_open)) else expected


def boolean() -> Check:
  return lambda v: None if isinstance(v, bool) else "True or False"


def text(nonempty: bool = False) -> Check:
  expected = "a non-empty string" if nonempty else "a string"
  return lambda v: None if isinstance(v, str) and (v or not nonempty) else expected


def one_of(choices: Collection) -> Check:
  return lambda v: None if isinstance(v, str) and v in choices else f"one of {list(choices)}"


def subset_of(choices: Collection) -> Check:
  """A tuple of names among `choices` (a single name is accepted as a 1-tuple)."""
  def check(value):
    names = (value,) if isinstance(value, str) else value
    if isinstance(names, (tuple, list)) and all(isinstance(n, str) and n in choices for n in names):
      return None
    return f"a tuple of names among {list(choices)}"
  return check


def regexes() -> Check:
  def check(value):
    if not isinstance(value, (tuple, list)) or not all(isinstance(r, str) for r in value):
      return "a tuple of regular expressions (strings)"
    for pattern in value:
      try:
        re.compile(pattern)
      except re.error as error:
        return f"valid regular expressions; {pattern!r}: {error}"
    return None
  return check


def lengths() -> Check:
  def check(value):
    if isinstance(value, (tuple, list)) and value and all(integer(min=1)(n) is None for n in value):
      return None
    return "a non-empty tuple of positive integers"
  return check


def names() -> Check:
  return lambda v: None if isinstance(v, (tuple, list)) and all(isinstance(n, str) and n for n in v) \
      else "a tuple of non-empty strings"


def like(default: Any) -> Check:
  """A value of the same kind as a registered default (for options whose ranges their owner checks)."""
  if isinstance(default, bool):
    return boolean()
  if isinstance(default, int):
    return integer()
  if isinstance(default, float):
    return number()
  return text(nonempty=True)


def directory_or_empty() -> Check:
  """"" (use the defaults), or an existing directory: a typo must not train on other data."""
  def check(value):
    if not isinstance(value, str):
      return "a string"
    if value and not os.path.isdir(os.path.expanduser(value)):
      return "an existing directory, or '' for the default (the directory does not exist)"
    return None
  return check


# ---- the rules ------------------------------------------------------------------------------------

# An optimizer section: config.optim, and config.frozen_stage.optim (the frozen stage's own).
OPTIM_RULES: dict[str, Check] = {
    "learning_rate": number(min=0, min_open=True),
    "schedule": one_of(optim.SCHEDULES),  # the learning rate's; the task order is task_schedule
    "warmup_steps": integer(),  # < 0: warmup_fraction of all steps
    "warmup_fraction": number(min=0, max=1),
    "end_learning_rate_fraction": number(min=0, max=1),
    "b1": number(min=0, max=1, max_open=True),
    "b2": number(min=0, max=1, max_open=True),
    "eps": number(min=0, min_open=True),
    "weight_decay": number(min=0),
    "clip_norm": number(),  # <= 0: no clipping
    "layer_decay": number(min=0, max=1, min_open=True),
    "head_learning_rate_multiplier": number(min=0, min_open=True),
    "ema_decay": number(min=0, max=1, max_open=True),  # 0: no average
    "freeze": regexes(),
}

RULES: dict[str, Check] = {
    "name": text(nonempty=True),
    "seed": integer(),
    "checkpoint": text(nonempty=True),
    "init_from": directory_or_empty(),  # a trained workdir or model bundle
    "dtype": one_of(COMPUTE_DTYPES),
    "data.data_root": directory_or_empty(),
    "data.tfds_dir": text(),
    "data.cache_dir": text(),
    "data.max_length": integer(min=2),
    "data.num_buckets": integer(min=1),
    "data.packing": boolean(),
    "data.pack_lengths": lengths(),
    "data.pack_row_multiple": integer(min=1),
    "data.quora_split": one_of(pipeline.QUORA_SPLITS),
    "data.extra_sst": one_of(task_data.EXTRA_SST),
    "data.extra_sts": one_of(task_data.EXTRA_STS),
    "data.sst_fraction": number(min=0),
    "data.para_fraction": number(min=0),
    "data.sts_fraction": number(min=0),
    "data.skip_bad_rows": boolean(),
    "data.detokenize_ptb": boolean(),
    "model.sentiment_pooling": one_of(multitask.POOLINGS),
    "model.pair_pooling": one_of(multitask.POOLINGS),
    "model.paraphrase_head": one_of(heads.PAIR_HEADS),
    "model.similarity_head": one_of(heads.PAIR_HEADS),
    "model.share_para_sts": boolean(),
    "model.head_dropout": number(min=0, max=1, max_open=True),
    "model.head_hidden_dim": integer(min=0),
    "model.head_dropout_samples": integer(min=1),
    "task_schedule": one_of(sampler.TASK_SCHEDULES),
    "proportions": one_of(sampler.PROPORTIONS),
    "batch_size": integer(min=1),
    "eval_batch_size": integer(min=1),
    "num_epochs": integer(min=1),
    "max_steps": integer(),  # <= 0: no limit
    "loss_weights.sst": number(min=0),
    "loss_weights.para": number(min=0),
    "loss_weights.sts": number(min=0),
    "rdrop_alpha.sst": number(min=0),
    "rdrop_alpha.para": number(min=0),
    "rdrop_alpha.sts": number(min=0),
    "smart.weight.sst": number(min=0),
    "smart.weight.para": number(min=0),
    "smart.weight.sts": number(min=0),
    "smart.noise_std": number(min=0),
    "smart.step_size": number(min=0),
    "smart.epsilon": number(min=0, min_open=True),
    "smart.num_steps": integer(min=1),
    "similarity_loss": one_of(losses_lib.SIMILARITY_LOSSES),
    "best_metric": one_of(SCORE_NAMES),
    **{f"optim.{field}": check for field, check in OPTIM_RULES.items()},
    "pcgrad.enabled": boolean(),
    "pcgrad.tasks": subset_of(tasks.TASKS),
    "pcgrad.reduction": one_of(pcgrad.REDUCTIONS),
    "frozen_stage.enabled": boolean(),
    "frozen_stage.epochs_per_task": integer(min=1),
    **{f"frozen_stage.optim.{field}": check for field, check in OPTIM_RULES.items()},
    "parallel.mode": one_of(parallel.MODES),
    "parallel.num_devices": integer(min=0),  # 0: every local device
    "log_every_steps": integer(min=1),
    "gradient_stats_every_steps": integer(min=0),
    "checkpoint_every_steps": integer(min=1),
    "eval_every_epochs": integer(min=1),
    "compilation_cache_dir": text(),
    "resume_with_changes": names(),  # dotted field names; train/config_changes.py checks they exist
    "conflicts.method": one_of(conflicts_registry.METHOD_NAMES),
    # conflicts.<method>.<option>: of its registered default's kind.
    **{f"conflicts.{name}.{option}": like(value) for name, method in conflicts_registry.METHODS.items()
       for option, value in method.options.items()},
}


def _get(config: Any, path: str) -> tuple[bool, Any]:
  """(found, value) of a dotted field path."""
  node = config
  for key in path.split("."):
    if not isinstance(node, (Mapping, ml_collections.ConfigDict)) or key not in node:
      return False, None
    node = node[key]
  return True, node


def _per_task_fields(config) -> Iterable[Problem]:
  for field in ("loss_weights", "rdrop_alpha", "smart.weight"):
    found, per_task = _get(config, field)
    unknown = sorted(set(per_task.keys()) - set(tasks.TASKS)) if found else []
    if unknown:
      yield Problem(field, dict(per_task), f"values only for the tasks {list(tasks.TASKS)}; "
                    f"{unknown} would be ignored")
  for task in tasks.TASKS:
    _, alpha = _get(config, f"rdrop_alpha.{task}")
    _, weight = _get(config, f"smart.weight.{task}")
    if all(_is_number(v) and v > 0 for v in (alpha, weight)):
      yield Problem(f"smart.weight.{task}", weight, f"0 while rdrop_alpha.{task}={alpha} is on "
                    "(R-Drop and SMART do not combine on one task)")
  _, samples = _get(config, "model.head_dropout_samples")
  if isinstance(samples, int) and samples > 1:
    for field in ("rdrop_alpha", "smart.weight"):
      for task in tasks.TASKS:
        _, value = _get(config, f"{field}.{task}")
        if _is_number(value) and value > 0:
          yield Problem(f"{field}.{task}", value, f"0 while model.head_dropout_samples={samples} "
                        "(multi-sample dropout does not combine with R-Drop or SMART)")
  found, weights = _get(config, "loss_weights")
  if found:
    values = [v for v in weights.values() if _is_number(v)]
    if values and len(values) == len(weights) and not any(values):
      yield Problem("loss_weights", dict(weights), "at least one task with a weight > 0")


def _packing_holds_max_length(config) -> Iterable[Problem]:
  found_packing, packing = _get(config, "data.packing")
  found_lengths, pack_lengths = _get(config, "data.pack_lengths")
  _, max_length = _get(config, "data.max_length")
  if (found_packing and packing is True and found_lengths and lengths()(pack_lengths) is None
      and isinstance(max_length, int) and max(pack_lengths) < max_length):
    yield Problem("data.pack_lengths", tuple(pack_lengths),
                  f"a length >= data.max_length={max_length}, so the longest sequence fits a row")


def _shared_pair_heads(config) -> Iterable[Problem]:
  _, share = _get(config, "model.share_para_sts")
  _, para = _get(config, "model.paraphrase_head")
  _, sts = _get(config, "model.similarity_head")
  if share is not True or para not in heads.PAIR_HEADS or sts not in heads.PAIR_HEADS:
    return
  if para != sts:
    yield Problem("model.share_para_sts", True, f"the same paraphrase_head and similarity_head "
                  f"(got {para!r} and {sts!r}), or False")
  elif para not in heads.shareable_pair_heads():
    yield Problem("model.share_para_sts", True, f"a pair head with a layer to share "
                  f"({list(heads.shareable_pair_heads())}), or False")


def _one_conflict_method(config) -> Iterable[Problem]:
  found, method = _get(config, "conflicts.method")
  if found and method in conflicts_registry.METHOD_NAMES:
    try:
      conflicts_registry.resolve_method(config)
    except ValueError as error:
      yield Problem("conflicts.method", method, f"a method that agrees with pcgrad.enabled ({error})")


CROSS_FIELD_RULES: list[Callable[[Any], Iterable[Problem]]] = [
    _per_task_fields,
    _one_conflict_method,
    _packing_holds_max_length,
    _shared_pair_heads,
]


# ---- entry points ---------------------------------------------------------------------------------

def problems(config: ml_collections.ConfigDict) -> list[Problem]:
  """Every bad field of `config`, in `RULES` order, then the cross-field problems."""
  found_problems = []
  for path, check in RULES.items():
    found, value = _get(config, path)
    if not found:
      continue  # a config built by hand may leave out optional fields (init_from, best_metric)
    expected = check(value)
    if expected is not None:
      found_problems.append(Problem(path, value, expected))
  bad_fields = {p.field for p in found_problems}
  for rule in CROSS_FIELD_RULES:
    found_problems += [p for p in rule(config) if p.field not in bad_fields]
  return found_problems


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError listing every bad field; returns None when the config is fine."""
  found = problems(config)
  if found:
    raise ConfigError(found)


def leaf_fields(config: Any, prefix: str = "") -> list[str]:
  """Dotted paths of every non-section field of `config`."""
  paths = []
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      paths += leaf_fields(value, f"{path}.")
    else:
      paths.append(path)
  return paths


def unchecked_fields(config: ml_collections.ConfigDict) -> list[str]:
  """The fields of `config` that no rule covers."""
  return [path for path in leaf_fields(config) if path not in RULES]
