"""`python -m train.export`: a Hugging Face encoder, a model card and the bundle, all or nothing.

One tiny run (module fixture) is exported. `transformers.BertModel` must read
the encoder and compute bert_jax's hidden states; the bundle inside must load;
the card must name the base checkpoint, the changed config fields, the dev
scores and the data split; and a push that cannot happen (offline, or no
huggingface_hub) must fail before anything is written.
"""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import bert_jax
from bert_jax import checkpoints as bert_checkpoints
from bert_jax.modeling import BertModel
from tests.test_train import REPO_ROOT, tiny_config
from train import export, train, trained_run


@pytest.fixture(scope="module")
def run_workdir(tiny_world, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("export") / "run"
  # With PTB detokenization, so that the run's bundle and the card are seen to carry it.
  train.train_and_evaluate(tiny_config(tiny_world, workdir.parent, **{"data.detokenize_ptb": True}), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def exported(run_workdir, tmp_path_factory):
  return export.export_run(run_workdir, tmp_path_factory.mktemp("exports") / "tiny")


def test_export_holds_encoder_card_and_bundle(exported):
  assert sorted(p.name for p in exported.iterdir()) == [
      "README.md", "config.json", "model", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
  assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_transformers_reads_the_encoder_with_our_hidden_states(exported, run_workdir):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  trained = trained_run.load_trained(run_workdir)
  batch = trained.tokenizer(["the film is a quiet triumph of style", "never once bores"], max_length=16)
  ours = BertModel(trained.model.config).apply(
      {"params": trained.params["bert"]}, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
      jnp.asarray(batch["token_type_ids"])).last_hidden_state
  reference = transformers.BertModel.from_pretrained(exported).eval()
  with torch.no_grad():
    theirs = reference(**{k: torch.as_tensor(v, dtype=torch.long) for k, v in batch.items()}).last_hidden_state
  real = batch["attention_mask"].astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[real], theirs.numpy()[real], atol=1e-5)
  # Also a checkpoint bert_jax itself can start a run from (--config.checkpoint=<export>).
  loaded = bert_checkpoints.load_hf_checkpoint(exported)
  np.testing.assert_array_equal(np.asarray(loaded.params["encoder"]["layer"]["1"]["output"]["dense"]["kernel"]),
                                trained.params["bert"]["encoder"]["layer"]["1"]["output"]["dense"]["kernel"])


def test_bundle_in_the_export_predicts_like_the_run(exported, run_workdir):
  sentences = ["the film is a quiet triumph", "its plot wanders"]
  pairs = [("the film is quiet", "the film never bores"), ("style over substance", "many long scenes")]
  from_export, from_run = bert_jax.load_model(exported), bert_jax.load_model(run_workdir)
  np.testing.assert_array_equal(from_export.sst_logits(sentences), from_run.sst_logits(sentences))
  np.testing.assert_array_equal(from_export.similarity(pairs), from_run.similarity(pairs))


def test_model_card_describes_base_method_scores_and_data(exported, run_workdir):
  card = (exported / "README.md").read_text()
  results = json.loads((run_workdir / "results.json").read_text())
  assert "Base checkpoint: a local checkpoint directory named 'ckpt'" in card
  assert "Preset `base` (`train/configs/base.py`)" in card
  # tiny_config's changes to the base preset, with the preset's values beside them.
  for row in ("| `model.paraphrase_head` | `diff` | `cosine` |", "| `batch_size` | `24` | `64` |",
              "| `optim.learning_rate` | `0.001` | `5e-05` |", "| `data.detokenize_ptb` | `True` | `False` |"):
    assert row in card
  assert "Trained on Penn Treebank tokens turned back into plain text" in card
  assert bert_jax.load_model(exported).bundle.tokenizer.detokenize_ptb  # the trainer's tokenizer, kept
  assert "data.data_root" not in card and str(run_workdir.parent) not in card  # no local paths published
  assert f"| STS Pearson r | {results['scores']['sts_pearson']:.4f} |" in card
  assert "Quora split: `dev_90_10`" in card


def test_config_changes_against_another_preset():
  from train.configs import cosine
  config = cosine.get_config().to_dict()
  config["num_epochs"] = 7
  preset, changes = export.config_changes(config)
  assert preset == "cosine" and changes == [("num_epochs", 7, 2)]


def test_existing_output_directory_is_refused(run_workdir, tmp_path):
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "notes.txt").write_text("mine")
  with pytest.raises(export.ExportError, match="already exists and is not empty"):
    export.export_run(run_workdir, tmp_path / "taken")
  assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_push_while_offline_fails_before_writing_anything(run_workdir, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1")
  result = subprocess.run([sys.executable, "-m", "train.export", f"--workdir={run_workdir}",
                           f"--out={tmp_path / 'pushed'}", "--push_to_hub=someone/tiny-multitask"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "HF_HUB_OFFLINE is set, so the hub cannot be reached; nothing was written" in result.stderr
  assert list(tmp_path.iterdir()) == []


def test_push_without_huggingface_hub_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
  with pytest.raises(export.ExportError, match=r"huggingface_hub is not installed \(pip install huggingface_hub\)"):
    export._hub_for_push("someone/tiny-multitask")  # pylint: disable=protected-access
