"""The apply step of every gradient-conflict method, side by side with the summed step's.

  python -m bench.conflicts_apply                                # all-MiniLM-L6, every method, 7 rounds
  python -m bench.conflicts_apply --methods=sum,pcgrad,upgrad --rounds=11

The apply is the compiled piece of the trainer's step after the task gradients:
(state, {task: gradient}, {task: loss}, rng) -> state, built by
`train.steps.make_apply_gradients` from the optimizer `train.optim.create_optimizer`
makes for `--config.conflicts.method=<name>`, exactly as `Trainer.make_stage`
builds it (and as `bench.profile_step` times PCGrad's). "sum" is the default
path: one summed gradient, no task axis. Every other method gets the three
task gradients stacked, computes G, its weights and sum_t w_t g_t, then the same
clipping and AdamW.

Gradients: random normal, one per task, shaped like the trainable parameters
of all-MiniLM-L6 with the default heads (the apply's cost does not depend on
their values: every solve runs a fixed number of iterations). Each method owns
its train state (the apply donates it). Timing: after two warm-up calls each,
`--rounds` rounds call every method's apply once, in turn, blocking on the
result; the table gives each method's median and its ratio to "sum"'s median,
so load that comes and goes on a shared machine hits all methods alike.
"""

from __future__ import annotations

import time

import numpy as np

from bert_jax.tasks import TASKS


def build_apply(method: str, bert_config, params, parallel, *, freeze=(), total_steps: int = 1000):
  """(apply, state) for one method, as Trainer.make_stage builds them from the default preset."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  from train import optim, steps
  from train.conflicts import registry
  from train.configs import base
  from train.parallel import REPLICATED
  from train.state import TrainState

  config = base.get_config()
  config.optim.freeze = tuple(freeze)
  config.conflicts.method = method
  stage_config = ml_collections.ConfigDict({"optim": config.optim, "pcgrad": config.pcgrad,
                                            "conflicts": config.conflicts})
  tx = optim.create_optimizer(stage_config, total_steps, task_names=TASKS)
  freeze_paths = optim.Freeze.from_regexes(params, config.optim.freeze)
  apply = parallel.compile(
      steps.make_apply_gradients(tx, task_order=TASKS, freeze=freeze_paths,
                                 per_task_gradients=optim.uses_per_task_gradients(stage_config),
                                 pass_losses=registry.needs_losses(stage_config)),
      in_specs=(REPLICATED,) * 4, donate_argnums=(0,))  # state, gradients, losses, rng
  own_params = jax.tree.map(jnp.copy, params)  # donated with the state: every method needs its own
  return apply, parallel.replicate(TrainState.create(own_params, tx, freeze_paths)), freeze_paths


def random_task_gradients(params, freeze, seed: int = 0) -> dict:
  """{task: gradient}: what the trainer's task gradients return (the trainable subtree), random normal."""
  import jax
  trainable = freeze.trainable(params)
  leaves, treedef = jax.tree.flatten(trainable)
  grads = {}
  for task, key in zip(TASKS, jax.random.split(jax.random.key(seed), len(TASKS))):
    leaf_keys = jax.random.split(key, len(leaves))
    grads[task] = jax.tree.unflatten(treedef, [1e-3 * jax.random.normal(k, leaf.shape, leaf.dtype)
                                               for k, leaf in zip(leaf_keys, leaves)])
  return grads


def measure(methods, bert_config, *, rounds: int, freeze=(), seed: int = 0) -> dict[str, list[float]]:
  """{method: [ms of each timed call]}, the methods interleaved round by round."""
  import jax
  import jax.numpy as jnp
  from bert_jax import multitask
  from train import train as train_lib
  from train.configs import base
  from train.parallel import DataParallel

  parallel = DataParallel.create("jit", num_devices=1)
  model = train_lib.build_model(base.get_config(), bert_config)
  params = jax.jit(lambda key: multitask.init_params(model, key))(jax.random.key(seed))
  applies, states, frozen = {}, {}, None
  for method in methods:
    applies[method], states[method], frozen = build_apply(method, bert_config, params, parallel, freeze=freeze)
  grads = random_task_gradients(params, frozen, seed)
  losses = {task: jnp.float32(1.0 + 0.1 * i) for i, task in enumerate(TASKS)}
  rng = jax.random.key(seed + 1)
  for method in methods:  # compile and warm up
    for _ in range(2):
      states[method], metrics = applies[method](states[method], grads, losses, rng)
      jax.block_until_ready((states[method], metrics))
    print(f"warmed up {method}", flush=True)
  times: dict[str, list[float]] = {m: [] for m in methods}
  for _ in range(rounds):
    for method in methods:
      start = time.perf_counter()
      states[method], metrics = applies[method](states[method], grads, losses, rng)
      jax.block_until_ready((states[method], metrics))
      times[method].append(1000 * (time.perf_counter() - start))
  return times


def format_table(times: dict[str, list[float]]) -> str:
  base = float(np.median(times["sum"])) if "sum" in times else None
  lines = ["method        median ms   min ms   max ms   / sum", "-" * 50]
  for method, values in times.items():
    median = float(np.median(values))
    ratio = f"{median / base:6.2f}x" if base else "   n/a"
    lines.append(f"{method:<12} {median:9.1f} {min(values):8.1f} {max(values):8.1f}  {ratio}")
  return "\n".join(lines)


def main(argv):
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  from bench import step_benchmark as sb
  from train.conflicts import registry
  methods = registry.METHOD_NAMES if FLAGS.methods == "all" else tuple(FLAGS.methods.split(","))
  unknown = [m for m in methods if m not in registry.METHOD_NAMES]
  if unknown:
    raise app.UsageError(f"--methods names {unknown}; expected 'all' or names from {registry.METHOD_NAMES}")
  if "sum" not in methods:
    methods = ("sum",) + tuple(methods)
  bert_config = sb.model_config(FLAGS.model, vocab_size=30522)
  freeze = ("word_embeddings",) if FLAGS.frozen_word_embeddings else ()
  times = measure(methods, bert_config, rounds=FLAGS.rounds, freeze=freeze, seed=FLAGS.seed)
  print(f"\napply step, {FLAGS.model}, {FLAGS.rounds} interleaved rounds"
        + (", word embeddings frozen" if freeze else ""))
  print(format_table(times))


def define_flags():
  from absl import flags
  flags.DEFINE_string("methods", "all", "Comma-separated config.conflicts.method names, or 'all'.")
  flags.DEFINE_string("model", "minilm-l6", "minilm-l6, bert-base or tiny (random init).")
  flags.DEFINE_integer("rounds", 7, "Timed calls of each method's apply, interleaved.")
  flags.DEFINE_integer("seed", 0, "Random init and gradients.")
  flags.DEFINE_bool("frozen_word_embeddings", False, "Freeze the word-embedding table.")


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
