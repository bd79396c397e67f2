"""Default preset: the base preset plus the SST recipe, trained on a 2-core CPU in under 30 minutes.

  python -m train.main                                   # same as below
  python -m train.main --config=train/configs/default.py --workdir=workdirs/default

The base preset (base.py) with four changes that the quality study
(train/studies/quality.py, results/quality/RESULTS.md) kept because they raise
SST dev accuracy beyond the seed spread and leave Para and STS where they were:
  - SST twice per epoch (`data.sst_fraction=2`): SST's 8.5k sentences are the
    smallest training set, and the 2 epochs were too few for the classifier;
  - a 10x learning rate for the task heads (`optim.head_learning_rate_multiplier`),
    which start from scratch while the encoder starts trained;
  - evaluation, best-checkpoint choice and export with a moving average of the
    weights (`optim.ema_decay=0.995`, about the last 200 steps), which smooths the
    step-to-step swings of the small SST dev set;
  - the SST classifier reads [CLS; mean] (`model.sentiment_pooling='both'`), the
    [CLS] summary beside the token mean that the pair heads read: it scored above
    mean pooling alone on each of 5 seeds.
Its dev scores over 5 seeds, its wall time, and those of the base preset, are in
results/quality/RESULTS.md, with the command that made them.
"""

import ml_collections

from train.configs import base


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  config.name = "default"
  config.data.sst_fraction = 2.0
  config.optim.head_learning_rate_multiplier = 10.0
  config.optim.ema_decay = 0.995
  config.model.sentiment_pooling = "both"
  return config
