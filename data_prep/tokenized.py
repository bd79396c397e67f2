"""Token ids of a whole split, computed once and cached on disk.

Reading a TFDS split and running WordPiece over it takes seconds; the trainer
starts many runs on the same data. So `encode_tfds_split` stores the ragged token
ids of one (dataset, config, version, split) under one (tokenizer vocabulary,
max_length, pair encoding) in a `.npz` file: flat int32 ids plus offsets, the
labels and the example ids. A second run loads that file and never touches
TFDS or the tokenizer again.

The cache key covers everything the ids depend on: the dataset's name, config,
version and split, the sha256 of each source file the split was prepared from
(so an edited CSV, which `catalog.get_builder` prepares again, never hits an
entry of the old one, even at the same row count and size), the split's
example count and byte size (so a regenerated dataset, e.g. with
`skip_bad_rows`, gets new entries), a hash of the vocabulary file and the
lowercasing flag, max_length and the encoding.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from bert_jax.batch import PaddedBatch
from data_prep.tfds_split import TfdsSplit

PAIR_ENCODINGS = ("separate", "joint")
CACHE_FORMAT = 1  # bump when the .npz layout changes


@dataclasses.dataclass(frozen=True)
class Ragged:
  """Variable-length int32 sequences stored flat: row i is flat[offsets[i]:offsets[i+1]]."""
  flat: np.ndarray
  offsets: np.ndarray

  @classmethod
  def from_sequences(cls, sequences: Sequence[np.ndarray]) -> "Ragged":
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(sequences).astype(np.int32) if len(sequences) else np.zeros(0, np.int32)
    return cls(flat=flat, offsets=offsets)

  @classmethod
  def concatenate(cls, parts: Sequence["Ragged"]) -> "Ragged":
    shifts = np.cumsum([0] + [len(p.flat) for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
    return cls(flat=np.concatenate([p.flat for p in parts]), offsets=offsets)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def row(self, i: int) -> np.ndarray:
    return self.flat[self.offsets[i]:self.offsets[i + 1]]


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """The ids the pipeline writes itself: padding, and [CLS] [SEP] for weight-0 filler rows."""
  pad: int
  cls: int
  sep: int


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedSplit:
  """All examples of one task split, tokenized, unpadded.

  `tokens` holds, by layout:
    single sentence:          input_ids
    pair, encoding separate:  input_ids_a, input_ids_b   ([CLS] a [SEP], [CLS] b [SEP])
    pair, encoding joint:     input_ids, token_type_ids  ([CLS] a [SEP] b [SEP], types 0/1)
  `labels` is int32 (sentiment) or float32 (pairs); unlabeled splits hold -1
  and have `labeled=False`: write predictions for them, never score them.
  `ids` are the source files' example ids, for prediction files; `provenance`
  lists each TFDS split this came from (dataset, config, version, sizes,
  skipped rows, and e.g. which quora split), for results to record.
  """
  name: str
  pair: bool
  pair_encoding: str | None
  max_length: int
  labeled: bool
  ids: np.ndarray
  labels: np.ndarray
  tokens: Mapping[str, Ragged]
  special: SpecialIds
  provenance: tuple[Mapping, ...]

  def __len__(self) -> int:
    return len(self.labels)

  @functools.cached_property
  def lengths(self) -> np.ndarray:
    """The padded length each example needs: for separate pairs, the longer side."""
    if self.pair_encoding == "separate":
      return np.maximum(self.tokens["input_ids_a"].lengths, self.tokens["input_ids_b"].lengths)
    return self.tokens["input_ids"].lengths

  @functools.cached_property
  def real_tokens(self) -> np.ndarray:
    """Non-padding tokens per example (both sides for separate pairs), for padding statistics."""
    if self.pair_encoding == "separate":
      return self.tokens["input_ids_a"].lengths + self.tokens["input_ids_b"].lengths
    return self.tokens["input_ids"].lengths

  @property
  def rows_per_example(self) -> int:
    """Padded sequences per example: 2 for separately encoded pairs, else 1."""
    return 2 if self.pair_encoding == "separate" else 1

  def collate(self, indices: np.ndarray, length: int) -> PaddedBatch:
    """One batch padded to `length`; index -1 makes a weight-0 filler row.

    Filler rows are "[CLS] [SEP]" with attention on both tokens rather than all
    padding: a fully masked row makes mean pooling divide by zero, and the NaN
    would survive multiplication by its zero weight.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if self.pair_encoding == "separate":
      ids_a, types_a, mask_a = self._pad_rows(self.tokens["input_ids_a"], None, indices, length)
      ids_b, types_b, mask_b = self._pad_rows(self.tokens["input_ids_b"], None, indices, length)
      batch = {"input_ids": np.stack([ids_a, ids_b], axis=1),
               "attention_mask": np.stack([mask_a, mask_b], axis=1),
               "token_type_ids": np.stack([types_a, types_b], axis=1)}
    else:
      input_ids, token_type_ids, attention_mask = self._pad_rows(
          self.tokens["input_ids"], self.tokens.get("token_type_ids"), indices, length)
      batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return {**batch, **self.example_fields(indices)}

  def example_fields(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """`labels`, `weights` and `index` of a batch of these example rows (-1: a weight-0 filler)."""
    real = indices >= 0
    safe = np.where(real, indices, 0)
    return {"labels": np.where(real, self.labels[safe], 0).astype(self.labels.dtype),
            "weights": real.astype(np.float32),
            "index": np.where(real, indices, -1).astype(np.int32)}

  def _pad_rows(self, ids: Ragged, types: Ragged | None, indices: np.ndarray, length: int):
    batch_size = len(indices)
    input_ids = np.full((batch_size, length), self.special.pad, dtype=np.int32)
    token_type_ids = np.zeros((batch_size, length), dtype=np.int32)
    attention_mask = np.zeros((batch_size, length), dtype=np.int32)
    for row, i in enumerate(indices):
      if i < 0:
        input_ids[row, :2] = (self.special.cls, self.special.sep)
        attention_mask[row, :2] = 1
        continue
      start, end = ids.offsets[i], ids.offsets[i + 1]
      n = end - start
      if n > length:
        raise ValueError(f"{self.name}: example {i} has {n} tokens, more than the batch length {length}")
      input_ids[row, :n] = ids.flat[start:end]
      attention_mask[row, :n] = 1
      if types is not None:
        token_type_ids[row, :n] = types.flat[start:end]
    return input_ids, token_type_ids, attention_mask

  @classmethod
  def concatenate(cls, parts: Sequence["EncodedSplit"], name: str | None = None) -> "EncodedSplit":
    """Several sources of one task as one split; example i of part k keeps its order."""
    if len(parts) == 1 and name is None:
      return parts[0]
    first = parts[0]
    for part in parts[1:]:
      mismatch = [field for field in ("pair", "pair_encoding", "max_length", "special")
                  if getattr(part, field) != getattr(first, field)]
      if mismatch or part.labels.dtype != first.labels.dtype:
        raise ValueError(f"cannot concatenate {first.name} and {part.name}: they differ in "
                         f"{mismatch or ['label dtype']}")
    return cls(
        name=name or "+".join(p.name for p in parts),
        pair=first.pair, pair_encoding=first.pair_encoding, max_length=first.max_length,
        labeled=all(p.labeled for p in parts),
        ids=np.concatenate([p.ids for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        tokens={key: Ragged.concatenate([p.tokens[key] for p in parts]) for key in first.tokens},
        special=first.special,
        provenance=tuple(prov for p in parts for prov in p.provenance))


def tokenizer_fingerprint(tokenizer) -> str:
  """A hash of what decides token ids: the vocabulary file's bytes, lowercasing, PTB detokenization."""
  vocab_path = getattr(tokenizer, "vocab_path", None)
  if not vocab_path:
    raise ValueError(f"{tokenizer!r} has no vocab_path; the token cache needs one to key entries")
  digest = hashlib.sha1(pathlib.Path(vocab_path).read_bytes())
  digest.update(f"lowercase={getattr(tokenizer, 'lowercase', True)}".encode())
  if getattr(tokenizer, "detokenize_ptb", False):  # only then, so that older cache entries still hit
    digest.update(b"detokenize_ptb")
  return digest.hexdigest()[:16]


def encode_tfds_split(tfds_split: TfdsSplit, tokenizer, *, max_length: int = 128,
                      pair_encoding: str = "separate", tfds_dir: str | os.PathLike | None = None,
                      cache_dir: str | os.PathLike | None = None, prepare: bool = True,
                      builder_kwargs: Mapping | None = None) -> EncodedSplit:
  """The tokenized split `tfds_split`, from the cache or (once) from TFDS.

  Args:
    tfds_split: which builder/config/split.
    tokenizer: a `bert_jax.tokenizer.Tokenizer` (anything with its API and a vocab_path).
    max_length: truncation length, [CLS]/[SEP] included.
    pair_encoding: "separate" (bi-encoder: a and b as two sequences) or "joint"
      ("[CLS] a [SEP] b [SEP]"); ignored for single-sentence datasets.
    tfds_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    cache_dir: token cache directory (None: `<tfds_dir>/bert_jax_tokens`).
    prepare: run `download_and_prepare` when the dataset is not prepared yet.
    builder_kwargs: passed to the builder (local_dir, skip_bad_rows, allow_download).
  """
  from data_prep import catalog  # imports TFDS and registers the builders
  if pair_encoding not in PAIR_ENCODINGS:
    raise ValueError(f"pair_encoding={pair_encoding!r}; expected one of {PAIR_ENCODINGS}")
  builder = catalog.get_builder(tfds_split, tfds_dir=tfds_dir, prepare=prepare,
                                 builder_kwargs=builder_kwargs)
  info = builder.info
  if tfds_split.split not in info.splits:
    raise ValueError(f"{tfds_split}: no split {tfds_split.split!r}; "
                     f"{builder.name}/{builder.builder_config.name} has {sorted(info.splits.keys())}")
  pair = "sentence1" in info.features
  encoding = pair_encoding if pair else None
  split_info = info.splits[tfds_split.split]
  key_fields = {
      "format": CACHE_FORMAT, "dataset": builder.name, "config": builder.builder_config.name,
      "version": str(builder.version), "split": tfds_split.split,
      "sources": catalog.source_hashes(builder, tfds_split.split),
      "num_examples": split_info.num_examples, "num_bytes": split_info.num_bytes,
      "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_length, "encoding": encoding,
  }
  key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:12]
  cache_root = pathlib.Path(cache_dir) if cache_dir else catalog.resolve_tfds_dir(tfds_dir) / "bert_jax_tokens"
  cache_file = cache_root / (f"{builder.name}-{builder.builder_config.name}-{builder.version}-"
                             f"{tfds_split.split}-{encoding or 'single'}-L{max_length}-{key}.npz")
  provenance = catalog.provenance(builder, tfds_split.split)
  special = SpecialIds(pad=tokenizer.pad_id, cls=tokenizer.cls_id, sep=tokenizer.sep_id)
  unlabeled = tfds_split.split in info.metadata.get("unlabeled_splits", [])
  common = dict(name=str(tfds_split), pair=pair, pair_encoding=encoding, max_length=max_length,
                labeled=not unlabeled, special=special, provenance=(provenance,))
  if cache_file.exists():
    with np.load(cache_file, allow_pickle=False) as stored:
      tokens = {name[:-len("_flat")]: Ragged(stored[name], stored[name[:-len("_flat")] + "_offsets"])
                for name in stored.files if name.endswith("_flat")}
      return EncodedSplit(ids=stored["ids"], labels=stored["labels"], tokens=tokens, **common)

  logging.info("tokenizing %s (max_length=%d, encoding=%s) -> %s", tfds_split, max_length, encoding,
               cache_file)
  encoded = encode_examples(catalog.read_split(builder, tfds_split.split), tokenizer, **common)
  _write_npz(cache_file, ids=encoded.ids, labels=encoded.labels,
             **{f"{name}_flat": r.flat for name, r in encoded.tokens.items()},
             **{f"{name}_offsets": r.offsets for name, r in encoded.tokens.items()})
  return encoded


def encode_examples(examples: Sequence[Mapping], tokenizer, *, name: str, pair: bool,
                    pair_encoding: str | None, max_length: int, labeled: bool, special: SpecialIds,
                    provenance: tuple[Mapping, ...]) -> EncodedSplit:
  """Tokenizes example dicts ("id", "label", and "sentence" or "sentence1"/"sentence2").

  The one tokenization of every split: `encode_tfds_split` feeds it a TFDS split,
  `train.predict` the rows of a file given on the command line, so a split read
  either way gets the same token ids.
  """
  ids = np.array([e["id"] for e in examples], dtype=np.str_)
  labels = np.array([e["label"] for e in examples], dtype=np.float32 if pair else np.int32)
  if pair:
    first, second = [e["sentence1"] for e in examples], [e["sentence2"] for e in examples]
    if pair_encoding == "joint":
      input_ids, token_type_ids = tokenizer.encode_ragged(first, second, max_length=max_length)
      tokens = {"input_ids": Ragged.from_sequences(input_ids),
                "token_type_ids": Ragged.from_sequences(token_type_ids)}
    else:
      tokens = {"input_ids_a": Ragged.from_sequences(tokenizer.encode_ragged(first, max_length=max_length)[0]),
                "input_ids_b": Ragged.from_sequences(tokenizer.encode_ragged(second, max_length=max_length)[0])}
  else:
    input_ids, _ = tokenizer.encode_ragged([e["sentence"] for e in examples], max_length=max_length)
    tokens = {"input_ids": Ragged.from_sequences(input_ids)}
  return EncodedSplit(name=name, pair=pair, pair_encoding=pair_encoding, max_length=max_length,
                      labeled=labeled, ids=ids, labels=labels, tokens=tokens, special=special,
                      provenance=provenance)


def _write_npz(path: pathlib.Path, **arrays) -> None:
  """Writes atomically, so a killed run never leaves a truncated cache entry."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp.npz", delete=False) as f:
    np.savez(f, **arrays)
  os.replace(f.name, path)
