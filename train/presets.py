"""`--config=<preset name>`: the presets of train/configs/ by name, from any directory.

ml_collections' `DEFINE_config_file` takes a path, read relative to the working
directory, so `--config=train/configs/cross.py` works only from the repository root.
The presets ship inside the package (train/configs/*.py, also when pip-installed);
`resolve_config_argv` rewrites a bare name such as `--config=cross` to that file before
absl parses the flags. Existing files, and `file.py:argument` config strings, stay as
they are; so does every `--config.x=y` override.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

from train import configs

CONFIG_DIR = pathlib.Path(configs.__file__).resolve().parent


def preset_names() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def resolve_config_value(value: str) -> str:
  """The config file for a `--config` value: the value itself when it names a file, else a preset's file.

  `train/configs/<preset>.py` given outside the repository (the presets' docstrings show
  that form) resolves to the packaged preset of that name too.

  Raises:
    ValueError: naming the value, where it was looked for, and the preset names.
  """
  path, colon, argument = value.partition(":")
  if os.path.isfile(path):
    return value
  candidate = pathlib.PurePath(path)
  name = None
  if len(candidate.parts) == 1 and candidate.suffix == "":
    name = path
  elif candidate.suffix == ".py" and candidate.parent.parts[-2:] == ("train", "configs"):
    name = candidate.stem
  if name in preset_names():
    return str(CONFIG_DIR / f"{name}.py") + colon + argument
  raise ValueError(
      f"--config={value}: {path!r} is neither a file (looked in {os.getcwd()}) nor a preset "
      f"name; the presets are: {', '.join(preset_names())}")


def resolve_config_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """`argv` with the value of `--<flag>=V` (or `--<flag> V`) replaced by `resolve_config_value(V)`."""
  resolved = list(argv)
  for i in range(1, len(resolved)):
    arg = resolved[i]
    if arg == "--":  # absl: what follows is positional
      break
    match = re.fullmatch(rf"--?{flag}=(.*)", arg, flags=re.DOTALL)
    if match:
      resolved[i] = f"--{flag}={resolve_config_value(match[1])}"
    elif arg in (f"--{flag}", f"-{flag}") and i + 1 < len(resolved):
      resolved[i + 1] = resolve_config_value(resolved[i + 1])
  return resolved
