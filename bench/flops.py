"""The two halves of MFU: the FLOPs a step computes, and the machine's matmul peak.

FLOPs are counted analytically from the padded shapes each side actually ran,
not read from a profiler, so that ours and the PyTorch peer are counted the
same way (tests/test_bench.py checks the count against XLA's `cost_analysis`).
The peak is measured at the start of the same run, because on a shared CPU it
moves with the load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

TRAIN_FLOPS_PER_FORWARD = 3  # backward is about twice the forward's matmuls


def call_seconds(fn: Callable[[], Any], repeats: int) -> list[float]:
  """Wall seconds of `repeats` calls of `fn`, after one untimed warmup call (compiles, caches)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def encoder_forward_flops(config, num_sequences: int, length: int) -> float:
  """Multiply-adds x 2 of one BERT encoder forward over [num_sequences, length] padded tokens.

  Per layer and token: the Q, K, V and output projections (4 H^2) and the two
  feed-forward matmuls (2 H I); per layer and sequence: the attention scores
  QK^T and the context PV (2 L^2 H). Plus the pooler on [CLS]. Embedding
  lookups, LayerNorm, softmax and GELU are left out: they are memory-bound and
  small next to the matmuls at these widths (tests/test_bench.py holds XLA's
  count, which includes them, within 1.15x of this one).
  """
  hidden, inner = config.hidden_size, config.intermediate_size
  tokens = num_sequences * length
  per_layer = 2.0 * tokens * (4 * hidden * hidden + 2 * hidden * inner) \
      + 2.0 * 2 * num_sequences * length * length * hidden
  pooler = 2.0 * num_sequences * hidden * hidden
  return config.num_hidden_layers * per_layer + pooler


def measure_matmul_peak(size: int = 2048, repeats: int = 5, *, dtype: str = "float32",
                        torch_device: str = "cpu") -> dict[str, float]:
  """Best GFLOP/s of a size x size matmul in numpy, torch and XLA; "peak" is the best.

  Each library gets one warmup product and then the fastest of `repeats`.
  `dtype` "bfloat16" times bfloat16 operands (numpy has none, so it is left
  out), the peak a bfloat16 step's MFU is taken against; XLA's product
  accumulates in float32, as the encoder's do. numpy is left out too
  when XLA's default device is not the CPU, and torch then runs on
  `torch_device`: a GPU's peak is its own, not the host's.
  """
  import jax
  import jax.numpy as jnp
  flops = 2.0 * size ** 3
  rng = np.random.default_rng(0)
  a = rng.standard_normal((size, size), dtype=np.float32)
  b = rng.standard_normal((size, size), dtype=np.float32)

  def best(fn: Callable[[], Any]) -> float:
    return flops / min(call_seconds(fn, repeats)) / 1e9

  rates = {}
  if dtype == "float32" and jax.devices()[0].platform == "cpu":
    rates["numpy"] = best(lambda: a @ b)
  try:
    import torch
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    ta, tb = (torch.from_numpy(x).to(device=torch_device, dtype=torch_dtype) for x in (a, b))
    sync = torch.cuda.synchronize if torch_device.startswith("cuda") else (lambda: None)
    rates["torch"] = best(lambda: (ta @ tb, sync()))
  except ImportError:
    pass
  ja, jb = (jax.device_put(jnp.asarray(x, dtype)) for x in (a, b))
  # As the encoder's dense layers multiply (bert_jax.ops): a float32 accumulator and output,
  # cast back. XLA:CPU gives a bfloat16-in, bfloat16-out dot only its float32 rate.
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32).astype(x.dtype))
  rates["xla"] = best(lambda: matmul(ja, jb).block_until_ready())
  rates["peak"] = max(rates.values())
  return rates
