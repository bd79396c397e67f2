"""The default recipe, then a final stage with the encoder frozen.

After the main training, the best checkpoint is restored, the encoder frozen
(no gradients, no Adam state for it) and the heads trained one task per epoch at
lr 1e-6, as in the report; the better of the two stages is kept.

  python -m train.main --config=train/configs/frozen_stage.py --workdir=workdirs/frozen_stage

The stage's optimizer is `config.frozen_stage.optim` (shown below with the fields it
changes from `config.optim`); override it on the command line, e.g.
`--config.frozen_stage.optim.learning_rate=1e-5`.
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "frozen_stage"
  config.frozen_stage.enabled = True
  config.frozen_stage.epochs_per_task = 1
  config.frozen_stage.optim.learning_rate = 1e-6
  config.frozen_stage.optim.schedule = "constant"
  config.frozen_stage.optim.warmup_steps = 0
  config.frozen_stage.optim.freeze = ("^bert/",)
  return config
