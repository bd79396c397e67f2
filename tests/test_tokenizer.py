"""Tokenizer behaviour on a hand-written vocabulary, where every expected id is known."""

import csv

import numpy as np
import pytest

from bert_jax.tokenizer import Tokenizer, read_vocab

# id = position. Single letters are whole words, so a sentence of n letters is n tokens.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "the", "game", ".", ",",
         *"abcdefghijklmnopqrstuvwxyz", "cafe"]
ID = {token: i for i, token in enumerate(VOCAB)}
PAD, UNK, CLS, SEP = 0, 1, 2, 3


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
  return path


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
  return Tokenizer.from_vocab_file(vocab_path)


def ids(*tokens):
  return [ID[t] for t in tokens]


def test_special_ids_and_vocab_size(tokenizer, vocab_path):
  assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id) == (PAD, CLS, SEP)
  assert tokenizer.vocab_size == len(VOCAB)
  assert tokenizer.vocab_path == str(vocab_path)


def test_single_sentence_wordpiece_lowercase_and_unknown(tokenizer):
  (input_ids,), (token_type_ids,) = tokenizer.encode_ragged([" Playing THE game, zzqx."])
  expected = [CLS, *ids("play", "##ing", "the", "game", ","), UNK, ID["."], SEP]
  assert input_ids.tolist() == expected
  assert input_ids.dtype == np.int32 and token_type_ids.dtype == np.int32
  assert token_type_ids.tolist() == [0] * len(expected)


def test_accents_are_stripped_when_lowercasing(tokenizer, vocab_path):
  (input_ids,), _ = tokenizer.encode_ragged(["Café"])
  assert input_ids.tolist() == [CLS, ID["cafe"], SEP]
  cased = Tokenizer.from_vocab_file(vocab_path, lowercase=False)
  (input_ids,), _ = cased.encode_ragged(["Café the"])
  assert input_ids.tolist() == [CLS, UNK, ID["the"], SEP]


def test_special_tokens_in_text_are_kept_whole(tokenizer):
  (input_ids,), _ = tokenizer.encode_ragged(["a [MASK] b"])
  assert input_ids.tolist() == [CLS, ID["a"], ID["[MASK]"], ID["b"], SEP]


def test_pair_layout_and_token_types(tokenizer):
  (input_ids,), (token_type_ids,) = tokenizer.encode_ragged(["a b"], ["c d e"])
  assert input_ids.tolist() == [CLS, *ids("a", "b"), SEP, *ids("c", "d", "e"), SEP]
  assert token_type_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_single_truncation_keeps_the_final_sep(tokenizer):
  (input_ids,), _ = tokenizer.encode_ragged([" ".join("abcdefghij")], max_length=6)
  assert input_ids.tolist() == [CLS, *ids("a", "b", "c", "d"), SEP]


def test_pair_truncation_is_longest_first(tokenizer):
  # 10 + 3 tokens into a budget of 10 - 3 special = 7: only the longer side shrinks,
  # until both sides are equal, then they shrink in turn (Hugging Face "longest_first").
  long, short = " ".join("abcdefghij"), "x y z"
  (input_ids,), (token_type_ids,) = tokenizer.encode_ragged([long], [short], max_length=10)
  assert input_ids.tolist() == [CLS, *ids(*"abcd"), SEP, *ids(*"xyz"), SEP]
  assert token_type_ids.tolist() == [0] * 6 + [1] * 4
  (input_ids,), _ = tokenizer.encode_ragged([long], [short], max_length=7)
  assert input_ids.tolist() == [CLS, *ids(*"ab"), SEP, *ids(*"xy"), SEP]


def test_max_length_must_leave_room_for_special_tokens(tokenizer):
  assert tokenizer.encode_ragged(["a b"], max_length=2)[0][0].tolist() == [CLS, SEP]
  with pytest.raises(ValueError, match="max_length=2 .* 3 special tokens of a pair"):
    tokenizer.encode_ragged(["a"], ["b"], max_length=2)


def test_call_pads_to_the_longest_in_the_batch(tokenizer):
  batch = tokenizer(["a b c", "", "a"], ["d", "e", "f g h i"])
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: ((3, 8), np.dtype(np.int32)) for k in ("input_ids", "attention_mask", "token_type_ids")}
  assert batch["input_ids"][0].tolist() == [CLS, *ids(*"abc"), SEP, ID["d"], SEP, PAD]
  assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1, 0]
  assert batch["attention_mask"].sum(axis=1).tolist() == [7, 4, 8]
  assert batch["input_ids"][1].tolist() == [CLS, SEP, ID["e"], SEP] + [PAD] * 4


def test_call_pad_to_fixes_the_length(tokenizer):
  batch = tokenizer(["a b", "c"], pad_to=16)
  assert batch["input_ids"].shape == (2, 16)
  assert batch["attention_mask"].tolist()[1] == [1, 1, 1] + [0] * 13
  with pytest.raises(ValueError, match="5 tokens, more than pad_to=4"):
    tokenizer(["a b c"], pad_to=4)


def test_empty_batch(tokenizer):
  batch = tokenizer([], pad_to=8)
  assert batch["input_ids"].shape == (0, 8)
  assert tokenizer.encode_ragged([]) == ([], [])


def test_bad_inputs_raise_clear_errors(tokenizer):
  with pytest.raises(TypeError, match="wrap it in a list"):
    tokenizer("a b")
  with pytest.raises(TypeError, match=r"texts\[1\] is float"):
    tokenizer(["a", float("nan")])
  with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
    tokenizer(["a", "b"], ["c"])


def test_vocab_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no vocabulary file at .*nowhere.txt"):
    read_vocab(tmp_path / "nowhere.txt")
  not_bert = tmp_path / "vocab.txt"
  not_bert.write_text("<s>\n</s>\nhello\n", encoding="utf-8")
  special = r"\['\[PAD\]', '\[UNK\]', '\[CLS\]', '\[SEP\]'\]"
  with pytest.raises(ValueError, match=r"lacks the BERT special tokens " + special):
    read_vocab(not_bert)


def test_from_checkpoint_default():
  tokenizer = Tokenizer.from_checkpoint()
  assert (tokenizer.vocab_size, tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id) == (30522, 0, 101, 102)
  (input_ids,), _ = tokenizer.encode_ragged([" It 's a lovely film -LRB- really -RRB- ."])
  assert input_ids[0] == 101 and input_ids[-1] == 102 and 100 not in input_ids.tolist()


def test_whole_split_in_one_batch_equals_one_by_one(shared_data):
  """Batch-parallel encoding must give exactly the per-sentence result (and be usable on a split)."""
  with open(shared_data / "cs224n" / "ids-sst-dev.csv", encoding="utf-8", newline="") as f:
    sentences = [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]
  assert len(sentences) > 1000
  tokenizer = Tokenizer.from_checkpoint()
  batch = tokenizer(sentences, max_length=64)
  assert batch["input_ids"].shape[0] == len(sentences) and batch["input_ids"].shape[1] <= 64
  for i in range(0, len(sentences), 97):
    (one,), _ = tokenizer.encode_ragged([sentences[i]], max_length=64)
    assert batch["input_ids"][i, :len(one)].tolist() == one.tolist()
    assert batch["attention_mask"][i].sum() == len(one)


# A course-style sentence with every kind of PTB token, and the plain text it stands for.
PTB_SENTENCE = (" It does n't -LRB- quite -RRB- work -LSB- sic -RSB- : `` ca n't '' , wo N'T , Is N't ,"
                " co-writer\\/director \\* -LCB- x -RCB- .")
PLAIN_SENTENCE = (" It doesn't ( quite ) work [ sic ] : \" can't \" , woN'T , IsN't ,"
                  " co-writer/director * { x } .")


def test_ptb_detokenization_reads_ptb_tokens_as_the_plain_text():
  detokenizing, plain = Tokenizer.from_checkpoint(detokenize_ptb=True), Tokenizer.from_checkpoint()
  assert detokenizing.normalize(PTB_SENTENCE) == plain.normalize(PLAIN_SENTENCE)
  assert detokenizing([PTB_SENTENCE])["input_ids"].tolist() == plain([PLAIN_SENTENCE])["input_ids"].tolist()
  # Without it the PTB tokens are word pieces of their own: "-LRB-" is "-", "l", "##rb", "-".
  assert plain([PTB_SENTENCE])["input_ids"].shape[1] > detokenizing([PTB_SENTENCE])["input_ids"].shape[1]
  assert "doesn ' t" in " ".join(plain._untruncated.encode(PLAIN_SENTENCE).tokens)


def test_ptb_detokenization_leaves_plain_text_alone():
  texts = ["It doesn't work (quite): \"can't\", won't, co-writer/director.", "Isn't it? n't-words, don'ts.",
           "A 5'' screen [sic] {x} \\ / * -- done", "Shouldn't we?"]
  detokenizing, plain = Tokenizer.from_checkpoint(detokenize_ptb=True), Tokenizer.from_checkpoint()
  for text in texts[:2] + texts[3:]:
    assert detokenizing.normalize(text) == plain.normalize(text), text
  assert detokenizing(texts)["input_ids"][[0, 1, 3]].tolist() == plain(texts)["input_ids"][[0, 1, 3]].tolist()
  assert detokenizing.normalize(texts[2]) == plain.normalize('A 5" screen [sic] {x} \\ / * -- done')  # '' is PTB's close quote
  assert "detokenize_ptb=True" in repr(detokenizing)
