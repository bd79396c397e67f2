"""An exponential moving average of the weights, kept by the optimizer and used for evaluation.

Averaging the weights of the last few hundred steps (Polyak averaging) smooths
out the noise of small-batch fine-tuning: the averaged model sits nearer the
middle of the basin the run is circling. The average is an optax transformation
at the very end of the chain, so it lives in the optimizer state: the step,
donation, checkpoints and exact resume need nothing new, and a run without it
(`optim.ema_decay=0`) has the same state tree as before.

The decay ramps up as TensorFlow's ExponentialMovingAverage with num_updates
does, decay_t = min(decay, (1 + t) / (10 + t)), so the freshly initialised heads
of step 0 do not linger in the average for thousands of steps.

Training itself never reads the average: the raw weights keep training, and
`evaluation_params` swaps the average in wherever the trainer evaluates, picks
the best checkpoint or exports the model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

PyTree = Any


class ParamsEmaState(NamedTuple):
  count: jax.Array  # updates averaged so far
  params_ema: PyTree  # float32, shaped like the trainable params


def effective_decay(decay: float, count: jax.Array) -> jax.Array:
  """The decay of update number `count` (0-based): `decay`, ramped up over the first steps."""
  count = jnp.asarray(count, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + count) / (10.0 + count))


def params_ema(decay: float) -> optax.GradientTransformation:
  """Leaves the updates alone; keeps ema <- d * ema + (1 - d) * (params + updates) in its state."""
  if not 0.0 < decay < 1.0:
    raise ValueError(f"optim.ema_decay={decay}; expected a number in (0, 1), or 0 for no average")

  def init(params):
    # A copy, not an alias: the state is donated to the step, and one buffer cannot be donated twice.
    return ParamsEmaState(jnp.zeros((), jnp.int32), jax.tree.map(lambda p: jnp.array(p, jnp.float32), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("params_ema needs the params: call tx.update(updates, state, params)")
    d = effective_decay(decay, state.count)
    averaged = jax.tree.map(lambda e, p, u: d * e + (1.0 - d) * (p + u).astype(jnp.float32),
                            state.params_ema, params, updates)
    return updates, ParamsEmaState(state.count + 1, averaged)

  return optax.GradientTransformation(init, update)


def averaged_weights(opt_state: Any) -> PyTree | None:
  """The moving average held in an optimizer state, or None when the optimizer keeps none."""
  return optax.tree_utils.tree_get(opt_state, "params_ema", None)


def evaluation_params(state) -> PyTree:
  """The weights to evaluate, pick the best checkpoint with and export: the average where there is one.

  The average covers the trainable params only (the optimizer never sees frozen
  ones), so frozen leaves come from `state.params`.
  """
  averaged = averaged_weights(state.opt_state)
  if averaged is None:
    return state.params
  return merge_average(state.params, averaged)


def merge_average(params: PyTree, averaged: PyTree) -> PyTree:
  """`params` with each leaf that `averaged` has (the trainable ones) replaced by its average."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  for path, value in flax.traverse_util.flatten_dict(averaged, sep="/").items():
    flat[path] = value.astype(flat[path].dtype)
  return flax.traverse_util.unflatten_dict(flat, sep="/")
