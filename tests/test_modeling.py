"""The Linen encoder on the tiny config: tree layout, shapes, masking, dropout, bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.config import BertConfig, ConfigError
from bert_jax.modeling import BertModel, LayerNorm, dot_product_attention, gelu_erf, mean_pool

CONFIG = BertConfig.tiny()


def _inputs(batch=3, length=12, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, CONFIG.vocab_size, size=(batch, length)).astype(np.int32)
  lengths = np.array([length, length // 2, 3])[:batch]
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask == 1, ids, CONFIG.pad_token_id)
  types = np.zeros_like(ids)
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


@pytest.fixture(scope="module")
def params():
  ids, mask, types = _inputs()
  return BertModel(CONFIG).init(jax.random.key(0), ids, mask, types)["params"]


def test_parameter_tree_follows_hugging_face_layout(params):
  paths = {"/".join(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
  expected = {
      "embeddings/word_embeddings/embedding", "embeddings/position_embeddings/embedding",
      "embeddings/token_type_embeddings/embedding", "embeddings/LayerNorm/scale",
      "embeddings/LayerNorm/bias", "pooler/dense/kernel", "pooler/dense/bias"}
  for i in range(CONFIG.num_hidden_layers):
    prefix = f"encoder/layer/{i}"
    for name in ("attention/self/query", "attention/self/key", "attention/self/value",
                 "attention/output/dense", "intermediate/dense", "output/dense"):
      expected |= {f"{prefix}/{name}/kernel", f"{prefix}/{name}/bias"}
    for name in ("attention/output/LayerNorm", "output/LayerNorm"):
      expected |= {f"{prefix}/{name}/scale", f"{prefix}/{name}/bias"}
  assert paths == expected
  assert params["encoder"]["layer"]["0"]["intermediate"]["dense"]["kernel"].shape == (32, 64)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))


def test_output_shapes(params):
  ids, mask, types = _inputs(batch=3, length=12)
  out = BertModel(CONFIG).apply({"params": params}, ids, mask, types)
  assert out.last_hidden_state.shape == (3, 12, CONFIG.hidden_size)
  assert out.pooled_output.shape == (3, CONFIG.hidden_size)
  assert np.all(np.abs(np.asarray(out.pooled_output)) <= 1.0)  # tanh


def test_padding_does_not_change_real_token_outputs(params):
  ids, mask, types = _inputs(batch=3, length=12)
  model = BertModel(CONFIG)
  padded = model.apply({"params": params}, ids, mask, types).last_hidden_state
  for row, real in enumerate(np.asarray(mask).sum(-1)):
    alone = model.apply({"params": params}, ids[row:row + 1, :real], mask[row:row + 1, :real],
                        types[row:row + 1, :real]).last_hidden_state
    np.testing.assert_allclose(padded[row, :real], alone[0], atol=2e-5)
  # Changing what sits in padded positions must not change anything real either.
  scrambled = jnp.where(mask == 1, ids, 7)
  again = model.apply({"params": params}, scrambled, mask, types).last_hidden_state
  np.testing.assert_allclose(np.where(mask[..., None] == 1, again, 0),
                             np.where(mask[..., None] == 1, padded, 0), atol=1e-6)


def test_dropout_is_off_when_deterministic_and_on_otherwise(params):
  ids, mask, types = _inputs()
  model = BertModel(CONFIG)
  apply = lambda **kw: model.apply({"params": params}, ids, mask, types, **kw).last_hidden_state
  np.testing.assert_array_equal(apply(deterministic=True), apply(deterministic=True))
  a = apply(deterministic=False, rngs={"dropout": jax.random.key(1)})
  b = apply(deterministic=False, rngs={"dropout": jax.random.key(2)})
  c = apply(deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, c)
  assert not np.allclose(a, apply(deterministic=True))


def test_dropout_free_training_path_matches_fused_attention():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 5, 4, 8)), jnp.float32) for _ in range(3))
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
  fused = dot_product_attention(q, k, v, mask, dropout_rate=0.0, deterministic=True)
  # A keep-everything dropout (rate -> 0) exercises the explicit softmax path.
  explicit = dot_product_attention(q, k, v, mask, dropout_rate=1e-12, deterministic=False,
                                   dropout_rng=jax.random.key(0))
  np.testing.assert_allclose(fused, explicit, atol=1e-5)


def test_bfloat16_compute_is_close_to_float32(params):
  ids, mask, types = _inputs()
  full = BertModel(CONFIG).apply({"params": params}, ids, mask, types).last_hidden_state
  half = BertModel(CONFIG, dtype=jnp.bfloat16).apply({"params": params}, ids, mask, types).last_hidden_state
  assert half.dtype == jnp.bfloat16
  real = np.asarray(mask, bool)
  diff = np.abs(np.asarray(half, np.float32) - np.asarray(full))[real]
  assert diff.max() < 0.1, diff.max()  # LayerNorm outputs are O(1); bf16 has ~3 significant digits
  assert diff.mean() < 0.02, diff.mean()


def test_gelu_erf_is_exact_gelu():
  x = jnp.linspace(-8.0, 8.0, 4001)
  np.testing.assert_allclose(gelu_erf(x), nn.gelu(x, approximate=False), atol=1e-6)  # float32 at |x| <= 8
  grad = jax.vmap(jax.grad(gelu_erf))(x)
  np.testing.assert_allclose(grad, jax.vmap(jax.grad(lambda v: nn.gelu(v, approximate=False)))(x), atol=2e-6)


def test_layer_norm_matches_flax_layer_norm():
  x = jnp.asarray(np.random.default_rng(0).normal(3.0, 2.0, size=(4, 7, 32)), jnp.float32)
  ours = LayerNorm(epsilon=1e-12)
  theirs = nn.LayerNorm(epsilon=1e-12)
  params = theirs.init(jax.random.key(0), x)
  params = jax.tree.map(lambda p: p + jnp.asarray(np.random.default_rng(1).normal(size=p.shape), p.dtype), params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), atol=2e-5)
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(params)
  loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  for a, b in zip(jax.tree.leaves(jax.grad(loss(ours), argnums=(0, 1))(params, x)),
                  jax.tree.leaves(jax.grad(loss(theirs), argnums=(0, 1))(params, x))):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_mean_pool_ignores_padding():
  hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.asarray([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(mean_pool(hidden, mask), [[1.0, 2.0], [6.0, 7.0]])


def test_too_long_input_is_a_clear_error(params):
  ids = jnp.ones((1, CONFIG.max_position_embeddings + 1), jnp.int32)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    BertModel(CONFIG).apply({"params": params}, ids)


@pytest.mark.parametrize("bad, message", [
    (dict(model_type="gpt2"), "model_type"),
    (dict(hidden_size=30), "not divisible"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(position_embedding_type="relative_key"), "absolute"),
])
def test_config_rejects_what_we_cannot_build(bad, message):
  values = dict(BertConfig.tiny().to_hf_dict(), **bad)
  with pytest.raises(ConfigError, match=message):
    BertConfig.from_dict(values, source="x/config.json")


def test_config_round_trips_through_hf_dict():
  config = BertConfig.tiny(hidden_act="gelu_new")
  assert BertConfig.from_dict(config.to_hf_dict()) == config
