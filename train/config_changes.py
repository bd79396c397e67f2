"""What a resumed run may change in its config, and the record of what it did change.

Every checkpoint stores the config that trained up to it (train/checkpointing.py's
JSON progress item). A resume compares the current config with it field by field:

* `FREE_FIELDS` change how a run is logged, checkpointed, cached or evaluated in
  batches, not what it computes, and may differ freely.
* `CONTINUATION_FIELDS` (the epoch counts) may be *raised*: the run then continues
  with more epochs, and the learning rate gets a new schedule segment over the added
  steps (train/train.py `segmented_schedule`): the steps already taken keep the
  schedule they were trained with, so the record of them stays true. Lowering one is
  refused: trained steps cannot be taken back.
* Any other difference is refused, listing every differing field as `old -> new`,
  unless the field is named in `config.resume_with_changes`, e.g.
  `--config.resume_with_changes='("optim.learning_rate",)'`: then the run continues under
  the new value from the resumed step on, and the change is recorded in the history
  that `results.json` reports (`config_history`).

A new field that the saved config lacks counts as unchanged when it holds its
default (train/configs/base.py): the code that wrote the checkpoint behaved so.
A field renamed or moved since is read in its new place first (`upgrade_saved_config`),
so a workdir written under the old name resumes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import ml_collections

# Fields that cannot change what a run computes: how often it logs, measures gradient
# statistics and checkpoints, where caches live, and how many dev examples share one forward
# pass (evaluation batches are padded or packed; every example's prediction is its own).
# `name` is the preset's label (the default workdir, the model card): the same fields under
# another preset's name, e.g. the base preset with the default's changes, are the same run.
# Parallelism settings are not here: pmap and jit agree only to float rounding, and the device
# count sets the per-task batch split.
FREE_FIELDS = frozenset({
    "log_every_steps", "checkpoint_every_steps", "gradient_stats_every_steps", "eval_batch_size",
    "compilation_cache_dir", "data.tfds_dir", "data.cache_dir", "resume_with_changes", "name",
})
# Raising one continues a finished (or running) stage with more epochs.
CONTINUATION_FIELDS = frozenset({"num_epochs", "frozen_stage.epochs_per_task"})
_ABSENT = "(absent)"


class ConfigChangedError(ValueError):
  """The resumed run's config differs from the checkpoint's in fields not allowed to change."""


def config_as_json(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON data (tuples become lists), as stored in checkpoints."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"optim": {"learning_rate": 1e-3}} -> {"optim.learning_rate": 1e-3}."""
  if not isinstance(tree, Mapping) or not tree:
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return flat


def upgrade_saved_config(saved: Mapping) -> dict:
  """A saved config in today's layout, holding what the run that saved it trained with.

  * `schedule` (the task order) is `task_schedule`: it shared its name with the
    learning rate's `optim.schedule`.
  * `frozen_stage.learning_rate` became the section `frozen_stage.optim`. A run with the
    frozen stage enabled trained it with the saved `optim`, that learning rate, a constant
    schedule without warmup and the encoder frozen, which is what the section gets. A run
    with it disabled never used it: the section is left out, and counts as its default.
  """
  upgraded = copy.deepcopy(dict(saved))
  if "schedule" in upgraded and "task_schedule" not in upgraded:
    upgraded["task_schedule"] = upgraded.pop("schedule")
  frozen = upgraded.get("frozen_stage")
  if isinstance(frozen, Mapping) and "learning_rate" in frozen and "optim" not in frozen:
    frozen = dict(frozen)
    learning_rate = frozen.pop("learning_rate")
    if frozen.get("enabled") and isinstance(upgraded.get("optim"), Mapping):
      frozen["optim"] = dict(upgraded["optim"], learning_rate=learning_rate, schedule="constant",
                             warmup_steps=0, freeze=["^bert/"])
    upgraded["frozen_stage"] = frozen
  return upgraded


def _same(a: Any, b: Any) -> bool:
  # Through JSON text, so that NaN equals NaN and (1, 2) equals [1, 2].
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def differences(saved: Mapping, current: Mapping, defaults: Mapping | None = None) -> dict[str, tuple]:
  """{field: (saved value, current value)} for every field that differs, free fields included."""
  saved_flat, current_flat = flatten(saved), flatten(current)
  default_flat = flatten(defaults) if defaults else {}
  changed = {}
  for key in sorted(set(saved_flat) | set(current_flat)):
    old, new = saved_flat.get(key, _ABSENT), current_flat.get(key, _ABSENT)
    if old == _ABSENT and key in default_flat and _same(new, default_flat[key]):
      continue
    if not _same(old, new):
      changed[key] = (old, new)
  return changed


def _shown(value: Any) -> str:
  return value if value == _ABSENT else json.dumps(value)


def check_resume(saved: Mapping, config: ml_collections.ConfigDict, *, stage: str, step: int,
                 where: str, defaults: Mapping | None = None) -> dict[str, tuple]:
  """The accepted changes {field: (old, new)} of a resume; raises ConfigChangedError on refused ones.

  Args:
    saved: the config stored with the checkpoint (JSON data).
    config: the config of this start.
    stage, step, where: named in the messages (stage name, checkpoint step, its directory).
    defaults: the default config as JSON data, for fields the saved config lacks.
  """
  allowed = config.get("resume_with_changes", ()) or ()
  if isinstance(allowed, str):
    allowed = (allowed,)
  current = config_as_json(config)
  known = set(flatten(current))
  unknown = [name for name in allowed if name not in known]
  if unknown:
    raise ConfigChangedError(f"resume_with_changes names {unknown}, which are not config fields; "
                             f"expected dotted names such as 'optim.learning_rate'")
  changed = {k: v for k, v in differences(upgrade_saved_config(saved), current, defaults).items()
             if k not in FREE_FIELDS}
  refused, lowered = [], []
  for key, (old, new) in changed.items():
    if key in CONTINUATION_FIELDS and isinstance(old, int) and isinstance(new, int):
      if new < old:
        lowered.append(f"{key}: {old} -> {new}")
      continue
    if key not in allowed:
      refused.append(f"{key}: {_shown(old)} -> {_shown(new)}")
  if lowered:
    raise ConfigChangedError(
        f"{stage}: the checkpoint at step {step} in {where} was trained for more epochs than this config "
        f"asks ({'; '.join(lowered)}); trained steps cannot be taken back. Keep the epoch count, or "
        f"start a new run from this one's params with --config.init_from=<this workdir> and a new --workdir.")
  if refused:
    names = ", ".join(f'"{line.split(":")[0]}"' for line in refused)
    raise ConfigChangedError(
        f"{stage}: the config differs from the one that trained the checkpoint at step {step} in {where}, "
        f"in {len(refused)} field(s):\n  " + "\n  ".join(refused) +
        f"\nResuming would mix two runs. Use a new --workdir (or --config.init_from=<this workdir> "
        f"to start from its params), or continue this run under the new values on purpose with "
        f"--config.resume_with_changes='({names},)'.")
  return changed
