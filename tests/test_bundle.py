"""The model bundle a run writes: loading it, predicting with it, refusing bad ones, init_from.

One tiny run (module fixture) trains and writes <workdir>/model/. The library's
padded predictions must match the trainer's own packed dev predictions; a
saved-and-reread bundle must predict identically; every kind of damaged bundle
gets one BundleError naming the file; and a run started with init_from starts
at the trained run's loss, not at a fresh model's.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import traverse_util
from safetensors import numpy as safetensors_numpy

import bert_jax
from bert_jax import bundle as bundle_lib
from bert_jax import checkpoints as bert_checkpoints
from bert_jax import multitask
from data_prep.builders.cs224n_quora import validation_fold
from tests.test_train import REPO_ROOT, tiny_config
from train import data as task_data
from train import metrics as metrics_lib
from train import train, trained_run
from train.metric_writer import read_metrics

# Enough steps at a high rate for the tiny model to fit the tiny training set visibly.
TRAINED = {"num_epochs": 4, "optim.learning_rate": 3e-3}


@pytest.fixture(scope="module")
def trained_workdir(tiny_world, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained") / "run"
  train.train_and_evaluate(tiny_config(tiny_world, workdir.parent, **TRAINED), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def model(trained_workdir):
  return bert_jax.load_model(trained_workdir)


def _rows(path: pathlib.Path):
  lines = path.read_text().splitlines()
  header = lines[0].split("\t")
  return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def _dev(tiny_world, task):
  data = pathlib.Path(tiny_world["data_root"]) / "cs224n"
  if task == "sst":
    rows = _rows(data / "ids-sst-dev.csv")
    return [r["id"] for r in rows], [r["sentence"].strip() for r in rows]
  rows = _rows(data / "sts-dev.csv") if task == "sts" else [
      r for r in _rows(data / "quora-dev.csv") if validation_fold(r["id"])]
  return [r["id"] for r in rows], [(r["sentence1"].strip(), r["sentence2"].strip()) for r in rows]


def test_run_writes_a_bundle_that_records_the_run(trained_workdir):
  directory = trained_workdir / bundle_lib.BUNDLE_SUBDIR
  assert sorted(p.name for p in directory.iterdir()) == ["bundle.json", "params.safetensors", "vocab.txt"]
  metadata = json.loads((directory / "bundle.json").read_text())
  results = json.loads((trained_workdir / "results.json").read_text())
  assert (metadata["format"], metadata["version"]) == (bundle_lib.FORMAT_NAME, bundle_lib.FORMAT_VERSION)
  assert metadata["dev_scores"] == results["scores"]
  assert metadata["data"]["quora_split"] == "dev_90_10"
  assert metadata["model"]["paraphrase_head"] == "diff" and metadata["model"]["dtype"] == "float32"
  assert metadata["bert_config"]["hidden_size"] == 32
  assert metadata["base_checkpoint"] == results["config"]["checkpoint"]
  assert metadata["tokenizer"] == {"vocab_file": "vocab.txt", "lowercase": True, "detokenize_ptb": False}
  assert metadata["training"]["preset"] == "base"


@pytest.mark.parametrize("task", ["sst", "para", "sts"])
def test_library_predictions_match_the_trainers_dev_predictions(tiny_world, trained_workdir, model, task):
  """Padded batches of plain strings (bert_jax) against the run's packed dev evaluation (train/)."""
  ids, inputs = _dev(tiny_world, task)
  expected = metrics_lib.read_submission(trained_workdir / "predictions" / f"{task}-dev-output.csv")
  predicted = {"sst": model.predict_sst, "para": model.predict_paraphrase, "sts": model.similarity}[task](inputs)
  assert len(predicted) == len(ids) == len(expected)
  for example_id, value in zip(ids, predicted):
    if task == "sts":
      assert abs(float(expected[example_id]) - value) <= 5e-5 + 1e-5, example_id  # file keeps 4 decimals
    else:
      assert int(expected[example_id]) == int(value), example_id


def test_save_and_load_round_trip_predicts_identically(tmp_path, trained_workdir, model, tiny_world):
  copy = bundle_lib.save_bundle(bundle_lib.read_bundle(trained_workdir), tmp_path / "copy")
  reloaded = bert_jax.load_model(copy)
  original = traverse_util.flatten_dict(model.bundle.params, sep="/")
  for key, value in traverse_util.flatten_dict(reloaded.bundle.params, sep="/").items():
    np.testing.assert_array_equal(value, original[key], err_msg=key)
  _, sentences = _dev(tiny_world, "sst")
  _, pairs = _dev(tiny_world, "sts")
  np.testing.assert_array_equal(reloaded.sst_logits(sentences), model.sst_logits(sentences))
  np.testing.assert_array_equal(reloaded.similarity(pairs), model.similarity(pairs))
  assert reloaded.metadata == model.metadata


def test_outputs_do_not_depend_on_batching_or_order(model, tiny_world):
  _, sentences = _dev(tiny_world, "sst")
  _, pairs = _dev(tiny_world, "para")
  one_by_one = bundle_lib.TrainedModel(model.bundle, batch_size=1)
  np.testing.assert_allclose(one_by_one.sst_logits(sentences), model.sst_logits(sentences), atol=1e-5)
  np.testing.assert_allclose(model.paraphrase_logits(pairs[::-1]), model.paraphrase_logits(pairs)[::-1], atol=1e-5)


def test_probabilities_agree_with_labels(model, tiny_world):
  _, sentences = _dev(tiny_world, "sst")
  _, pairs = _dev(tiny_world, "para")
  probabilities = model.sst_probabilities(sentences)
  assert probabilities.shape == (len(sentences), 5)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(probabilities.argmax(axis=1), model.predict_sst(sentences))
  paraphrase = model.paraphrase(pairs)
  assert ((paraphrase >= 0) & (paraphrase <= 1)).all()
  np.testing.assert_array_equal(model.predict_paraphrase(pairs), (model.paraphrase_logits(pairs) > 0).astype(int))
  similarity = model.similarity(pairs)
  assert ((similarity >= 0) & (similarity <= 5)).all()


def test_empty_and_malformed_inputs(model):
  assert model.predict_sst([]).shape == (0,) and model.sst_probabilities([]).shape == (0, 5)
  assert model.similarity([]).shape == (0,) and model.paraphrase([]).shape == (0,)
  with pytest.raises(TypeError, match=r"pairs\[1\] is 'oops'; expected a \(sentence, sentence\) pair"):
    model.similarity([("a", "b"), "oops"])
  with pytest.raises(TypeError, match="one string"):
    model.predict_sst("the film")


def test_cross_encoder_and_cosine_heads_read_pairs_as_they_were_trained(tiny_world, tmp_path):
  """A cross head reads "[CLS] a [SEP] b [SEP]"; a parameterless cosine head is bundled without params."""
  loaded = bert_checkpoints.load_hf_checkpoint(tiny_world["checkpoint"])
  model = multitask.MultitaskBert(loaded.config, paraphrase_head="cross", similarity_head="cosine")
  params = multitask.init_params(model, jax.random.key(3), pretrained_bert=loaded.params)
  assert "similarity" not in params
  saved = bundle_lib.save_bundle(bundle_lib.new_bundle(model, params, loaded.tokenizer, max_length=48),
                                 tmp_path / "cross")
  reloaded = bert_jax.load_model(saved)
  pairs = [("the film is quiet", "never once bores"), ("style", "its plot wanders through many long scenes")]
  first, second = [a for a, _ in pairs], [b for _, b in pairs]
  joint = loaded.tokenizer(first, second, max_length=48)
  np.testing.assert_allclose(reloaded.paraphrase_logits(pairs),
                             model.apply({"params": params}, joint, method="paraphrase"), atol=1e-5)
  length = 16
  a, b = loaded.tokenizer(first, pad_to=length), loaded.tokenizer(second, pad_to=length)
  separate = {k: np.stack([a[k], b[k]], axis=1) for k in a}
  np.testing.assert_allclose(reloaded.similarity(pairs),
                             np.clip(model.apply({"params": params}, separate, method="similarity"), 0, 5), atol=1e-5)


def test_default_heads_scalar_params_round_trip(tiny_world, tmp_path):
  """The default preset's cosine paraphrase head has 0-d params (scale, bias); they reload 0-d and predict alike."""
  loaded = bert_checkpoints.load_hf_checkpoint(tiny_world["checkpoint"])
  model = multitask.MultitaskBert(loaded.config, paraphrase_head="cosine", similarity_head="cosine")
  params = multitask.init_params(model, jax.random.key(4), pretrained_bert=loaded.params)
  assert np.shape(params["paraphrase"]["scale"]) == ()
  saved = bundle_lib.save_bundle(bundle_lib.new_bundle(model, params, loaded.tokenizer, max_length=48),
                                 tmp_path / "cosine")
  reloaded = bert_jax.load_model(saved)
  pairs = [("the film is quiet", "never once bores"), ("style", "its plot wanders")]
  first, second = [a for a, _ in pairs], [b for _, b in pairs]
  a, b = loaded.tokenizer(first, pad_to=16), loaded.tokenizer(second, pad_to=16)
  separate = {k: np.stack([a[k], b[k]], axis=1) for k in a}
  np.testing.assert_allclose(reloaded.paraphrase_logits(pairs),
                             model.apply({"params": params}, separate, method="paraphrase"), atol=1e-5)


def test_ptb_detokenization_travels_with_the_bundle(tiny_world, tmp_path):
  """A run that read PTB tokens as plain text writes that into its bundle, and the bundle reads input so again."""
  loaded = bert_checkpoints.load_hf_checkpoint(tiny_world["checkpoint"])
  detokenizing = task_data.run_tokenizer(ml_collections.ConfigDict({"data": {"detokenize_ptb": True}}), loaded.files)
  # A run's config saved before the setting existed read its text as it was.
  assert not task_data.run_tokenizer(ml_collections.ConfigDict({"data": {}}), loaded.files).detokenize_ptb
  model = multitask.MultitaskBert(loaded.config)
  params = multitask.init_params(model, jax.random.key(5), pretrained_bert=loaded.params)
  saved = bundle_lib.save_bundle(bundle_lib.new_bundle(model, params, detokenizing, max_length=48), tmp_path / "ptb")
  ptb, plain = ["the film -LRB- quiet -RRB- never once bores"], ["the film ( quiet ) never once bores"]
  reloaded = bert_jax.load_model(saved)
  assert reloaded.bundle.tokenizer.detokenize_ptb and reloaded.metadata["tokenizer"]["detokenize_ptb"] is True
  np.testing.assert_array_equal(reloaded.sst_logits(ptb), reloaded.sst_logits(plain))
  _edit_json(saved, lambda m: m["tokenizer"].pop("detokenize_ptb"))  # as bundles before the setting were
  older = bert_jax.load_model(saved)
  assert not older.bundle.tokenizer.detokenize_ptb
  assert not np.allclose(older.sst_logits(ptb), older.sst_logits(plain))
  np.testing.assert_array_equal(older.sst_logits(plain), reloaded.sst_logits(plain))


# ----------------------------------------------------------------------------- damaged bundles


def _copy(trained_workdir, tmp_path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(trained_workdir / bundle_lib.BUNDLE_SUBDIR, tmp_path / "bundle"))


def _edit_json(directory, edit):
  path = directory / "bundle.json"
  metadata = json.loads(path.read_text())
  edit(metadata)
  path.write_text(json.dumps(metadata))


def _edit_params(directory, edit):
  path = directory / "params.safetensors"
  params = safetensors_numpy.load_file(path)
  edit(params)
  safetensors_numpy.save_file(params, path)


def _truncate(directory):
  path = directory / "params.safetensors"
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "missing_dir": (lambda d: shutil.rmtree(d), r"no model bundle at .*bundle: the directory does not exist"),
    "missing_params": (lambda d: (d / "params.safetensors").unlink(), r"bundle is missing params\.safetensors"),
    "missing_vocab": (lambda d: (d / "vocab.txt").unlink(), r"bundle is missing vocab\.txt"),
    "truncated_params": (_truncate, r"params\.safetensors: not a readable safetensors file"),
    "wrong_format": (lambda d: _edit_json(d, lambda m: m.update(format="something_else")),
                     r"bundle\.json: format is 'something_else'; expected 'bert_jax\.multitask_bundle'"),
    "newer_version": (lambda d: _edit_json(d, lambda m: m.update(version=2)),
                      r"bundle\.json: format version 2; this bert_jax reads version 1"),
    "missing_key": (lambda d: _edit_json(d, lambda m: m.pop("bert_config")),
                    r"bundle\.json: missing keys \['bert_config'\]"),
    "missing_setting": (lambda d: _edit_json(d, lambda m: m["model"].pop("paraphrase_head")),
                        r"bundle\.json: 'model' settings lack \['paraphrase_head'\]"),
    "bad_setting": (lambda d: _edit_json(d, lambda m: m["model"].update(similarity_head="nope")),
                    r"'model' settings do not describe a MultitaskBert: unknown pair head 'nope'"),
    "missing_param": (lambda d: _edit_params(d, lambda p: p.pop("sentiment/output/kernel")),
                      r"params\.safetensors does not fit .*\n  missing: sentiment/output/kernel"),
    "misshapen_param": (lambda d: _edit_params(d, lambda p: p.update({"sentiment/output/bias": np.zeros(3, np.float32)})),
                        r"shape mismatch: sentiment/output/bias expected \(5,\), found \(3,\)"),
    "unexpected_param": (lambda d: _edit_params(d, lambda p: p.update({"extra/kernel": np.zeros(2, np.float32)})),
                         r"unexpected: extra/kernel"),
    "bad_ptb_flag": (lambda d: _edit_json(d, lambda m: m["tokenizer"].update(detokenize_ptb="yes")),
                     r"bundle\.json: 'tokenizer' is .*'detokenize_ptb': 'yes'.*; expected an object with a boolean "
                     r"'lowercase' and, optionally, a boolean 'detokenize_ptb'"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_bundle_raises_one_error_naming_the_file(trained_workdir, tmp_path, damage):
  directory = _copy(trained_workdir, tmp_path)
  corrupt, message = DAMAGE[damage]
  corrupt(directory)
  with pytest.raises(bundle_lib.BundleError, match=message):
    bert_jax.load_model(directory)


# ----------------------------------------------------------------------------- init_from


def _train_losses(workdir):
  return [r["loss_total"] for r in read_metrics(str(workdir / "metrics.jsonl")) if r["kind"] == "train"]


def test_init_from_starts_at_the_trained_loss(tiny_world, trained_workdir, tmp_path, capsys):
  """A real (one-step) run with init_from: a second training run, so this test takes a while."""
  config = tiny_config(tiny_world, tmp_path, max_steps=1, init_from=str(trained_workdir), **TRAINED)
  train.train_and_evaluate(config, str(tmp_path / "continued"))
  captured = capsys.readouterr()
  assert f"starting from the trained encoder and heads of {trained_workdir}" in captured.out + captured.err
  (continued_first,) = _train_losses(tmp_path / "continued")
  trained_losses = _train_losses(trained_workdir)
  fresh_first, last_epoch = trained_losses[0], trained_losses[-4:]
  with capsys.disabled():
    print(f"\nfirst-step loss: fresh {fresh_first:.4f}, init_from {continued_first:.4f}; "
          f"trained run's last 4 steps {[round(x, 4) for x in last_epoch]}")
  # Same seed, so the same first batch and dropout as the trained run's step 1: only the params differ.
  assert continued_first < 0.75 * fresh_first, (continued_first, fresh_first, trained_losses)
  assert continued_first < 1.25 * np.mean(last_epoch), (continued_first, last_epoch)


def test_init_from_with_other_heads_lists_the_differing_settings(tiny_world, trained_workdir, tmp_path):
  config = tiny_config(tiny_world, tmp_path, init_from=str(trained_workdir),
                       **{"model.paraphrase_head": "cosine", "model.sentiment_pooling": "cls"})
  trainer = train.Trainer(config, str(tmp_path / "other"))
  with pytest.raises(trained_run.TrainedRunError) as error:
    trainer.initial_params()
  message = str(error.value)
  assert "does not match this run's model settings" in message
  assert "sentiment_pooling: 'mean' (bundle) vs 'cls'" in message
  assert "paraphrase_head: 'diff' (bundle) vs 'cosine'" in message
  assert "similarity_head" not in message


def test_loading_needs_nothing_from_train_or_data_prep(trained_workdir):
  """The library alone: with `train` and `data_prep` made unimportable, a bundle still loads and predicts."""
  code = ("import sys; sys.modules['train'] = None; sys.modules['data_prep'] = None\n"
          "import bert_jax\n"
          f"model = bert_jax.load_model({str(trained_workdir)!r})\n"
          "print(model.predict_sst(['the film is a quiet triumph']).tolist())\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('train', 'data_prep') and sys.modules[m]))\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  label, modules = result.stdout.strip().splitlines()
  assert label in [f"[{k}]" for k in range(5)] and modules == "[]"
