"""The imported checkpoint and tokenizer agree with Hugging Face's PyTorch BERT.

References: `transformers.BertModel` (float32, eval mode, eager attention) on
the same checkpoint directory, `transformers.BertTokenizerFast` built from the
same vocab.txt, and the pure-Python `BertTokenizerLegacy`, which shares no code
with the Rust tokenizer we build on.
"""

import csv

import jax
import numpy as np
import pytest

from bert_jax.checkpoints import load_hf_checkpoint
from bert_jax.modeling import BertModel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HIDDEN_TOLERANCE = 1e-4

ODD_TEXTS = [
    "",
    "Café naïve résumé",
    "ÀÉÎÕÜ straße Ærøskøbing",
    "I ❤️ my 🤖 robot 😀!",
    "中文字符测试 mixed with 日本語 and 한국어",
    "tab\tnewline\nnbsp\u00a0zero\u200bwidth control\x00char",
    "un" + "believable" * 12,  # a word longer than 100 characters becomes [UNK]
    "[CLS] literal [SEP] special [MASK] tokens [unused1]",
    " -LRB- PTB `` quotes '' and \\/ slashes -RRB- .",
]


def _read_tsv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def sentences_and_pairs(shared_data):
  """6 SST sentences spread over the length range, and 4 STS pairs."""
  sst = sorted((row["sentence"] for row in _read_tsv(shared_data / "cs224n" / "ids-sst-dev.csv")), key=len)
  singles = [sst[int(q * (len(sst) - 1))] for q in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
  sts = _read_tsv(shared_data / "cs224n" / "sts-dev.csv")
  pairs = [(row["sentence1"], row["sentence2"]) for row in sts[:4]]
  return singles, pairs


@pytest.fixture(scope="module")
def checkpoint():
  return load_hf_checkpoint("minilm-l6")


@pytest.fixture(scope="module")
def hf_tokenizers(checkpoint):
  from transformers.models.bert.tokenization_bert import load_vocab  # noqa: PLC0415
  vocab_path = str(checkpoint.files.vocab_path)
  return {
      "BertTokenizerFast": transformers.BertTokenizerFast(vocab=load_vocab(vocab_path), do_lower_case=True),
      "BertTokenizerLegacy": transformers.BertTokenizerLegacy(vocab_file=vocab_path, do_lower_case=True),
  }


@pytest.fixture(scope="module")
def torch_model(checkpoint):
  model = transformers.BertModel.from_pretrained(
      checkpoint.files.directory, torch_dtype=torch.float32, attn_implementation="eager")
  return model.eval()


def _assert_same_tokens(ours, hf_tokenizer, texts, pairs=None, max_length=512):
  input_ids, token_type_ids = ours.encode_ragged(texts, pairs, max_length=max_length)
  reference = hf_tokenizer(texts, pairs, truncation=True, max_length=max_length, return_token_type_ids=True)
  for i, text in enumerate(texts):
    where = f"{text!r}" + (f" / {pairs[i]!r}" if pairs else "") + f" (max_length={max_length})"
    assert input_ids[i].tolist() == reference["input_ids"][i], where
    assert token_type_ids[i].tolist() == reference["token_type_ids"][i], where


@pytest.mark.parametrize("reference", ["BertTokenizerFast", "BertTokenizerLegacy"])
def test_token_ids_match_hugging_face(checkpoint, hf_tokenizers, sentences_and_pairs, reference):
  hf_tokenizer = hf_tokenizers[reference]
  ours = checkpoint.tokenizer
  singles, pairs = sentences_and_pairs
  firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
  _assert_same_tokens(ours, hf_tokenizer, singles + ODD_TEXTS)
  _assert_same_tokens(ours, hf_tokenizer, firsts + ODD_TEXTS, seconds + ODD_TEXTS[::-1])
  # Truncation: a long text alone, and paired with short and long partners.
  long_text = " ".join(singles[-1:] * 16)
  _assert_same_tokens(ours, hf_tokenizer, [long_text, singles[2]], max_length=32)
  # When both sides of a pair are long and the budget for them is odd, the Rust
  # tokenizers (BertTokenizerFast, and we) give the spare token to the second
  # text, the Python one to the first; so the pure-Python check uses even budgets.
  for max_length in (40, 41) if reference == "BertTokenizerFast" else (41,):
    _assert_same_tokens(ours, hf_tokenizer, [long_text, singles[1], long_text],
                        [singles[1], long_text, long_text[::-1]], max_length=max_length)
  (truncated,), _ = ours.encode_ragged([long_text], max_length=512)
  assert len(truncated) == 512


def test_hidden_states_match_pytorch(checkpoint, torch_model, sentences_and_pairs):
  singles, pairs = sentences_and_pairs
  tokenizer = checkpoint.tokenizer
  single_ids, single_types = tokenizer.encode_ragged(singles)
  pair_ids, pair_types = tokenizer.encode_ragged([a for a, _ in pairs], [b for _, b in pairs])
  batch = tokenizer.pad(single_ids + pair_ids, single_types + pair_types)
  lengths = batch["attention_mask"].sum(axis=1)
  assert len(set(lengths.tolist())) >= 8, "sentences of different lengths exercise the padding"
  assert batch["token_type_ids"].max() == 1

  model = BertModel(checkpoint.config)
  ours = jax.jit(model.apply)({"params": checkpoint.params}, batch["input_ids"], batch["attention_mask"],
                              batch["token_type_ids"])
  with torch.no_grad():
    reference = torch_model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})

  real = batch["attention_mask"].astype(bool)
  hidden_diff = np.abs(np.asarray(ours.last_hidden_state) - reference.last_hidden_state.numpy())[real]
  assert hidden_diff.max() <= HIDDEN_TOLERANCE, f"max |JAX - PyTorch| hidden state {hidden_diff.max():.2e}"
  pooled_diff = np.abs(np.asarray(ours.pooled_output) - reference.pooler_output.numpy())
  assert pooled_diff.max() <= HIDDEN_TOLERANCE, f"max |JAX - PyTorch| pooled output {pooled_diff.max():.2e}"
