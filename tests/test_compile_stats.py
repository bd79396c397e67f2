"""CompilationStats counts the compilations inside its `with` block, and only those."""

import jax
import jax.numpy as jnp

from train.compile_stats import CompilationStats


def test_counts_compiles_inside_the_block_only():
  with CompilationStats() as stats:
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(jnp.arange(7.0)).block_until_ready()
  inside = stats.seconds
  assert inside > 0
  jax.jit(lambda x: jnp.cos(x) - 2.0)(jnp.arange(5.0)).block_until_ready()  # after the block
  assert stats.seconds == inside
  summary = stats.summary()
  assert summary.startswith("XLA compilation:") and "persistent cache" in summary
  assert set(stats.to_dict()) == {"seconds", "cache_read_seconds", "cache_hits", "cache_misses"}
