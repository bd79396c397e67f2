"""Command line: `python -m train.main --config=train/configs/<preset>.py --workdir=<dir>`.

With no flags it trains the default preset into workdirs/<preset name>. Rerunning
with the same --workdir resumes from the latest checkpoint there.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
    "Training preset (a file with get_config()); override fields with --config.x=y.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics, plots and predictions go "
    "(default: workdirs/<config.name>). An existing run there is resumed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    # Orbax and TFDS log every file they touch at INFO; progress bars and the results
    # table are what a user reads. --verbosity=0 brings the INFO logs back.
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
  from train import train  # after flag parsing, so --help is fast
  train.enable_compilation_cache(config)
  logging.info("config:\n%s", config)
  train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
