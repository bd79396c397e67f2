"""The encoder's matmuls alone, forward and backward, in XLA and in PyTorch: the floor under a step.

  python -m bench.matmul_floor                         # all-MiniLM-L6 shapes, 32 x 64 tokens
  python -m bench.matmul_floor --model=bert-base --tokens=2048

Why: at the same padded shape our train step is a little slower than Hugging
Face PyTorch (bench/README.md has the ratios and the command), and
`bench/profile_step.py` shows most of our step is matmuls. This
script takes everything else away, on both sides: each layer is the encoder's
six dense products (query, key, value, attention output, feed-forward in and
out) on [tokens, hidden] activations, with no attention, LayerNorm, GELU,
dropout or optimizer, and one backward pass (input and weight gradients). If
XLA's matmuls alone take longer than PyTorch's, no rewrite of the rest of our
step can reach parity at the same shape; a faster matmul library in XLA:CPU
(or bfloat16 products on CPUs with AMX) would.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from bench.flops import call_seconds


def _median_seconds(fn, iters: int) -> float:
  return float(np.median(call_seconds(fn, iters)))


def layer_shapes(hidden: int, inner: int) -> list[tuple[int, int]]:
  """(in, out) of the six dense layers of one BERT layer."""
  return [(hidden, hidden)] * 4 + [(hidden, inner), (inner, hidden)]


def jax_seconds(num_layers: int, hidden: int, inner: int, tokens: int, iters: int) -> float:
  import jax
  import jax.numpy as jnp

  def stack(weights, x):
    for q, k, v, o, w1, w2 in weights:
      attended = (x @ q + x @ k + x @ v) @ o  # the four hidden x hidden products, no attention
      x = x + attended
      x = x + (x @ w1) @ w2
    return jnp.sum(x * x)

  keys = iter(jax.random.split(jax.random.key(0), 6 * num_layers + 1))
  weights = [tuple(0.02 * jax.random.normal(next(keys), shape) for shape in layer_shapes(hidden, inner))
             for _ in range(num_layers)]
  x = jax.random.normal(next(keys), (tokens, hidden))
  grad = jax.jit(jax.grad(stack, argnums=(0, 1)))
  return _median_seconds(lambda: jax.block_until_ready(grad(weights, x)), iters)


def torch_seconds(num_layers: int, hidden: int, inner: int, tokens: int, iters: int, threads: int) -> float:
  import torch
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  weights = [[(0.02 * torch.randn(shape)).requires_grad_() for shape in layer_shapes(hidden, inner)]
             for _ in range(num_layers)]
  x0 = torch.randn(tokens, hidden, requires_grad=True)

  def step():
    x = x0
    for q, k, v, o, w1, w2 in weights:
      x = x + (x @ q + x @ k + x @ v) @ o
      x = x + (x @ w1) @ w2
    (x * x).sum().backward()
    for w in (w for layer in weights for w in layer):
      w.grad = None
    x0.grad = None
  return _median_seconds(step, iters)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  shapes = {"minilm-l6": (6, 384, 1536), "bert-base": (12, 768, 3072)}
  if args.model not in shapes:
    raise app.UsageError(f"--model={args.model!r}; expected one of {sorted(shapes)}")
  num_layers, hidden, inner = shapes[args.model]
  tokens = args.tokens
  flops = 3 * 2.0 * tokens * num_layers * sum(i * o for i, o in layer_shapes(hidden, inner))
  ours = jax_seconds(num_layers, hidden, inner, tokens, args.iters)
  peer = torch_seconds(num_layers, hidden, inner, tokens, args.iters, args.torch_threads)
  print(f"{args.model} dense matmuls only, {tokens} tokens, forward + backward "
        f"({flops / 1e9:.0f} GFLOP): XLA {1000 * ours:.0f} ms ({flops / ours / 1e9:.0f} GFLOP/s), "
        f"PyTorch {1000 * peer:.0f} ms ({flops / peer / 1e9:.0f} GFLOP/s); PyTorch / XLA time {peer / ours:.2f}")


def define_flags():
  """Flags, defined only when run as a script (the test process imports every bench module)."""
  flags.DEFINE_string("model", "minilm-l6", "minilm-l6 or bert-base (shapes only).")
  flags.DEFINE_integer("tokens", 2048, "Rows of the activations (batch x length).")
  flags.DEFINE_integer("iters", 10, "Timed calls; the median is reported.")
  flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
