"""Tokenize-once cache, bucketing, batching, device sharding, eval padding and resume."""

import itertools
import json
import math

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.tokenizer import Tokenizer
from data_prep import bucketing, pipeline
from data_prep.tfds_split import TfdsSplit
from data_prep.tokenized import EncodedSplit, Ragged, SpecialIds
from tests.test_data_csv_rows import SMALL, write_course_files

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer.from_checkpoint("minilm-l6")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = write_course_files(tmp_path_factory.mktemp("course"))
  return {"tfds_dir": tmp_path_factory.mktemp("tfds"), "cache_dir": tmp_path_factory.mktemp("tokens"),
          "builder_kwargs": {"local_dir": root, "allow_download": False}}


def load(task, split, tokenizer, dirs, **kwargs):
  return pipeline.load_task_split(task, pipeline.task_splits(task, split), tokenizer, **dirs, **kwargs)


class CountingTokenizer:
  """The real tokenizer, counting how often it is asked to tokenize."""

  def __init__(self, tokenizer):
    self._tokenizer, self.calls = tokenizer, 0

  def __getattr__(self, name):
    return getattr(self._tokenizer, name)

  def encode_ragged(self, *args, **kwargs):
    self.calls += 1
    return self._tokenizer.encode_ragged(*args, **kwargs)


def synthetic_split(lengths, pair_encoding=None, seed=0):
  """An EncodedSplit with given token lengths, ids 1000 + row, for TFDS-free tests."""
  rng = np.random.default_rng(seed)
  seqs = [np.concatenate([[101], rng.integers(1000, 2000, n - 2), [102]]).astype(np.int32) for n in lengths]
  if pair_encoding == "separate":
    tokens = {"input_ids_a": Ragged.from_sequences(seqs), "input_ids_b": Ragged.from_sequences(seqs[::-1])}
  else:
    tokens = {"input_ids": Ragged.from_sequences(seqs)}
  n = len(lengths)
  return EncodedSplit(name="synthetic", pair=pair_encoding is not None, pair_encoding=pair_encoding,
                      max_length=128, labeled=True, ids=np.array([f"id{i}" for i in range(n)]),
                      labels=np.arange(n, dtype=np.int32) % 5, tokens=tokens,
                      special=SpecialIds(pad=0, cls=101, sep=102), provenance=())


# ---------------------------------------------------------------------------- tokenization + cache

def test_second_load_comes_from_the_cache(tokenizer, dirs, tmp_path):
  dirs = {**dirs, "cache_dir": tmp_path}
  first = CountingTokenizer(tokenizer)
  split = load("sts", "train", first, dirs)
  assert first.calls == 2  # sentence1 and sentence2, encoded separately
  assert len(list(tmp_path.glob("cs224n_sts-default-1.0.0-train-separate-L128-*.npz"))) == 1
  second = CountingTokenizer(tokenizer)
  cached = load("sts", "train", second, dirs)
  assert second.calls == 0
  for key in split.tokens:
    np.testing.assert_array_equal(cached.tokens[key].flat, split.tokens[key].flat)
    np.testing.assert_array_equal(cached.tokens[key].offsets, split.tokens[key].offsets)
  np.testing.assert_array_equal(cached.labels, split.labels)
  np.testing.assert_array_equal(cached.ids, split.ids)
  # Another max_length, encoding or PTB setting is another entry, not a stale hit.
  third = CountingTokenizer(tokenizer)
  load("sts", "train", third, dirs, max_length=16)
  load("sts", "train", third, dirs, pair_encoding="joint")
  assert third.calls == 3
  load("sts", "train", CountingTokenizer(Tokenizer.from_checkpoint("minilm-l6", detokenize_ptb=True)), dirs)
  assert len(list(tmp_path.glob("*.npz"))) == 4


def test_single_sentence_batch_matches_the_tokenizer(tokenizer, dirs):
  split = load("sst", "train", tokenizer, dirs)
  texts = [e["sentence"] for e in _examples("cs224n_sst", "train", dirs)]
  rows = np.array([3, 0, 7, -1])
  batch = split.collate(rows, 32)
  reference = tokenizer([texts[i] for i in rows[:3]], max_length=128, pad_to=32)
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    assert batch[key].shape == (4, 32) and batch[key].dtype == np.int32
    np.testing.assert_array_equal(batch[key][:3], reference[key])
  # The filler row is "[CLS] [SEP]" with weight 0, index -1, and a harmless label.
  np.testing.assert_array_equal(batch["input_ids"][3, :3], [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id])
  np.testing.assert_array_equal(batch["attention_mask"][3, :3], [1, 1, 0])
  np.testing.assert_array_equal(batch["weights"], [1, 1, 1, 0])
  np.testing.assert_array_equal(batch["index"], [3, 0, 7, -1])
  assert batch["labels"].dtype == np.int32 and batch["labels"][3] == 0
  np.testing.assert_array_equal(batch["labels"][:3], [3, 0, 2])  # the course file's labels are i % 5


def test_pair_batches_separate_and_joint_match_the_tokenizer(tokenizer, dirs):
  examples = _examples("cs224n_quora", "train", dirs, config="dev_90_10")
  first, second = [e["sentence1"] for e in examples], [e["sentence2"] for e in examples]
  rows = np.array([1, 4])
  separate = load("para", "train", tokenizer, dirs).collate(rows, 24)
  assert separate["input_ids"].shape == (2, 2, 24)
  for side, texts in ((0, first), (1, second)):
    reference = tokenizer([texts[i] for i in rows], max_length=128, pad_to=24)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
      np.testing.assert_array_equal(separate[key][:, side], reference[key])
  joint = load("para", "train", tokenizer, dirs, pair_encoding="joint").collate(rows, 40)
  reference = tokenizer([first[i] for i in rows], [second[i] for i in rows], max_length=128, pad_to=40)
  for key in ("input_ids", "attention_mask", "token_type_ids"):
    assert joint[key].shape == (2, 40)
    np.testing.assert_array_equal(joint[key], reference[key])
  assert set(np.unique(joint["token_type_ids"])) == {0, 1}
  assert separate["labels"].dtype == np.float32


def test_extra_sources_are_concatenated_and_recorded(tokenizer, dirs):
  tfds_splits = pipeline.task_splits("sst", "train", cfimdb="not_polar")
  assert [str(s) for s in tfds_splits] == ["cs224n_sst:train", "cfimdb/not_polar:train"]
  split = pipeline.load_task_split("sst", tfds_splits, tokenizer, **dirs)
  n_sst, n_cf = SMALL["sst"][0], SMALL["cfimdb"][0]
  assert len(split) == n_sst + n_cf
  assert set(split.labels[n_sst:]) == {1, 3}
  assert [p["dataset"] for p in split.provenance] == ["cs224n_sst/default", "cfimdb/not_polar"]
  sts = pipeline.load_task_split("sts", pipeline.task_splits("sts", "train", sick=True), tokenizer, **dirs)
  assert len(sts) == SMALL["sts"][0] + SMALL["sick"]["TRAIN"]
  # Extra data never enters evaluation splits.
  assert pipeline.task_splits("sts", "validation", sick=True) == [TfdsSplit("cs224n_sts", "validation")]


def test_wrong_kind_of_source_for_a_task(tokenizer, dirs):
  with pytest.raises(ValueError, match="task 'para' needs sentence pairs, but cs224n_sst:train"):
    pipeline.load_task_split("para", ["cs224n_sst:train"], tokenizer, **dirs)


def _examples(name, split, dirs, config=None):
  from data_prep import catalog
  builder = catalog.get_builder(TfdsSplit(name, split, config), tfds_dir=dirs["tfds_dir"],
                                builder_kwargs=dirs["builder_kwargs"])
  return catalog.read_split(builder, split)


# ---------------------------------------------------------------------------- bucketing

def test_bucket_choice_is_the_least_padding_of_all_choices():
  lengths = np.random.default_rng(0).integers(5, 100, size=300)
  buckets = bucketing.choose_bucket_lengths(lengths, num_buckets=3, max_length=128)
  assert len(buckets) == 3 and all(b % 8 == 0 for b in buckets) and buckets[-1] == 104  # max 99 -> 104
  padded = lambda bs: sum(bs[i] for i in bucketing.bucket_index(lengths, bs))
  candidates = range(8, 105, 8)
  best = min(padded(c + (104,)) for c in itertools.combinations([c for c in candidates if c < 104], 2))
  assert padded(buckets) == best


def test_bucket_lengths_are_capped_at_max_length_and_cover_every_example():
  lengths = np.array([3, 7, 60, 100])
  assert bucketing.choose_bucket_lengths(lengths, num_buckets=4, max_length=100) == (8, 64, 100)
  assert bucketing.choose_bucket_lengths(np.array([5, 6]), num_buckets=4, max_length=128) == (8,)
  with pytest.raises(ValueError, match="more than max_length=64"):
    bucketing.choose_bucket_lengths(np.array([70]), max_length=64)


def test_padding_fraction_per_bucket():
  split = synthetic_split([5, 8, 10, 16, 30], pair_encoding="separate")
  stats = bucketing.bucket_stats(split.lengths, split.real_tokens, (8, 16, 32), split.rows_per_example)
  # separate pairs: row r pairs length[r] with length[4 - r]; padded length is the longer one.
  assert [s.num_examples for s in stats] == [0, 3, 2]
  assert stats[1].padded_tokens == 3 * 16 * 2
  assert stats[1].real_tokens == (5 + 30) * 0 + (8 + 16) + (10 + 10) + (16 + 8)
  assert stats[1].padding_fraction == pytest.approx(1 - 68 / 96)
  assert bucketing.total_padding_fraction(stats) == pytest.approx(1 - split.real_tokens.sum() / (96 + 128))


def test_training_batches_have_one_shape_per_bucket(tokenizer, dirs):
  split = load("sst", "train", tokenizer, dirs)
  buckets = bucketing.choose_bucket_lengths(split.lengths, num_buckets=3, max_length=128)
  batches = pipeline.TrainBatches(split, buckets, batch_size=4, seed=0, task="sst")
  shapes = {batches.next_batch()["input_ids"].shape for _ in range(3 * batches.steps_per_epoch())}
  assert shapes <= {(4, length) for length in buckets}


# ---------------------------------------------------------------------------- epochs, shuffling, resume

def test_an_epoch_sees_every_example_once_in_full_bucketed_batches():
  lengths = np.random.default_rng(1).integers(3, 60, size=103)
  split = synthetic_split(lengths)
  buckets = bucketing.choose_bucket_lengths(lengths, num_buckets=4)
  batches = pipeline.TrainBatches(split, buckets, batch_size=8, seed=3, task="sst")
  assert batches.steps_per_epoch() == 13
  epoch = [batches.next_batch() for _ in range(13)]
  index = np.concatenate([b["index"] for b in epoch])
  real = index[index >= 0]
  assert sorted(real) == list(range(103))
  assert sum(int((b["weights"] == 0).sum()) for b in epoch) == 13 * 8 - 103  # one partial batch
  for b in epoch:
    length = b["input_ids"].shape[1]
    assert length in buckets
    assert (lengths[b["index"][b["index"] >= 0]] <= length).all()
  assert batches.epoch == 0
  batches.next_batch()
  assert batches.epoch == 1


def test_shuffling_is_determined_by_seed_and_epoch():
  split = synthetic_split(np.random.default_rng(2).integers(3, 40, size=50))
  order = lambda seed, steps: np.concatenate([
      b["index"] for b in itertools.islice(pipeline.TrainBatches(split, (16, 40), batch_size=5, seed=seed,
                                                                 task="sts"), steps)])
  np.testing.assert_array_equal(order(0, 20), order(0, 20))
  assert not np.array_equal(order(0, 10), order(1, 10))
  assert not np.array_equal(order(0, 20)[:50], order(0, 20)[50:])  # epoch 1 is reshuffled


def test_restored_iterator_yields_exactly_the_same_batches():
  split = synthetic_split(np.random.default_rng(4).integers(3, 40, size=37), pair_encoding="separate")
  make = lambda: pipeline.TrainBatches(split, (16, 24, 40), batch_size=4, seed=7, task="para")
  original = make()
  for step in range(13):  # into the second epoch (10 steps each)
    original.next_batch(4 if step < 5 else 8)  # with a batch-size change mid-epoch
  state = json.loads(json.dumps(original.get_state()))
  restored = make()
  restored.set_state(state)
  for _ in range(12):
    expected, actual = original.next_batch(8), restored.next_batch(8)
    assert expected.keys() == actual.keys()
    for key in expected:
      np.testing.assert_array_equal(actual[key], expected[key])


def test_batch_size_change_mid_epoch_still_covers_each_example_once():
  split = synthetic_split(np.random.default_rng(5).integers(3, 40, size=45))
  batches = pipeline.TrainBatches(split, (16, 40), batch_size=4, seed=0, task="sst")
  seen = [batches.next_batch(4)["index"] for _ in range(3)]
  while batches.epoch == 0:
    seen.append(batches.next_batch(8)["index"])
  index = np.concatenate(seen[:-1])  # the last one already belongs to epoch 1
  assert sorted(index[index >= 0]) == list(range(45))


# ---------------------------------------------------------------------------- devices

def test_batch_must_divide_across_devices():
  with pytest.raises(ValueError, match="global batch size 12 is not a positive multiple of the local device count 8"):
    pipeline.TrainBatches(synthetic_split([5] * 20), (8,), batch_size=12, seed=0, task="sst", num_devices=8)
  with pytest.raises(ValueError, match="eval batch size 4 .* device count 8"):
    next(pipeline.eval_batches(synthetic_split([5] * 20), 4, (8,), num_devices=8))


def test_batches_shard_evenly_over_eight_devices():
  assert jax.local_device_count() == 8
  split = synthetic_split(np.random.default_rng(6).integers(3, 30, size=40), pair_encoding="separate")
  batch = pipeline.TrainBatches(split, (16, 32), batch_size=16, seed=0, task="sts", num_devices=8).next_batch()
  # The [devices, B / devices, ...] layout DataParallel.put_batch gives pmap.
  sharded = jax.tree.map(lambda x: x.reshape(8, x.shape[0] // 8, *x.shape[1:]), batch)
  length = batch["input_ids"].shape[-1]
  assert sharded["input_ids"].shape == (8, 2, 2, length) and sharded["weights"].shape == (8, 2)
  # pmap sees two examples per device, in order.
  per_device = jax.pmap(lambda w, i: (w.sum(), i[0]))(sharded["weights"], sharded["index"])
  np.testing.assert_array_equal(per_device[1], batch["index"][::2])
  # jit over a mesh: the [B, ...] batch placed with a NamedSharding puts rows 2d, 2d+1 on device d.
  mesh = Mesh(np.array(jax.local_devices()), ("data",))
  placed = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), batch["input_ids"])
  for shard in placed.addressable_shards:
    d = list(mesh.devices).index(shard.device)
    np.testing.assert_array_equal(np.asarray(shard.data), batch["input_ids"][2 * d:2 * d + 2])


# ---------------------------------------------------------------------------- evaluation

def test_eval_counts_every_example_exactly_once(tokenizer, dirs):
  split = load("sst", "validation", tokenizer, dirs)
  n = SMALL["sst"][1]
  batches = list(pipeline.eval_batches(split, 8, (8, 16), num_devices=8))
  assert len(batches) == math.ceil(len(split) / 8) == 1
  weights = np.concatenate([b["weights"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  assert weights.sum() == n
  assert sorted(index[weights == 1]) == list(range(n))
  assert (index[weights == 0] == -1).all()
  labels = np.concatenate([b["labels"] for b in batches])
  np.testing.assert_array_equal(labels[weights == 1], split.labels[index[weights == 1]])


def test_eval_on_many_batches_with_an_overflow_bucket():
  lengths = np.random.default_rng(8).integers(3, 50, size=61)
  lengths[[5, 17]] = 120  # longer than every training bucket
  split = synthetic_split(lengths)
  batches = list(pipeline.eval_batches(split, 8, (16, 32, 56)))
  assert all(b["input_ids"].shape[0] == 8 for b in batches)
  assert {b["input_ids"].shape[1] for b in batches} <= {16, 32, 56, 128}
  index = np.concatenate([b["index"] for b in batches])
  weights = np.concatenate([b["weights"] for b in batches])
  assert sorted(index[weights == 1]) == list(range(61)) and weights.sum() == 61
  assert sum(b["weights"].min() == 0 for b in batches) == 1  # only the last batch is padded
  assert batches[-1]["input_ids"].shape[1] == 128


def test_unlabeled_test_split_is_flagged_and_keeps_its_ids(tokenizer, dirs):
  split = load("sts", "test", tokenizer, dirs)
  assert not split.labeled and (split.labels == -1).all()
  batch = next(pipeline.eval_batches(split, 8, (16, 32)))
  real = batch["weights"] == 1
  assert list(split.ids[batch["index"][real]]) == [f"ststest{i}" for i in range(SMALL["sts"][2])]
  assert load("sts", "validation", tokenizer, dirs).labeled
