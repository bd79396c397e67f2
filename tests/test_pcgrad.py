"""PCGrad against a plain numpy Algorithm 1, hand-worked cases, and its optax wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train.pcgrad import (PCGradState, find_pcgrad_state, gram_matrix, pcgrad, pcgrad_combine,
                          task_orders)

KEY = jax.random.PRNGKey(0)


def reference_pcgrad(task_vectors, orders, pcgrad_tasks=None, reduction="sum"):
  """Algorithm 1 the obvious way: flat float64 vectors, projected one by one."""
  task_vectors = np.asarray(task_vectors, np.float64)
  num_tasks = len(task_vectors)
  tasks = range(num_tasks) if pcgrad_tasks is None else pcgrad_tasks
  projected = []
  for i in range(num_tasks):
    g_i = task_vectors[i].copy()
    if i in tasks:
      for j in orders[i]:
        g_j = task_vectors[j]
        dot, norm = g_i @ g_j, g_j @ g_j
        if dot < 0 and norm > 0:
          g_i = g_i - dot / norm * g_j
    projected.append(g_i)
  total = np.sum(projected, axis=0)
  return total / num_tasks if reduction == "mean" else total


def stacked_tree(seed, num_tasks):
  """A pytree with leaves of different ranks, each [T, ...]."""
  rng = np.random.default_rng(seed)
  shapes = {"dense": {"kernel": (4, 3), "bias": (3,)}, "LayerNorm": {"scale": (3,)},
            "embedding": (2, 2, 2)}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=(num_tasks,) + s), jnp.float32),
                      shapes, is_leaf=lambda x: isinstance(x, tuple))


def task_vectors(tree):
  """[T, N]: each task's gradient flattened, leaves in tree order."""
  return np.concatenate([np.asarray(l).reshape(l.shape[0], -1) for l in jax.tree.leaves(tree)], 1)


def flat(tree):
  return np.concatenate([np.asarray(l).ravel() for l in jax.tree.leaves(tree)])


@pytest.mark.parametrize("num_tasks", [2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_algorithm_1(num_tasks, seed):
  grads = stacked_tree(seed, num_tasks)
  rng = jax.random.PRNGKey(seed)
  combined, _ = pcgrad_combine(grads, rng)
  expected = reference_pcgrad(task_vectors(grads), np.asarray(task_orders(rng, num_tasks)))
  assert jax.tree.structure(combined) == jax.tree.structure(jax.tree.map(lambda l: l[0], grads))
  np.testing.assert_allclose(flat(combined), expected, rtol=1e-5, atol=1e-5)


def test_some_inputs_actually_conflict_and_order_matters():
  # Guards the comparison above against vacuity: the random trees do conflict,
  # and with T=4 a different order gives a different answer.
  grads = stacked_tree(0, 4)
  vectors = task_vectors(grads)
  plain = vectors.sum(0)
  orders = np.asarray(task_orders(KEY, 4))
  assert not np.allclose(reference_pcgrad(vectors, orders), plain)
  reversed_orders = orders[:, ::-1]
  assert not np.allclose(reference_pcgrad(vectors, orders), reference_pcgrad(vectors, reversed_orders))


def test_task_orders_are_permutations_of_the_other_tasks():
  orders = np.asarray(task_orders(KEY, 4))
  assert orders.shape == (4, 3)
  for i, row in enumerate(orders):
    assert sorted(row) == [j for j in range(4) if j != i]
  # A fresh key (the next step) gives fresh orders.
  assert any(not np.array_equal(task_orders(jax.random.PRNGKey(k), 4), orders) for k in range(1, 6))


def two_tasks(g1, g2):
  return {"w": jnp.array([g1, g2], jnp.float32)}


def test_hand_worked_two_task_example():
  # g1=[1,0], g2=[-1,1]: g1.g2 = -1 < 0, |g1|^2 = 1, |g2|^2 = 2.
  # g1^PC = g1 - (-1/2) g2 = [0.5, 0.5];  g2^PC = g2 - (-1/1) g1 = [0, 1].
  # Sum = [0.5, 1.5] (plain sum would be [0, 1]).
  combined, diagnostics = pcgrad_combine(two_tasks([1, 0], [-1, 1]), KEY)
  np.testing.assert_allclose(combined["w"], [0.5, 1.5], rtol=1e-6)
  np.testing.assert_allclose(diagnostics.cosine_similarity,
                             [[1, -1 / np.sqrt(2)], [-1 / np.sqrt(2), 1]], rtol=1e-6)
  assert int(diagnostics.num_conflicts) == 1
  np.testing.assert_allclose(diagnostics.grad_norms, [1, np.sqrt(2)], rtol=1e-6)


def test_only_listed_tasks_are_projected():
  # Only g1 projected: [0.5, 0.5] + unchanged g2 [-1, 1] = [-0.5, 1.5].
  combined, _ = pcgrad_combine(two_tasks([1, 0], [-1, 1]), KEY, pcgrad_tasks=(0,))
  np.testing.assert_allclose(combined["w"], [-0.5, 1.5], rtol=1e-6)


def test_pcgrad_tasks_subset_matches_reference_for_three_tasks():
  grads = stacked_tree(3, 3)
  combined, _ = pcgrad_combine(grads, KEY, pcgrad_tasks=(1, 2))
  expected = reference_pcgrad(task_vectors(grads), np.asarray(task_orders(KEY, 3)), (1, 2))
  np.testing.assert_allclose(flat(combined), expected, rtol=1e-5, atol=1e-5)


def test_mean_reduction():
  combined, _ = pcgrad_combine(two_tasks([1, 0], [-1, 1]), KEY, reduction="mean")
  np.testing.assert_allclose(combined["w"], [0.25, 0.75], rtol=1e-6)


def test_non_conflicting_gradients_are_plainly_summed():
  rng = np.random.default_rng(0)
  grads = {"a": jnp.asarray(rng.uniform(0.1, 1, (3, 5)), jnp.float32),
           "b": jnp.asarray(rng.uniform(0.1, 1, (3, 2, 2)), jnp.float32)}
  combined, diagnostics = pcgrad_combine(grads, KEY)
  for name in grads:
    np.testing.assert_allclose(combined[name], grads[name].sum(0), rtol=1e-6)
  assert int(diagnostics.num_conflicts) == 0


def test_zero_gradient_is_neither_projected_onto_nor_nan():
  combined, diagnostics = pcgrad_combine(two_tasks([0, 0], [-1, 1]), KEY)
  np.testing.assert_array_equal(combined["w"], [-1, 1])
  np.testing.assert_array_equal(diagnostics.cosine_similarity, [[0, 0], [0, 1]])
  all_zero, _ = pcgrad_combine(two_tasks([0, 0], [0, 0]), KEY)
  np.testing.assert_array_equal(all_zero["w"], [0, 0])
  # |g2|^2 = 1e-50 underflows to 0 in float32 while g1.g2 = -1e-25 does not:
  # the guard skips projecting onto g2 instead of dividing by zero.
  tiny, _ = pcgrad_combine(two_tasks([1, 0], [-1e-25, 0]), KEY)
  np.testing.assert_allclose(tiny["w"], [1, 0], rtol=1e-6)


def test_gram_matrix_and_diagnostics_match_numpy():
  grads = stacked_tree(5, 4)
  vectors = task_vectors(grads).astype(np.float64)
  gram = vectors @ vectors.T
  np.testing.assert_allclose(gram_matrix(grads), gram, rtol=1e-5, atol=1e-5)
  _, diagnostics = pcgrad_combine(grads, KEY)
  norms = np.linalg.norm(vectors, axis=1)
  np.testing.assert_allclose(diagnostics.cosine_similarity, gram / np.outer(norms, norms),
                             rtol=1e-5, atol=1e-6)
  expected_conflicts = sum(gram[i, j] < 0 for i in range(4) for j in range(i + 1, 4))
  assert expected_conflicts > 0
  assert int(diagnostics.num_conflicts) == expected_conflicts


def test_bfloat16_leaves_keep_their_dtype():
  grads = jax.tree.map(lambda l: l.astype(jnp.bfloat16), stacked_tree(0, 3))
  combined, _ = pcgrad_combine(grads, KEY)
  assert all(l.dtype == jnp.bfloat16 for l in jax.tree.leaves(combined))
  expected = reference_pcgrad(task_vectors(jax.tree.map(lambda l: l.astype(jnp.float32), grads)),
                              np.asarray(task_orders(KEY, 3)))
  np.testing.assert_allclose(flat(jax.tree.map(lambda l: l.astype(jnp.float32), combined)),
                             expected, rtol=2e-2, atol=2e-2)


def test_bad_inputs_raise_with_the_offending_leaf():
  with pytest.raises(ValueError, match=r"\['b'\].*leading task axis of size 3"):
    pcgrad_combine({"a": jnp.zeros((3, 2)), "b": jnp.zeros((2, 2))}, KEY)
  with pytest.raises(ValueError, match="reduction"):
    pcgrad(3, reduction="max")
  with pytest.raises(ValueError, match="outside range"):
    pcgrad(3, pcgrad_tasks=(3,))
  tx = pcgrad(2)
  with pytest.raises(ValueError, match="num_tasks=2"):
    tx.update({"a": jnp.zeros((3, 2))}, tx.init({"a": jnp.zeros(2)}))


def test_jitted_in_chain_with_adamw_receives_rng_via_extra_args():
  grads = stacked_tree(7, 3)
  params = jax.tree.map(lambda l: jnp.zeros_like(l[0]), grads)
  tx = optax.chain(pcgrad(3), optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
  state = tx.init(params)
  step_key = jax.random.fold_in(KEY, 5)
  updates, new_state = jax.jit(lambda g, s, p, k: tx.update(g, s, p, rng=k))(
      grads, state, params, step_key)

  # The same thing by hand: surgery with the same key, then clip + AdamW.
  combined, diagnostics = pcgrad_combine(grads, step_key)
  rest = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
  expected, _ = rest.update(combined, rest.init(params), params)
  np.testing.assert_allclose(flat(updates), flat(expected), rtol=1e-5, atol=1e-7)

  pcgrad_state = find_pcgrad_state(new_state)
  assert isinstance(pcgrad_state, PCGradState)
  assert int(pcgrad_state.count) == 1
  np.testing.assert_allclose(pcgrad_state.cosine_similarity, diagnostics.cosine_similarity,
                             rtol=1e-6)
  assert int(pcgrad_state.num_conflicts) == int(diagnostics.num_conflicts)


def test_without_rng_the_state_key_is_folded_with_the_count():
  grads = stacked_tree(8, 4)
  tx = pcgrad(4, seed=3)
  state = tx.init(None)
  update = jax.jit(tx.update)
  for step in range(2):
    updates, state = update(grads, state)
    expected, _ = pcgrad_combine(grads, jax.random.fold_in(jax.random.PRNGKey(3), step))
    # Jitted and eager sums reduce in different orders: equal to float32 rounding, not bitwise.
    np.testing.assert_allclose(flat(updates), flat(expected), rtol=1e-5)
  assert int(state.count) == 2


def test_sharded_gradients_are_not_gathered():
  # 8 simulated CPU devices: leaves sharded along a non-task axis. The Gram is
  # a local contraction plus an all-reduce of T*T scalars; no leaf is gathered.
  mesh = Mesh(np.array(jax.devices()[:8]), ("model",))
  rng = np.random.default_rng(0)
  grads = {"kernel": jnp.asarray(rng.normal(size=(3, 16, 8)), jnp.float32),
           "bias": jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)}
  sharded = {"kernel": jax.device_put(grads["kernel"], NamedSharding(mesh, PartitionSpec(None, "model"))),
             "bias": jax.device_put(grads["bias"], NamedSharding(mesh, PartitionSpec(None, "model")))}
  combine = jax.jit(lambda g: pcgrad_combine(g, KEY)[0])
  hlo = combine.lower(sharded).compile().as_text()
  assert "all-reduce" in hlo and "all-gather" not in hlo
  combined = combine(sharded)
  assert combined["kernel"].sharding.spec == PartitionSpec("model")
  expected = reference_pcgrad(task_vectors(grads), np.asarray(task_orders(KEY, 3)))
  np.testing.assert_allclose(flat(combined), expected, rtol=1e-5, atol=1e-5)
