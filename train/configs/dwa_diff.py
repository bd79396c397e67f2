"""pcgrad_diff with dwa in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/dwa_diff.py --workdir=workdirs/dwa_diff

The method and its options: train/conflicts/registry.py (config.conflicts.dwa).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "dwa_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "dwa"
  return config
