"""The whole optimizer, built from config as one optax chain.

    [conflict method]   unless config.conflicts.method is "sum"
    -> clip_by_global_norm -> adamw(schedule, decay mask)

A conflict method (PCGrad, MGDA, UPGrad, ...: `train/conflicts/registry.py`;
`config.pcgrad.enabled=True` means PCGrad) goes first because it consumes the
per-task gradients (leaves [T, ...]) and emits their combination, sum_t w_t g_t;
everything after it sees ordinary gradients shaped like the parameters.

No transform here sees a frozen parameter (`config.optim.freeze`): `Freeze`,
below, takes them out of the tree before the gradient is taken, and the
optimizer is built for and given the trainable subtree alone. So they hold no
Adam moments, cannot steer a conflict method's projections or diagnostics, and
do not count towards the clipping norm, without a mask re-applied at each of
those places.

Per-task loss weights are not an optimizer concern: the trainer multiplies each
task's loss by its weight before differentiating, so with PCGrad the surgery
sees the weighted task gradients.

With method "sum", `update` takes the usual gradient of the (weighted, summed)
loss; with any other method it takes the stacked per-task gradients, in the order of
`task_names`. Either way it accepts the extra arguments `rng` (the step key,
read by PCGrad and GradVac) and `losses` (the [T] task losses, read by the
loss-weighting methods).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import flax.traverse_util
import jax
import ml_collections
import optax

from bert_jax.tasks import TASKS
from train import weight_averaging
from train.conflicts import registry

PyTree = Any

SCHEDULES = ("warmup_linear", "warmup_cosine", "constant")
# Standard BERT fine-tuning practice (Devlin et al.; HF run_glue): no weight
# decay on biases or LayerNorm parameters, whose scale carries no capacity to
# regularise and whose shrinkage towards zero only hurts.
_NO_DECAY_COMPONENT = re.compile(r"(?i)^layer_?norm")


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def param_paths(params: PyTree) -> PyTree:
  """Same structure as `params`, each leaf replaced by its '/'-joined path.

  e.g. "bert/encoder/layer/0/attention/self/query/kernel". Trees holding
  `optax.MaskedNode` (inside `optax.masked`) keep it, as it has no leaves.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "/".join(_key_name(k) for k in path), params)


def decay_mask(params: PyTree) -> PyTree:
  """True where AdamW applies weight decay: everything but biases and LayerNorm params."""
  def decays(path: str) -> bool:
    components = path.split("/")
    return components[-1] != "bias" and not any(_NO_DECAY_COMPONENT.match(c) for c in components)
  return jax.tree.map(decays, param_paths(params))


def _freeze_patterns(freeze_regexes: str | Sequence[str]) -> list[re.Pattern]:
  if isinstance(freeze_regexes, str):
    freeze_regexes = (freeze_regexes,)
  patterns = []
  for regex in freeze_regexes:
    try:
      patterns.append(re.compile(regex))
    except re.error as error:
      raise ValueError(f"optim.freeze: {regex!r} is not a valid regex: {error}") from error
  return patterns


@dataclasses.dataclass(frozen=True)
class Freeze:
  """Which parameters a stage trains: all but `frozen_paths` ('/'-joined paths).

  The one place frozen parameters are dealt with. The train step differentiates
  `trainable(params)` alone, so XLA never computes, say, the dense gradient of a
  frozen 30522-row word-embedding table; the optimizer is built for that same
  subtree (`TrainState.create`), so frozen parameters hold no optimizer state,
  never reach a conflict method or the clipping norm, and are never written; the
  step puts the updated trainable leaves back with `merge`.
  """
  frozen_paths: frozenset[str] = frozenset()

  @classmethod
  def from_regexes(cls, params: PyTree, freeze_regexes: str | Sequence[str]) -> "Freeze":
    """Frozen: every parameter whose path any regex is found in (re.search), e.g. "^bert/".

    A regex that matches no parameter raises: a typo there would otherwise
    silently train what was meant to be frozen.
    """
    patterns = _freeze_patterns(freeze_regexes)
    all_paths = jax.tree.leaves(param_paths(params))
    for pattern in patterns:
      if not any(pattern.search(p) for p in all_paths):
        raise ValueError(f"optim.freeze: regex {pattern.pattern!r} matches no parameter path; "
                         f"paths look like {all_paths[:3]}")
    return cls(frozenset(p for p in all_paths if any(pattern.search(p) for pattern in patterns)))

  def trainable(self, tree: PyTree) -> PyTree:
    """`tree` (params, or anything shaped like them) without the frozen leaves."""
    if not self.frozen_paths:
      return tree
    flat = flax.traverse_util.flatten_dict(tree, sep="/")
    return flax.traverse_util.unflatten_dict(
        {path: leaf for path, leaf in flat.items() if path not in self.frozen_paths}, sep="/")

  def merge(self, trainable: PyTree, params: PyTree) -> PyTree:
    """`params` with the leaves of `trainable` in place of their own."""
    if not self.frozen_paths:
      return trainable
    return flax.traverse_util.unflatten_dict(
        {**flax.traverse_util.flatten_dict(params, sep="/"),
         **flax.traverse_util.flatten_dict(trainable, sep="/")}, sep="/")


def _warmup_steps(optim_config: ml_collections.ConfigDict, total_steps: int) -> int:
  if optim_config.warmup_steps >= 0:
    warmup = int(optim_config.warmup_steps)
  else:
    warmup = int(round(optim_config.warmup_fraction * total_steps))
  if warmup > total_steps:
    raise ValueError(f"optim.warmup_steps={warmup} exceeds total_steps={total_steps}")
  return warmup


def create_learning_rate_schedule(optim_config: ml_collections.ConfigDict,
                                  total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then the chosen decay until `total_steps`.

  "warmup_linear" and "warmup_cosine" decay to learning_rate *
  end_learning_rate_fraction at `total_steps` (and stay there). "constant" also
  warms up (as HF's constant_schedule_with_warmup): warmup protects the freshly
  initialised heads whatever comes after it; set warmup_steps=0 for a flat rate.
  """
  if total_steps <= 0:
    raise ValueError(f"create_learning_rate_schedule: total_steps={total_steps}; expected > 0")
  if optim_config.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={optim_config.schedule!r}; expected one of {SCHEDULES}")
  peak = float(optim_config.learning_rate)
  end = peak * float(optim_config.end_learning_rate_fraction)
  warmup = _warmup_steps(optim_config, total_steps)
  decay_steps = max(total_steps - warmup, 1)
  if optim_config.schedule == "warmup_linear":
    after_warmup = optax.linear_schedule(peak, end, decay_steps)
  elif optim_config.schedule == "warmup_cosine":
    after_warmup = optax.cosine_decay_schedule(
        peak, decay_steps, alpha=float(optim_config.end_learning_rate_fraction))
  else:
    after_warmup = optax.constant_schedule(peak)
  if warmup == 0:
    return after_warmup
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after_warmup], [warmup])


def uses_per_task_gradients(config: ml_collections.ConfigDict) -> bool:
  """True when `create_optimizer(config)` takes stacked per-task gradients (a conflict method)."""
  return registry.needs_per_task_gradients(config)


_ENCODER_LAYER = re.compile(r"^bert/encoder/layer/(\d+)/")


def learning_rate_multiplier(path: str, num_layers: int, layer_decay: float, head_multiplier: float) -> float:
  """The factor on the learning rate of the parameter at `path` (layer-wise decay, ELECTRA-style).

  Encoder layer i (0 = the lowest of num_layers) gets layer_decay ** (num_layers - i),
  so the top layer trains at layer_decay times the rate and each layer below at
  another factor of it; the embeddings sit one step below layer 0, at
  layer_decay ** (num_layers + 1), and the pretrained pooler level with the top
  layer. Everything outside `bert/` is a task head, freshly initialised, and gets
  `head_multiplier`. (Clark et al. 2020, ELECTRA, appendix A.)
  """
  if not path.startswith("bert/"):
    return float(head_multiplier)
  layer = _ENCODER_LAYER.match(path)
  if layer:
    return float(layer_decay) ** (num_layers - int(layer.group(1)))
  if path.startswith("bert/embeddings/"):
    return float(layer_decay) ** (num_layers + 1)
  return float(layer_decay)  # the pooler, and any other encoder parameter above the layers


def scale_learning_rates(layer_decay: float, head_multiplier: float) -> optax.GradientTransformation:
  """Multiplies each update by its parameter's `learning_rate_multiplier`.

  Placed after AdamW, it scales the whole step, the decoupled weight decay
  included: exactly a per-parameter learning rate. The factors are Python
  floats read off the tree's paths at trace time, so they cost one multiply.
  """
  def scale(updates, params=None):
    del params
    paths = param_paths(updates)
    layers = [int(m.group(1)) for m in map(_ENCODER_LAYER.match, jax.tree.leaves(paths)) if m]
    num_layers = max(layers) + 1 if layers else 0
    return jax.tree.map(
        lambda u, path: u * learning_rate_multiplier(path, num_layers, layer_decay, head_multiplier),
        updates, paths)
  return optax.stateless(scale)


def parameter_update(optim_config: ml_collections.ConfigDict,
                     learning_rate_schedule: optax.Schedule) -> optax.GradientTransformation:
  """Gradients in, updates out: clipping, AdamW, per-layer rates, then the weight average.

  clip_by_global_norm (when `clip_norm` > 0), AdamW with the decay mask, the
  layer-wise rates (when `layer_decay` or `head_learning_rate_multiplier` is not
  1) and the moving average of the weights (when `ema_decay` > 0; it reads the
  final update and changes none).
  """
  chain = []
  if optim_config.clip_norm > 0:
    chain.append(optax.clip_by_global_norm(float(optim_config.clip_norm)))
  chain.append(optax.adamw(
      learning_rate_schedule, b1=float(optim_config.b1), b2=float(optim_config.b2),
      eps=float(optim_config.eps), weight_decay=float(optim_config.weight_decay), mask=decay_mask))
  layer_decay = float(optim_config.get("layer_decay", 1.0))
  head_multiplier = float(optim_config.get("head_learning_rate_multiplier", 1.0))
  if layer_decay != 1.0 or head_multiplier != 1.0:
    chain.append(scale_learning_rates(layer_decay, head_multiplier))
  ema_decay = float(optim_config.get("ema_decay", 0.0))
  if ema_decay > 0:
    chain.append(weight_averaging.params_ema(ema_decay))
  return optax.chain(*chain)


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                     task_names: Sequence[str] = TASKS,
                     learning_rate_schedule: optax.Schedule | None = None,
                     ) -> optax.GradientTransformationExtraArgs:
  """The training optimizer from `config.optim` and (optional) `config.conflicts` / `config.pcgrad`.

  It updates whatever tree it is given: the trainer gives it the trainable
  parameters only (`Freeze`). `task_names` fixes the order of the task axis
  that a conflict method expects in the stacked gradients; `config.pcgrad.tasks`
  names a subset of it. `learning_rate_schedule` replaces the one built from
  `config.optim` and `total_steps` (a run continued with more epochs has one
  segment per start).
  """
  optim_config = config.optim
  _freeze_patterns(optim_config.freeze)  # fail on a bad regex now, not inside the first jitted step
  update = parameter_update(optim_config, learning_rate_schedule
                            or create_learning_rate_schedule(optim_config, total_steps))
  method = registry.create_conflict_transform(config, tuple(task_names))
  if method is None:
    return update
  return optax.chain(method, update)
