"""Pretrained BERT checkpoints: import them into Flax, export them back.

A checkpoint is named as `checkpoint_files.resolve_checkpoint` accepts it
("minilm-l6", a local Hugging Face directory, or a hub id); that module finds
the files, this one reads and writes the weights.

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

import json
import os
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from bert_jax.checkpoint_files import (CONFIG_FILE, DEFAULT_CHECKPOINT, TOKENIZER_CONFIG_FILE,
                                      VOCAB_FILE, WEIGHTS_FILES, CheckpointError, CheckpointFiles,
                                      resolve_checkpoint)
from bert_jax.config import BertConfig, ConfigError
from bert_jax.modeling import BertModel
from bert_jax.tokenizer import Tokenizer

# Checkpoint entries that are not BertModel parameters: pretraining heads
# (masked-LM and next-sentence prediction) and registered buffers.
IGNORED_KEY_PATTERN = re.compile(r"^cls\.|(^|\.)position_ids$|^embeddings\.token_type_ids$")


class LoadedCheckpoint(NamedTuple):
  config: BertConfig
  params: dict[str, Any]  # BertModel params, i.e. `model.apply({"params": params}, ...)`
  tokenizer: Tokenizer
  files: CheckpointFiles


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


def check_encoder_params(params: Mapping[str, Any], config: BertConfig, *, source: str,
                         prefix: str = "bert") -> None:
  """Raises CheckpointError naming every flax path (under `prefix`) where `params` do not fit BertModel(config)."""
  _checked_params(dict(params), config, None, source=source, key_name=lambda path: (f"{prefix}/{path}", False))


def _checked_params(params: dict[str, Any], config: BertConfig, allow_missing: Sequence[str] | None,
                    source: str, key_name: Callable[[str], tuple[str, bool]] | None = None) -> dict[str, Any]:
  """`params` if they fit BertModel(config), else one CheckpointError naming every problem.

  Problems name PyTorch keys (`key_name` maps a flax path to (name, transposed)),
  or flax paths when the params came from JAX. `allow_missing=None`: the caller
  has no such option (params already in memory), so the error does not suggest it.
  """
  key_of = key_name or _torch_key
  expected = expected_param_shapes(config)
  found = traverse_util.flatten_dict(params, sep="/")
  problems = []
  for path in sorted(found.keys() & expected.keys()):
    if found[path].shape != expected[path]:
      key, transpose = key_of(path)
      # Report both shapes in the checkpoint's own [out, in] layout.
      shape = lambda s: tuple(reversed(s)) if transpose and len(s) == 2 else tuple(s)
      problems.append(f"shape mismatch: {key} expected {shape(expected[path])}, "
                      f"found {shape(found[path].shape)}")
  missing = sorted(expected.keys() - found.keys())
  allowed = [p for p in missing if any(p == a or p.startswith(a.rstrip("/") + "/") for a in allow_missing or ())]
  missing = [p for p in missing if p not in allowed]
  if missing:
    problems.append("missing: " + ", ".join(key_of(p)[0] for p in missing))
  unexpected = sorted(found.keys() - expected.keys())
  if unexpected:
    problems.append("unexpected: " + ", ".join(key_of(p)[0] for p in unexpected))
  if problems:
    hint = (" (a checkpoint without a pooler loads with allow_missing=('pooler',))"
            if allow_missing is not None and missing and all(p.startswith("pooler/") for p in missing) else "")
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
