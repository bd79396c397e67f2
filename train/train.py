"""`train_and_evaluate(config, workdir)`: the multitask training run, end to end.

It loads the pretrained encoder, builds the task data, trains with the task
schedule the config names (sequential or round-robin, summed gradients or a
conflict method), evaluates on dev every `eval_every_epochs` epochs and after the
last step, checkpoints (latest + best by `best_metric`) with Orbax,
optionally runs the frozen-encoder stage, and finally writes dev and test
predictions in the course's format, metrics, a results table and plots.

The hot loop never waits on the device: metrics stay on device until a logging
point, the next batches are put on device by a background thread, and the state
is donated to each step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import threading
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from bert_jax import bundle as bundle_lib
from bert_jax import checkpoints as bert_checkpoints
from bert_jax import multitask
from bert_jax import smart as smart_lib
from bert_jax.tasks import TASKS
from train import config_validation
from train import data as task_data_lib
from train import (config_changes, evaluation, gradient_stats, optim, plots, state_layouts, steps, storage,
                   trained_run, weight_averaging)
from train.checkpointing import RunCheckpoints
from train.conflicts import registry as conflicts_registry
from train.configs import base as base_config
from train.compile_stats import CompilationStats
from train.metric_writer import MetricWriter
from train.parallel import DataParallel, maybe_initialize_distributed
from train.state import TrainState
from train.workdir_lock import WorkdirLock



class NonFiniteLossError(FloatingPointError):
  """Training produced a non-finite loss; the last good checkpoint is kept."""


def enable_compilation_cache(config: ml_collections.ConfigDict) -> str:
  """Persistent XLA cache, so a second start of the same run doesn't recompile."""
  directory = config.get("compilation_cache_dir") or os.path.join(
      os.path.expanduser("~"), ".cache", "bert_jax", "jax_compilation_cache")
  jax.config.update("jax_compilation_cache_dir", directory)
  # Every executable, however quick to compile: a second start then compiles nothing at all
  # (the step's small helpers, rng folding, metric reductions add up to seconds on a CPU).
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


def build_model(config: ml_collections.ConfigDict, bert_config) -> multitask.MultitaskBert:
  m = config.model
  return multitask.MultitaskBert(
      config=bert_config, dtype=jnp.dtype(config.dtype), sentiment_pooling=m.sentiment_pooling,
      pair_pooling=m.pair_pooling, paraphrase_head=m.paraphrase_head,
      similarity_head=m.similarity_head, share_para_sts=m.share_para_sts,
      head_dropout=m.head_dropout,
      head_dropout_samples=m.get("head_dropout_samples", 1),  # absent in runs written before it existed
      head_hidden_dim=m.head_hidden_dim)


@dataclasses.dataclass
class Stage:
  """One training stage: its optimizer, compiled step and checkpoint directory."""
  name: str
  state: Any
  step_fn: Any
  checkpoints: RunCheckpoints
  total_steps: int
  epoch_ends: list[int]
  stream: Any
  # segment ends -> (optimizer, learning-rate schedule, step function) (see segmented_schedule)
  build_step: Any = None
  learning_rate: Any = None  # optimizer step -> the learning rate its optimizer uses there, for the logs


def segmented_schedule(optim_config: ml_collections.ConfigDict, segment_ends: list[int]):
  """The learning rate of a run trained in segments: the configured schedule, restarted per segment.

  A finished run continued with more epochs keeps the schedule its first steps were
  trained with (it decayed to its end); the added steps get the configured schedule
  afresh over their own count, warmup included, as a new run of that length would.
  """
  schedules, start = [], 0
  for end in segment_ends:
    segment = ml_collections.ConfigDict(optim_config.to_dict())
    if segment.warmup_steps > end - start:
      segment.warmup_steps = end - start
    schedules.append(optim.create_learning_rate_schedule(segment, end - start))
    start = end
  if len(schedules) == 1:
    return schedules[0]
  return optax.join_schedules(schedules, [int(e) for e in segment_ends[:-1]])


def _device_batches(stream, parallel: DataParallel, size: int = 2) -> Iterator[tuple[Any, dict]]:
  """Puts the next batches on device in a background thread, overlapped with compute.

  Each item carries the stream's state *after* that batch, so a checkpoint taken
  after consuming it resumes exactly at the next batch, whatever was prefetched.
  """
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def produce():
    try:
      while not stop.is_set():
        batches = next(stream)
        item = ({t: parallel.put_batch(b) for t, b in batches.items()}, stream.get_state())
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # surfaced in the consumer
      q.put(e)

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()


class Trainer:
  """Holds what the stages share: model, data, devices, writer, workdir."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    storage.makedirs(workdir)
    maybe_initialize_distributed()
    self.parallel = DataParallel.create(config.parallel.mode, config.parallel.num_devices)
    self.pretrained = bert_checkpoints.load_hf_checkpoint(config.checkpoint)
    self.model = build_model(config, self.pretrained.config)
    self.tokenizer = task_data_lib.run_tokenizer(config, self.pretrained.files)
    self.data = task_data_lib.TaskData.create(config, self.tokenizer)
    self.writer = MetricWriter(workdir) if jax.process_index() == 0 else None
    # Two independent streams: one initialises the heads, the other gives step k the key fold_in(k).
    self.init_rng, self.base_rng = jax.random.split(jax.random.key(config.seed))
    self.evaluator = evaluation.Evaluator(self.model, self.data, self.parallel, config.eval_batch_size)
    # Resume bookkeeping: where the previous stage's metrics end (a fresh stage cuts what a killed
    # attempt logged after it), how many stages ran, and each stage's accepted config changes.
    self._metrics_end: int | None = 0
    self._stages_started = 0
    self.config_history: dict[str, list] = {}

  # ---- parameters and stages ------------------------------------------------------------------

  def initial_params(self) -> Any:
    """The heads' fresh init with the pretrained encoder, as one compiled function.

    Flax's init run op by op compiled a few hundred tiny executables (6.5 s
    for all-MiniLM-L6 on 2 cores), each too small for the persistent cache;
    jitted, it is one executable that a second start reads from the cache.

    With `config.init_from` (a workdir or model bundle) the run starts from that
    trained model's encoder and heads instead; its architecture must match.
    """
    if self.config.get("init_from"):
      trained = trained_run.params_to_continue(self.config.init_from, self.model, self.pretrained)
      _say(f"starting from the trained encoder and heads of {self.config.init_from}")
      return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), trained)
    init = jax.jit(lambda rng, example, pretrained: multitask.init_params(
        self.model, rng, example, pretrained_bert=pretrained))
    return init(self.init_rng, self.data.example_batches(), self.pretrained.params)

  def make_stage(self, name: str, params: Any, *, task_schedule: str, num_epochs: int,
                 optim_config, pcgrad_config, conflicts_config=None) -> Stage:
    """One training stage; `conflicts_config` (None: "sum") picks the gradient-conflict method."""
    config = self.config
    stream = self.data.train_stream(schedule=task_schedule, proportions=config.proportions,
                                    batch_size=config.batch_size, num_epochs=num_epochs,
                                    seed=config.seed, num_devices=self.parallel.num_devices,
                                    packing=self.packing_spec())
    epoch_ends = list(np.cumsum([stream.steps_per_epoch(e) for e in range(num_epochs)]))
    total_steps = int(epoch_ends[-1])
    if config.max_steps > 0:
      total_steps = min(total_steps, config.max_steps)
    stage_config = ml_collections.ConfigDict({
        "optim": optim_config, "pcgrad": pcgrad_config,
        "conflicts": conflicts_config if conflicts_config is not None else conflicts_registry.default_config()})
    freeze = optim.Freeze.from_regexes(params, optim_config.freeze)

    def build_step(segment_ends: list[int] | None = None):
      schedule = None if segment_ends is None else segmented_schedule(optim_config, segment_ends)
      tx = optim.create_optimizer(stage_config, total_steps, task_names=TASKS, learning_rate_schedule=schedule)
      # The schedule create_optimizer builds when given none, kept for the logs.
      schedule = schedule or optim.create_learning_rate_schedule(optim_config, total_steps)
      return tx, schedule, steps.make_train_step(
          self.model, tx, task_order=TASKS, parallel=self.parallel, freeze=freeze,
          loss_weights=dict(config.loss_weights), similarity_loss=config.similarity_loss,
          rdrop_alpha=dict(config.rdrop_alpha),
          smart_weight=dict(config.smart.weight), smart=smart_options(config.smart),
          per_task_gradients=optim.uses_per_task_gradients(stage_config),
          pass_losses=conflicts_registry.needs_losses(stage_config),
          gradient_stats_every=config.gradient_stats_every_steps)

    tx, learning_rate, step_fn = build_step()
    state = self.parallel.replicate(TrainState.create(params, tx, freeze))
    older_layouts = (state_layouts.partitioned_optimizer_state(stage_config, freeze, task_names=TASKS),)
    return Stage(name, state, step_fn,
                 RunCheckpoints(storage.join(self.workdir, "checkpoints", name),
                                best_metric=config.best_metric, older_layouts=older_layouts,
                                host_local_replicas=self.parallel.has_host_local_state),
                 total_steps, [int(e) for e in epoch_ends], stream, build_step, learning_rate)

  def packing_spec(self):
    """How batches are packed on these devices (None: padded to length buckets)."""
    return self.data.packing_spec(num_devices=self.parallel.num_devices)

  # ---- evaluation -------------------------------------------------------------------------------

  def evaluate(self, params: Any, *, write_predictions: bool = False, out_dir: str | None = None) -> dict:
    """Dev scores; with `write_predictions`, the dev and test prediction files in `out_dir`.

    Every process of a multi-host job predicts (the batches are sharded over all of
    them), and only process 0 writes the files.
    """
    return self.evaluator.evaluate(params, out_dir=out_dir if write_predictions else None,
                                   write_files=jax.process_index() == 0)

  # ---- the loop ---------------------------------------------------------------------------------

  def run_stage(self, stage: Stage) -> Stage:
    """Trains a stage to its end, resuming from its newest good checkpoint if there is one."""
    config, parallel = self.config, self.parallel
    host_step, progress = self._resume(stage)
    self._stages_started += 1
    if host_step >= stage.total_steps:
      self._metrics_end = progress.get("metrics_offset")
      return stage

    pending, window_start, window_examples = [], time.perf_counter(), 0
    first_nonfinite = None  # the newest step's (state.first_nonfinite after it), on device
    bar = tqdm(total=stage.total_steps, initial=host_step, desc=stage.name, unit="step",
               disable=jax.process_index() != 0)
    data_state = progress.get("data")
    batches_iter = _device_batches(stage.stream, parallel)
    try:
      while host_step < stage.total_steps:
        batches, data_state = next(batches_iter)
        rng = jax.random.fold_in(self.base_rng, host_step)
        stage.state, step_metrics = stage.step_fn(stage.state, batches, rng)
        host_step += 1
        pending.append({k: step_metrics[k] for k in LOGGED_STEP_METRICS if k in step_metrics})
        first_nonfinite = step_metrics["first_nonfinite"]
        window_examples += sum(int(b["weights"].shape[0]) for b in batches.values())
        bar.update(1)
        epoch_end = host_step in stage.epoch_ends or host_step == stage.total_steps
        if host_step % config.log_every_steps == 0 or epoch_end:
          elapsed = time.perf_counter() - window_start
          summary = self._log_train(host_step, pending, first_nonfinite, window_examples / max(elapsed, 1e-9),
                                    learning_rate=float(stage.learning_rate(host_step - 1)))
          bar.set_postfix(loss=f"{summary['loss_total']:.3f}", ex_s=f"{summary['examples_per_s']:.1f}")
          pending, window_start, window_examples = [], time.perf_counter(), 0
        if epoch_end and host_step in stage.epoch_ends:
          progress["epoch"] = stage.epoch_ends.index(host_step) + 1
        # Dev evaluation every eval_every_epochs-th epoch and at the stage's last step, so the
        # best checkpoint is always chosen among evaluated steps, the final one included.
        evaluate_now = epoch_end and (host_step == stage.total_steps
                                      or progress["epoch"] % config.eval_every_epochs == 0)
        if evaluate_now:
          self._check_finite(stage)
          scores = self.evaluate(weight_averaging.evaluation_params(stage.state))
          self._log_eval(host_step, scores, stage.name)
          progress["data"] = data_state
          best = progress.get("best")
          if best is None or scores[stage.checkpoints.best_metric] > best["score"]:
            progress["best"] = {"score": scores[stage.checkpoints.best_metric], "step": host_step}
          progress["metrics_offset"] = self.writer.position() if self.writer else None
          stage.checkpoints.save(host_step, stage.state, dict(progress),
                                 metrics={k: float(v) for k, v in scores.items()})
        elif epoch_end or host_step % config.checkpoint_every_steps == 0:
          self._check_finite(stage)
          progress["data"] = data_state
          progress["metrics_offset"] = self.writer.position() if self.writer else None
          stage.checkpoints.save(host_step, stage.state, dict(progress))
    finally:
      bar.close()
      batches_iter.close()
      stage.checkpoints.wait()
    self._metrics_end = self.writer.position() if self.writer else None
    return stage

  def _resume(self, stage: Stage) -> tuple[int, dict]:
    """(step, progress) to go on from: the newest good checkpoint's, else a fresh start's.

    Refuses a config that differs from the checkpoint's (train/config_changes.py), skips
    damaged checkpoints (train/checkpointing.py), continues a stage whose epoch count was
    raised with a new learning-rate segment, and cuts metrics.jsonl back to what the
    resumed step had logged.
    """
    config = self.config
    current = config_changes.config_as_json(config)
    accepted: dict[str, tuple] = {}

    def check_config(step: int, progress: dict) -> None:
      accepted.clear()
      if "config" not in progress:
        _say(f"warning: {stage.name} checkpoint step {step} records no config (written before configs were "
             f"stored); resuming without comparing configs")
        return
      accepted.update(config_changes.check_resume(
          progress["config"], config, stage=stage.name, step=step, where=stage.checkpoints.directory,
          defaults=_DEFAULT_CONFIG_JSON))

    found = stage.checkpoints.restore_newest_good(stage.state, check_config, say=_say)
    if found is None:
      self._cut_metrics(self._metrics_end, purge_step=1)
      _say(f"{stage.name}: training {stage.total_steps} steps in {self.workdir}")
      self.config_history[stage.name] = []
      return 0, {"epoch": 0, "best": None, "config": current, "config_history": [],
                 "schedule_segments": [stage.total_steps]}

    step, restored, progress = found
    history = list(progress.get("config_history", []))
    if accepted or "config" not in progress:
      history.append({"step": step, "changes": {k: list(v) for k, v in accepted.items()}}
                     if "config" in progress else {"step": step, "changes": "unknown (no config was stored)"})
    progress.update(config=current, config_history=history)
    self.config_history[stage.name] = history
    segments = list(progress.get("schedule_segments") or [self._legacy_total_steps(stage, progress)])
    if stage.total_steps > segments[-1]:
      _say(f"{stage.name}: continuing to step {stage.total_steps} (more epochs than the {segments[-1]} "
           f"steps it was started for); the added steps get a learning-rate schedule of their own")
      segments.append(stage.total_steps)
    progress["schedule_segments"] = segments
    if len(segments) > 1:
      _, stage.learning_rate, stage.step_fn = stage.build_step(segments)
    stage.state = restored  # placed as `stage.state` was
    stage.stream.set_state(progress["data"], allow_more_epochs=True)
    if step < stage.total_steps:
      dropped = self._cut_metrics(progress.get("metrics_offset"), purge_step=step + 1)
      note = f" (dropped {dropped} metrics records logged after it)" if dropped else ""
    else:
      note = ""
    _say(f"{stage.name}: resumed from step {step} of {stage.total_steps} in {self.workdir}{note}")
    return step, progress

  def _cut_metrics(self, position: int | None, *, purge_step: int) -> int:
    """Truncates metrics.jsonl to `position` (None: unknown, keep all); returns the records dropped.

    TensorBoard is told to hide events from `purge_step` on only in the first stage: later
    stages count their steps from 0 again, and a purge would hide the first stage's curves.
    """
    if position is None or self.writer is None:
      return 0
    return self.writer.truncate(position, tensorboard_purge_step=purge_step if self._stages_started == 0 else None)

  def _legacy_total_steps(self, stage: Stage, progress: dict) -> int:
    """The step count a checkpoint without `schedule_segments` was trained for, from its sampler state."""
    saved_epochs = int(progress["data"]["config"]["num_epochs"])
    total = sum(stage.stream.steps_per_epoch(e) for e in range(saved_epochs))
    return min(total, self.config.max_steps) if self.config.max_steps > 0 else total

  def _check_finite(self, stage: Stage) -> None:
    step, task = (int(x) for x in jax.device_get(stage.state.first_nonfinite))
    if step >= 0:
      latest = stage.checkpoints.latest_step()
      raise NonFiniteLossError(
          f"non-finite {TASKS[task]} loss or gradient at step {step} (stage {stage.name}); parameters were not "
          f"updated from that step on. The last good checkpoint is step {latest} in "
          f"{stage.checkpoints.manager.directory}. Lower the learning rate or check the data.")

  def _log_train(self, step: int, pending: list, first_nonfinite, examples_per_s: float,
                 learning_rate: float | None = None) -> dict:
    """Logs a window's mean losses, gradient norm, learning rate and gradient diagnostics.

    `pending` holds the window's step metrics (only LOGGED_STEP_METRICS of them) and
    `first_nonfinite` the newest step's failure record, still on device until here.
    `learning_rate` is the one the window's last step used.
    """
    pending, first_nonfinite = jax.device_get((pending, first_nonfinite))  # the one host sync per window
    if first_nonfinite[0] >= 0:
      raise NonFiniteLossError(
          f"non-finite {TASKS[first_nonfinite[1]]} loss or gradient at step {first_nonfinite[0]}; parameters "
          f"were not updated from that step on and no checkpoint was written after it.")
    losses = {}
    for task in TASKS:
      values = [float(np.mean(m["loss"][task])) for m in pending if task in m["loss"]]
      if values:
        losses[task] = float(np.mean(values))
    summary = {"loss": losses, "loss_total": float(sum(losses.values())),
               "grad_norm": float(np.mean([np.mean(m["grad_norm"]) for m in pending])),
               "examples_per_s": examples_per_s}
    if learning_rate is not None:
      summary["learning_rate"] = learning_rate
    if "gradients" in pending[-1]:  # every config.gradient_stats_every_steps-th step (gradient_stats.py)
      gradients = gradient_stats.summarize([m["gradients"] for m in pending], TASKS)
      if gradients is not None:
        summary["gradients"] = gradients
    for key in ("pcgrad", "conflicts"):  # a conflict method's diagnostics (steps.conflict_metrics)
      if key not in pending[-1]:
        continue
      cosine = np.mean([m[key]["cosine"] for m in pending], axis=0)
      conflicts = np.mean([m[key]["conflicts"] for m in pending])
      weights = np.mean([m[key]["weights"] for m in pending], axis=0)
      names = TASKS
      summary[key] = {"cosine": {f"{names[i]}-{names[j]}": float(cosine[i, j])
                                 for i in range(len(names)) for j in range(i + 1, len(names))},
                      "conflicts": float(conflicts),
                      "weights": {name: float(weights[i]) for i, name in enumerate(names)}}
    if self.writer:
      self.writer.write(step, summary, kind="train")
    return summary

  def _log_eval(self, step: int, scores: dict, stage_name: str) -> None:
    _say(f"{stage_name} step {step} dev: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    if self.writer:
      self.writer.write(step, {"dev": scores}, kind="eval")


_DEFAULT_CONFIG_JSON = config_changes.config_as_json(base_config.get_config())
# What `Trainer._log_train` reads of each step's metrics; the rest (the per-task "task" metrics,
# and every step's `first_nonfinite` but the newest) is never copied to the host.
LOGGED_STEP_METRICS = ("loss", "grad_norm", "pcgrad", "conflicts", "gradients")


def smart_options(smart_config: ml_collections.ConfigDict) -> smart_lib.SmartOptions:
  """The config's `smart` section, less the per-task weights."""
  return smart_lib.SmartOptions(noise_std=float(smart_config.noise_std), step_size=float(smart_config.step_size),
                                epsilon=float(smart_config.epsilon), num_steps=int(smart_config.num_steps))


def _say(message: str) -> None:
  """A line for the user, printed above the progress bar (and logged)."""
  logging.info(message)
  if jax.process_index() == 0:
    tqdm.write(message)


def format_scores_table(scores: dict, data_description: str) -> str:
  rows = [("SST accuracy", scores["sst_accuracy"]), ("Para accuracy", scores["para_accuracy"]),
          ("STS Pearson r", scores["sts_pearson"]), ("overall (mean of the three)", scores["overall_mean"]),
          ("overall (CS224N: r -> (r+1)/2)", scores["overall_cs224n"])]
  width = max(len(name) for name, _ in rows)
  lines = [f"dev scores ({data_description})", "-" * (width + 10)]
  lines += [f"{name:<{width}}  {value:7.4f}" for name, value in rows]
  return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the whole preset; returns the final dev scores of the best checkpoint.

  Raises:
    config_validation.ConfigError: before any work, listing every bad config field.
  """
  config_validation.validate(config)
  maybe_initialize_distributed()  # before jax.process_index(), which would start a one-process backend
  with WorkdirLock(workdir, jax.process_index()), CompilationStats() as compilation:
    return _train_and_evaluate(config, workdir, compilation)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, compilation: CompilationStats) -> dict:
  trainer = Trainer(config, workdir)
  stage = trainer.make_stage("main", trainer.initial_params(), task_schedule=config.task_schedule,
                             num_epochs=config.num_epochs, optim_config=config.optim,
                             pcgrad_config=config.pcgrad, conflicts_config=config.get("conflicts"))
  stage = trainer.run_stage(stage)
  best_stage = stage

  if config.frozen_stage.enabled:
    best_params = _restore_best_params(trainer, stage)
    no_pcgrad = ml_collections.ConfigDict(dict(config.pcgrad.to_dict(), enabled=False))
    frozen = trainer.make_stage("frozen_stage", best_params, task_schedule="sequential",
                                num_epochs=config.frozen_stage.epochs_per_task,
                                optim_config=config.frozen_stage.optim, pcgrad_config=no_pcgrad)
    frozen = trainer.run_stage(frozen)
    main_best = _best_score(stage)
    if _best_score(frozen) > main_best:
      best_stage = frozen

  params = _restore_best_params(trainer, best_stage)
  scores = trainer.evaluate(params, write_predictions=True, out_dir=storage.join(workdir, "predictions"))
  description = trainer.data.description()
  results = {"scores": scores, "data": description, "best_stage": best_stage.name,
             "compilation": compilation.to_dict(), "config": config.to_dict(),
             # {stage: [{step, changes: {field: [old, new]}}]}: config changes accepted on resumes
             "config_history": trainer.config_history}
  if jax.process_index() == 0:  # the other processes of a multi-host job computed the same
    storage.write_text(storage.join(workdir, "results.json"), json.dumps(results, indent=2, default=str))
    # The run's one artifact, for predict, export and init_from.
    run_bundle = trained_run.bundle_of_run(trainer.model, params, trainer.tokenizer, config,
                                           scores=scores, data_description=description,
                                           best_stage=best_stage.name)
    _save_bundle(run_bundle, storage.join(workdir, bundle_lib.BUNDLE_SUBDIR))
  table = format_scores_table(scores, description.get("quora_split", ""))
  if jax.process_index() == 0:
    print(table, flush=True)
    print(compilation.summary(), flush=True)
    storage.write_text(storage.join(workdir, "results.txt"), table + "\n")
    if trainer.writer:
      trainer.writer.write(best_stage.checkpoints.best_step() or 0, {"final": scores}, kind="final")
      trainer.writer.close()
    plots.plot_run(workdir)
  for s in {stage.name: stage, best_stage.name: best_stage}.values():
    s.checkpoints.close()
  return scores


def _save_bundle(run_bundle: bundle_lib.Bundle, target: str) -> None:
  """The bundle into the workdir; on an object store through a local staging copy (safetensors writes files)."""
  if storage.is_local(target):
    bundle_lib.save_bundle(run_bundle, target)
    return
  staging = storage.staging_dir("bundle")
  try:
    bundle_lib.save_bundle(run_bundle, os.path.join(staging, bundle_lib.BUNDLE_SUBDIR))
    if storage.exists(target):
      storage.as_path(target).rmtree()
    storage.copy_tree(os.path.join(staging, bundle_lib.BUNDLE_SUBDIR), target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _best_score(stage: Stage) -> float:
  best = stage.checkpoints.best_step()
  if best is None:
    return -np.inf
  return stage.checkpoints.restore_progress(best)["best"]["score"]


def _restore_best_params(trainer: Trainer, stage: Stage) -> Any:
  step = stage.checkpoints.best_step() or stage.checkpoints.latest_step()
  restored, _ = stage.checkpoints.restore(step, stage.state)
  return weight_averaging.evaluation_params(restored)
