"""The step benchmark runs end to end on a tiny encoder, and counts FLOPs as XLA does.

The benchmark itself is a script (`python -m bench.step_benchmark`); timing here
would only measure the test machine's load. These tests pin that its pieces
work together: both sides run every kind of step and the table has positive
numbers for each, the two sides see the same examples, and the analytic FLOP
count agrees with XLA's own count for the encoder.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import batches as bench_batches
from bench import flops, our_side, results, step_benchmark, torch_peer
from bert_jax.config import BertConfig
from bert_jax.modeling import BertModel
from bert_jax.tasks import TASKS
from bert_jax.tokenizer import Tokenizer

WORDS = ("the film is a quiet triumph of style over substance and never once bores its audience "
         "though the plot wanders in the middle act where nothing much happens at all").split()


def sentence(k: int) -> str:
  return " ".join(WORDS[(3 * k + i) % len(WORDS)] for i in range(3 + (7 * k) % 19))


@pytest.fixture(scope="module")
def tiny_data():
  tokenizer = Tokenizer.from_checkpoint("minilm-l6")
  sentences = [sentence(k) for k in range(16)]
  pairs = [(sentence(k), sentence(k + 5)) for k in range(16)]
  return bench_batches.BenchData.from_sentences(tokenizer, sentences, pairs, max_length=32, num_buckets=2)


def test_benchmark_rows_for_ours_and_the_peer(tiny_data):
  bert_config = step_benchmark.model_config("tiny", vocab_size=30522)
  run = lambda workloads, paddings: step_benchmark.run_benchmark(
      bert_config, tiny_data, model_name="tiny", workloads=workloads, paddings=paddings, peers=("hf-sdpa",),
      frozen_word_embeddings=False, iters=1, warmup=0, batch_size=4, same_length=16, matmul_size=128,
      log=lambda _: None)
  # At the fewest compilations: the multitask step in natural padding, inference in both.
  # (Our PCGrad step is the trainer's, tested in test_train; the peer's is tested below.)
  train_result = run(("multitask",), ("natural",))
  inference_result = run(("inference",), ("natural", "same"))
  rows = {(r.workload, r.padding, r.impl): r for r in train_result.rows + inference_result.rows}
  expected = [("multitask", "natural"), ("inference", "natural"), ("inference", "same")]
  assert set(rows) == {(w, p, impl) for w, p in expected for impl in ("ours", "hf-sdpa")}
  for key, row in rows.items():
    for field in ("ms_per_step", "examples_per_s", "real_tokens_per_s", "gflop_per_s", "mfu", "peak_rss_mb"):
      assert getattr(row, field) > 0, (key, field, row)
    assert 0 < row.real_fraction <= 1, (key, row)
  # The same examples on both sides: equal real tokens per step, whatever the padding.
  for workload, padding in expected:
    ours, peer = rows[(workload, padding, "ours")], rows[(workload, padding, "hf-sdpa")]
    assert ours.real_tokens_per_s * ours.ms_per_step == pytest.approx(peer.real_tokens_per_s * peer.ms_per_step)
  # The same padded shape: the same FLOPs per step.
  ours, peer = rows[("inference", "same", "ours")], rows[("inference", "same", "hf-sdpa")]
  assert ours.gflop_per_s * ours.ms_per_step == pytest.approx(peer.gflop_per_s * peer.ms_per_step)
  table = results.format_table(train_result)
  for word in ("ours", "hf-sdpa", "multitask", "fp32 matmul peak"):
    assert word in table
  assert {(q["workload"], q["padding"]) for q in results.ratios(inference_result.rows)} == {
      ("inference", "natural"), ("inference", "same")}
  assert set(train_result.breakdowns["tiny multitask natural"]) == {
      "gradient sst", "gradient para", "gradient sts", "apply"}


def test_packed_natural_step_sees_the_peers_examples_with_less_padding():
  from data_prep.packing import PackingSpec
  tokenizer = Tokenizer.from_checkpoint("minilm-l6")
  data = bench_batches.BenchData.from_sentences(
      tokenizer, [sentence(k) for k in range(16)], [(sentence(k), sentence(k + 5)) for k in range(16)],
      max_length=32, num_buckets=2, packing=PackingSpec((32,), row_multiple=2))
  plan = bench_batches.plan_workload(data, "multitask", "natural", batch_size=4, count=2, same_length=16, seed=0)
  for step in plan.ours:
    for task, batches in step.items():
      batch = our_side.our_batch(data.train[task], batches)
      assert "segment_ids" in batch and batch["input_ids"].shape[1] == 32
  result = step_benchmark.run_benchmark(
      step_benchmark.model_config("tiny", vocab_size=30522), data, model_name="tiny", workloads=("multitask",),
      paddings=("natural",), peers=("hf-sdpa",), frozen_word_embeddings=False, iters=2, warmup=0,
      batch_size=4, same_length=16, matmul_size=128, log=lambda _: None)
  ours, peer = (next(r for r in result.rows if r.impl == impl) for impl in ("ours", "hf-sdpa"))
  assert ours.real_tokens_per_s * ours.ms_per_step == pytest.approx(peer.real_tokens_per_s * peer.ms_per_step)
  assert ours.real_fraction > peer.real_fraction


def test_natural_padding_gives_the_peer_the_same_examples_padded_to_their_longest(tiny_data):
  plan = bench_batches.plan_workload(tiny_data, "multitask", "natural", batch_size=4, count=3,
                                     same_length=16, seed=0)
  for task in TASKS:
    ours = np.sort(np.concatenate([step[task].indices for step in plan.ours]))
    peer = np.sort(np.concatenate([step[task].indices for step in plan.peer]))
    np.testing.assert_array_equal(ours, peer)
    split = tiny_data.train[task]
    for step in plan.ours:  # ours: every example fits its bucket, the smallest that holds it or a longer one
      assert split.lengths[step[task].indices].max() <= step[task].length
      assert step[task].length in tiny_data.buckets[task]


def test_analytic_flops_match_xla_cost_analysis():
  config = BertConfig.tiny(vocab_size=64, hidden_size=128, intermediate_size=512, num_attention_heads=4,
                           num_hidden_layers=2, max_position_embeddings=64)
  batch, length = 4, 32
  model = BertModel(config)
  ids = jnp.ones((batch, length), jnp.int32)
  params = model.init(jax.random.key(0), ids)["params"]
  compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, ids).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  analytic = flops.encoder_forward_flops(config, batch, length)
  # XLA also counts LayerNorm, softmax and GELU, which the analytic count leaves out.
  assert analytic <= cost["flops"] <= 1.15 * analytic


def test_peer_pcgrad_step_matches_algorithm_1_on_two_tasks(tiny_data, monkeypatch):
  """With two tasks PCGrad is deterministic: g1 - min(0, g1.g2) / |g2|^2 g2, and the same for g2."""
  import torch
  from transformers import BertTokenizerFast
  from train.configs import base
  bert_config = step_benchmark.model_config("tiny", vocab_size=30522)
  peer = torch_peer.TorchPeer("hf-sdpa", bert_config, base.get_config().model)
  peer.model.eval()  # no dropout, so the gradients below are the ones pcgrad_step sees
  plan = bench_batches.plan_workload(tiny_data, "pcgrad", "natural", batch_size=4, count=1,
                                     same_length=16, seed=0)
  hf_tokenizer = BertTokenizerFast(tiny_data.vocab_path)
  batches = {t: torch_peer.torch_batch(tiny_data.train[t], plan.peer[0][t], hf_tokenizer)
             for t in ("sst", "para")}
  def gradient(task):
    peer.model.zero_grad(set_to_none=True)
    peer.loss(task, batches[task]).backward()
    return np.concatenate([(p.grad if p.grad is not None else torch.zeros_like(p)).numpy().ravel()
                           for p in peer.params]).astype(np.float64)

  g1, g2 = gradient("sst"), gradient("para")
  if g1 @ g2 >= 0:  # make the two tasks conflict, so that the projection is what is tested
    loss = peer.loss
    monkeypatch.setattr(peer, "loss", lambda task, batch: -loss(task, batch) if task == "para" else loss(task, batch))
    g2 = -g2
  dot = g1 @ g2
  assert dot < 0
  expected = g1 + g2 - min(dot, 0.0) * (g2 / (g2 @ g2) + g1 / (g1 @ g1))
  seen = {}
  monkeypatch.setattr(peer, "_finish", lambda: seen.setdefault(
      "merged", torch.cat([p.grad.flatten() for p in peer.params]).numpy()))
  peer.pcgrad_step(batches)
  np.testing.assert_allclose(seen["merged"], expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_matmul_floor_times_both_sides_on_tiny_shapes():
  from bench import matmul_floor
  assert matmul_floor.jax_seconds(1, 8, 16, tokens=4, iters=1) > 0
  assert matmul_floor.torch_seconds(1, 8, 16, tokens=4, iters=1, threads=1) > 0
  assert matmul_floor.layer_shapes(8, 16) == [(8, 8)] * 4 + [(8, 16), (16, 8)]


def test_gradient_timing_runs_the_sst_gradient_of_this_checkout():
  from bench import gradient_timing
  times = gradient_timing.gradient_seconds(batch_size=2, length=8, iters=2)
  assert len(times) == 2 and all(t > 0 for t in times)
