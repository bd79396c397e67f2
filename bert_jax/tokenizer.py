"""BERT WordPiece tokenization on the Rust `tokenizers` library.

The pipeline is the one Hugging Face builds for BERT (`BertTokenizerFast`): clean
text, split CJK characters, lowercase and strip accents (uncased models), split
on whitespace and punctuation, WordPiece with `[UNK]`, then `[CLS] a [SEP] (b [SEP])`
with token types 0/1. We build it from `vocab.txt` rather than `tokenizer.json`,
so any Hugging Face BERT directory works, including old ones that ship only a
vocabulary. Batch encoding runs in Rust on all cores, which is what makes
tokenizing a whole split at once cheap.

The CS224N CSVs hold PTB-tokenized sentences with a leading space ("-LRB-",
"``", "does n't"). By default they are tokenized as any other text: the
whitespace split drops the space, and the PTB tokens become word pieces
("-", "l", "##rb", "-"). With `detokenize_ptb=True` the normalizer first puts
them back as plain text ("(", '"', "doesn't"), the text the pretrained model
read and that users of a trained model type; spacing around punctuation is
left alone, since the pre-tokenizer splits punctuation off either way. Text
that has no PTB tokens comes out unchanged, so a model trained this way reads
plain text as its training data.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer as RustTokenizer
from tokenizers import normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from bert_jax.checkpoint_files import DEFAULT_CHECKPOINT, resolve_checkpoint

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Tokens matched verbatim in the input before normalisation, as in Hugging Face.
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
# Longer words become one [UNK]: BERT's own limit, and it bounds WordPiece's cost.
MAX_INPUT_CHARS_PER_WORD = 100
# Penn Treebank tokens and the text they stand for. "\\/" and "\\*" are PTB's escaped "/" and "*".
PTB_TOKENS = (("-LRB-", "("), ("-RRB-", ")"), ("-LSB-", "["), ("-RSB-", "]"), ("-LCB-", "{"),
              ("-RCB-", "}"), ("``", '"'), ("''", '"'), ("\\/", "/"), ("\\*", "*"))
# PTB splits contractions before "n't" ("does n't", "ca n't", "wo n't"); joined back they are
# "doesn't", "can't", "won't". One pattern per casing, since the normalizer runs before lowercasing.
PTB_NEGATIONS = ("n't", "N'T", "N't")


def ptb_detokenizer() -> normalizers.Normalizer:
  """The normalizer that turns PTB tokens back into plain text (see the module docstring)."""
  steps = [normalizers.Replace(token, text) for token, text in PTB_TOKENS]
  steps += [normalizers.Replace(Regex(rf"\s+{negation}(?=\s|$)"), negation) for negation in PTB_NEGATIONS]
  return normalizers.Sequence(steps)


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
  """`vocab.txt` as {token: id}, one token per line, id = line number (as HF reads it)."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().split("\n")
  except FileNotFoundError:
    raise FileNotFoundError(f"no vocabulary file at {path}") from None
  if lines and lines[-1] == "":
    lines.pop()  # the newline that ends the last token
  # On duplicate lines the later id wins, like `transformers` `load_vocab`.
  vocab = {token.rstrip("\r"): index for index, token in enumerate(lines)}
  missing = [t for t in (PAD, UNK, CLS, SEP) if t not in vocab]
  if missing:
    raise ValueError(f"{path}: vocabulary lacks the BERT special tokens {missing} "
                     f"({len(vocab)} tokens read); is this a BERT vocab.txt?")
  return vocab


class Tokenizer:
  """Turns sentences (or sentence pairs) into BERT `input_ids` and `token_type_ids`.

  Build it with `Tokenizer.from_vocab_file(path)` or `Tokenizer.from_checkpoint(name)`.
  Calling it returns padded int32 numpy batches; `encode_ragged` returns the
  unpadded sequences, for pipelines that bucket by length before padding.
  """

  def __init__(self, vocab: dict[str, int], *, lowercase: bool = True,
               strip_accents: bool | None = None, vocab_path: str | None = None,
               detokenize_ptb: bool = False):
    """`strip_accents=None` strips accents exactly when lowercasing, as uncased BERT does."""
    self.vocab_path = vocab_path
    self.lowercase = lowercase
    self.detokenize_ptb = detokenize_ptb
    self.vocab_size = max(vocab.values()) + 1
    self.pad_id, self.unk_id, self.cls_id, self.sep_id = (vocab[t] for t in (PAD, UNK, CLS, SEP))
    backend = RustTokenizer(WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##",
                                      max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    bert_normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase)
    backend.normalizer = (normalizers.Sequence([ptb_detokenizer(), bert_normalizer]) if detokenize_ptb
                          else bert_normalizer)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in SPECIAL_TOKENS if t in vocab])
    self._untruncated = backend
    # Truncation length is state of a Rust tokenizer, so keep one copy per
    # max_length instead of mutating a shared one (grain may call us from threads).
    self._by_max_length: dict[int, RustTokenizer] = {}
    self._lock = threading.Lock()

  @classmethod
  def from_vocab_file(cls, path: str | os.PathLike, lowercase: bool = True,
                      strip_accents: bool | None = None, detokenize_ptb: bool = False) -> "Tokenizer":
    return cls(read_vocab(path), lowercase=lowercase, strip_accents=strip_accents,
               vocab_path=os.fspath(path), detokenize_ptb=detokenize_ptb)

  @classmethod
  def from_checkpoint(cls, name_or_path: str = DEFAULT_CHECKPOINT, detokenize_ptb: bool = False) -> "Tokenizer":
    """The tokenizer of a checkpoint (see `checkpoint_files.resolve_checkpoint` for names)."""
    files = resolve_checkpoint(name_or_path)
    return cls.from_vocab_file(files.vocab_path, lowercase=files.lowercase, detokenize_ptb=detokenize_ptb)

  def __repr__(self) -> str:
    return (f"Tokenizer(vocab_path={self.vocab_path!r}, vocab_size={self.vocab_size}, "
            f"lowercase={self.lowercase}, detokenize_ptb={self.detokenize_ptb})")

  def normalize(self, text: str) -> str:
    """`text` as the word-piece model sees it: detokenized (if set), cleaned, lowercased."""
    return self._untruncated.normalizer.normalize_str(text)

  def _truncating_backend(self, max_length: int) -> RustTokenizer:
    with self._lock:
      backend = self._by_max_length.get(max_length)
      if backend is None:
        backend = RustTokenizer.from_str(self._untruncated.to_str())
        backend.enable_truncation(max_length, strategy="longest_first")
        self._by_max_length[max_length] = backend
      return backend

  def encode_ragged(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                    max_length: int = 512) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token ids and token types per example, unpadded, each at most `max_length` long.

    Singles are `[CLS] a [SEP]`; pairs are `[CLS] a [SEP] b [SEP]` with types 0 up to
    the first `[SEP]` and 1 after it. Pairs that are too long lose tokens from the
    end of the longer side first ("longest_first"), as Hugging Face does. When
    both sides are long and the space left for them is odd, the second text keeps
    the spare token, as in `BertTokenizerFast` (the Python tokenizer gives it to the first).
    """
    texts = _as_text_list(texts, "texts")
    num_special = 2
    if text_pairs is not None:
      text_pairs = _as_text_list(text_pairs, "text_pairs")
      if len(text_pairs) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(text_pairs)} text_pairs")
      num_special = 3
    if max_length < num_special:
      # Rust tokenizers silently skips truncation here; refuse instead.
      raise ValueError(f"max_length={max_length} leaves no room for the {num_special} "
                       f"special tokens of a {'pair' if text_pairs is not None else 'single'} input")
    inputs = texts if text_pairs is None else list(zip(texts, text_pairs))
    # The "fast" variant skips character offsets, which we never use: ~30% quicker.
    encodings = self._truncating_backend(max_length).encode_batch_fast(inputs, add_special_tokens=True)
    input_ids = [np.asarray(e.ids, dtype=np.int32) for e in encodings]
    token_type_ids = [np.asarray(e.type_ids, dtype=np.int32) for e in encodings]
    return input_ids, token_type_ids

  def __call__(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
               max_length: int = 512, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """A padded batch: `input_ids`, `attention_mask`, `token_type_ids`, int32 [B, L].

    L is the longest sequence in the batch, or `pad_to` when given (a fixed shape
    avoids recompiling a jitted model for every batch).
    """
    input_ids, token_type_ids = self.encode_ragged(texts, text_pairs, max_length)
    return self.pad(input_ids, token_type_ids, pad_to=pad_to)

  def pad(self, input_ids: Sequence[np.ndarray], token_type_ids: Sequence[np.ndarray],
          pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Right-pads ragged sequences (from `encode_ragged`) into an int32 batch."""
    lengths = np.array([len(ids) for ids in input_ids], dtype=np.int64)
    longest = int(lengths.max(initial=0))
    if pad_to is not None and longest > pad_to:
      raise ValueError(f"a sequence has {longest} tokens, more than pad_to={pad_to}; "
                       f"tokenize with max_length <= pad_to")
    length = longest if pad_to is None else pad_to
    attention_mask = np.arange(length)[None, :] < lengths[:, None]
    batch = {
        "input_ids": np.full((len(lengths), length), self.pad_id, dtype=np.int32),
        "attention_mask": attention_mask.astype(np.int32),
        "token_type_ids": np.zeros((len(lengths), length), dtype=np.int32),
    }
    if len(lengths):
      # Boolean-mask assignment fills row by row, i.e. in concatenation order.
      batch["input_ids"][attention_mask] = np.concatenate(input_ids)
      batch["token_type_ids"][attention_mask] = np.concatenate(token_type_ids)
    return batch


def _as_text_list(texts: Sequence[str], name: str) -> list[str]:
  if isinstance(texts, str):
    raise TypeError(f"{name} must be a sequence of strings, got one string {texts[:40]!r}; wrap it in a list")
  texts = list(texts)
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"{name}[{i}] is {type(text).__name__} {text!r}, expected str")
  return texts
