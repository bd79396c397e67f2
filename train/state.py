"""The train state: a plain pytree that the jitted step consumes, donates and returns."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

NO_FAILURE = -1


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs on device; the rng is derived from (seed, step).

  `opt_state` is the optimizer's state of the trainable parameters alone
  (`optim.Freeze`): frozen ones have none.

  `first_nonfinite` is (step, task index) of the first step whose loss was not
  finite, or (-1, -1). The step records it on device, without a host sync, and
  from then on leaves params and optimizer state untouched, so the last good
  weights survive until the host notices at its next logging point.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  first_nonfinite: jax.Array

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation, freeze=None) -> "TrainState":
    """The state before the first step; `freeze` (an `optim.Freeze`) keeps `tx` to the trainable params."""
    trainable = params if freeze is None else freeze.trainable(params)
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(trainable),
               first_nonfinite=jnp.full((2,), NO_FAILURE, jnp.int32))
