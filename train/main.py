"""Command line: `python -m train.main --config=<preset> --workdir=<dir>` (or `bert-jax-train ...`).

`--config` takes a preset name (`--config=cross`, from any directory) or a config file
(`--config=train/configs/cross.py`); `--config.x=y` overrides a field. With no flags it
trains the default preset into workdirs/default. Without --workdir each set of
overrides gets its own workdir (train/workdirs.py), so changing one never resumes a
run made with another. Rerunning with the same workdir resumes from its latest checkpoint.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from train import cli_errors, presets, script_help, workdirs

try:
  _CONFIG = config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
      "Training preset: a name from train/configs/ (e.g. cross) or a file with get_config(); "
      "override fields with --config.x=y.",
      lock_config=True)
except Exception as error:  # without --config=, ml_collections applies the --config.x overrides right here
  cli_errors.exit_with_error(error, "train.main")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics, plots and predictions go "
    "(default: workdirs/<config.name>, plus the --config.* overrides when there are any). "
    "An existing run there is resumed.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print the workdir and the config the run would use, then exit without training.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 of a multi-process job (every process gives the "
    "same). With --num_processes and --process_id it overrides the detection of TPU pods, SLURM and Open "
    "MPI jobs (BUILD.md, 'Several hosts').")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job (one per host, usually).",
                                      lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in the job, 0 to "
                                   "--num_processes - 1. Process 0 writes metrics, plots and predictions.",
                                   lower_bound=0)


def check_distributed_flags(num_processes: int | None, process_id: int | None) -> None:
  if num_processes is not None and process_id is not None and process_id >= num_processes:
    raise ValueError(f"--process_id={process_id} with --num_processes={num_processes}: expected a process id "
                     f"from 0 to {num_processes - 1}")


def join_distributed_job(coordinator_address: str | None, num_processes: int | None,
                         process_id: int | None) -> bool:
  """Starts `jax.distributed` from the flags given; False (and nothing done) when none is.

  It has to run before anything asks JAX for its devices, which would start a
  one-process backend. A flag left out is filled in by JAX from the cluster's
  environment; without one, JAX says which value it could not find.
  """
  given = {k: v for k, v in (("coordinator_address", coordinator_address), ("num_processes", num_processes),
                             ("process_id", process_id)) if v is not None}
  check_distributed_flags(num_processes, process_id)
  if not given:
    return False
  import jax
  jax.distributed.initialize(**given)
  logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # Orbax and TFDS log every file they touch at INFO; progress bars and the results
    # table are what a user reads. --verbosity=0 brings the INFO logs back.
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  from train import config_validation
  config_validation.validate(config)  # every field, before any work: one error listing each bad one
  check_distributed_flags(_NUM_PROCESSES.value, _PROCESS_ID.value)
  overrides = config_flags.get_override_values(flags.FLAGS["config"])
  workdir = _WORKDIR.value or workdirs.default_workdir(config.name, overrides)
  for line in workdirs.describe_workdir(workdir, config, chosen_by_default=_WORKDIR.value is None,
                                        overrides=overrides):
    print(line, flush=True)
  if _DRY_RUN.value:
    print(f"config ({config_flags.get_config_filename(flags.FLAGS['config'])}):\n{config}", flush=True)
    return
  join_distributed_job(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from train import train  # after flag parsing, so --help is fast
  train.enable_compilation_cache(config)
  logging.info("config:\n%s", config)
  train.train_and_evaluate(config, workdir)


def run():
  """The `bert-jax-train` console script, and `python -m train.main`.

  Resolves a preset name given as --config before absl parses the flags (see
  train/presets.py); ml_collections reads the overrides from sys.argv, so the
  resolved value goes there.
  """
  try:
    sys.argv = presets.resolve_config_argv(sys.argv)
  except ValueError as e:
    sys.exit(f"train.main: error: {e}")  # the form of train/cli_errors.py, without a traceback
  script_help.list_flags_in_help(__name__)
  try:
    app.run(main)
  except Exception as error:  # from flag parsing or from main: one message, exit status 1 (train/cli_errors.py)
    cli_errors.exit_with_error(error, "train.main")


if __name__ == "__main__":
  run()
