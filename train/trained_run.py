"""What a training run leaves behind, as a model bundle: writing it, and finding it again.

A run's one artifact is its bundle (`bert_jax.bundle`) in `<workdir>/model/`,
written from the best parameters when the run ends (`bundle_of_run`). Tools that
take "a trained model" (`train.predict`, `train.export`, `--config.init_from`)
accept a bundle directory or a workdir; a workdir without a bundle (a run
from before bundles existed) is read from its best Orbax checkpoint and its
results.json (`load_trained`), restoring the parameters alone, so nothing
depends on the optimizer's state structure.

Besides what the library needs, the bundle records how the run evaluated
(max_length, eval batch size, packing, length buckets, parallel mode): with
those, `train.predict` batches a dev file exactly as the run did and so
reproduces its scores to the last digit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bert_jax import bundle as bundle_lib
from bert_jax import checkpoints as bert_checkpoints
from bert_jax.config import BertConfig
from bert_jax.tokenizer import Tokenizer
from train import data as task_data
from train import weight_averaging
from train.checkpointing import RunCheckpoints

RESULTS_FILE = "results.json"
CHECKPOINTS_DIR = "checkpoints"


class TrainedRunError(bundle_lib.BundleError):
  """A path that is neither a model bundle nor a workdir a bundle can be made from."""


def evaluation_settings(config: ml_collections.ConfigDict, data_description: dict) -> dict[str, Any]:
  """How the run batched evaluation; `train.predict` repeats it to reproduce dev scores."""
  return {"max_length": int(config.data.max_length), "eval_batch_size": int(config.eval_batch_size),
          "packing": data_description.get("packing"), "buckets": data_description.get("buckets"),
          "parallel": {"mode": config.parallel.mode, "num_devices": int(config.parallel.num_devices)}}


def training_record(config: ml_collections.ConfigDict | dict, best_stage: str | None) -> dict[str, Any]:
  """The preset, the stage whose best checkpoint the bundle holds, and the whole config."""
  values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  return {"preset": values.get("name"), "best_stage": best_stage, "config": values}


def bundle_of_run(model, params: Any, tokenizer: Tokenizer, config: ml_collections.ConfigDict, *,
                  scores: dict, data_description: dict, best_stage: str | None) -> bundle_lib.Bundle:
  """The bundle a finished run writes: its best params and everything that describes them."""
  return bundle_lib.new_bundle(
      model, params, tokenizer, max_length=config.data.max_length, dev_scores=scores,
      data=data_description, base_checkpoint=config.checkpoint,
      evaluation=evaluation_settings(config, data_description),
      training=training_record(config, best_stage))


def load_trained(path: str | os.PathLike) -> bundle_lib.Bundle:
  """The bundle at `path` (a bundle, or a workdir/export with `model/`), else one made from a workdir.

  Raises:
    BundleError / TrainedRunError: naming the path and what it lacks.
  """
  path = pathlib.Path(path).expanduser()
  try:
    directory = bundle_lib.find_bundle(path)
  except bundle_lib.BundleError:
    if not (path / CHECKPOINTS_DIR).is_dir():
      raise  # not a workdir either: the bundle's own error says what is missing
    return bundle_from_checkpoints(path)
  # A bundle that is there but damaged is an error, not a reason to silently use something else.
  return bundle_lib.read_bundle(directory)


def bundle_from_checkpoints(workdir: str | os.PathLike) -> bundle_lib.Bundle:
  """A bundle of a workdir's best checkpoint, described by its results.json (not written to disk)."""
  workdir = pathlib.Path(workdir)
  results_path = workdir / RESULTS_FILE
  if not results_path.is_file():
    raise TrainedRunError(
        f"{workdir} has checkpoints but no {RESULTS_FILE}, which holds the run's config (heads, "
        f"checkpoint, data settings) needed to rebuild the model: the run did not finish. Finish it "
        f"(run train.main again with --workdir={workdir}; it resumes) and it writes {bundle_lib.BUNDLE_SUBDIR}/.")
  try:
    results = json.loads(results_path.read_text(encoding="utf-8"))
    values, scores, description = results["config"], results["scores"], results["data"]
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise TrainedRunError(f"{results_path}: expected the JSON a training run writes, with 'config', "
                          f"'scores' and 'data' ({type(e).__name__}: {e})") from None
  config = ml_collections.ConfigDict(values)
  stage = results.get("best_stage") or "main"
  files = bert_checkpoints.resolve_checkpoint(config.checkpoint)
  bert_config = BertConfig.from_json_file(files.config_path)
  tokenizer = task_data.run_tokenizer(config, files)
  from train import train  # pylint: disable=import-outside-toplevel  (train imports this module)
  model = train.build_model(config, bert_config)
  params = restore_best_params(workdir / CHECKPOINTS_DIR / stage, config.get("best_metric", "overall_mean"))
  return bundle_of_run(model, params, tokenizer, config, scores=scores, data_description=description,
                       best_stage=stage)


def restore_best_params(stage_dir: str | os.PathLike, best_metric: str = "overall_mean") -> dict:
  """The params of a stage's best checkpoint (else its latest) as numpy, on any number of devices.

  Only the "params" subtree is read, as host arrays, from the checkpoint's own
  metadata: the optimizer state's structure, the device count and the shardings
  of the run that saved it do not matter. A run that kept a moving average of its
  weights (`optim.ema_decay`) evaluated and exported the average, so that is what
  comes back (train/weight_averaging.py).
  """
  stage_dir = pathlib.Path(stage_dir).absolute()
  if not stage_dir.is_dir():
    raise TrainedRunError(f"no checkpoints at {stage_dir}")
  # The same preservation policy as training, so best_step() sees the same "best".
  steps = RunCheckpoints(str(stage_dir), best_metric=best_metric, async_save=False)
  step = steps.best_step() or steps.latest_step()
  steps.close()
  if step is None:
    raise TrainedRunError(f"{stage_dir} holds no finished checkpoint")
  handlers = {"state": ocp.PyTreeCheckpointHandler(), "progress": ocp.JsonCheckpointHandler()}
  with ocp.CheckpointManager(stage_dir, item_handlers=handlers) as manager:
    metadata = manager.item_metadata(step)["state"]
    tree = getattr(metadata, "tree", metadata)
    if not isinstance(tree, dict) or "params" not in tree:
      raise TrainedRunError(f"{stage_dir}/{step}: the checkpoint's state has no 'params'")
    item = {"params": jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree["params"])}
    keeps_average = weight_averaging.averaged_weights(tree.get("opt_state")) is not None
    if keeps_average:
      item["opt_state"] = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree["opt_state"])
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True)))
  params = restored.state["params"]
  if not keeps_average:
    return params
  return weight_averaging.merge_average(params, weight_averaging.averaged_weights(restored.state["opt_state"]))




def params_to_continue(path: str | os.PathLike, model, pretrained: bert_checkpoints.LoadedCheckpoint) -> dict:
  """Encoder and head params of a trained model, for a new run that starts from them (init_from).

  The new run's model must have the trained model's architecture (heads,
  pooling, hidden width), and its checkpoint the same encoder shape and
  vocabulary: otherwise the parameters would mean something else. Each
  mismatch is listed in one error. dtype and head_dropout may differ.
  """
  trained = load_trained(path)
  source = trained.directory or path
  problems = bundle_lib.settings_differences(trained.settings, bundle_lib.model_settings(model))
  if trained.model.config != pretrained.config:
    differing = [f"{k}: {v!r} (bundle) vs {getattr(pretrained.config, k)!r}"
                 for k, v in dataclasses.asdict(trained.model.config).items() if getattr(pretrained.config, k) != v]
    problems.append("encoder config (checkpoint " + str(pretrained.files.directory) + "): " + ", ".join(differing))
  if pathlib.Path(trained.tokenizer.vocab_path).read_bytes() != pathlib.Path(pretrained.files.vocab_path).read_bytes():
    problems.append(f"vocabulary: {trained.tokenizer.vocab_path} differs from {pretrained.files.vocab_path}")
  if problems:
    raise TrainedRunError(f"config.init_from={os.fspath(path)!r}: the trained model at {source} does not "
                          "match this run's model settings:\n  " + "\n  ".join(problems) +
                          "\nSet --config.model.* (and --config.checkpoint) to the trained model's values.")
  return trained.params
