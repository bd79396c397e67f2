"""SMART's smoothness-inducing adversarial regulariser (Jiang et al., 2020), as a pure function.

SMART fine-tunes with an extra term that asks the model's output to stay put when
the encoder's input (the embeddings' output) moves a little in the direction
that changes the output most:

  R(x) = max over small delta of  D(f(x + delta), f(x)),

with D the symmetric KL divergence for classifiers and the squared difference
for regression (`losses.consistency`, as for R-Drop). The max is approximated as
in the authors' MT-DNN code and the `smart-pytorch` package: start from Gaussian
noise of standard deviation `noise_std`, take `num_steps` gradient-ascent steps on
D(f(x + delta), stop_gradient(f(x))), each `delta + step_size * grad` scaled to
max-abs 1 per token (the inf norm over the hidden axis, `epsilon` keeping the
division finite), then differentiate D(f(x + delta), f(x)) with delta fixed and
f(x) not: both the perturbed and the clean output are pulled together. The
paper also has a Bregman proximal (mean-teacher) term; `smart-pytorch` leaves it
out, and so does this module.

Every forward here uses the clean pass's dropout key, so the term measures the
perturbation's effect alone, not a second dropout mask's (that is R-Drop's).
Cost: each ascent step is a forward and a backward to the input (no weight
gradients), and the final term one more forward and backward.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from bert_jax import losses

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SmartOptions:
  """The ascent's settings; the defaults are MT-DNN's and smart-pytorch's."""
  noise_std: float = 1e-5
  step_size: float = 1e-3
  epsilon: float = 1e-6
  num_steps: int = 1


def normalize_per_token(step: Array, epsilon: float) -> Array:
  """`step` divided by its max-abs over the hidden (last) axis, plus `epsilon`."""
  return step / (jnp.max(jnp.abs(step), axis=-1, keepdims=True) + epsilon)


def smoothness_sum(task: str, forward: Callable[[Array], Array], clean_outputs: Array, weights: Array,
                   noise_shape: tuple[int, ...], key: Array, options: SmartOptions = SmartOptions()) -> Array:
  """The weighted sum over examples of D(f(x + delta*), f(x)); weights as `losses.task_loss`'s.

  Args:
    task: "sst", "para" or "sts" (which divergence, `losses.consistency`).
    forward: embedding noise [rows, length, hidden] -> the task's outputs, with the
      parameters and the dropout key of the clean pass closed over.
    clean_outputs: forward's outputs without noise (the clean pass the task loss read).
    weights: per-example weights; padding examples (0) add nothing.
    noise_shape: `multitask.embedding_shape` of the batch.
    key: the initial noise's key.
  """
  real = weights > 0

  def divergence_sum(outputs, reference):
    return jnp.sum(jnp.where(real, weights * losses.consistency(task, outputs, reference), 0.0))

  delta = options.noise_std * jax.random.normal(key, noise_shape, jnp.float32)
  reference = jax.lax.stop_gradient(clean_outputs)
  for _ in range(options.num_steps):
    grad = jax.grad(lambda d: divergence_sum(forward(d), reference))(delta)
    delta = jax.lax.stop_gradient(normalize_per_token(delta + options.step_size * grad, options.epsilon))
  return divergence_sum(forward(delta), clean_outputs)
