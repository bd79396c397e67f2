"""A trained multitask model as one directory, and the model you get back from it.

Every training run ends by writing its best parameters as a bundle to
`<workdir>/model/`; `bert_jax.load_model(path)` turns it back into a model that
predicts, with nothing from `train/` or `data_prep/` and no training config:

  model = bert_jax.load_model("workdirs/default")       # or ".../default/model"
  model.predict_sst(["A quiet triumph."])                # [N] int32 classes 0..4
  model.sst_probabilities(["A quiet triumph."])          # [N, 5] float32
  model.paraphrase([("How do I cook?", "How to cook?")])  # [N] float32 P(paraphrase)
  model.similarity([("A man sings.", "A man is singing.")])  # [N] float32 in [0, 5]

A bundle directory holds:

  bundle.json          format name and version; the MultitaskBert settings (heads,
                       pooling, dtype, ...); the encoder's BertConfig; the tokenizer's
                       lowercase and PTB-detokenization flags and max_length; dev scores, data provenance
                       (e.g. the quora split), the base checkpoint name, and how the
                       run evaluated and was configured, for tools that reproduce it.
  params.safetensors   every parameter, encoder and heads, as float32 arrays under
                       their '/'-joined Flax paths ("bert/encoder/layer/0/...",
                       "sentiment/output/kernel"): safetensors, so no pickle is read.
  vocab.txt            the tokenizer vocabulary, copied, so the bundle is self-contained.

Anything wrong with a bundle (a missing file, a truncated weights file, another
format or version, missing settings, parameters that do not fit the settings)
raises one `BundleError` that names the file and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from bert_jax import heads, losses as losses_lib, multitask
from bert_jax.checkpoints import VOCAB_FILE, CheckpointError, read_state_dict
from bert_jax.config import BertConfig, ConfigError
from bert_jax.tokenizer import Tokenizer

FORMAT_NAME = "bert_jax.multitask_bundle"
FORMAT_VERSION = 1  # bump when the layout changes; readers refuse versions they do not know
BUNDLE_FILE = "bundle.json"
PARAMS_FILE = "params.safetensors"
BUNDLE_SUBDIR = "model"  # where a training run (and `train.export`) puts the bundle

# MultitaskBert fields a bundle records. The architecture settings decide what the
# parameters mean; dtype (compute precision) and head_dropout (training only) do not.
ARCHITECTURE_SETTINGS = ("sentiment_pooling", "pair_pooling", "paraphrase_head", "similarity_head",
                         "share_para_sts", "head_hidden_dim", "num_sentiment_classes")
MODEL_SETTINGS = ARCHITECTURE_SETTINGS + ("dtype", "head_dropout")
REQUIRED_KEYS = ("format", "version", "model", "bert_config", "tokenizer", "max_length")

# Lengths the library pads batches to (capped at the bundle's max_length), and the
# most rows per call: together they bound the number of shapes each task compiles.
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
DEFAULT_BATCH_SIZE = 32


class BundleError(CheckpointError):
  """A model bundle that is missing, incomplete, of another format, or inconsistent."""


def model_settings(model: multitask.MultitaskBert) -> dict[str, Any]:
  """The bundle's record of a MultitaskBert: its fields, dtype as a name ("float32")."""
  settings = {name: getattr(model, name) for name in MODEL_SETTINGS}
  settings["dtype"] = jnp.dtype(model.dtype).name
  return settings


def build_model(bert_config: BertConfig, settings: Mapping[str, Any]) -> multitask.MultitaskBert:
  """The MultitaskBert that `settings` (from `model_settings`) describe."""
  values = dict(settings)
  values["dtype"] = jnp.dtype(values["dtype"])
  return multitask.MultitaskBert(config=bert_config, **values)


def settings_differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any],
                         names: Sequence[str] = ARCHITECTURE_SETTINGS) -> list[str]:
  """'name: recorded -> wanted' for each of `names` where the two disagree."""
  return [f"{name}: {recorded.get(name)!r} (bundle) vs {wanted.get(name)!r}"
          for name in names if recorded.get(name) != wanted.get(name)]


def expected_param_shapes(model: multitask.MultitaskBert) -> dict[str, tuple[int, ...]]:
  """{'/'-path: shape} of every parameter of `model`, computed without allocating them."""
  shapes = jax.eval_shape(lambda rng: multitask.init_params(model, rng), jax.random.key(0))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes, sep="/").items()}


def _host_float32(array: Any) -> np.ndarray:
  # A replicated global array of a multi-host run is not fully addressable; any one
  # local copy holds all of it.
  if isinstance(array, jax.Array) and not array.is_fully_addressable:
    array = array.addressable_data(0)
  return np.asarray(jax.device_get(array), dtype=np.float32)


def _check_params(flat: Mapping[str, np.ndarray], model: multitask.MultitaskBert, source: str) -> None:
  """Raises one BundleError naming every missing, unexpected and mis-shaped parameter."""
  expected = expected_param_shapes(model)
  problems = [f"shape mismatch: {k} expected {expected[k]}, found {tuple(np.shape(flat[k]))}"
              for k in sorted(flat.keys() & expected.keys()) if tuple(np.shape(flat[k])) != expected[k]]
  missing = sorted(expected.keys() - flat.keys())
  if missing:
    problems.append("missing: " + ", ".join(missing))
  unexpected = sorted(flat.keys() - expected.keys())
  if unexpected:
    problems.append("unexpected: " + ", ".join(unexpected))
  if problems:
    raise BundleError(f"{source} does not fit the model its bundle.json describes "
                      f"({_describe(model)}):\n  " + "\n  ".join(problems))


def _describe(model: multitask.MultitaskBert) -> str:
  return (f"{model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
          f"heads {model.paraphrase_head}/{model.similarity_head}")


@dataclasses.dataclass(frozen=True)
class Bundle:
  """A bundle in memory: bundle.json's contents, the built model, its params and tokenizer."""
  metadata: dict[str, Any]
  model: multitask.MultitaskBert
  params: dict[str, Any]  # nested, float32 numpy: `model.apply({"params": params}, ...)`
  tokenizer: Tokenizer
  directory: pathlib.Path | None = None  # where it was read from, if it was

  @property
  def settings(self) -> dict[str, Any]:
    return dict(self.metadata["model"])

  @property
  def max_length(self) -> int:
    return int(self.metadata["max_length"])


def new_bundle(model: multitask.MultitaskBert, params: Mapping[str, Any], tokenizer: Tokenizer, *,
               max_length: int, dev_scores: Mapping[str, float] | None = None,
               data: Mapping[str, Any] | None = None, base_checkpoint: str | None = None,
               evaluation: Mapping[str, Any] | None = None,
               training: Mapping[str, Any] | None = None) -> Bundle:
  """A bundle of `model` with `params` (checked against the model), ready for `save_bundle`.

  `tokenizer` must have a `vocab_path` (its file is copied into the bundle).
  `evaluation` (how the run batched its dev evaluation) and `training` (preset
  name, best stage, the whole config) are recorded for tools that reproduce the
  run's numbers or describe it; loading a model never needs them.
  """
  if not tokenizer.vocab_path:
    raise BundleError(f"{tokenizer!r} has no vocab_path; a bundle copies the vocabulary file")
  flat = {k: _host_float32(v) for k, v in traverse_util.flatten_dict(dict(params), sep="/").items()}
  _check_params(flat, model, source="params to bundle")
  metadata = {
      "format": FORMAT_NAME, "version": FORMAT_VERSION,
      "model": model_settings(model),
      "bert_config": dataclasses.asdict(model.config),
      "tokenizer": {"vocab_file": VOCAB_FILE, "lowercase": bool(tokenizer.lowercase),
                    "detokenize_ptb": bool(tokenizer.detokenize_ptb)},
      "max_length": int(max_length),
      "dev_scores": {k: float(v) for k, v in (dev_scores or {}).items()},
      "data": _json_ready(data or {}),
      "base_checkpoint": base_checkpoint,
      "evaluation": _json_ready(evaluation or {}),
      "training": _json_ready(training or {}),
  }
  return Bundle(metadata, model, traverse_util.unflatten_dict(flat, sep="/"), tokenizer)


def _json_ready(value: Any) -> Any:
  # Configs and data descriptions hold tuples and the odd non-JSON value (a dtype);
  # results.json writes them the same way.
  return json.loads(json.dumps(value, default=str))


def save_bundle(bundle: Bundle, directory: str | os.PathLike) -> pathlib.Path:
  """Writes `bundle` to `directory`, replacing what is there only once it is complete.

  Everything goes to a temporary sibling directory first and is renamed into
  place at the end, so a crash never leaves a half-written bundle behind.
  """
  from safetensors import numpy as safetensors_numpy  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
  try:
    flat = traverse_util.flatten_dict(bundle.params, sep="/")
    safetensors_numpy.save_file({k: np.array(v, np.float32, order="C") for k, v in flat.items()},  # keeps 0-d scalars 0-d
                                staging / PARAMS_FILE, metadata={"format": FORMAT_NAME})
    shutil.copyfile(bundle.tokenizer.vocab_path, staging / VOCAB_FILE)
    with open(staging / BUNDLE_FILE, "w", encoding="utf-8") as f:
      json.dump(bundle.metadata, f, indent=2, sort_keys=True)
    # mkdtemp and safetensors create owner-only entries; a bundle is meant to be shared.
    os.chmod(staging, 0o755)
    for entry in staging.iterdir():
      os.chmod(entry, 0o644)
    _replace_directory(staging, directory)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return directory


def _replace_directory(staging: pathlib.Path, target: pathlib.Path) -> None:
  """Renames `staging` to `target`; an existing `target` is moved aside first, then removed."""
  if target.exists():
    old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(staging, target)


# ----------------------------------------------------------------------------- reading


def find_bundle(path: str | os.PathLike) -> pathlib.Path:
  """The bundle directory at `path`: `path` itself, or its `model/` (a workdir, an export)."""
  path = pathlib.Path(path).expanduser()
  for candidate in (path, path / BUNDLE_SUBDIR):
    if (candidate / BUNDLE_FILE).is_file():
      return candidate
  if not path.exists():
    raise BundleError(f"no model bundle at {path}: the directory does not exist")
  if path.is_file():
    raise BundleError(f"{path} is a file; pass the bundle directory (the one holding {BUNDLE_FILE})")
  present = sorted(p.name for p in path.iterdir())
  raise BundleError(
      f"no model bundle at {path}: expected {path / BUNDLE_FILE} or {path / BUNDLE_SUBDIR / BUNDLE_FILE} "
      f"(it has: {', '.join(present) or 'nothing'}). A training run writes its bundle to "
      f"<workdir>/{BUNDLE_SUBDIR}/ when it finishes; `python -m train.export` makes one from a run's "
      "checkpoints.")


def read_bundle(path: str | os.PathLike) -> Bundle:
  """Reads and checks the bundle at `path` (see `find_bundle`); raises BundleError."""
  directory = find_bundle(path)
  missing = [f for f in (BUNDLE_FILE, PARAMS_FILE, VOCAB_FILE) if not (directory / f).is_file()]
  if missing:
    raise BundleError(f"model bundle {directory} is missing {', '.join(missing)} "
                      f"(it has: {', '.join(sorted(p.name for p in directory.iterdir()))})")
  metadata = _read_metadata(directory / BUNDLE_FILE)
  bundle_file = directory / BUNDLE_FILE
  try:
    bert_config = BertConfig.from_dict(metadata["bert_config"], source=f"{bundle_file} bert_config")
  except (ConfigError, TypeError) as e:
    raise BundleError(str(e)) from None
  settings = metadata["model"]
  absent = [k for k in MODEL_SETTINGS if k not in settings]
  unknown = sorted(set(settings) - set(MODEL_SETTINGS))
  if absent or unknown:
    raise BundleError(f"{bundle_file}: 'model' settings " +
                      "; ".join(p for p in (f"lack {absent}" if absent else "",
                                            f"have unknown {unknown}" if unknown else "") if p) +
                      f"; expected exactly {list(MODEL_SETTINGS)}")
  try:
    model = build_model(bert_config, settings)
  except (ValueError, TypeError) as e:
    raise BundleError(f"{bundle_file}: 'model' settings do not describe a MultitaskBert: {e}") from None

  params_file = directory / PARAMS_FILE
  try:
    flat = read_state_dict(params_file)
  except Exception as e:  # pylint: disable=broad-except
    # safetensors reports a truncated or garbled file with its own error type.
    raise BundleError(f"{params_file}: not a readable safetensors file ({type(e).__name__}: {e}); "
                      "the bundle is incomplete or damaged, write it again") from None
  _check_params(flat, model, source=str(params_file))

  tokenizer_info = metadata["tokenizer"]
  # Bundles written before PTB detokenization existed lack the flag: their runs trained without it.
  if (not isinstance(tokenizer_info, Mapping) or not isinstance(tokenizer_info.get("lowercase"), bool)
      or not isinstance(tokenizer_info.get("detokenize_ptb", False), bool)):
    raise BundleError(f"{bundle_file}: 'tokenizer' is {tokenizer_info!r}; expected an object with a "
                      "boolean 'lowercase' and, optionally, a boolean 'detokenize_ptb'")
  try:
    tokenizer = Tokenizer.from_vocab_file(directory / VOCAB_FILE, lowercase=tokenizer_info["lowercase"],
                                          detokenize_ptb=tokenizer_info.get("detokenize_ptb", False))
  except ValueError as e:
    raise BundleError(str(e)) from None
  if tokenizer.vocab_size > bert_config.vocab_size:
    raise BundleError(f"{directory / VOCAB_FILE} has {tokenizer.vocab_size} tokens but {bundle_file} says "
                      f"vocab_size={bert_config.vocab_size}; the vocabulary does not belong to these weights")
  params = traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in flat.items()}, sep="/")
  return Bundle(metadata, model, params, tokenizer, directory)


def _read_metadata(path: pathlib.Path) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      metadata = json.load(f)
  except json.JSONDecodeError as e:
    raise BundleError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(metadata, dict):
    raise BundleError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
  if metadata.get("format") != FORMAT_NAME:
    raise BundleError(f"{path}: format is {metadata.get('format')!r}; expected {FORMAT_NAME!r} "
                      "(a bert_jax model bundle)")
  version = metadata.get("version")
  if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
    newer = isinstance(version, int) and version > FORMAT_VERSION
    raise BundleError(f"{path}: format version {version!r}; this bert_jax reads version {FORMAT_VERSION}" +
                      (" (a newer bert_jax wrote it: upgrade bert_jax to read it)" if newer else ""))
  missing = [k for k in REQUIRED_KEYS if k not in metadata]
  if missing:
    raise BundleError(f"{path}: missing keys {missing}; a version {version} bundle has {list(REQUIRED_KEYS)}")
  if not isinstance(metadata["model"], dict) or not isinstance(metadata["bert_config"], dict):
    raise BundleError(f"{path}: 'model' and 'bert_config' must be JSON objects")
  if not isinstance(metadata["max_length"], int) or metadata["max_length"] < 3:
    raise BundleError(f"{path}: max_length is {metadata['max_length']!r}; expected an integer >= 3")
  return metadata


def load_model(path: str | os.PathLike, *, batch_size: int = DEFAULT_BATCH_SIZE) -> "TrainedModel":
  """The trained model of a bundle directory, or of a workdir or export holding one in `model/`."""
  return TrainedModel(read_bundle(path), batch_size=batch_size)


# ----------------------------------------------------------------------------- predicting


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
  if isinstance(pairs, (str, bytes)):
    raise TypeError(f"pairs must be a sequence of (sentence, sentence) pairs, got one string {pairs[:40]!r}")
  first, second = [], []
  for i, pair in enumerate(pairs):
    if isinstance(pair, (str, bytes)) or len(pair) != 2:
      raise TypeError(f"pairs[{i}] is {pair!r}; expected a (sentence, sentence) pair")
    first.append(pair[0])
    second.append(pair[1])
  return first, second


class TrainedModel:
  """Predicts the three tasks with a bundle's model; inputs are plain Python strings.

  Inputs are sorted by length, cut into batches of at most `batch_size` rows and
  padded to the smallest of a few lengths (`LENGTH_BUCKETS`, up to the bundle's
  max_length), with row counts rounded up to a power of two: each task compiles
  a handful of shapes, and results come back in input order. Longer sentences
  are truncated to max_length tokens, as in training. Padded batches give the
  outputs packed ones do (tests/test_packing.py).
  """

  def __init__(self, bundle: Bundle, *, batch_size: int = DEFAULT_BATCH_SIZE):
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size}; expected >= 1")
    self.bundle = bundle
    self.model = bundle.model
    self.tokenizer = bundle.tokenizer
    self.batch_size = batch_size
    self.max_length = min(bundle.max_length, bundle.model.config.max_position_embeddings)
    self.lengths = tuple(sorted({n for n in LENGTH_BUCKETS if n < self.max_length} | {self.max_length}))
    self.params = jax.tree.map(jnp.asarray, bundle.params)
    model = self.model
    def outputs_of(method):
      return jax.jit(lambda params, batch: model.apply({"params": params}, batch, deterministic=True,
                                                         method=method))
    self._outputs = {"sst": outputs_of("sentiment"), "para": outputs_of("paraphrase"),
                     "sts": outputs_of("similarity")}

  @property
  def metadata(self) -> dict[str, Any]:
    return self.bundle.metadata

  @property
  def dev_scores(self) -> dict[str, float]:
    return dict(self.metadata.get("dev_scores", {}))

  def __repr__(self) -> str:
    settings = self.bundle.settings
    return (f"TrainedModel({self.bundle.directory}, heads={settings['paraphrase_head']}/"
            f"{settings['similarity_head']}, dev={self.dev_scores})")

  # ---- the task methods ----

  def sst_logits(self, sentences: Sequence[str]) -> np.ndarray:
    """[N, num_sentiment_classes] float32 sentiment logits."""
    input_ids, _ = self.tokenizer.encode_ragged(sentences, max_length=self.max_length)
    return self._run("sst", [(ids,) for ids in input_ids], None,
                     (len(input_ids), self.model.num_sentiment_classes))

  def sst_probabilities(self, sentences: Sequence[str]) -> np.ndarray:
    """[N, 5] float32 class probabilities (softmax of the logits); rows sum to 1."""
    return np.asarray(jax.nn.softmax(self.sst_logits(sentences), axis=-1))

  def predict_sst(self, sentences: Sequence[str]) -> np.ndarray:
    """[N] int32 sentiment classes, 0 (negative) .. 4 (positive): what the trainer scores."""
    return np.asarray(losses_lib.predict("sst", self.sst_logits(sentences)))

  def paraphrase_logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """[N] float32 paraphrase logits."""
    return self._pair_outputs("para", pairs)

  def paraphrase(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """[N] float32 probability that each (a, b) is a paraphrase.

    Probabilities rather than labels, because a caller can threshold them at
    its own operating point; `predict_paraphrase` gives the trainer's 0/1.
    """
    return np.asarray(jax.nn.sigmoid(self.paraphrase_logits(pairs)))

  def predict_paraphrase(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """[N] int32 0/1 labels: logit > 0, exactly what the trainer scores (a float32
    probability rounds to 0.5 for tiny logits, so the logit decides, not `paraphrase`)."""
    return np.asarray(losses_lib.predict("para", self.paraphrase_logits(pairs)))

  def similarity(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """[N] float32 similarity on the STS scale, clipped to [0, 5]."""
    return np.asarray(losses_lib.predict("sts", self._pair_outputs("sts", pairs)))

  # ---- batching ----

  def _pair_outputs(self, task: str, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    first, second = _check_pairs(pairs)
    head = self.model.paraphrase_head if task == "para" else self.model.similarity_head
    if heads.pair_encoding(head) == "joint":  # "[CLS] a [SEP] b [SEP]"
      input_ids, token_types = self.tokenizer.encode_ragged(first, second, max_length=self.max_length)
      return self._run(task, [(ids,) for ids in input_ids], [(t,) for t in token_types], (len(first),))
    ids_a, _ = self.tokenizer.encode_ragged(first, max_length=self.max_length)
    ids_b, _ = self.tokenizer.encode_ragged(second, max_length=self.max_length)
    return self._run(task, list(zip(ids_a, ids_b)), None, (len(first),))

  def _run(self, task: str, examples: list[tuple[np.ndarray, ...]],
           token_types: list[tuple[np.ndarray, ...]] | None, out_shape: tuple[int, ...]) -> np.ndarray:
    """Model outputs for `examples` (1 or 2 token sequences each), in input order."""
    out = np.zeros(out_shape, np.float32)
    if not examples:
      return out
    longest = np.array([max(len(s) for s in example) for example in examples])
    order = np.argsort(longest, kind="stable")
    filler = np.asarray([self.tokenizer.cls_id, self.tokenizer.sep_id], np.int32)
    for start in range(0, len(order), self.batch_size):
      chosen = order[start:start + self.batch_size]
      rows = min(self.batch_size, 1 << (len(chosen) - 1).bit_length())
      length = next(n for n in self.lengths if n >= longest[chosen].max())
      # Filler rows are "[CLS] [SEP]": an all-padding row would mean-pool to 0/0.
      sides = []
      for side in range(len(examples[chosen[0]])):
        ids = [examples[i][side] for i in chosen] + [filler] * (rows - len(chosen))
        types = ([token_types[i][side] for i in chosen] if token_types is not None
                 else [np.zeros_like(s) for s in ids[:len(chosen)]]) + [np.zeros(2, np.int32)] * (rows - len(chosen))
        sides.append(self.tokenizer.pad(ids, types, pad_to=length))
      batch = sides[0] if len(sides) == 1 else {k: np.stack([sides[0][k], sides[1][k]], axis=1)
                                                for k in sides[0]}
      out[chosen] = np.asarray(self._outputs[task](self.params, batch))[:len(chosen)]
    return out
