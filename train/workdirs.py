"""The default workdir of a run, one per preset and set of `--config.*` overrides, and what it holds.

A run resumes from whatever its workdir holds. With one default workdir per preset,
`--config=cross --config.optim.learning_rate=3e-5` followed by the same command with
another learning rate would land in the first run's workdir and resume it (or be refused
there, train/config_changes.py), instead of starting the run it asks for. So the default is `workdirs/<name>` without overrides, and
`workdirs/<name>-<overrides>` with them: `workdirs/cross-optim.learning_rate=3e-05`,
readable while the overrides are short and made of plain characters; otherwise a
shortened, sanitised form plus a hash of the exact overrides, so that two different
sets never share a directory.

A resume whose config differs from its checkpoints' is checked field by field by
train/config_changes.py; here only the workdir is chosen and the resume explained.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from train import storage

DEFAULT_ROOT = "workdirs"
_PLAIN = re.compile(r"[A-Za-z0-9._+=-]+")
_MAX_READABLE = 80
_SHORTENED = 48


def _value_text(value: Any) -> str:
  return repr(value) if isinstance(value, float) else str(value)


def default_workdir(name: str, overrides: Mapping[str, Any], root: str = DEFAULT_ROOT) -> str:
  """`root/name`, or `root/name-<overrides>` when any field was overridden.

  Args:
    name: the config's `name` (the preset's name).
    overrides: dotted field -> value, as given by `--config.<field>=<value>`
      (ml_collections' `config_flags.get_override_values`). An override of `name`
      itself only renames the run: it is the prefix already.
    root: where the default workdirs live.
  """
  items = sorted((key, value) for key, value in overrides.items() if key != "name")
  if not items:
    return os.path.join(root, name)
  readable = "+".join(f"{key}={_value_text(value)}" for key, value in items)
  if len(readable) <= _MAX_READABLE and _PLAIN.fullmatch(readable):
    return os.path.join(root, f"{name}-{readable}")
  exact = json.dumps([[key, repr(value)] for key, value in items])
  digest = hashlib.sha256(exact.encode()).hexdigest()[:10]
  shortened = re.sub(r"[^A-Za-z0-9._+=-]+", "_", readable)[:_SHORTENED].strip("_")
  return os.path.join(root, f"{name}-{shortened}-{digest}")


def checkpointed_stages(workdir: str) -> list[str]:
  """The stages under `workdir/checkpoints/` that hold at least one finished step."""
  root = storage.as_path(workdir) / "checkpoints"
  if not root.is_dir():
    return []
  return sorted(stage.name for stage in root.iterdir()
                if stage.is_dir() and any(step.name.isdigit() for step in stage.iterdir()))


def describe_workdir(workdir: str, config: ml_collections.ConfigDict, *, chosen_by_default: bool,
                     overrides: Mapping[str, Any]) -> list[str]:
  """Lines telling the user which workdir the run uses and, when it resumes one, why."""
  if chosen_by_default:
    given = " ".join(f"--config.{k}={_value_text(v)}" for k, v in sorted(overrides.items()))
    lines = [f"workdir: {workdir} (the default for preset {config.name!r} with "
             + (f"{given}" if given else "no overrides") + "; --workdir picks another)"]
  else:
    lines = [f"workdir: {workdir}"]
  stages = checkpointed_stages(workdir)
  if stages:
    reason = ("it is the default workdir of this preset with these same overrides" if chosen_by_default
              else "--workdir names it")
    lines.append(f"resuming: {workdir} holds checkpoints ({', '.join(stages)}) of an earlier run, and {reason}; "
                 f"pass a new --workdir to start afresh")
  return lines
