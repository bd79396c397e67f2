"""Sequence packing: placement, packed arrays, the input pipeline, and packed == padded in the model."""

import jax
import numpy as np
import pytest

from bert_jax import checkpoints, losses as losses_lib, multitask
from bert_jax.config import BertConfig
from data_prep import packing, pipeline
from data_prep.tokenized import EncodedSplit, Ragged, SpecialIds
from tests.test_data_pipeline import synthetic_split

SPECIAL = SpecialIds(pad=0, cls=101, sep=102)


def test_first_fit_decreasing_places_every_sequence_once_without_overlap():
  lengths = np.random.default_rng(0).integers(2, 40, size=200)
  placement = packing.first_fit_decreasing(lengths, 64)
  covered = np.zeros((placement.num_rows, 64), int)
  for n, r, o in zip(lengths, placement.row, placement.offset):
    covered[r, o:o + n] += 1
  assert covered.max() == 1  # no token position used twice
  assert covered.sum() == lengths.sum()
  assert placement.num_rows <= int(np.ceil(lengths.sum() / 64 * 1.25))  # FFD packs tightly
  for r in range(placement.num_rows):  # segments are numbered 1..k within each row
    assert sorted(placement.segment[placement.row == r]) == list(range(1, (placement.row == r).sum() + 1))


def test_first_fit_decreasing_limits_segments_and_rejects_what_does_not_fit():
  placement = packing.first_fit_decreasing([2] * 10, 8)
  assert np.bincount(placement.row).max() <= packing.max_segments(8) == 4
  assert packing.first_fit_decreasing([3, 3, 2, 2], 5).num_rows == 2
  with pytest.raises(ValueError, match="does not fit"):
    packing.first_fit_decreasing([9], 8)
  with pytest.raises(ValueError, match="longer than every pack length"):
    packing.choose_pack_length(200, (64, 128))
  assert packing.choose_pack_length(65, (128, 64)) == 128


def test_row_counts_round_to_few_shapes_with_little_waste():
  rounded = [packing.round_rows(n, 2) for n in range(1, 300)]
  assert all(r >= n and r % 2 == 0 for n, r in zip(range(1, 300), rounded))
  assert max((r - n) / n for n, r in zip(range(8, 300), rounded[7:])) <= 1 / 8 + 1e-9
  assert len(set(rounded[49:60])) <= 3  # eval-sized batches: 50..60 rows share a few shapes
  assert [packing.round_rows(n, 2) for n in (13, 50, 100, 150)] == [14, 52, 104, 160]
  assert packing.round_rows(13, 8) == 16


def test_pack_lays_out_tokens_positions_segments_slots_and_starts():
  sequences = [[np.array([101, 5, 102])], [np.array([101, 6, 7, 8, 102])], [np.array([101, 102])]]
  batch = packing.pack(sequences, pad_id=0, pack_lengths=(8, 16), row_multiple=4)
  assert batch["input_ids"].shape == (4, 8)  # 2 rows needed, rounded up to 4
  slots_per_row = packing.max_segments(8)
  for b, (seq,) in enumerate(sequences):
    start = batch["sequence_starts"][b, 0]
    row, offset = divmod(int(start), 8)
    np.testing.assert_array_equal(batch["input_ids"][row, offset:offset + len(seq)], seq)
    np.testing.assert_array_equal(batch["position_ids"][row, offset:offset + len(seq)], np.arange(len(seq)))
    segment = batch["segment_ids"][row, offset]
    assert np.all(batch["segment_ids"][row, offset:offset + len(seq)] == segment) and segment > 0
    assert batch["sequence_slots"][b, 0] == row * slots_per_row + segment - 1
  assert np.count_nonzero(batch["segment_ids"]) == 10
  assert np.all(batch["input_ids"][batch["segment_ids"] == 0] == 0)


def test_pack_groups_have_their_own_rows_and_local_indices():
  rng = np.random.default_rng(1)
  sequences = [[np.arange(n)] for n in rng.integers(2, 20, size=16)]
  batch = packing.pack(sequences, pad_id=0, pack_lengths=(32,), row_multiple=2, num_groups=4)
  rows = batch["input_ids"].shape[0] // 4
  for g in range(4):
    for b in range(4 * g, 4 * g + 4):
      row, offset = divmod(int(batch["sequence_starts"][b, 0]), 32)
      assert row < rows  # local to the group
      seq = sequences[b][0]
      np.testing.assert_array_equal(batch["input_ids"][g * rows + row, offset:offset + len(seq)], seq)


def test_packed_collate_pairs_and_filler():
  split = synthetic_split([5, 9, 14, 7], pair_encoding="separate")
  batch = packing.PackingSpec(pack_lengths=(32, 64), row_multiple=1).collate(split, np.array([2, 0, -1, 3]))
  assert batch["sequence_slots"].shape == (4, 2)
  np.testing.assert_array_equal(batch["weights"], [1, 1, 0, 1])
  np.testing.assert_array_equal(batch["index"], [2, 0, -1, 3])
  for b, i in enumerate([2, 0, -1, 3]):
    for j, key in enumerate(("input_ids_a", "input_ids_b")):
      row, offset = divmod(int(batch["sequence_starts"][b, j]), batch["input_ids"].shape[1])
      expected = split.tokens[key].row(i) if i >= 0 else np.array([SPECIAL.cls, SPECIAL.sep])
      np.testing.assert_array_equal(batch["input_ids"][row, offset:offset + len(expected)], expected)


def test_joint_pairs_keep_their_token_types():
  a, b = np.array([101, 7, 8, 102]), np.array([9, 102])
  split = EncodedSplit(name="joint", pair=True, pair_encoding="joint", max_length=16, labeled=True,
                       ids=np.array(["x"]), labels=np.array([1.0], np.float32),
                       tokens={"input_ids": Ragged.from_sequences([np.concatenate([a, b])]),
                               "token_type_ids": Ragged.from_sequences([np.array([0, 0, 0, 0, 1, 1])])},
                       special=SPECIAL, provenance=())
  batch = packing.PackingSpec(pack_lengths=(8,), row_multiple=1).collate(split, np.array([0]))
  np.testing.assert_array_equal(batch["token_type_ids"][0, :6], [0, 0, 0, 0, 1, 1])
  assert batch["sequence_slots"].shape == (1, 1)


def test_packed_training_batches_cover_each_example_once_per_epoch_and_resume():
  split = synthetic_split(list(np.random.default_rng(2).integers(3, 60, size=50)))
  spec = packing.PackingSpec((64, 128), row_multiple=2)
  stream = pipeline.TrainBatches(split, (16, 32, 64), batch_size=8, seed=0, task="sst", packing=spec)
  seen = []
  for _ in range(stream.steps_per_epoch()):
    batch = stream.next_batch()
    assert batch["input_ids"].shape[0] % 2 == 0 and batch["input_ids"].shape[1] in (64, 128)
    seen += list(batch["index"][batch["index"] >= 0])
  assert sorted(seen) == list(range(50))
  state = stream.get_state()
  expected = stream.next_batch()
  resumed = pipeline.TrainBatches(split, (16, 32, 64), batch_size=8, seed=0, task="sst", packing=spec)
  resumed.set_state(state)
  for key, value in resumed.next_batch().items():
    np.testing.assert_array_equal(value, expected[key])


def test_packed_eval_batches_cover_each_example_once():
  split = synthetic_split(list(np.random.default_rng(3).integers(3, 100, size=37)), pair_encoding="separate")
  spec = packing.PackingSpec((64, 128), row_multiple=8)
  indices = [i for batch in pipeline.eval_batches(split, 16, (32, 64), packing=spec)
             for i in batch["index"] if i >= 0]
  assert sorted(indices) == list(range(37))


# ----------------------------------------------------------------------------
# The model: a packed batch gives the outputs (and gradients) of the padded one.
# ----------------------------------------------------------------------------


def _model_and_params(bert_config, pooling, para_head="diff", pretrained=None):
  model = multitask.MultitaskBert(config=bert_config, sentiment_pooling=pooling, pair_pooling=pooling,
                              paraphrase_head=para_head, similarity_head="diff")
  params = multitask.init_params(model, jax.random.key(0), pretrained_bert=pretrained)
  return model, params


@pytest.mark.parametrize("pooling", ["mean", "cls", "both"])
@pytest.mark.parametrize("task, encoding", [("sst", None), ("para", "separate"), ("sts", "separate")])
def test_packed_outputs_and_gradients_match_padded(pooling, task, encoding):
  config = BertConfig.tiny(vocab_size=2000, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  model, params = _model_and_params(config, pooling)
  split = synthetic_split(list(np.random.default_rng(4).integers(3, 40, size=12)), pair_encoding=encoding)
  indices = np.r_[np.arange(10), -1, -1]
  padded = {k: v for k, v in split.collate(indices, 48).items() if k != "index"}
  spec = packing.PackingSpec(pack_lengths=(64,), row_multiple=2)
  packed = {k: v for k, v in spec.collate(split, indices).items() if k != "index"}
  method = {"sst": "sentiment", "para": "paraphrase", "sts": "similarity"}[task]

  def loss(params, batch):
    outputs = model.apply({"params": params}, batch, method=method)
    return losses_lib.task_loss(task, outputs, batch)[0], outputs

  # Jitted, as the train step is: one compile per layout beats thousands of eager ops.
  loss_and_grads = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (loss_padded, out_padded), grads_padded = loss_and_grads(params, padded)
  (loss_packed, out_packed), grads_packed = loss_and_grads(params, packed)
  np.testing.assert_allclose(out_packed, out_padded, atol=2e-5)
  np.testing.assert_allclose(loss_packed, loss_padded, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_packed), jax.tree.leaves(grads_padded)):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_cross_encoder_reads_packed_joint_batches():
  config = BertConfig.tiny(vocab_size=2000, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  model, params = _model_and_params(config, "mean", para_head="cross")
  rng = np.random.default_rng(5)
  seqs = [np.concatenate([[101], rng.integers(1000, 2000, n), [102]]).astype(np.int32)
          for n in rng.integers(3, 30, 6)]
  types = [np.r_[np.zeros(len(s) // 2, np.int32), np.ones(len(s) - len(s) // 2, np.int32)] for s in seqs]
  split = EncodedSplit(name="joint", pair=True, pair_encoding="joint", max_length=64, labeled=True,
                       ids=np.arange(6).astype(str), labels=rng.integers(0, 2, 6).astype(np.float32),
                       tokens={"input_ids": Ragged.from_sequences(seqs),
                               "token_type_ids": Ragged.from_sequences(types)},
                       special=SPECIAL, provenance=())
  padded = split.collate(np.arange(6), 32)
  packed = packing.PackingSpec(pack_lengths=(64,), row_multiple=1).collate(split, np.arange(6))
  np.testing.assert_allclose(model.apply({"params": params}, packed, method="paraphrase"),
                             model.apply({"params": params}, padded, method="paraphrase"), atol=2e-5)


def test_packed_matches_padded_on_the_real_checkpoint():
  """all-MiniLM-L6-v2 (real weights, 6 layers): packed and padded sentence embeddings agree."""
  pretrained = checkpoints.load_hf_checkpoint("minilm-l6")
  model, params = _model_and_params(pretrained.config, "mean", pretrained=pretrained.params)
  texts = ["A man is playing a guitar.", "the movie is a charming , often funny film .",
           "How do I learn Python quickly?", "Someone plays guitar.", "A woman slices an onion.",
           "What is the best way to learn programming in Python?"]
  ids = [np.asarray(x, np.int32) for x in pretrained.tokenizer.encode_ragged(texts, max_length=64)[0]]
  split = EncodedSplit(name="real", pair=False, pair_encoding=None, max_length=64, labeled=True,
                       ids=np.arange(6).astype(str), labels=np.zeros(6, np.int32),
                       tokens={"input_ids": Ragged.from_sequences(ids)},
                       special=SpecialIds(pad=pretrained.tokenizer.pad_id, cls=pretrained.tokenizer.cls_id,
                                          sep=pretrained.tokenizer.sep_id), provenance=())
  padded = split.collate(np.arange(6), 24)
  packed = packing.PackingSpec(pack_lengths=(64,), row_multiple=1).collate(split, np.arange(6))
  assert packed["input_ids"].shape == (1, 64)  # all six sentences share one row
  embed = lambda batch: model.apply({"params": params}, multitask.as_packed(batch), "mean", True,
                                    method=model._pooled)[:, 0]
  np.testing.assert_allclose(embed(packed), embed(padded), atol=1e-5)
