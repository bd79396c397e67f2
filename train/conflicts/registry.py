"""`config.conflicts.method` -> an optax transformation: the registry of conflict methods.

"sum" is no method at all (the trainer sums the task gradients, its default
path). Every other name builds a transformation over stacked per-task
gradients from its own options in `config.conflicts.<method>`; PCGrad reads
`config.pcgrad.tasks` and `config.pcgrad.reduction`, as before, and
`config.pcgrad.enabled=True` means method "pcgrad". `default_config()` is the
`config.conflicts` section of train/configs/base.py, so every option exists
(and can be overridden on the command line) with its default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import optax

from train.conflicts import aligned_mtl, cagrad, dual_cone, gradvac, imtl_g, loss_weighting, mgda, nash_mtl
from train.conflicts import pcgrad

SUM = "sum"


@dataclasses.dataclass(frozen=True)
class Method:
  """One entry: its builder `build(num_tasks, **options)`, default options, and whether it reads losses."""
  build: Callable[..., optax.GradientTransformationExtraArgs]
  options: Mapping[str, Any]
  needs_losses: bool = False
  summary: str = ""


METHODS: dict[str, Method] = {
    "pcgrad": Method(pcgrad.pcgrad, {}, summary="project conflicting gradients (options in config.pcgrad)"),
    "gradvac": Method(gradvac.gradvac, {"beta": 0.01, "eps": 1e-8}, summary="PCGrad towards an EMA target cosine"),
    "mgda": Method(mgda.mgda, {"epsilon": 1e-3, "max_iters": 100, "solver": "frank_wolfe"}, summary="min-norm point of the hull (Frank-Wolfe)"),
    "cagrad": Method(cagrad.cagrad, {"c": 0.4, "norm_eps": 1e-4}, summary="best worst-task gain near the mean"),
    "imtl_g": Method(imtl_g.imtl_g, {}, summary="equal projection on every unit gradient"),
    "nash_mtl": Method(nash_mtl.nash_mtl, {"max_norm": 1.0, "update_weights_every": 1, "iterations": 40},
                       summary="Nash bargaining: G alpha = 1/alpha"),
    "aligned_mtl": Method(aligned_mtl.aligned_mtl, {"scale_mode": "min", "rank_tolerance": 1e-5},
                          summary="gradients made orthogonal and equally long"),
    "upgrad": Method(dual_cone.upgrad, {"norm_eps": 1e-4, "reg_eps": 1e-4},
                     summary="each gradient projected onto the dual cone, averaged"),
    "dualproj": Method(dual_cone.dualproj, {"norm_eps": 1e-4, "reg_eps": 1e-4},
                       summary="the mean gradient projected onto the dual cone"),
    "uncertainty": Method(loss_weighting.uncertainty_weighting, {"learning_rate": 1e-3}, needs_losses=True,
                          summary="learned task log-variances (Kendall et al.)"),
    "dwa": Method(loss_weighting.dwa, {"temperature": 2.0, "window": 100}, needs_losses=True,
                  summary="dynamic weight average of loss ratios"),
    "famo": Method(loss_weighting.famo, {"learning_rate": 0.025, "gamma": 1e-3}, needs_losses=True,
                   summary="fast adaptive multitask optimisation"),
}
METHOD_NAMES = (SUM,) + tuple(METHODS)


def default_config() -> ml_collections.ConfigDict:
  """`config.conflicts`: the method name and every method's options at their defaults."""
  config = ml_collections.ConfigDict({"method": SUM})
  for name, method in METHODS.items():
    if method.options:
      config[name] = ml_collections.ConfigDict(dict(method.options))
  return config


def resolve_method(config: ml_collections.ConfigDict) -> str:
  """The method a (stage) config asks for: `conflicts.method`, or "pcgrad" when `pcgrad.enabled`."""
  conflicts = config.get("conflicts")
  method = conflicts.method if conflicts is not None else SUM
  if method not in METHOD_NAMES:
    raise ValueError(f"conflicts.method={method!r} is not a known method; expected one of {METHOD_NAMES}")
  pcgrad_config = config.get("pcgrad")
  if pcgrad_config is not None and pcgrad_config.enabled:
    if method not in (SUM, "pcgrad"):
      raise ValueError(f"pcgrad.enabled=True and conflicts.method={method!r} ask for two methods; "
                       "set pcgrad.enabled=False (or conflicts.method='pcgrad')")
    return "pcgrad"
  return method


def needs_per_task_gradients(config: ml_collections.ConfigDict) -> bool:
  """True when the optimizer consumes stacked per-task gradients (any method but "sum")."""
  return resolve_method(config) != SUM


def needs_losses(config: ml_collections.ConfigDict) -> bool:
  method = resolve_method(config)
  return method != SUM and METHODS[method].needs_losses


def task_indices(task_names: Sequence[str], tasks: Sequence[str] | str) -> tuple[int, ...]:
  """Indices of the named tasks in `task_names` (() = all); unknown names raise, naming them."""
  if isinstance(tasks, str):
    tasks = (tasks,)
  unknown = [name for name in tasks if name not in task_names]
  if unknown:
    raise ValueError(f"pcgrad.tasks={tuple(tasks)} names {unknown}, not among the "
                     f"trained tasks {tuple(task_names)}")
  if not tasks:
    return tuple(range(len(task_names)))
  return tuple(task_names.index(name) for name in tasks)


def create_conflict_transform(config: ml_collections.ConfigDict, task_names: Sequence[str],
                              ) -> optax.GradientTransformationExtraArgs | None:
  """The method's transformation over stacked gradients in `task_names` order, or None for "sum"."""
  method = resolve_method(config)
  if method == SUM:
    return None
  num_tasks = len(task_names)
  if method == "pcgrad":
    pcgrad_config = config.get("pcgrad")
    tasks = pcgrad_config.tasks if pcgrad_config is not None else ()
    reduction = pcgrad_config.reduction if pcgrad_config is not None else "sum"
    return pcgrad.pcgrad(num_tasks, task_indices(task_names, tasks), reduction=reduction)
  entry = METHODS[method]
  given = config.conflicts.get(method)
  options = dict(entry.options)
  if given is not None:
    unknown = sorted(set(given.keys()) - set(entry.options))
    if unknown:
      raise ValueError(f"conflicts.{method} has unknown options {unknown}; expected {sorted(entry.options)}")
    options.update(given.to_dict())
  return entry.build(num_tasks, **options)
