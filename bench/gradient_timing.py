"""Times one SST gradient (all-MiniLM-L6 shapes, batch 32 x length 64, dropout on) of a checkout.

  python -m bench.gradient_timing                            # this checkout
  git worktree add /tmp/old a495311 && python -m bench.gradient_timing --repo=/tmp/old

How "what each change gained" in bench/README.md was measured: the same
computation on worktrees of successive commits, interleaved, in fresh
processes. It only uses what every version of the trainer had
(`train.train.build_model`, `init_params` and `task_loss`, which lived in
`bert_jax/heads.py` until it was split into `multitask.py` and `losses.py`), so
it runs against old commits; `bench/profile_step.py` breaks the current one down.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags



def gradient_seconds(repo: str = "", batch_size: int = 32, length: int = 64, iters: int = 10) -> list[float]:
  """Seconds per SST gradient call (after one compile call) with the code of `repo`."""
  if repo:
    sys.path.insert(0, os.path.abspath(repo))
    for name in [m for m in sys.modules if m.split(".")[0] in ("bert_jax", "train", "data_prep")]:
      del sys.modules[name]
  import jax
  from bert_jax import checkpoints
  from bert_jax.config import BertConfig
  try:
    from bert_jax.losses import task_loss
    from bert_jax.multitask import init_params
  except ImportError:  # checkouts from before bert_jax/heads.py was split (the commits bench/README.md compares)
    from bert_jax.heads import init_params, task_loss
  from train import train as train_lib
  from train.configs import base

  config = BertConfig.from_json_file(checkpoints.resolve_checkpoint("minilm-l6").config_path)
  model = train_lib.build_model(base.get_config(), config)
  params = jax.jit(lambda key: init_params(model, key))(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"input_ids": rng.integers(1000, 20000, (batch_size, length)).astype(np.int32),
           "attention_mask": np.ones((batch_size, length), np.int32),
           "token_type_ids": np.zeros((batch_size, length), np.int32),
           "weights": np.ones((batch_size,), np.float32),
           "labels": rng.integers(0, 5, batch_size).astype(np.int32)}

  def loss(params, batch, key):
    outputs = model.apply({"params": params}, batch, deterministic=False, rngs={"dropout": key},
                          method="sentiment")
    return task_loss("sst", outputs, batch)[0]

  grad = jax.jit(jax.grad(loss))
  key = jax.random.key(1)
  jax.block_until_ready(grad(params, batch, key))
  times = []
  for i in range(iters):
    start = time.perf_counter()
    jax.block_until_ready(grad(params, batch, jax.random.fold_in(key, i)))
    times.append(time.perf_counter() - start)
  return times


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  times = gradient_seconds(args.repo, args.batch, args.length, args.iters)
  where = args.repo or "this checkout"
  print(f"{where}: SST gradient {args.batch}x{args.length}: median {1000 * np.median(times):.0f} ms, "
        f"min {1000 * min(times):.0f} ms")


def define_flags():
  """Flags, defined only when run as a script (the test process imports every bench module)."""
  flags.DEFINE_string("repo", "", "Checkout to import bert_jax/train from ('' = this one).")
  flags.DEFINE_integer("iters", 10, "Timed calls; median and min are printed.")
  flags.DEFINE_integer("batch", 32, "Sentences.")
  flags.DEFINE_integer("length", 64, "Padded length.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
